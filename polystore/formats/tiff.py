"""TIFF through tifffile: n-D arrays, ImageJ hyperstacks, OME-TIFF.

What tifffile would not give back as it was written is refused at save: ImageJ and OME-TIFF
readers drop length-1 axes other than Y and X, and which ones they drop is asked of tifffile
itself (a tiny image of the same pattern of axes is written and read back in memory). A read
declaring more pixels than the file holds is held to :mod:`polystore.formats.limits`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import CorruptDataError, InvalidOptionError, UnsupportedDataError
from polystore.formats import Format, limits
from polystore.lazy import optional_import

IMAGEJ_AXES = "TZCYXS"
"""ImageJ hyperstacks store their axes in this order (a subset of it)."""
IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
TIFF_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.complex64, np.complex128,
))
"""TIFF holds bool, integers, floats and complex numbers (in the machine's byte order); no
sample format is wider than float64 (complex128), so long double is not among them."""
OME_DTYPES = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32,
    np.float32, np.float64, np.complex64, np.complex128,
))
"""The pixel types OME-XML names (no 64-bit integers, no float16)."""
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
    if array.dtype.newbyteorder("=") not in TIFF_DTYPES:
        raise UnsupportedDataError(
            f"TIFF holds numbers (bool, integers, floats up to float64, complex up to "
            f"complex128), not {array.dtype}. Save it as .npy, which keeps every NumPy dtype."
        )
    meta = dict(metadata or {})
    if imagej:
        if array.dtype.type not in IMAGEJ_DTYPES:
            raise UnsupportedDataError(
                f"ImageJ hyperstacks hold uint8, uint16 or float32 pixels, not {array.dtype}. "
                "Convert first (e.g. array.astype('float32')), or save with imagej=False."
            )
        if array.size == 0:  # ImageJ's metadata cannot describe it: (0, 5) would load as (0, 0)
            raise UnsupportedDataError(
                f"An ImageJ hyperstack cannot be empty; this one is {array.shape}. Save it "
                "without imagej=True (a plain .tif keeps the shape) or as .npy."
            )
        array, axes = to_imagej_order(array, axes)
        meta["axes"] = axes
    elif axes is not None:
        meta["axes"] = axes.upper()
    options = dict(imagej=imagej, ome=ome, metadata=meta, **tifffile_options)
    if (imagej or ome) and 1 in array.shape:
        _refuse_dropped_axes(array, "ImageJ hyperstacks keep" if imagej else "OME-TIFF keeps", options)
    _tifffile().imwrite(handle, array, **options)


def _refuse_dropped_axes(array: np.ndarray, kind: str, options: dict[str, Any]) -> None:
    """Refuse ``array`` if tifffile, writing it with ``options``, would read it back without
    some of its length-1 axes. Asked of tifffile on a stand-in of the same pattern (each other
    axis 2 long, or 3 and 4 where samples of colour may be): which axes a reader squeezes
    depends on the axes and on which are 1 long, never on the values."""
    stand_in = tuple(1 if n == 1 else n if n in (3, 4) else 2 for n in array.shape)
    buffer = io.BytesIO()
    try:
        _tifffile().imwrite(buffer, np.zeros(stand_in, array.dtype), **options)
        buffer.seek(0)
        back = _tifffile().imread(buffer).shape
    except Exception:  # the real write says what is wrong with the options
        return
    if back == stand_in:
        return
    kept, dropped = list(back), []
    for index, n in enumerate(stand_in):
        if kept and kept[0] == n:
            kept.pop(0)
        else:
            dropped.append(index)
    shown = tuple(n for index, n in enumerate(array.shape) if index not in dropped)
    axes = options["metadata"].get("axes")
    named = f" (axes {axes})" if axes else ""
    raise UnsupportedDataError(
        f"{kind} length-1 axes only as Y or X: this {array.shape} array{named} would load "
        f"as {shown}. Save it as .tif without imagej/OME or as .npy (which keep any shape), or "
        "squeeze those axes first (np.squeeze(a, axis=...))."
    )


def _load_tiff(
    handle: IO[bytes],
    *,
    key: int | slice | None = None,
    series: int = 0,
    level: int | None = None,
    max_decompressed_bytes: int | None = None,
) -> np.ndarray:
    # _multifile=False (tifffile's own, private, argument; its public is_ome=False would lose
    # OME axes): an OME-TIFF may name other files to read beside it; reading them by path
    # would step outside the backend's root, so polystore reads the one file it opened.
    # tests/test_confinement.py checks that it still does.
    with _tifffile().TiffFile(handle, _multifile=False) as tiff:
        if not tiff.pages:  # tifffile gives an empty array for a file without any image
            raise CorruptDataError(
                f"'{getattr(handle, 'name', 'the TIFF')}' holds no image (no page could be read): "
                "the file is damaged, cut short, or not a TIFF."
            )
        _check_declared(tiff, handle, key, series, level, max_decompressed_bytes)
        return tiff.asarray(key=key, series=series, level=level)  # type: ignore[no-any-return]


def _check_declared(
    tiff: Any, handle: IO[bytes], key: int | slice | None, series: int, level: int | None,
    limit: int | None,
) -> None:
    """Refuse a read whose pixels would take more than the limit beyond the file's own size
    (compressed pages of zeros, or pages pointing at the same bytes), before reading any."""
    shown = getattr(handle, "name", "the TIFF")
    chosen = _within(tiff.series, series, "series", "series", shown)
    if level is not None:
        chosen = _within(chosen.levels, level, "level", "levels", shown)
    if key is None:
        declared = math.prod(chosen.shape) * chosen.dtype.itemsize
    else:
        if isinstance(key, slice):
            pages = chosen.pages[key]
            if not pages:
                raise _out_of_range("key", key, "pages", len(chosen.pages), shown)
        else:
            pages = [_within(chosen.pages, key, "key", "pages", shown)]
        declared = len(pages) * chosen.keyframe.nbytes
    size = os.fstat(handle.fileno()).st_size
    limits.check_expansion(
        declared - size, limits.TIFF_DECODED_BYTES if limit is None else limit,
        f"'{getattr(handle, 'name', 'the TIFF')}' ({size:,} bytes, declaring {declared:,} bytes of pixels)",
        limits.OPTION, "TIFF_DECODED_BYTES",
    )


def _within(items: Any, index: int, option: str, what: str, shown: str) -> Any:
    """``items[index]``, or the error naming the option that chose past the file's ``what``."""
    if -len(items) <= index < len(items):
        return items[index]
    raise _out_of_range(option, index, what, len(items), shown)


def _out_of_range(option: str, given: object, what: str, count: int, shown: str) -> InvalidOptionError:
    return InvalidOptionError(
        f"{option}={given!r} selects nothing in '{shown}' ({what}: {count}). Pass {option} from 0 "
        f"to {count - 1}."
    )


OME_LETTERS = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
"""tifffile's axis letters that name an OME-NGFF axis; ``S``, a pixel's samples (RGB), is the
channel axis. Others (``I``, a plain sequence of pages; ``Q``, unknown) name nothing."""


@dataclass(frozen=True)
class TiffHeader:
    """What a TIFF's first series is, from its header: ``axes`` as tifffile reads them (``ZCYX``
    of an ImageJ hyperstack, an OME-TIFF's order, ``YXS`` of an RGB picture, ``IYX`` of pages
    that say nothing of what they are); ``pixel_sizes``: ``{OME letter: (size, NGFF unit)}``
    where the file states them (OME-XML's PhysicalSize, ImageJ's resolution and spacing);
    ``channel_names``: OME-XML's channel names, where it gives one for every channel."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    axes: str
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()


UNITS = {"\u00b5m": "micrometer", "\u03bcm": "micrometer", "\\u00b5m": "micrometer", "um": "micrometer",
         "micron": "micrometer", "microns": "micrometer", "micrometer": "micrometer", "nm": "nanometer",
         "nanometer": "nanometer", "mm": "millimeter", "millimeter": "millimeter", "cm": "centimeter",
         "m": "meter", "s": "second", "ms": "millisecond"}
"""Length and time units as OME-XML and ImageJ spell them, by their OME-NGFF names."""


def read_header(handle: IO[bytes]) -> TiffHeader:
    """The :class:`TiffHeader` of a TIFF's first series (no pixels read)."""
    with _tifffile().TiffFile(handle, _multifile=False) as tiff:
        if not tiff.pages:
            raise CorruptDataError(f"'{getattr(handle, 'name', 'the TIFF')}' holds no image (no page could "
                                   "be read): the file is damaged, cut short, or not a TIFF.")
        series = tiff.series[0]
        shape = tuple(int(n) for n in series.shape)
        sizes: dict[str, tuple[float, str]] = {}
        names: tuple[str, ...] = ()
        # what a file says of its pixels is a courtesy: a damaged description is no pixel's loss
        with contextlib.suppress(Exception):
            if tiff.is_ome and tiff.ome_metadata:
                sizes, names = _ome_pixels(tiff.ome_metadata)
            elif tiff.is_imagej and tiff.imagej_metadata:
                sizes = _imagej_pixels(tiff.imagej_metadata, tiff.pages[0])
        channels = shape[series.axes.index("C")] if "C" in series.axes else 0
        return TiffHeader(shape, np.dtype(series.dtype), str(series.axes), sizes,
                          names if len(names) == channels else ())


def _ome_pixels(xml: str) -> tuple[dict[str, tuple[float, str]], tuple[str, ...]]:
    image = _tifffile().xml2dict(xml)["OME"]["Image"]
    pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    sizes = {}
    for letter in "ZYX":
        size = pixels.get(f"PhysicalSize{letter}")
        unit = UNITS.get(str(pixels.get(f"PhysicalSize{letter}Unit", "um")).lower())
        if isinstance(size, (int, float)) and size > 0 and unit is not None:
            sizes[letter.lower()] = (float(size), unit)
    channels = pixels.get("Channel") or []
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c["Name"]) for c in channels if isinstance(c, dict) and c.get("Name"))
    return sizes, names if len(names) == len(channels) else ()


