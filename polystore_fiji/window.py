"""One hyperstack window of the bridge: its ImagePlus, the order of its planes, its ROIs, its draws.

A :class:`HyperstackWindow` is created once per title (a well, or an item without a plate
position) as a CompositeImage, grayscale while it has one channel, composite with ImageJ's
channel LUTs once it has several. A plane that arrives again replaces its pixels in place; a
new channel, z or (site, t) index grows the stack around the existing planes (no pixel copies)
and the same ImagePlus gets the new dimensions in the same window, whose C/Z/T sliders are
rebuilt for them (ImageJ itself would build a new window). Each channel's display range is set
once, from the first plane of that channel. Every method runs on AWT's event thread (or the
only thread, headless); :mod:`polystore_fiji.hyperstack` decides when.

Also here, because they describe windows: what the ``windows`` control op reports about any
ImagePlus (:func:`describe_imageplus`) and whether a canvas has painted (:func:`canvas_painted`).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.exceptions import LimitExceededError, UnsupportedDataError
from polystore_fiji.convert import (
    BIT_DEPTH_DTYPES,
    DTYPE_PROPERTY,
    imageplus_axes,
    imageplus_sizes,
    make_composite,
    recorded_dtype,
    set_channel_display_range,
)
from polystore_fiji.jvm import java_class
from polystore_fiji.placement import Frame, Ordinal, PlaneKey

logger = logging.getLogger(__name__)

MAX_WINDOW_PLANES = 65536
"""Positions (C x Z x T) one window holds at most: the indices of a few items could otherwise
make a stack of millions of slices (each a Java array, a label and Python bookkeeping)."""


class _StackWindowInternals:
    """Reflective handles on ImageJ 1's ``StackWindow`` members that have no public setter.

    ImageJ rebuilds a StackWindow when a shown hyperstack's dimensions change; to keep the
    window, the bridge does what the StackWindow constructor does on the existing window:
    ``addScrollbars(imp)`` (package-private) recreates the C/Z/T sliders from the image's
    dimensions, and the ``hyperStack``, ``c``, ``z``, ``t`` fields must agree with them. The
    names are the same from ImageJ 1.52 to 1.54 (``ij.jar`` and Fiji); the classes live in
    the unnamed module, so ``setAccessible`` is allowed.
    """

    def __init__(self) -> None:
        window_class = java_class("ij.gui.StackWindow").class_
        self.add_scrollbars = window_class.getDeclaredMethod(
            "addScrollbars", java_class("ij.ImagePlus").class_
        )
        self.add_scrollbars.setAccessible(True)
        self.fields = {name: window_class.getDeclaredField(name) for name in ("hyperStack", "c", "z", "t")}
        for reflected in self.fields.values():
            reflected.setAccessible(True)


@functools.cache
def _stack_window_internals() -> _StackWindowInternals:
    return _StackWindowInternals()


@functools.cache
def _painted_field() -> Any:
    """ImageJ 1's ``ImageCanvas.painted`` (private, 1.52 to 1.54): set each time the canvas draws."""
    reflected = java_class("ij.gui.ImageCanvas").class_.getDeclaredField("painted")
    reflected.setAccessible(True)
    return reflected


def canvas_painted(canvas: Any) -> bool:
    """Whether an ImageCanvas has drawn its image (a flag the event thread sets when it paints,
    and :class:`HyperstackWindow` clears before it asks for a draw; read from any thread)."""
    return canvas is not None and bool(_painted_field().getBoolean(canvas))


def show_in_stack_window(imp: Any) -> None:
    """Show ``imp`` in a StackWindow even while it has one plane (event thread).

    ``ImagePlus.show()`` gives a single plane an ImageWindow, which has no sliders, so the
    first plane that followed would make ImageJ replace the window; a StackWindow with no
    sliders yet grows its sliders in place (:func:`set_dimensions_in_place`).
    """
    if imp.getStackSize() > 1:
        imp.show()
        return
    java_class("ij.gui.StackWindow")(imp)  # shows itself and registers with ImageJ's WindowManager


