"""NumPy arrays <-> ImageJ ImagePlus, in bulk (one copy per plane, never element by element).

ImageJ stores 8-bit, 16-bit unsigned and 32-bit float pixels. Other dtypes go in by the rule
in :data:`DTYPE_RULES` (the table is the documentation; ``docs/fiji.md`` repeats it), and
the original dtype and axes are written on the ImagePlus (properties ``polystore.dtype`` and
``polystore.axes``) so that :func:`from_imageplus` gives back the array that went in.

Axes: ImageJ's hyperstacks are XYCZT (channel fastest); NumPy arrays here are read with
``axes`` letters from ``TZCYX``, by default the trailing ones (``YX``, ``CYX``, ``ZCYX``,
``TZCYX``). Pass e.g. ``axes="ZYX"`` for a z-stack, ``axes="TYX"`` for a time series.

The functions that build Java objects need a running JVM (see :mod:`polystore_fiji.jvm`);
the rule table and the axis helpers do not.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from polystore.exceptions import InvalidOptionError, UnsupportedDataError
from polystore_fiji.jvm import java_class

HYPERSTACK_AXES = "TZCYX"
"""The order of :func:`from_imageplus`'s output (singleton axes left out unless asked for)."""
DTYPE_PROPERTY = "polystore.dtype"
AXES_PROPERTY = "polystore.axes"
SIGNED16_OFFSET = 32768


def _as_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32, copy=False)


def _bool_to_uint8(array: np.ndarray) -> np.ndarray:
    return np.where(array, np.uint8(255), np.uint8(0))


def _int16_to_shifted(array: np.ndarray) -> np.ndarray:
    return (array.astype(np.int32) + SIGNED16_OFFSET).astype(np.uint16)


def _shifted_to_int16(stored: np.ndarray) -> np.ndarray:
    return (stored.astype(np.int32) - SIGNED16_OFFSET).astype(np.int16)


@dataclass(frozen=True)
class DtypeRule:
    """How one NumPy dtype is held in ImageJ, and how it comes back."""

    stored: np.dtype[Any]
    """The pixel type ImageJ holds: uint8 (8-bit), uint16 (16-bit) or float32 (32-bit)."""
    rule: str
    to_stored: Callable[[np.ndarray], np.ndarray] | None = None
    from_stored: Callable[[np.ndarray], np.ndarray] | None = None
    signed16: bool = False
    """Shown through ImageJ's signed 16-bit calibration (value - 32768), as ImageJ opens signed TIFFs."""

    @property
    def native(self) -> bool:
        return self.to_stored is None


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
_TO_F32_EXACT = "32-bit float; every value exact"
_TO_F32_LARGE = "32-bit float; exact up to 2**24 in magnitude, larger values rounded"

DTYPE_RULES: dict[np.dtype[Any], DtypeRule] = {
    _U8: DtypeRule(_U8, "8-bit, native"),
    _U16: DtypeRule(_U16, "16-bit, native"),
    _F32: DtypeRule(_F32, "32-bit float, native"),
    np.dtype(np.bool_): DtypeRule(_U8, "8-bit mask, False -> 0 and True -> 255 (ImageJ's binary images)",
                                  _bool_to_uint8, lambda stored: stored != 0),
    np.dtype(np.int8): DtypeRule(_F32, _TO_F32_EXACT, _as_float32),
    np.dtype(np.int16): DtypeRule(_U16, "16-bit + 32768 with ImageJ's signed 16-bit calibration; exact",
                                  _int16_to_shifted, _shifted_to_int16, signed16=True),
    np.dtype(np.float16): DtypeRule(_F32, _TO_F32_EXACT, _as_float32),
    np.dtype(np.int32): DtypeRule(_F32, _TO_F32_LARGE, _as_float32),
    np.dtype(np.uint32): DtypeRule(_F32, _TO_F32_LARGE, _as_float32),
    np.dtype(np.int64): DtypeRule(_F32, _TO_F32_LARGE, _as_float32),
    np.dtype(np.uint64): DtypeRule(_F32, _TO_F32_LARGE, _as_float32),
    np.dtype(np.float64): DtypeRule(_F32, "32-bit float; rounded to float32 precision", _as_float32),
}
"""NumPy dtype (native byte order) -> how ImageJ holds it. Complex dtypes are refused."""

