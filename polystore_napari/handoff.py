"""From any thread to the GUI thread: the newest item per plane, waiting to be shown."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from polystore.streaming.protocol import StreamItem
from polystore_napari.placement import ComponentParser, Placement

BORROWED_MAX = 2
"""Views of a sender's memory held at once, waiting to be shown: half its ring by default
(``DEFAULT_SHM_SLOTS``), so that holding them never makes a blocking sender wait for the GUI."""


class Coalescer:
    """Items from the receiver thread, newest per plane, waiting for the GUI thread.

    ``put`` runs on the receiver thread and never blocks on the GUI; ``take`` hands the GUI
    thread what arrived since its last call. A frame replaced before it was shown counts in
    ``replaced``.

    ``borrowed=True``: items arrive as views of the sender's shared memory (a zero-copy
    receiver). A plane that replaces one still waiting stays a view (up to ``BORROWED_MAX``
    at once): when a newer one replaces it in turn, its slot goes back uncopied, and ``take``
    copies the one that is shown. Anything else is copied on arrival, as a copying receiver
    does. So a stream faster than the display is copied once per frame shown, not per frame
    sent, and no layer holds a sender's slot.
    """

    def __init__(self, parser: ComponentParser | None = None, *, borrowed: bool = False) -> None:
        self.parser = parser or ComponentParser()
        self.borrowed = borrowed
        self._pending: dict[tuple[Any, ...], tuple[Placement, StreamItem]] = {}
        self._lock = threading.Lock()
        self.replaced = 0
        self.failed = 0
        self.last_error: str | None = None

    def put(self, item: StreamItem) -> None:
        try:
            placement = self.parser.place(item)
        except Exception as error:
            self.failed += 1
            self.last_error = f"{item.path}: {error}"
            return
        key = placement.plane_key
        if self.borrowed and _borrowed(item.array):
            with self._lock:
                keep = key in self._pending and sum(
                    1 for other, (_p, waiting) in self._pending.items()
                    if other != key and _borrowed(waiting.array)
                ) < BORROWED_MAX
            if not keep:
                item.array = item.array.copy()  # the slot goes back when the receiver drops the view
        with self._lock:
            if key in self._pending:
                self.replaced += 1
                del self._pending[key]  # re-inserted last: items keep their arrival order
            self._pending[key] = (placement, item)

    def take(self) -> list[tuple[Placement, StreamItem]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        taken = list(pending.values())
        for _placement, item in taken if self.borrowed else ():
            if _borrowed(item.array):
                item.array = item.array.copy()  # the view goes: its slot returns to the sender
        return taken

    def peek(self, path: str) -> np.ndarray | None:
        """The newest pending array for ``path`` (not shown yet), or None."""
        with self._lock:
            for _placement, item in reversed(self._pending.values()):
                if item.path == path and item.kind in ("image", "labels"):
                    return item.array
        return None

    def __len__(self) -> int:
        return len(self._pending)


def _borrowed(array: Any) -> bool:
    """Whether ``array`` is a view of memory it does not own (a zero-copy item's)."""
    return isinstance(array, np.ndarray) and not array.flags.owndata