def _imagej_pixels(metadata: dict[str, Any], page: Any) -> dict[str, tuple[float, str]]:
    unit = UNITS.get(str(metadata.get("unit", "")).strip().lower())
    if unit is None:
        return {}
    sizes = {}
    for letter, tag in (("x", "XResolution"), ("y", "YResolution")):
        found = page.tags.get(tag)
        per_unit = found.value[0] / found.value[1] if found is not None and found.value[1] else 0
        if per_unit > 0 and per_unit != 1:  # 1 pixel per unit: ImageJ's "no calibration"
            sizes[letter] = (1 / per_unit, unit)
    spacing = metadata.get("spacing")
    if isinstance(spacing, (int, float)) and spacing > 0:
        sizes["z"] = (float(spacing), unit)
    return sizes


def ome_axes(tiff_axes: str) -> str | None:
    """A TIFF's axes (:func:`read_header`) as OME-NGFF letters, in the file's order, where every
    one names an OME axis once (``ZCYX`` -> ``zcyx``, ``YXS`` -> ``yxc``); None otherwise."""
    letters = [OME_LETTERS.get(letter) for letter in tiff_axes.upper()]
    if any(letter is None for letter in letters):
        return None
    axes = "".join(letter for letter in letters if letter is not None)
    return axes if len(set(axes)) == len(axes) else None