BIT_DEPTH_DTYPES: dict[int, np.dtype[Any]] = {8: _U8, 16: _U16, 32: _F32}
"""ImagePlus.getBitDepth() -> the dtype of its pixels (24, RGB, is unpacked to uint8 x 3)."""


def dtype_rule(dtype: Any) -> DtypeRule:
    """The rule for ``dtype``; :class:`UnsupportedDataError` (naming the supported ones) if none."""
    key = np.dtype(dtype).newbyteorder("=")
    rule = DTYPE_RULES.get(key)
    if rule is None:
        supported = ", ".join(sorted(str(d) for d in DTYPE_RULES))
        raise UnsupportedDataError(
            f"ImageJ cannot hold {np.dtype(dtype)} pixels; supported dtypes: {supported}. "
            "Convert first (e.g. np.abs(array) for complex data)."
        )
    return rule


def default_axes(ndim: int) -> str:
    """The trailing ``ndim`` letters of ``TZCYX``: ``YX``, ``CYX``, ``ZCYX``, ``TZCYX``."""
    if not 2 <= ndim <= len(HYPERSTACK_AXES):
        raise UnsupportedDataError(
            f"ImageJ images have 2 to 5 dimensions (TZCYX); got an array with {ndim}. "
            "Reshape it, or send its planes one by one."
        )
    return HYPERSTACK_AXES[-ndim:]


def check_axes(axes: str | None, ndim: int) -> str:
    """``axes`` (upper case) for an array of ``ndim`` dims, or the default; a clear error if wrong."""
    if axes is None:
        return default_axes(ndim)
    letters = axes.upper()
    problems = []
    if len(letters) != ndim:
        problems.append(f"{len(letters)} letters for an array of {ndim} dimensions")
    if set(letters) - set(HYPERSTACK_AXES):
        problems.append(f"letters other than {HYPERSTACK_AXES}")
    if len(set(letters)) != len(letters):
        problems.append("a repeated letter")
    if not {"Y", "X"} <= set(letters):
        problems.append("no Y and X")
    if problems:
        raise UnsupportedDataError(
            f"axes {axes!r} does not describe the array: {', '.join(problems)}. Use one letter "
            f"per dimension from {HYPERSTACK_AXES}, with Y and X (e.g. 'ZYX', 'CYX', 'TZCYX')."
        )
    return letters


def to_tzcyx(array: np.ndarray, axes: str | None = None) -> np.ndarray:
    """``array`` as a 5-D (T, Z, C, Y, X) view (singleton axes added where absent)."""
    letters = check_axes(axes, array.ndim)
    missing = [a for a in HYPERSTACK_AXES if a not in letters]
    expanded = array.reshape(array.shape + (1,) * len(missing))
    order = letters + "".join(missing)
    return expanded.transpose([order.index(a) for a in HYPERSTACK_AXES])


def from_tzcyx(hyperstack: np.ndarray, axes: str) -> np.ndarray:
    """The (T, Z, C, Y, X) array with only ``axes``, in that order; the others must be of size 1."""
    letters = check_axes(axes, len(axes))
    dropped = [a for a in HYPERSTACK_AXES if a not in letters]
    for letter in dropped:
        size = hyperstack.shape[HYPERSTACK_AXES.index(letter)]
        if size != 1:
            raise UnsupportedDataError(
                f"the image has {size} {letter} planes but axes {axes!r} leaves {letter} out; "
                f"include it (e.g. '{letter}{axes}')"
            )
    order = [HYPERSTACK_AXES.index(a) for a in letters + "".join(dropped)]
    moved = hyperstack.transpose(order)
    return moved.reshape(moved.shape[: len(letters)])


