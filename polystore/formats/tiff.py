"""TIFF through tifffile: n-D arrays, ImageJ hyperstacks, OME-TIFF."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format
from polystore.lazy import optional_import

IMAGEJ_AXES = "TZCYXS"
"""ImageJ hyperstacks store their axes in this order (a subset of it)."""
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_DEFAULT_IMAGEJ_AXES = {2: "YX", 3: "ZYX"}


def _tifffile() -> Any:
    return optional_import("tifffile", extra="tiff", purpose="Reading and writing TIFF files")


def to_imagej_order(array: np.ndarray, axes: str | None) -> tuple[np.ndarray, str]:
    """Transpose ``array`` with ``axes`` into ImageJ's TZCYX(S) order.

    Without ``axes``, 2-D is YX and 3-D is ZYX; higher dimensions need them spelled out.
    """
    if axes is None:
        axes = _DEFAULT_IMAGEJ_AXES.get(array.ndim)
        if axes is None:
            raise UnsupportedDataError(
                f"A {array.ndim}-D ImageJ hyperstack needs its axes named, e.g. "
                f"axes='{IMAGEJ_AXES[-1 - array.ndim:-1]}' (letters from {IMAGEJ_AXES})."
            )
    axes = axes.upper()
    if len(axes) != array.ndim or len(set(axes)) != len(axes) or set(axes) - set(IMAGEJ_AXES):
        raise UnsupportedDataError(
            f"axes='{axes}' does not describe a {array.ndim}-D array for ImageJ: give one "
            f"distinct letter per dimension, from {IMAGEJ_AXES}."
        )
    ordered = "".join(a for a in IMAGEJ_AXES if a in axes)
    return np.transpose(array, [axes.index(a) for a in ordered]), ordered


def _save_tiff(
    data: Any,
    handle: IO[bytes],
    *,
    imagej: bool = False,
    axes: str | None = None,
    metadata: dict[str, Any] | None = None,
    ome: bool | None = None,
    **tifffile_options: Any,
) -> None:
    array = as_plain_array(data, "TIFF")
    meta = dict(metadata or {})
    if imagej:
        if array.dtype.type not in IMAGEJ_DTYPES:
            raise UnsupportedDataError(
                f"ImageJ hyperstacks hold uint8, uint16 or float32 pixels, not {array.dtype}. "
                "Convert first (e.g. array.astype('float32')), or save with imagej=False."
            )
        array, axes = to_imagej_order(array, axes)
        meta["axes"] = axes
    elif axes is not None:
        meta["axes"] = axes.upper()
    _tifffile().imwrite(handle, array, imagej=imagej, ome=ome, metadata=meta, **tifffile_options)


def _load_tiff(
    path: Path, *, key: int | slice | None = None, series: int = 0, level: int | None = None
) -> np.ndarray:
    return _tifffile().imread(path, key=key, series=series, level=level)  # type: ignore[no-any-return]


def _save_ome_tiff(data: Any, handle: IO[bytes], **options: Any) -> None:
    _save_tiff(data, handle, ome=True, **options)


_OPTIONS = {
    "imagej": "save: write an ImageJ hyperstack (uint8/uint16/float32) that Fiji opens with its axes",
    "axes": "save: axis letters, e.g. 'TZCYX' (reordered to ImageJ's order when imagej=True)",
    "compression": "save: tifffile compression, e.g. 'zlib' ('zstd', 'lzw' need imagecodecs)",
    "key": "load: read only these pages",
    "series, level": "load: which series / pyramid level",
}

FORMATS = [
    Format(
        "tiff", (".tif", ".tiff"), _save_tiff, _load_tiff,
        description="TIFF image (tifffile)",
        accepts="arrays of any framework, any number of dimensions",
        options=_OPTIONS,
    ),
    Format(
        "ome-tiff", (".ome.tif", ".ome.tiff"), _save_ome_tiff, _load_tiff,
        description="OME-TIFF image (tifffile)",
        accepts="arrays of any framework",
        options=_OPTIONS,
    ),
]
