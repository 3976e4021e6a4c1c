"""FileManager: one API over every backend, and copies between them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from polystore.arrays import convert
from polystore.base import DataSource, FileStat, PathLike, StorageBackend
from polystore.exceptions import ReadOnlyBackendError
from polystore.registry import BackendRegistry

CROSS_BACKEND_CHUNK = 64
"""Files loaded into memory at once when a directory is copied between backends."""


class FileManager:
    """Save, load and manage data on any registered backend, chosen per call.

    ``registry`` is a :class:`BackendRegistry` or a plain mapping of names to backend
    instances (used on top of every registered class). Every method takes ``backend`` by
    keyword or as its positional argument after the path(s); ``default_backend`` is used
    when a call gives none.
    """

    def __init__(
        self,
        registry: BackendRegistry | Mapping[str, Any] | None = None,
        *,
        default_backend: str | None = None,
    ) -> None:
        if isinstance(registry, BackendRegistry):
            self.registry = registry
        else:
            self.registry = BackendRegistry(registry)
        self.default_backend = default_backend

    def get_backend(self, backend: str | None) -> DataSource:
        """The backend instance registered as ``backend``."""
        name = backend if backend is not None else self.default_backend
        if name is None:
            raise ValueError(
                "No backend given: pass backend='disk' (or 'memory', ...), or create the "
                "FileManager with default_backend=...."
            )
        return self.registry[name]

    def _writable(self, backend: str | None) -> StorageBackend:
        instance = self.get_backend(backend)
        if not isinstance(instance, StorageBackend):
            raise ReadOnlyBackendError(
                f"Backend {instance.backend_label} is read-only; write to a writable backend instead."
            )
        return instance

    # -- data ------------------------------------------------------------------------------
    def save(self, data: Any, path: PathLike, backend: str | None = None, **kwargs: Any) -> None:
        """Save ``data`` at ``path``; extra keyword options go to the backend (and format)."""
        self.get_backend(backend).save(data, path, **kwargs)  # type: ignore[attr-defined]

    def load(
        self, path: PathLike, backend: str | None = None, *, framework: str | None = None, **kwargs: Any
    ) -> Any:
        """Load ``path``; ``framework`` ("numpy", "torch", "jax", "tensorflow", "cupy") converts arrays."""
        return convert(self.get_backend(backend).load(path, **kwargs), framework)

    def save_batch(
        self,
        data_list: Sequence[Any],
        paths: Sequence[PathLike],
        backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Save many items (in parallel on I/O-bound backends); ``progress=True`` shows a bar."""
        self.get_backend(backend).save_batch(data_list, paths, **kwargs)  # type: ignore[attr-defined]

    def load_batch(
        self,
        paths: Sequence[PathLike],
        backend: str | None = None,
        *,
        framework: str | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Load many paths, in order (in parallel on I/O-bound backends)."""
        loaded = self.get_backend(backend).load_batch(paths, **kwargs)
        return [convert(item, framework) for item in loaded]

    # -- namespace -------------------------------------------------------------------------
    def list_files(
        self,
        directory: PathLike,
        backend: str | None = None,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Files in ``directory`` (sorted), filtered by glob ``pattern`` and ``extensions``."""
        return self.get_backend(backend).list_files(
            directory, pattern=pattern, extensions=extensions, recursive=recursive, **kwargs
        )

    def list_dir(self, path: PathLike, backend: str | None = None) -> list[str]:
        """Names of the entries directly inside ``path`` (sorted)."""
        return self.get_backend(backend).list_dir(path)

    def exists(self, path: PathLike, backend: str | None = None) -> bool:
        return self.get_backend(backend).exists(path)

    def is_file(self, path: PathLike, backend: str | None = None) -> bool:
        return self.get_backend(backend).is_file(path)

    def is_dir(self, path: PathLike, backend: str | None = None) -> bool:
        return self.get_backend(backend).is_dir(path)

    def stat(self, path: PathLike, backend: str | None = None) -> FileStat:
        return self.get_backend(backend).stat(path)

    def delete(self, path: PathLike, backend: str | None = None) -> None:
        """Remove a file or an empty directory."""
        self._writable(backend).delete(path)

    def delete_all(self, path: PathLike, backend: str | None = None) -> None:
        """Remove a file, or a directory with everything below it."""
        self._writable(backend).delete_all(path)

    def ensure_directory(self, directory: PathLike, backend: str | None = None) -> str:
        return self._writable(backend).ensure_directory(directory)

    # -- between places --------------------------------------------------------------------
    def copy(
        self,
        source: PathLike,
        destination: PathLike,
        backend: str | None = None,
        *,
        dest_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Copy a file or directory tree, within ``backend`` or from it to ``dest_backend``.

        Across backends, each file is loaded from the source and saved to the destination
        (so memory -> disk materialises objects in the format of the destination's
        extension); ``kwargs`` go to the destination's ``save``.
        """
        source_backend = self.get_backend(backend)
        target_name = dest_backend if dest_backend is not None else backend
        target = self._writable(target_name)
        if target is source_backend:
            target.copy(source, destination, **kwargs)
            return
        if not source_backend.is_dir(source):
            target.save(source_backend.load(source), destination, **kwargs)
            return
        target.ensure_directory(destination)
        files = source_backend.list_files(source, recursive=True)
        prefix = os.fspath(source).rstrip("/")
        prefix = "" if prefix in ("", ".") else prefix
        for start in range(0, len(files), CROSS_BACKEND_CHUNK):
            chunk = files[start : start + CROSS_BACKEND_CHUNK]
            data = source_backend.load_batch(chunk)
            destinations = [
                f"{os.fspath(destination).rstrip('/')}/{path[len(prefix):].lstrip('/')}"
                for path in chunk
            ]
            target.save_batch(data, destinations, **kwargs)

    def move(
        self,
        source: PathLike,
        destination: PathLike,
        backend: str | None = None,
        *,
        dest_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Move a file or directory tree, within ``backend`` or to ``dest_backend``."""
        source_backend = self._writable(backend)
        target_name = dest_backend if dest_backend is not None else backend
        if self.get_backend(target_name) is source_backend:
            source_backend.move(source, destination, **kwargs)
            return
        self.copy(source, destination, backend, dest_backend=target_name, **kwargs)
        source_backend.delete_all(source)