def read_region(handle: IO[bytes], selection: tuple[slice, ...]) -> np.ndarray:
    """The pixels of ``selection`` of a TIFF's first series, reading only what it covers: a
    memory map of uncompressed contiguous data, else the tiles or strips it touches (tifffile's
    zarr view), so that a region of an image larger than memory costs the region."""
    with _tifffile().TiffFile(handle, _multifile=False) as tiff:
        if not tiff.pages:
            raise CorruptDataError(f"'{getattr(handle, 'name', 'the TIFF')}' holds no image.")
        series = tiff.series[0]
        if series.dataoffset is not None:  # one uncompressed block: tifffile's zarr view is one chunk
            mapped = np.memmap(handle, dtype=series.dtype, mode="r", offset=series.dataoffset,
                               shape=tuple(series.shape))
            region = np.array(mapped[selection], dtype=series.dtype.newbyteorder("="))
            del mapped  # unmapped now: the pages read do not stay in this process
            return region
        zarr = optional_import("zarr", extra="zarr", purpose="Reading regions of TIFF files")
        return np.asarray(zarr.open_array(series.aszarr(), mode="r")[selection])


def _ome_problem(array: np.ndarray) -> str | None:
    """Why OME-TIFF would not give ``array`` back as it is, if it would not (length-1 axes are
    asked of tifffile when it is written)."""
    if array.dtype.newbyteorder("=") not in OME_DTYPES:
        return f"OME-XML has no pixel type for {array.dtype}"
    if array.ndim < 2:
        return f"an OME image has at least 2 dimensions (Y and X), this one {array.ndim}"
    if 0 in array.shape:
        return "it is empty"
    return None


def _save_ome_tiff(data: Any, handle: IO[bytes], **options: Any) -> None:
    array = as_plain_array(data, "OME-TIFF")
    problem = _ome_problem(array)
    if problem is not None:
        raise UnsupportedDataError(
            f"OME-TIFF cannot keep this {array.shape} {array.dtype} array: {problem}. Save it "
            "as .tif or .npy (which keep any shape), squeeze or convert it first "
            "(np.squeeze(a), a.astype(np.float32)), or write OME-Zarr (backend='zarr')."
        )
    _save_tiff(array, handle, ome=True, **options)


_OPTIONS = {
    "imagej": "save: write an ImageJ hyperstack (uint8/uint16/float32) that Fiji opens with its axes",
    "axes": "save: axis letters, e.g. 'TZCYX' (reordered to ImageJ's order when imagej=True)",
    "compression": "save: tifffile compression, e.g. 'zlib' ('zstd', 'lzw' need imagecodecs)",
    "key": "load: read only these pages",
    "series, level": "load: which series / pyramid level",
    "max_decompressed_bytes": "load: raise the limit on pixels beyond the file's size (default 1 GiB)",
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
