"""Streamed items assembled into hyperstack windows, updated in place as frames arrive.

Grouping (which window, which C, Z and T) is :mod:`polystore_fiji.placement`'s: one window per
well of a plate (its labels in a window of their own), the item's channel as C, its z as Z and
its field and t as T. An item with more than two dimensions brings several planes (axes from
``metadata["axes"]`` or, by default, the trailing ``TZCYX``), placed from the item's own
position onwards. A window itself (its stack, growth in place, ROIs, draws) is
:class:`polystore_fiji.window.HyperstackWindow`.

All ImageJ work for the windows happens on AWT's event thread: the receiver thread converts
pixels into Java arrays and queues the update (:meth:`HyperstackAssembler.submit`), so the
next frame is received and converted while the event thread draws. ROIs for a window go
through the same queue (:meth:`HyperstackAssembler.in_order`), behind the planes queued before
them. Updating a window (growing its stack and sliders, redrawing) is capped at
``max_draw_rate`` (15 per second per window), and at a quarter of the event thread's time
(large images update less often): frames that arrive meanwhile go in together with the next
update, the newest frame is always shown soon after it arrived (1/15 s for small images, 4x an
update's cost for large), and :meth:`HyperstackAssembler.flush` (run before the bridge answers
any question about its windows) brings every window up to date at once.
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
from polystore_fiji.convert import processor_from_plane, sampled_display_range, stored_hyperstack
from polystore_fiji.placement import PlaneKey, WindowPlacer, shifted
from polystore_fiji.window import HyperstackWindow, PreparedPlane, TrackedRoi

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
class HyperstackAssembler:
    """Turns stream items into hyperstack windows (see the module's docstring)."""

    show: bool = True
    placer: WindowPlacer = field(default_factory=WindowPlacer)
    """Which window and which C, Z, T an item goes to."""
    run_later: Callable[[Callable[[], None]], None] | None = None
    """Queues a function for the event thread without waiting; None: run it now."""
    on_placed: Callable[[str, BaseException | None], None] | None = None
    """Called (on the event thread) with the window title after each item is placed, and the
    error when placing it failed (so that every item submitted is reported once)."""
    max_draw_rate: float = DEFAULT_DRAW_RATE
    """Redraws per second and window, at most: every frame lands in the stack, the newest is
    always drawn in the end, but a 2048x2048 redraw costs ImageJ 50-60 ms here, so drawing
    each frame of a fast stream would limit the stream to the drawing rate."""
    max_window_bytes: int | None = None
    """Pixels one window's stack may hold (:attr:`HyperstackWindow.max_bytes`); None: no limit."""
    windows: dict[str, HyperstackWindow] = field(default_factory=dict)
    _rois: dict[str, list[TrackedRoi]] = field(default_factory=dict)
    """ROIs for windows that do not exist yet, by title (they join the window when it does)."""
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
        self, array: np.ndarray, path: str, metadata: Mapping[str, Any], sequence: int = 0,
        kind: str = "image",
    ) -> tuple[str, list[PreparedPlane], Any]:
        """Convert an item's planes into ImageJ processors (any thread); its window title too."""
        if array.ndim < 2:
            raise UnsupportedDataError(f"'{path}' has shape {array.shape}: images have at least 2 dimensions")
        placement = self.placer.place(path, metadata, kind)
        planes, dtype, signed16 = item_planes(array, metadata, placement.origin)
        if not planes or 0 in planes[0][1].shape:
            raise UnsupportedDataError(
                f"'{path}' has shape {array.shape}: an image has at least one pixel along Y and X "
                "(and one plane)"
            )
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
        self, array: np.ndarray, path: str, metadata: Mapping[str, Any], sequence: int | None = None,
        kind: str = "image",
    ) -> str:
        """Convert now, place on the event thread soon (at most a few updates queued); the title.

        ``sequence``: the item's place in arrival order (:meth:`next_sequence`), when it was
        taken before a conversion that may finish out of order; else taken now. ``kind``:
        ``image`` or ``labels`` (a window of their own, :data:`placement.KIND_TITLES`)."""
        if sequence is None:
            sequence = self.next_sequence()
        title, planes, (dtype, signed16) = self.prepare(array, path, metadata, sequence, kind)
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
                logger.warning("could not show '%s' in window '%s': %s", path, title, error)
                if self.on_placed is not None:
                    self.on_placed(title, error)
            finally:
                self._queued_bytes.give(size)

        self.in_order(place)
        return title

    def in_order(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the event thread after every update queued so far (now, headless)."""
        if self.run_later is None:
            function()
            return
        with self._lock:
            self._ready.append(function)
            if self._drain_queued:
                return  # the event already on its way takes this one too
            self._drain_queued = True
        # one event runs every function queued by then (an event per frame cost a Java proxy,
        # an event and a call back into Python each)
        self.run_later(self._drain)

    def _drain(self) -> None:
        """Run every queued function, in the order queued (event thread)."""
        while True:
            with self._lock:
                if not self._ready:
                    self._drain_queued = False
                    return
                batch = list(self._ready)
                self._ready.clear()
            for function in batch:
                function()

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
            rois = window.rois
            self.close(title)
            self._rois[title] = rois  # they go on to the new window
            window = None
        if window is None:
            window = HyperstackWindow(title, width, height, stored, dtype, signed16, self.show,
                                      self.max_window_bytes)
            window.put(planes)  # refused planes (too many positions) leave no window behind
            window.rois = self._rois.pop(title, [])
            self.windows[title] = window
        else:
            window.put(planes)
        if apply:
            self._update_soon(window)
        if self.on_placed is not None:
            self.on_placed(title, None)

    def _apply(self, window: HyperstackWindow) -> None:
        try:
            window.apply()
        except Exception:
            if window.imp is None:  # never made: nothing half made stays to fail every later question
                self.close(window.title)
            raise

    def close(self, title: str) -> None:
        """Close window ``title`` and forget it (event thread): an update still due does nothing."""
        with self._placing:
            window = self.windows.pop(title, None)
            self._rois.pop(title, None)
            if window is None:
                return
            window.closed = True
            if window.image() is not None:
                window.imp.changes = False
                window.imp.close()

    def track_rois(self, title: str, rois: list[TrackedRoi]) -> None:
        """Keep ``rois`` on their planes of window ``title`` (event thread, through :meth:`in_order`)."""
        with self._placing:
            window = self.windows.get(title)
            if window is None:
                self._rois.setdefault(title, []).extend(rois)
                for tracked in rois:
                    if tracked.key is not None:
                        tracked.roi.setPosition(0, 0, 0)  # every plane until the window has its own
            else:
                window.track_rois(rois)

    def forget_rois(self) -> None:
        """Stop tracking every ROI (the RoiManager was cleared; event thread)."""
        with self._placing:
            self._rois.clear()
            for window in self.windows.values():
                window.rois.clear()

    def flush(self) -> None:
        """Bring every window's image up to date now (event thread): before answering a
        question about the windows, so that the answer includes every frame placed so far.

        The newest planes are drawn by an event of their own, queued now: right after the
        answer, not in its time (a 2048x2048 redraw costs the event thread 10-60 ms), and not
        at the display rate either (a question is where a pipeline stops to look, as at the end
        of a stream). A window that fails is logged and left as it is: one window must not fail
        every answer about the others."""
        with self._placing:
            for window in list(self.windows.values()):
                try:
                    if (window.changed or window.grown or window.imp is None) and not window.sync():
                        self._schedule(window, 0.0)  # (a window shown just now drew its newest plane)
                except Exception:
                    logger.exception("could not bring window '%s' up to date", window.title)

    def describe(self) -> list[dict[str, Any]]:
        """What the ``windows`` op reports about each window there is (event thread, after :meth:`flush`)."""
        with self._placing:
            described = (window.describe() for window in self.windows.values())
            return [d for d in described if d is not None]

    def images(self) -> list[Any]:
        """The ImagePlus of every window there is (not those closed in ImageJ)."""
        with self._placing:
            return [imp for imp in (w.image() for w in self.windows.values()) if imp is not None]

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
            self._apply(window)
            return
        self._schedule(window, wait)

    def _schedule(self, window: HyperstackWindow, wait: float) -> None:
        """Update and draw ``window`` on the event thread in ``wait`` seconds (once, whatever
        arrives meanwhile); at once where there is no event thread (headless: no drawing)."""
        run_later = self.run_later
        if run_later is None:
            self._apply(window)
            return
        window.draw_scheduled = True

        def draw_now() -> None:
            if not window.draw_scheduled:
                return  # an update came first
            try:
                self._apply(window)  # (nothing, for a window closed meanwhile)
            except Exception:
                logger.exception("could not update window '%s'", window.title)

        if wait <= 0:
            run_later(draw_now)  # (a draw due later finds this one done, and does nothing)
            return
        timer = threading.Timer(wait, lambda: run_later(draw_now))
        timer.daemon = True
        timer.start()

    def image(self, title: str) -> Any:
        """The ImagePlus of window ``title`` (None if there is none, or it was closed in ImageJ)."""
        window = self.windows.get(title)
        return window.image() if window is not None else None
