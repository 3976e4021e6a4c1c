"""Streamed items assembled into hyperstack windows, updated in place as frames arrive.

Grouping (which window, which C, Z and T) is :mod:`polystore_fiji.placement`'s: one window per
well of a plate, the item's channel as C, its z as Z and its field and t as T. An item with
more than two dimensions brings several planes (axes from ``metadata["axes"]`` or, by
default, the trailing ``TZCYX``), placed from the item's own position onwards.

A window is created once, as a CompositeImage (grayscale while it has one channel, composite
with ImageJ's channel LUTs once it has several). A plane that arrives again replaces its
pixels in place; a new channel, z or (site, t) index grows the stack around the existing
planes (no pixel copies) and the same ImagePlus gets the new dimensions in the same window,
whose C/Z/T sliders are rebuilt for them (ImageJ itself would build a new window). Each channel's
display range is set once, from the first plane of that channel.

All ImageJ work for the windows happens on AWT's event thread: the receiver thread converts
pixels into Java arrays and queues the update (:meth:`HyperstackAssembler.submit`), so the
next frame is received and converted while the event thread draws. Updating a window (growing
its stack and sliders, redrawing) is capped at ``max_draw_rate`` (15 per second per window),
and at a quarter of the event thread's time (large images update less often):
frames that arrive meanwhile go in together with the next update, the newest frame is always
shown soon after it arrived (1/15 s for small images, 4x an update's cost for large),
and :meth:`HyperstackAssembler.flush` (run before the
bridge answers any question about its windows) brings every window up to date at once.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore_fiji.convert import (
    DTYPE_PROPERTY,
    make_composite,
    processor_from_plane,
    sampled_display_range,
    set_channel_display_range,
    stored_hyperstack,
)
from polystore_fiji.jvm import java_class
from polystore_fiji.placement import Frame, Ordinal, PlaneKey, WindowPlacer, shifted

logger = logging.getLogger(__name__)

MAX_QUEUED_BYTES = 256 * 2**20
"""Pixels converted and waiting for the event thread, at most (more waits, one update always
passes): a new 2048x2048 window costs the event thread 20-150 ms, during which a stream of
such frames brings 10-60 more; a smaller bound stopped the converters, then the sender. These
pixels are the windows' anyway once placed; the bound only keeps a stuck event thread (a
modal dialog) from taking the heap."""
RGB_SAMPLES = (3, 4)
DEFAULT_DRAW_RATE = 15.0
UPDATE_DUTY_DIVISOR = 4.0


def item_axes(array: np.ndarray, metadata: Mapping[str, Any]) -> str | None:
    """``metadata["axes"]``, or ``YXC`` for an RGB(A) image (Y, X, 3|4 uint8), else None (default)."""
    axes = metadata.get("axes")
    if isinstance(axes, str):
        return axes
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[-1] in RGB_SAMPLES and array.shape[0] > 4:
        return "YXC"
    return None


def item_planes(
    array: np.ndarray, metadata: Mapping[str, Any], origin: PlaneKey
) -> tuple[list[tuple[PlaneKey, np.ndarray]], np.dtype[Any], bool]:
    """The planes of one item with their keys (from ``origin`` on: C, Z and the frame's t), in
    the dtype ImageJ holds; the item's dtype; whether it is shown as signed 16-bit."""
    hyperstack, rule = stored_hyperstack(array, item_axes(array, metadata))
    frames, slices, channels = hyperstack.shape[:3]
    field_, t0, *others = origin.frame
    planes = [
        (PlaneKey(shifted(origin.channel, c), shifted(origin.z, z), (field_, shifted(t0, t), *others)),
         hyperstack[t, z, c])
        for t in range(frames) for z in range(slices) for c in range(channels)
    ]
    return planes, array.dtype, rule.signed16


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


_internals: _StackWindowInternals | None = None


def _stack_window_internals() -> _StackWindowInternals:
    global _internals
    if _internals is None:
        _internals = _StackWindowInternals()
    return _internals


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


class _Budget:
    """A number of bytes threads take and give back; taking waits while the rest would not
    cover it (unless nothing is taken: one item always passes, however large)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    def take(self, size: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size

    def give(self, size: int) -> None:
        with self._changed:
            self.used -= size
            self._changed.notify_all()


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
class HyperstackWindow:
    """One window's ImagePlus and the order of its planes. Methods run on the event thread."""

    title: str
    width: int
    height: int
    stored: np.dtype[Any]
    dtype: np.dtype[Any]
    signed16: bool
    show: bool
    channels: list[Ordinal] = field(default_factory=list)
    slices: list[Ordinal] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    processors: dict[PlaneKey, Any] = field(default_factory=dict)
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
    last_draw: float = float("-inf")
    draw_scheduled: bool = False
    update_cost: float = 0.0
    """Seconds the last :meth:`apply` took on the event thread."""

    def fits(self, width: int, height: int, stored: np.dtype[Any]) -> bool:
        return (width, height, stored) == (self.width, self.height, self.stored)

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.channels), len(self.slices), len(self.frames)

    def stack_index(self, key: PlaneKey) -> int:
        """1-based position in ImageJ's stack (channel fastest, then z, then t)."""
        channels, slices, _ = self.sizes
        c, z, t = self.channels.index(key.channel), self.slices.index(key.z), self.frames.index(key.frame)
        return 1 + c + z * channels + t * channels * slices

    def put(self, planes: list[PreparedPlane]) -> None:
        """Record ``planes``; :meth:`apply` brings the ImagePlus up to date with all recorded so far.

        Planes that arrive while the event thread is busy are recorded first and placed
        together, with one redraw (see :meth:`HyperstackAssembler._update_soon`).
        """
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

    def apply(self) -> None:
        """Bring the ImagePlus up to date and draw it (see :meth:`sync` and :meth:`draw`)."""
        self.draw_scheduled = False
        started = time.perf_counter()
        shown = self.sync()
        self.draw(just_shown=shown)
        self.update_cost = time.perf_counter() - started

    def sync(self) -> bool:
        """Create, grow (new positions) or update in place (known positions) the ImagePlus;
        whether it was created and shown now (its new window drew the current plane)."""
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
        if self._move_to_newest(update=shown):
            return  # moving a shown image's sliders redrew it, new pixels included
        if shown and not just_shown:
            self.imp.updateAndDraw()  # no window (headless): nothing to draw

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
        processor = self.processors.get(key)
        if processor is None:  # not arrived yet: black until it does
            template = next(iter(self.processors.values()))
            processor = template.createProcessor(self.width, self.height)
            self.processors[key] = processor
        return processor

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

    def _apply_ranges(self) -> None:
        for channel, limits in self.channel_ranges.items():
            set_channel_display_range(self.imp, self.channels.index(channel), limits)