def set_dimensions_in_place(imp: Any, channels: int, slices: int, frames: int) -> None:
    """Give ``imp`` (whose stack already holds C x Z x T planes) new dimensions in its own window.

    ``ImagePlus.setDimensions`` replaces a shown hyperstack's window by a new StackWindow when
    the dimensions change; marked as not a hyperstack for that call, the window is kept, and
    its sliders are then rebuilt for the new sizes (event thread).
    """
    window = imp.getWindow()
    stack_window = java_class("ij.gui.StackWindow")
    if window is None or not isinstance(window, stack_window):
        imp.setDimensions(channels, slices, frames)
        if window is not None and imp.getStackSize() > 1:
            stack_window(imp)  # a plain ImageWindow has no sliders: ImageJ's own replacement
        return
    internals = _stack_window_internals()
    internals.fields["hyperStack"].setBoolean(window, False)
    imp.setDimensions(channels, slices, frames)
    imp.setOpenAsHyperStack(True)  # read (and cleared) by addScrollbars, as in the constructor
    sliders = int(window.getNScrollbars())
    internals.add_scrollbars.invoke(window, imp)
    for name in ("c", "z", "t"):  # the new sliders stand at 1: make the window agree
        internals.fields[name].setInt(window, 1)
    if int(window.getNScrollbars()) != sliders:
        window.pack()  # a slider more: the window grows to hold it, as a new window would
    else:
        window.validate()


def closed_in_imagej(imp: Any) -> bool:
    """Whether ``imp`` was closed (its window closed by the user, or ``close()`` in a macro):
    ImageJ flushes a closed image, leaving it no processor and an empty stack."""
    return imp.getProcessor() is None


def _disarm_write_back(imp: Any, stack: Any) -> None:
    """Make the processor ``imp`` shows hold what ``stack`` holds at its current index, so that
    the write-back of ``ImagePlus.setSlice`` changes nothing (see
    :meth:`HyperstackWindow._sync_displayed`)."""
    imp.getProcessor().setPixels(stack.getPixels(int(imp.getCurrentSlice())))


def _insert_sorted(values: list[Any], value: Any) -> bool:
    if value in values:
        return False
    values.append(value)
    values.sort()
    return True


@dataclass
class PreparedPlane:
    """A plane converted by a converting thread, ready for the event thread."""

    key: PlaneKey
    processor: Any
    label: str
    limits: tuple[float, float] | None
    """A display range from this plane's pixels; None when its window had one for the channel."""
    sequence: int = 0
    """Arrival order of the item: a plane never replaces one that arrived after it (frames are
    converted by several threads, so they may be placed out of order)."""
    shape: tuple[int, int] = (0, 0)
    """Height and width."""
    stored: np.dtype[Any] = field(default_factory=lambda: np.dtype(np.uint16))
    """The dtype of its pixels in ImageJ (uint8, uint16 or float32)."""

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.stored.itemsize


@dataclass
class TrackedRoi:
    """A ROI in the RoiManager (the object it holds) that belongs to a window: its position
    follows the window's planes as positions are inserted (``key``: its plane, None for a ROI
    that keeps its own position, as a streamed ROI set's do)."""

    roi: Any
    key: PlaneKey | None


