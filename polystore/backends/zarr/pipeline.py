"""Which codec pipeline encodes and decodes chunks: zarrs (Rust, ``pip install zarrs``) where it
applies, zarr-python's own everywhere else.

zarrs reads and writes chunks itself for the stores it knows (``LocalStore``, and
``ObjectStore`` over obstore), compressing on its own threads; for any other store (an
in-memory one, a wrapper) it would warn and fall back per array. :class:`ZarrsWhereSupported`
makes that choice per store up front, without the warning, so one setting serves every store
a process opens. It also leaves to zarr-python the writes zarrs would not make whole: zarrs
writes a writable ``LocalStore``'s chunks in place (a writer killed mid-chunk tears it), so
the backend opens local stores for writing as ``ObjectStore`` over obstore's local store
(staged and renamed, see ``location.py``), and a writable ``LocalStore`` (obstore missing)
gets zarr-python's pipeline, which writes a temporary file and renames it.

zarr's pipeline setting is per process (``zarr.config``), so the last backend made sets it;
dask workers set it through ``ZARR_CODEC_PIPELINE__PATH`` or by making a backend.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
import warnings
from typing import Any

from polystore.backends.zarr.location import zarr_module
from polystore.exceptions import InvalidOptionError, MissingDependencyError

ZARRS_STORES = ("LocalStore", "ObjectStore")
"""zarr-python store classes zarrs reads and writes itself."""
IN_PLACE_STORES = ("LocalStore",)
"""Of those, the ones whose chunks zarrs writes in place: zarrs only reads them (read-only)."""
PIPELINE_PATH = f"{__name__}.ZarrsWhereSupported"
DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
"""zarr-python's own pipeline, by the name its configuration uses (a string, not an import)."""
PIPELINES = ("auto", "zarrs", "zarr")
_REBUILT_STORE = "Successfully reconstructed a store defined in another Python module"
_LOCK = threading.Lock()
_CLASS: list[type] = []


@functools.cache
def zarrs_installed() -> bool:
    """Whether zarrs imports (a broken install counts as absent: the fallback is clean)."""
    try:
        importlib.import_module("zarrs")
    except ImportError:
        return False
    return True


def _pipeline_class() -> type:
    """:class:`ZarrsWhereSupported`, made (and registered with zarr) on first use, since it
    derives from zarrs' pipeline, an optional dependency."""
    with _LOCK:
        if _CLASS:
            return _CLASS[0]
        from zarrs import ZarrsCodecPipeline

        zarr = zarr_module()

        class ZarrsWhereSupported(ZarrsCodecPipeline):
            """zarrs' pipeline for the stores zarrs supports, zarr-python's for the others."""

            @classmethod
            def from_array_metadata_and_store(cls, array_metadata: Any, store: Any) -> Any:
                # zarrs refuses arrays of a non-native byte order ("Non-native byte order not
                # supported") where it could hand them to zarr-python: those go there here
                native = array_metadata.dtype.to_native_dtype().isnative
                if zarrs_applies(store) and native:
                    return super().from_array_metadata_and_store(array_metadata, store)
                # zarr then asks from_codecs, which zarrs answers with zarr-python's own pipeline
                raise NotImplementedError  # zarr's protocol: caught by zarr, which asks from_codecs

        ZarrsWhereSupported.__module__ = __name__
        ZarrsWhereSupported.__qualname__ = "ZarrsWhereSupported"
        zarr.registry.register_pipeline(ZarrsWhereSupported)
        # zarrs rebuilds each obstore store in its own Rust module and says so once per array
        # opened (a RuntimeWarning a user can do nothing about); the stores work the same
        warnings.filterwarnings("ignore", message=_REBUILT_STORE, category=RuntimeWarning)
        _CLASS.append(ZarrsWhereSupported)
        return ZarrsWhereSupported


def zarrs_applies(store: Any) -> bool:
    """Whether zarrs reads and writes ``store``'s chunks: a store it knows, and one whose chunks it
    writes whole (or never writes: read-only)."""
    kind = type(store).__name__
    return kind in ZARRS_STORES and (kind not in IN_PLACE_STORES or bool(store.read_only))


def __getattr__(name: str) -> Any:
    if name == "ZarrsWhereSupported":  # zarr's registry and pickle find the class by this name
        return _pipeline_class()
    raise AttributeError(name)  # the module __getattr__ protocol (hasattr, pickle) needs this type


def configure(choice: str, threads: int | None = None) -> str:
    """Set zarr's codec pipeline for this process: ``"auto"`` (zarrs where installed),
    ``"zarrs"`` (required) or ``"zarr"`` (zarr-python's); and the threads it may use.
    Returns the pipeline path now configured."""
    if choice not in PIPELINES:
        raise InvalidOptionError(f"codec_pipeline={choice!r}: choose one of {', '.join(PIPELINES)}.")
    use_zarrs = choice == "zarrs" or (choice == "auto" and zarrs_installed())
    if choice == "zarrs" and not zarrs_installed():
        raise MissingDependencyError("zarrs", "zarr", "codec_pipeline='zarrs'")
    zarr = zarr_module()
    if use_zarrs:
        _pipeline_class()
    path = PIPELINE_PATH if use_zarrs else DEFAULT_PIPELINE
    settings: dict[str, Any] = {"codec_pipeline.path": path}
    if threads is not None:
        settings["threading.max_workers"] = threads
    if any(zarr.config.get(key, None) != value for key, value in settings.items()):
        zarr.config.set(settings)
    return path


def default_threads() -> int:
    """Threads for zarrs' chunk work: the cores there are (polystore's own batch pools then
    take one thread each per core less, see ``ZarrBackend.save_batch``)."""
    return os.cpu_count() or 1