@dataclass
class HyperstackAssembler:
    """Turns stream items into hyperstack windows (see the module's docstring)."""

    show: bool = True
    placer: WindowPlacer = field(default_factory=WindowPlacer)
    """Which window and which C, Z, T an item goes to."""
    run_on_edt: Callable[[Callable[[], Any]], Any] | None = None
    """Runs a function on the event thread and waits (``jvm.on_edt``); None: the calling thread."""
    run_later: Callable[[Callable[[], None]], None] | None = None
    """Queues a function for the event thread without waiting; None: run it now."""
    on_placed: Callable[[str, BaseException | None], None] | None = None
    """Called (on the event thread) with the window title after each item is placed, and the
    error when placing it failed (so that every item submitted is reported once)."""
    max_draw_rate: float = DEFAULT_DRAW_RATE
    """Redraws per second and window, at most: every frame lands in the stack, the newest is
    always drawn in the end, but a 2048x2048 redraw costs ImageJ 50-60 ms here, so drawing
    each frame of a fast stream would limit the stream to the drawing rate."""
    windows: dict[str, HyperstackWindow] = field(default_factory=dict)
    _queued_bytes: _Budget = field(default_factory=lambda: _Budget(MAX_QUEUED_BYTES))
    _queued: dict[str, int] = field(default_factory=dict)
    _ready: collections.deque[Callable[[], None]] = field(default_factory=collections.deque)
    """Updates converted and waiting for the event thread, in order."""
    _drain_queued: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _placing: threading.RLock = field(default_factory=threading.RLock)
    """Held while windows change: only the event thread places, except headless, where the
    converting threads place themselves."""
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def next_sequence(self) -> int:
        """A number for an item in order of arrival (call it where items arrive in order)."""
        with self._lock:
            return next(self._arrivals)

    def prepare(
        self, array: np.ndarray, path: str, metadata: Mapping[str, Any], sequence: int = 0
    ) -> tuple[str, list[PreparedPlane], Any]:
        """Convert an item's planes into ImageJ processors (any thread); its window title too."""
        if array.ndim < 2:
            raise UnsupportedDataError(f"'{path}' has shape {array.shape}: images have at least 2 dimensions")
        placement = self.placer.place(path, metadata)
        planes, dtype, signed16 = item_planes(array, metadata, placement.origin)
        title = placement.title
        window = self.windows.get(title)  # read here, changed on the event thread: a hint only
        prepared = []
        for key, plane in planes:
            processor = processor_from_plane(plane)
            limits = None
            if window is None or key.channel not in window.channel_ranges:
                # until its window has a range for the channel, every plane brings one (from
                # a sample of rows); the window keeps the first it places and never resets it
                limits = sampled_display_range(plane)
                # ImageJ's own range: the first slice of a stack would be scanned for it
                processor.setMinAndMax(*limits)
            stored = plane.dtype.newbyteorder("=")
            prepared.append(PreparedPlane(key, processor, path, limits, sequence, plane.shape, stored))
        return title, prepared, (dtype, signed16)

    def submit(
        self, array: np.ndarray, path: str, metadata: Mapping[str, Any], sequence: int | None = None
    ) -> str:
        """Convert now, place on the event thread soon (at most a few updates queued); the title.

        ``sequence``: the item's place in arrival order (:meth:`next_sequence`), when it was
        taken before a conversion that may finish out of order; else taken now."""
        if sequence is None:
            sequence = self.next_sequence()
        title, planes, (dtype, signed16) = self.prepare(array, path, metadata, sequence)
        with self._lock:
            self._queued[title] = self._queued.get(title, 0) + 1
        size = sum(plane.nbytes for plane in planes)
        self._queued_bytes.take(size)

        def place() -> None:
            try:
                with self._lock:
                    self._queued[title] -= 1
                    apply = self._queued[title] == 0  # else a later update of this window applies both
                self.place(title, planes, dtype, signed16, apply=apply)
            except Exception as error:
                logger.exception("could not show '%s' in window '%s'", path, title)
                if self.on_placed is not None:
                    self.on_placed(title, error)
            finally:
                self._queued_bytes.give(size)

        if self.run_later is None:
            place()
        else:
            self._hand_over(place)
        return title

    def _hand_over(self, place: Callable[[], None]) -> None:
        """Queue ``place`` for the event thread: one event places every update queued by then
        (an event per frame cost a Java proxy, an event and a call back into Python each)."""
        with self._lock:
            self._ready.append(place)
            if self._drain_queued:
                return  # the event already on its way takes this one too
            self._drain_queued = True
        if self.run_later is not None:
            self.run_later(self._drain)

    def _drain(self) -> None:
        """Place every queued update, in the order queued (event thread)."""
        while True:
            with self._lock:
                if not self._ready:
                    self._drain_queued = False
                    return
                batch = list(self._ready)
                self._ready.clear()
            for place in batch:
                place()

    def place(
        self, title: str, planes: list[PreparedPlane], dtype: np.dtype[Any], signed16: bool,
        *, apply: bool = True,
    ) -> None:
        """Put prepared planes into their window (creating it the first time); event thread."""
        with self._placing:
            self._place(title, planes, dtype, signed16, apply=apply)

    def _place(
        self, title: str, planes: list[PreparedPlane], dtype: np.dtype[Any], signed16: bool,
        *, apply: bool,
    ) -> None:
        height, width = planes[0].shape
        stored = planes[0].stored
        window = self.windows.get(title)
        if window is not None and not window.fits(width, height, stored):
            logger.warning(
                "'%s' changed from %dx%d %s to %dx%d %s: starting a new window",
                title, window.width, window.height, window.stored, width, height, stored,
            )
            if window.imp is not None:
                window.imp.changes = False
                window.imp.close()
            window = None
        if window is None:
            window = HyperstackWindow(title, width, height, stored, dtype, signed16, self.show)
            self.windows[title] = window
        window.put(planes)
        if apply:
            self._update_soon(window)
        if self.on_placed is not None:
            self.on_placed(title, None)

    def flush(self) -> None:
        """Bring every window's image up to date now (event thread): before answering a
        question about the windows, so that the answer includes every frame placed so far.

        Drawing the newest planes follows at the display rate (:meth:`_update_soon`), not in
        the question's time: a 2048x2048 redraw costs the event thread 10-60 ms, and what the
        window holds is already what the answer says."""
        with self._placing:
            for window in self.windows.values():
                if (window.changed or window.grown or window.imp is None) and not window.sync():
                    self._draw_later(window)  # (a window shown just now drew its newest plane)

    def _draw_later(self, window: HyperstackWindow) -> None:
        """Draw ``window`` within the display rate (see :meth:`_update_soon`), on its own event."""
        if window.draw_scheduled:
            return
        interval = max(1.0 / self.max_draw_rate, UPDATE_DUTY_DIVISOR * window.update_cost)
        self._schedule(window, max(0.0, window.last_draw + interval - time.monotonic()))

    def _update_soon(self, window: HyperstackWindow) -> None:
        """Update and draw the window now if it was not drawn within 1/max_draw_rate s, else
        once, a bit later, with every plane that arrived meanwhile (one grow, one redraw)."""
        if window.draw_scheduled:
            return  # the update already due will take this frame too
        # no more often than max_draw_rate, and the event thread busy with this window at most
        # 1/UPDATE_DUTY_DIVISOR of the time: a 2048x2048 update costs 60 ms in software-drawn
        # windows, and an event thread drawing all the time starves the converting receiver
        interval = max(1.0 / self.max_draw_rate, UPDATE_DUTY_DIVISOR * window.update_cost)
        wait = window.last_draw + interval - time.monotonic()
        if wait <= 0:
            window.apply()
            return
        self._schedule(window, wait)

    def _schedule(self, window: HyperstackWindow, wait: float) -> None:
        """Update and draw ``window`` on the event thread in ``wait`` seconds (once, whatever
        arrives meanwhile); at once where there is no event thread (headless: no drawing)."""
        run_later = self.run_later
        if run_later is None:
            window.apply()
            return
        window.draw_scheduled = True

        def draw_now() -> None:
            if window.draw_scheduled:  # else an update came first
                window.apply()

        timer = threading.Timer(wait, lambda: run_later(draw_now))
        timer.daemon = True
        timer.start()

    def position(self, path: str, metadata: Mapping[str, Any]) -> tuple[int, int, int]:
        """Where an item's channel, z and frame are in its window: 1-based C, Z, T for ImageJ's
        ``Roi.setPosition``; 0 (every plane) for one the window has not got."""
        placement = self.placer.place(path, metadata)
        key = placement.origin
        with self._placing:
            window = self.windows.get(placement.title)
            if window is None:
                return 0, 0, 0
            return (
                window.channels.index(key.channel) + 1 if key.channel in window.channels else 0,
                window.slices.index(key.z) + 1 if key.z in window.slices else 0,
                window.frames.index(key.frame) + 1 if key.frame in window.frames else 0,
            )

    def image(self, title: str) -> Any:
        """The ImagePlus of window ``title`` (None if there is none)."""
        window = self.windows.get(title)
        return window.imp if window is not None else None