@dataclass
class HyperstackWindow:
    """One window's ImagePlus and the order of its planes. Methods run on the event thread."""

    title: str
    width: int
    height: int
    stored: np.dtype[Any]
    dtype: np.dtype[Any]
    signed16: bool
    show: bool
    max_bytes: int | None = None
    """Bytes of pixels the window's stack may hold, every position counted at full size (ImageJ
    processes a stack slice by slice, and a duplicate holds each); None: no limit."""
    channels: list[Ordinal] = field(default_factory=list)
    slices: list[Ordinal] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    processors: dict[PlaneKey, Any] = field(default_factory=dict)
    """The planes received, by position (positions nothing was sent for show :attr:`blank`)."""
    labels: dict[PlaneKey, str] = field(default_factory=dict)
    channel_ranges: dict[Ordinal, tuple[float, float]] = field(default_factory=dict)
    changed: set[PlaneKey] = field(default_factory=set)
    """Planes recorded since the ImagePlus was last brought up to date."""
    grown: bool = False
    """Whether a recorded plane brought a new channel, z or (site, t) since then."""
    last: PlaneKey | None = None
    last_sequence: int = -1
    sequences: dict[PlaneKey, int] = field(default_factory=dict)
    imp: Any = None
    stacked: set[PlaneKey] = field(default_factory=set)
    """Positions that have a slice in the ImagePlus's stack."""
    blank: Any = None
    """One black processor that every position nothing was sent for shows (a stack of 16 x 16
    x 16 positions made of 48 planes holds 49 planes' memory, not 4096)."""
    rois: list[TrackedRoi] = field(default_factory=list)
    closed: bool = False
    """Closed by the bridge (the ``close`` op): a draw still pending does nothing."""
    last_draw: float = float("-inf")
    draw_scheduled: bool = False
    update_cost: float = 0.0
    """Seconds the last :meth:`apply` took on the event thread."""
    drawing: tuple[int, str] | None = None
    """The sequence and label of the newest plane when a draw was last asked for, until the
    canvas paints (see :meth:`describe`)."""
    drawn: tuple[int, str] | None = None
    """The sequence and label of the newest plane the canvas has painted."""

    def fits(self, width: int, height: int, stored: np.dtype[Any]) -> bool:
        return (width, height, stored) == (self.width, self.height, self.stored)

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.channels), len(self.slices), len(self.frames)

    @property
    def plane_bytes(self) -> int:
        return self.width * self.height * self.stored.itemsize

    def stack_index(self, key: PlaneKey) -> int:
        """1-based position in ImageJ's stack (channel fastest, then z, then t)."""
        channels, slices, _ = self.sizes
        c, z, t = self.channels.index(key.channel), self.slices.index(key.z), self.frames.index(key.frame)
        return 1 + c + z * channels + t * channels * slices

    def position_of(self, key: PlaneKey) -> tuple[int, int, int]:
        """1-based C, Z, T of ``key`` for ImageJ's ``Roi.setPosition``; 0 (every plane) along an
        axis where the window has not got the key's index (yet)."""
        return (
            self.channels.index(key.channel) + 1 if key.channel in self.channels else 0,
            self.slices.index(key.z) + 1 if key.z in self.slices else 0,
            self.frames.index(key.frame) + 1 if key.frame in self.frames else 0,
        )

    def put(self, planes: list[PreparedPlane]) -> None:
        """Record ``planes``; :meth:`apply` brings the ImagePlus up to date with all recorded so far.

        Planes that arrive while the event thread is busy are recorded first and placed
        together, with one redraw (see :meth:`HyperstackAssembler._update_soon`). Planes
        that would grow the window beyond :data:`MAX_WINDOW_PLANES` positions or
        :attr:`max_bytes` are refused (:class:`LimitExceededError`), none of them recorded.
        """
        self._check_growth(planes)
        for plane in planes:
            if self.sequences.get(plane.key, -1) > plane.sequence:
                continue  # a newer frame for this position was placed already: it stays
            self.sequences[plane.key] = plane.sequence
            self.grown |= _insert_sorted(self.channels, plane.key.channel)
            self.grown |= _insert_sorted(self.slices, plane.key.z)
            self.grown |= _insert_sorted(self.frames, plane.key.frame)
            self.processors[plane.key] = plane.processor
            self.labels[plane.key] = plane.label
            self.changed.add(plane.key)
            if plane.limits is not None:
                self.channel_ranges.setdefault(plane.key.channel, plane.limits)  # set once per channel
            if plane.sequence >= self.last_sequence:
                self.last, self.last_sequence = plane.key, plane.sequence

    def _check_growth(self, planes: list[PreparedPlane]) -> None:
        channels, slices, frames = (
            len(set(self.channels).union(p.key.channel for p in planes)),
            len(set(self.slices).union(p.key.z for p in planes)),
            len(set(self.frames).union(p.key.frame for p in planes)),
        )
        if (channels, slices, frames) == self.sizes:
            return  # known positions: the common case, nothing grows
        positions = channels * slices * frames
        total = positions * self.plane_bytes
        if positions <= MAX_WINDOW_PLANES and (self.max_bytes is None or total <= self.max_bytes):
            return
        limit = (f"{MAX_WINDOW_PLANES} positions" if positions > MAX_WINDOW_PLANES else
                 f"{(self.max_bytes or 0) / 2**20:.0f} MiB of pixels, half the JVM's maximum heap "
                 "(raise it with POLYSTORE_JVM_OPTIONS=-Xmx..., e.g. -Xmx16g)")
        raise LimitExceededError(
            f"'{planes[0].label}' would grow window '{self.title}' to {channels} channels x "
            f"{slices} z x {frames} frames of {self.width}x{self.height} {self.stored} "
            f"({positions} positions, {total / 2**20:.0f} MiB), over this bridge's limit of {limit}. "
            "A window holds every combination of the channels, z and frames its items name: "
            "check the indices in the items' names or headers, or send such planes to windows "
            "of their own (paths without a plate position)"
        )

    def apply(self) -> None:
        """Bring the ImagePlus up to date and draw it (see :meth:`sync` and :meth:`draw`)."""
        self.draw_scheduled = False
        if self.closed:
            return  # closed by the bridge while this update waited
        started = time.perf_counter()
        shown = self.sync()
        self.draw(just_shown=shown)
        self.update_cost = time.perf_counter() - started

    def sync(self) -> bool:
        """Create, grow (new positions) or update in place (known positions) the ImagePlus;
        whether it was created and shown now (its new window drew the current plane).

        An image closed in ImageJ is made again, with every plane, when new planes arrive
        for it (not before: closing it is not undone by a question about the windows)."""
        if self.imp is not None and closed_in_imagej(self.imp):
            self.imp, self.stacked = None, set()
            if not self.changed:
                self.grown = False
                return False
            logger.info("window '%s' was closed in ImageJ; new planes for it open it again", self.title)
        created = self.imp is None
        if created:
            self._create()
            self._move_to_newest(update=False)  # a new window draws the newest plane, once
        else:
            if self.grown:
                self._grow()
            stack = self.imp.getStack()
            for key in self.changed & self.stacked:  # known positions: new pixels, same slots
                index = self.stack_index(key)
                stack.setPixels(self.processors[key].getPixels(), index)
                stack.setSliceLabel(self.labels[key], index)
            self._sync_displayed(stack)
        self.grown = False
        self.changed.clear()
        if self.show and self.imp.getWindow() is None:
            self._expect_paint()
            show_in_stack_window(self.imp)  # first time, or the user closed the window: show it again
            return created
        return False

    def _sync_displayed(self, stack: Any) -> None:
        """Point the processors ImageJ displays at the stack's current pixel arrays.

        Before it moves to another slice, ``ImagePlus.setSlice`` writes the pixels of the
        processor it shows back into the stack at its current index. After planes were
        inserted that index holds another position, and after a plane was replaced the
        processor holds the old pixels: either way the write-back put one position's pixels
        into another's (seen as wrong planes in about 1 window in 4 when planes of a well
        arrived out of order). Pointed at what the stack now holds at that index, the
        write-back is a no-op, and the window shows the new pixels. A CompositeImage shows
        one processor per channel for its current z and t, read again only when z or t change.
        """
        imp = self.imp
        _disarm_write_back(imp, stack)
        if imp.isComposite():
            z, t = int(imp.getSlice()), int(imp.getFrame())
            for channel in range(1, int(imp.getNChannels()) + 1):
                processor = imp.getProcessor(channel)
                if processor is not None:
                    processor.setPixels(stack.getPixels(int(imp.getStackIndex(channel, z, t))))

    def draw(self, *, just_shown: bool = False) -> None:
        """Move the sliders to the newest plane and redraw the window.

        ``just_shown``: the image was made and shown in this update, and its window drew the
        current plane, so only moving the sliders draws (a second updateAndDraw of a 2048x2048 plane costs
        20 ms of the event thread, a fifth of a new window's cost)."""
        self.last_draw = time.monotonic()
        if self.imp is None:
            return
        shown = self.imp.getWindow() is not None
        if shown:
            self._expect_paint()
        if self._move_to_newest(update=shown):
            return  # moving a shown image's sliders redrew it, new pixels included
        if shown and not just_shown:
            self.imp.updateAndDraw()  # no window (headless): nothing to draw

    def _expect_paint(self) -> None:
        """Note the newest plane as the one the next paint of the canvas shows.

        The canvas's ``painted`` flag is cleared first: every paint after this point draws the
        image as it is now or newer (the event thread paints, and changes it), so once the flag
        is set again the newest plane has been drawn (:meth:`describe`)."""
        if self.last is None:
            return
        window = self.imp.getWindow() if self.imp is not None else None
        if window is not None and window.getCanvas() is not None:
            _painted_field().setBoolean(window.getCanvas(), False)
        self.drawing = (self.last_sequence, self.labels.get(self.last, ""))

    def _move_to_newest(self, *, update: bool) -> bool:
        """Put the image at the newest plane placed; whether it moved with ``update`` (which
        redraws a shown image: a second updateAndDraw would draw it all again, 20 ms at 2048^2)."""
        if self.last is None:
            return False
        position = (
            self.channels.index(self.last.channel) + 1,
            self.slices.index(self.last.z) + 1,
            self.frames.index(self.last.frame) + 1,
        )
        current = (int(self.imp.getChannel()), int(self.imp.getSlice()), int(self.imp.getFrame()))
        if position == current:
            return False
        if update:
            self.imp.setPosition(*position)
        else:
            self.imp.setPositionWithoutUpdate(*position)
        return update

    def _order(self) -> list[PlaneKey]:
        """Every position of the window in ImageJ's stack order (channel fastest, then z, then t)."""
        return [
            PlaneKey(channel, z, frame)
            for frame in self.frames for z in self.slices for channel in self.channels
        ]

    def _processor(self, key: PlaneKey) -> Any:
        """The plane at ``key``: the one received, else the window's one black plane."""
        processor = self.processors.get(key)
        if processor is not None:
            return processor
        if self.blank is None:
            self.blank = next(iter(self.processors.values())).createProcessor(self.width, self.height)
        return self.blank

    def _stack(self) -> Any:
        stack = java_class("ij.ImageStack")(self.width, self.height)
        for key in self._order():
            stack.addSlice(self.labels.get(key, ""), self._processor(key))
        self.stacked = set(self._order())
        return stack

    def _create(self) -> None:
        channels, slices, frames = self.sizes
        imp = java_class("ij.ImagePlus")(self.title, self._stack())
        imp.setDimensions(channels, slices, frames)
        imp.setOpenAsHyperStack(True)
        if self.signed16:
            imp.getCalibration().setSigned16BitCalibration()
        imp.setProp(DTYPE_PROPERTY, str(self.dtype.newbyteorder("=")))
        # a CompositeImage from the start, even with one channel, so that channels arriving
        # later grow this same image instead of replacing it by a new one
        self.imp = make_composite(imp, "composite" if channels > 1 else "grayscale")
        self._apply_ranges()
        self._place_rois()

    def _grow(self) -> None:
        """Insert the new positions into the image's own stack; same ImagePlus, same window.

        ``ImagePlus.setStack`` and ``setDimensions`` would make ImageJ build a new StackWindow
        (about 0.1 s) whenever a shown hyperstack's C, Z or T changes; inserting the planes
        (references, no pixel copies) and updating the window's sliders costs about a
        millisecond. Known positions keep their relative order when positions are added,
        so walking the new order and inserting each new position after its predecessor
        places every plane where ``stack_index`` says it is.
        """
        stack = self.imp.getStack()
        for index, key in enumerate(self._order()):
            if key not in self.stacked:
                stack.addSlice(self.labels.get(key, ""), self._processor(key), index)
                self.stacked.add(key)
        _disarm_write_back(self.imp, stack)  # before anything below moves the slice
        channels, slices, frames = self.sizes
        previous_channels = int(self.imp.getNChannels())
        set_dimensions_in_place(self.imp, channels, slices, frames)
        taken = (int(self.imp.getNChannels()), int(self.imp.getNSlices()), int(self.imp.getNFrames()))
        if taken != self.sizes:
            raise UnsupportedDataError(
                f"ImageJ took {taken} instead of {self.sizes} as the C, Z, T of '{self.title}'"
            )
        if channels != previous_channels:
            self.imp.reset()  # the CompositeImage's LUTs and channel processors for the new count
            if previous_channels == 1:
                self.imp.setMode(java_class("ij.CompositeImage").COMPOSITE)
        self._apply_ranges()
        self._place_rois()  # positions were inserted: a ROI's plane may have moved

    def _apply_ranges(self) -> None:
        for channel, limits in self.channel_ranges.items():
            set_channel_display_range(self.imp, self.channels.index(channel), limits)

    def track_rois(self, rois: list[TrackedRoi]) -> None:
        """Keep ``rois`` on their planes (and on this window's image) from now on."""
        self.rois.extend(rois)
        self._place_rois(rois)

    def _place_rois(self, rois: list[TrackedRoi] | None = None) -> None:
        for tracked in self.rois if rois is None else rois:
            if tracked.key is not None:
                tracked.roi.setPosition(*self.position_of(tracked.key))
            if self.imp is not None:
                tracked.roi.setImage(self.imp)

    def image(self) -> Any:
        """The ImagePlus, or None while there is none (not made yet, or closed in ImageJ)."""
        return None if self.imp is None or closed_in_imagej(self.imp) else self.imp

    def describe(self) -> dict[str, Any] | None:
        """What the ``windows`` op reports (:func:`describe_imageplus`), with the newest plane
        the canvas has painted: ``drawn`` (its label, the item's path) and ``drawn_sequence``
        (its place in arrival order); None while the image is not there (closed, not made)."""
        if self.image() is None:
            return None
        window = self.imp.getWindow()
        if self.drawing is not None and window is not None and canvas_painted(window.getCanvas()):
            self.drawn, self.drawing = self.drawing, None
        described = describe_imageplus(self.imp)
        described["painted"] = self.drawn is not None or described["painted"]
        described["drawn"] = self.drawn[1] if self.drawn is not None else None
        described["drawn_sequence"] = self.drawn[0] if self.drawn is not None else None
        return described