def squeezed_axes(sizes: dict[str, int]) -> str:
    """The axes of ``TZCYX`` whose size is over 1, with Y and X always."""
    return "".join(a for a in HYPERSTACK_AXES if a in "YX" or sizes.get(a, 1) > 1)


# -- Java side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _PixelKind:
    processor: str
    java_type: str
    buffer_view: str | None
    """The java.nio.ByteBuffer view that copies into the Java array (None: the bytes themselves)."""
    signed_view: np.dtype[Any]
    fill_in_place: bool
    """Whether a processor made empty (``Processor(width, height)``) may be filled afterwards:
    its constructor keeps no statistic of the pixels (FloatProcessor's finds their min and max)."""


_PIXEL_KINDS: dict[np.dtype[Any], _PixelKind] = {
    _U8: _PixelKind("ij.process.ByteProcessor", "JByte", None, np.dtype(np.int8), True),
    _U16: _PixelKind("ij.process.ShortProcessor", "JShort", "asShortBuffer", np.dtype(np.int16), True),
    _F32: _PixelKind("ij.process.FloatProcessor", "JFloat", "asFloatBuffer", _F32, False),
}


class _DirectBuffers:
    """Java direct ByteBuffers over recently seen memory, by (address, size).

    Java copies a NumPy array into a Java array itself, in bulk, through a direct ByteBuffer
    over the array's memory. Each buffer is made over an unowned ctypes view of the address:
    a buffer wrapping the array itself would keep it (for a zero-copy stream item, the
    sender's shared-memory slot) alive until Java's garbage collector frees the buffer, and
    the sender would starve. Buffers are cached because a stream reuses a few slots: making
    one per frame (and JPype's thread releasing it later) cost 0.7 ms of a 2048x2048 frame.

    Safe to keep after the memory is gone: a buffer is only used for a live array whose
    memory covers the buffer's whole range, i.e. the range is valid memory at that moment.
    Java only reads through these buffers.
    """

    SIZE = 8

    def __init__(self) -> None:
        self._buffers: collections.OrderedDict[tuple[int, int, str | None], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def over(self, flat: np.ndarray, view: str | None = None) -> Any:
        """A native-order ByteBuffer over ``flat``'s bytes (C-contiguous, native byte order), or
        its ``view`` (``asShortBuffer``, ...)."""
        import jpype.nio

        key = (int(flat.ctypes.data), int(flat.nbytes), view)
        with self._lock:
            buffer = self._buffers.get(key)
            if buffer is not None:
                self._buffers.move_to_end(key)
                return buffer
        memory = (ctypes.c_char * flat.nbytes).from_address(key[0])
        buffer = jpype.nio.convertToDirectBuffer(memory).order(java_class("java.nio.ByteOrder").nativeOrder())
        if view is not None:
            buffer = getattr(buffer, view)()
        with self._lock:
            self._buffers[key] = buffer
            while len(self._buffers) > self.SIZE:
                self._buffers.popitem(last=False)
        return buffer


_direct_buffers = _DirectBuffers()


def java_pixels(plane: np.ndarray) -> Any:
    """A Java primitive array holding ``plane`` (uint8, uint16 or float32), copied in bulk.

    Java copies it itself from a direct ByteBuffer over the array's memory (one memcpy, no
    copy in Python, also for a read-only zero-copy stream item): 2-3x faster than JPype's copy.
    """
    import jpype

    kind = _PIXEL_KINDS[plane.dtype.newbyteorder("=")]
    pixels = jpype.JArray(getattr(jpype, kind.java_type))(plane.size)
    _copy_into(pixels, plane, kind)
    return pixels


_absolute_get = True
"""Whether buffers have the absolute bulk get(index, array) (Java 13+), which leaves their
position alone: a cached buffer is then used as it is, one call a frame."""


def _copy_into(pixels: Any, plane: np.ndarray, kind: _PixelKind) -> None:
    """Java copies ``plane``'s values into the Java array ``pixels`` of the same length."""
    global _absolute_get
    flat = np.ascontiguousarray(plane, dtype=plane.dtype.newbyteorder("=")).reshape(-1)
    if not flat.size:
        return
    source = _direct_buffers.over(flat, kind.buffer_view)
    if _absolute_get:
        try:
            source.get(0, pixels)
            return
        except TypeError:  # Java 11 or 12
            _absolute_get = False
    source.duplicate().get(pixels)  # a duplicate has its own position: the cached one never moves


def processor_from_plane(plane: np.ndarray) -> Any:
    """An ImageJ ImageProcessor for a 2-D uint8, uint16 or float32 plane.

    8- and 16-bit processors are made empty by Java and filled there: JPype holds the GIL
    while it makes a Java array itself (a 2048x2048 plane's 8 MiB zeroed with every other
    thread of the bridge waiting), not while a constructor or a method runs.
    """
    if plane.ndim != 2:
        raise UnsupportedDataError(f"a plane is 2-D (Y, X); got shape {plane.shape}")
    kind = _PIXEL_KINDS.get(plane.dtype.newbyteorder("="))
    if kind is None:
        raise UnsupportedDataError(f"planes are stored as uint8, uint16 or float32, not {plane.dtype}")
    height, width = plane.shape
    if not kind.fill_in_place:
        return java_class(kind.processor)(width, height, java_pixels(plane), None)
    processor = java_class(kind.processor)(width, height)
    _copy_into(processor.getPixels(), plane, kind)
    return processor


def plane_from_pixels(pixels: Any, width: int, height: int) -> np.ndarray:
    """A NumPy copy of a processor's pixel array (RGB ``int[]`` unpacked to (Y, X, 3) uint8)."""
    raw = np.array(pixels)  # JPype copies a primitive array in one go
    if raw.dtype == np.int8:
        return raw.view(np.uint8).reshape(height, width)
    if raw.dtype == np.int16:
        return raw.view(np.uint16).reshape(height, width)
    if raw.dtype == np.int32:  # ColorProcessor: 0xRRGGBB
        packed = raw.view(np.uint32).reshape(height, width)
        return np.stack([(packed >> shift) & 0xFF for shift in (16, 8, 0)], axis=-1).astype(np.uint8)
    return raw.astype(np.float32, copy=False).reshape(height, width)


def stored_hyperstack(array: np.ndarray, axes: str | None = None) -> tuple[np.ndarray, DtypeRule]:
    """``array`` as (T, Z, C, Y, X) in the dtype ImageJ will hold, and the rule that was applied."""
    rule = dtype_rule(array.dtype)
    hyperstack = to_tzcyx(array, axes)
    if rule.to_stored is not None:
        hyperstack = rule.to_stored(hyperstack)
    return hyperstack, rule


def display_range(plane: np.ndarray) -> tuple[float, float]:
    """A display range for ``plane``: its finite min and max (a one-wide range if flat)."""
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def sampled_display_range(plane: np.ndarray, rows: int = 128) -> tuple[float, float]:
    """:func:`display_range` of about ``rows`` whole rows spread evenly over a 2-D ``plane``.

    Whole rows, not a strided grid: a grid of every 4th pixel of every 4th row reads a quarter
    of the plane's memory (its cache lines), these rows a sixteenth of a 2048x2048 plane; 10x
    faster on a stream item fresh in shared memory.
    """
    return display_range(plane[:: max(1, plane.shape[0] // rows)])


def to_imageplus(
    array: Any,
    axes: str | None = None,
    title: str = "image",
    *,
    composite_mode: str = "composite",
) -> Any:
    """An ImagePlus (a CompositeImage when there are several channels) holding ``array``.

    ``array``: 2-D to 5-D, of a dtype in :data:`DTYPE_RULES`; ``axes`` as in
    :func:`check_axes` (default: trailing ``TZCYX``). ``composite_mode``: ``composite``,
    ``color`` or ``grayscale`` for multi-channel images. The display range of each channel is
    set from its data. The image is not shown; call ``.show()`` (on the event thread).
    """
    from polystore.arrays import to_numpy

    data = to_numpy(array)
    letters = check_axes(axes, data.ndim)
    hyperstack, rule = stored_hyperstack(data, letters)
    frames, slices, channels, height, width = hyperstack.shape
    stack = java_class("ij.ImageStack")(width, height)
    for plane in hyperstack.reshape(-1, height, width):  # C fastest, then Z, then T: ImageJ's order
        stack.addSlice("", processor_from_plane(plane))
    imp = java_class("ij.ImagePlus")(title, stack)
    imp.setDimensions(channels, slices, frames)
    if channels > 1 or frames > 1:  # a z-only stack is a plain stack; anything else a hyperstack
        imp.setOpenAsHyperStack(True)
    if rule.signed16:
        imp.getCalibration().setSigned16BitCalibration()
    imp.setProp(DTYPE_PROPERTY, str(data.dtype.newbyteorder("=")))
    imp.setProp(AXES_PROPERTY, letters)
    if channels > 1:
        imp = make_composite(imp, composite_mode)
    for channel in range(channels):
        set_channel_display_range(imp, channel, display_range(hyperstack[:, :, channel]))
    return imp


COMPOSITE_MODES = {"composite": "COMPOSITE", "color": "COLOR", "grayscale": "GRAYSCALE"}


def make_composite(imp: Any, mode: str = "composite") -> Any:
    """``imp`` as a CompositeImage in ``mode``, channel LUTs by ImageJ's defaults; ``imp`` itself
    is given up (flushed): the composite holds its planes from now on.

    The composite shares ``imp``'s stack, and ImageJ counts the images viewing a stack: it frees
    the planes when the last of them closes. ``imp`` would count as a viewer forever, so closing
    the composite's window freed nothing, and every closed window's pixels stayed in the heap
    until the JVM could prove no object referred to them any more (the bridge's heap after a
    collection held each closed 384 MiB window besides the open one). Flushed, ``imp`` lets go of
    the stack; its planes stay while the composite views them."""
    if mode not in COMPOSITE_MODES:
        raise InvalidOptionError(f"composite_mode must be one of {', '.join(COMPOSITE_MODES)}; got {mode!r}")
    composite_class = java_class("ij.CompositeImage")
    composite = composite_class(imp, getattr(composite_class, COMPOSITE_MODES[mode]))
    for key in (DTYPE_PROPERTY, AXES_PROPERTY):
        value = imp.getProp(key)
        if value is not None:
            composite.setProp(key, value)
    if imp.getCalibration().isSigned16Bit():
        composite.getCalibration().setSigned16BitCalibration()
    imp.flush()
    return composite


def set_channel_display_range(imp: Any, channel: int, limits: tuple[float, float]) -> None:
    """Set the display range of 0-based ``channel`` without moving the image's position."""
    low, high = limits
    if imp.isComposite():
        lut = imp.getChannelLut(channel + 1)
        lut.min, lut.max = low, high
        if imp.getC() == channel + 1:
            imp.getProcessor().setMinAndMax(low, high)
    else:
        imp.getProcessor().setMinAndMax(low, high)
        imp.setDisplayRange(low, high)


def imageplus_sizes(imp: Any) -> dict[str, int]:
    """The image's size along each of ``TZCYX``."""
    return {
        "T": int(imp.getNFrames()), "Z": int(imp.getNSlices()), "C": int(imp.getNChannels()),
        "Y": int(imp.getHeight()), "X": int(imp.getWidth()),
    }


def imageplus_axes(imp: Any) -> str:
    """The axes :func:`from_imageplus` returns for ``imp`` by default."""
    recorded = _recorded(imp)
    if recorded is not None:
        return recorded[1]
    rgb = "S" if int(imp.getBitDepth()) == 24 else ""
    return squeezed_axes(imageplus_sizes(imp)) + rgb


def recorded_dtype(imp: Any) -> np.dtype[Any] | None:
    """The dtype :func:`to_imageplus` (or the bridge) wrote on ``imp``, while it still describes it."""
    recorded = _recorded(imp)
    return recorded[0] if recorded is not None else None


def _recorded(imp: Any) -> tuple[np.dtype[Any], str] | None:
    """The dtype and axes :func:`to_imageplus` wrote on ``imp``, if they still describe it."""
    dtype_text, axes = imp.getProp(DTYPE_PROPERTY), imp.getProp(AXES_PROPERTY)
    if dtype_text is None or axes is None or int(imp.getBitDepth()) == 24:
        return None
    try:
        dtype = np.dtype(str(dtype_text))
        letters = check_axes(str(axes), len(str(axes)))
        rule = dtype_rule(dtype)
    except (TypeError, ValueError, UnsupportedDataError):
        return None
    sizes = imageplus_sizes(imp)
    if rule.stored != BIT_DEPTH_DTYPES.get(int(imp.getBitDepth())):
        return None  # converted in ImageJ since (e.g. 16-bit -> 32-bit): the record is stale
    if any(sizes[a] > 1 for a in HYPERSTACK_AXES if a not in letters):
        return None  # planes added in ImageJ along an axis the array did not have
    return dtype, letters


def hyperstack_from_imageplus(imp: Any) -> np.ndarray:
    """All planes of ``imp`` as a (T, Z, C, Y, X) array of its stored pixels (RGB: trailing 3)."""
    sizes = imageplus_sizes(imp)
    width, height = sizes["X"], sizes["Y"]
    stack = imp.getStack()
    count = int(stack.getSize())
    planes = [plane_from_pixels(stack.getPixels(index + 1), width, height) for index in range(count)]
    stacked = np.stack(planes)
    return stacked.reshape((sizes["T"], sizes["Z"], sizes["C"], *stacked.shape[1:]))


def from_imageplus(imp: Any, axes: str | None = None, *, native: bool = False) -> np.ndarray:
    """The pixels of ``imp`` as a NumPy array (a copy).

    By default the array that :func:`to_imageplus` was given comes back: its dtype and axes
    are read from the image's properties when they still describe it. Otherwise (an image
    made in ImageJ) the axes are ``TZCYX`` without its singleton axes, and the dtype is
    ImageJ's (uint8, uint16, float32; int16 for signed 16-bit images; RGB as (..., 3)
    uint8). ``axes`` picks the output axes (letters of ``TZCYX``; left-out axes must be of
    size 1); ``native=True`` gives ImageJ's stored values without any dtype rule undone.
    """
    hyperstack = hyperstack_from_imageplus(imp)
    recorded = _recorded(imp)
    rgb = hyperstack.ndim == 6
    chosen = (axes.upper() if axes else None) or (recorded[1] if recorded else imageplus_axes(imp))
    spatial = chosen.removesuffix("S") if rgb else chosen
    if rgb:
        channels_last = np.moveaxis(hyperstack, -1, 0)
        result = np.stack([from_tzcyx(part, spatial) for part in channels_last], axis=-1)
    else:
        result = from_tzcyx(hyperstack, spatial)
    if native or rgb:
        return np.ascontiguousarray(result)
    if recorded is not None:
        rule = dtype_rule(recorded[0])
        restored = rule.from_stored(result) if rule.from_stored is not None else result
        return np.ascontiguousarray(restored.astype(recorded[0], copy=False))
    if imp.getCalibration().isSigned16Bit() and result.dtype == np.uint16:
        return _shifted_to_int16(result)
    return np.ascontiguousarray(result)
