"""For a Python session that already drives ImageJ (pyimagej's gateway, or a JVM with ij.jar).

    import imagej
    ij = imagej.init("/path/to/Fiji.app", mode="interactive")
    from polystore import FileManager
    from polystore_fiji.scripting import from_imageplus, show, to_imageplus

    imp = show(fm, "plate.zarr/A/01/0", "zarr", axes="CYX")   # a window in Fiji
    ... process it in Fiji ...
    fm.save(from_imageplus(imp), "processed/A01.tif", backend="disk")

Nothing here starts a JVM of its own unless none runs: then :func:`polystore_fiji.jvm.start_imagej`
starts ImageJ from a jar (or Fiji, with ``fiji_dir``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from polystore_fiji import convert
from polystore_fiji.jvm import ImageJRuntime, current_runtime, is_headless, on_edt, start_imagej


def ensure_imagej(**options: Any) -> ImageJRuntime:
    """The ImageJ of this process: the running one, or one started with ``options`` (see ``start_imagej``)."""
    return current_runtime() or start_imagej(**options)


def to_imageplus(array: Any, axes: str | None = None, title: str = "image", **options: Any) -> Any:
    """An ImagePlus holding ``array`` (NumPy, or torch/JAX/CuPy...: converted to NumPy first).

    ``axes``: letters of ``TZCYX`` (default: the trailing ones). The dtype rules are in
    :data:`polystore_fiji.convert.DTYPE_RULES`. The image is not shown.
    """
    ensure_imagej()
    return convert.to_imageplus(array, axes, title, **options)


def from_imageplus(imp: Any, axes: str | None = None, *, native: bool = False) -> np.ndarray:
    """The pixels of ``imp`` as a NumPy array: the array :func:`to_imageplus` took, for images it made."""
    ensure_imagej()
    return convert.from_imageplus(imp, axes, native=native)


def show(fm: Any, path: str | os.PathLike[str], backend: str, *, axes: str | None = None,
         title: str | None = None, **load_options: Any) -> Any:
    """Load ``path`` from ``backend`` through FileManager ``fm`` and show it in ImageJ; the ImagePlus.

    Headless JVMs cannot show windows: the image is returned without one.
    """
    ensure_imagej()
    array = fm.load(path, backend, **load_options)
    imp = convert.to_imageplus(array, axes, title or os.fspath(path))
    if not is_headless():
        on_edt(imp.show)
    return imp