def _display_ranges(imp: Any) -> list[list[float]]:
    """[min, max] shown for each channel (a CompositeImage keeps one LUT per channel)."""
    if imp.isComposite():
        return [[float(lut.min), float(lut.max)] for lut in imp.getLuts()]
    return [[float(imp.getDisplayRangeMin()), float(imp.getDisplayRangeMax())]]


def describe_imageplus(imp: Any) -> dict[str, Any]:
    """What the ``windows`` control op reports about an image (JSON values only)."""
    sizes = imageplus_sizes(imp)
    bit_depth = int(imp.getBitDepth())
    window = imp.getWindow()
    recorded = recorded_dtype(imp)
    if bit_depth == 24:
        dtype = "uint8"
    elif recorded is not None:
        dtype = str(recorded)
    elif imp.getCalibration().isSigned16Bit():
        dtype = "int16"
    else:
        dtype = str(BIT_DEPTH_DTYPES.get(bit_depth, np.dtype(np.float32)))
    return {
        "title": str(imp.getTitle()),
        "width": sizes["X"], "height": sizes["Y"],
        "channels": sizes["C"], "slices": sizes["Z"], "frames": sizes["T"],
        "bit_depth": bit_depth,
        "dtype": dtype,
        "axes": imageplus_axes(imp),
        "composite": bool(imp.isComposite()),
        "display_ranges": _display_ranges(imp),
        "visible": window is not None and bool(window.isVisible()),
        "painted": window is not None and canvas_painted(window.getCanvas()),
        "id": int(imp.getID()),
    }
