"""From any thread to the GUI thread: the newest item per plane, waiting to be shown."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from polystore.streaming.protocol import StreamItem
from polystore_napari.placement import ComponentParser, Placement


class Coalescer:
    """Items from the receiver thread, newest per plane, waiting for the GUI thread.

    ``put`` runs on the receiver thread and never blocks on the GUI; ``take`` hands the GUI
    thread what arrived since its last call. A frame replaced before it was shown counts in
    ``replaced``.
    """

    def __init__(self, parser: ComponentParser | None = None) -> None:
        self.parser = parser or ComponentParser()
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
        with self._lock:
            key = placement.plane_key
            if key in self._pending:
                self.replaced += 1
                del self._pending[key]  # re-inserted last: items keep their arrival order
            self._pending[key] = (placement, item)

    def take(self) -> list[tuple[Placement, StreamItem]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return list(pending.values())

    def peek(self, path: str) -> np.ndarray | None:
        """The newest pending array for ``path`` (not shown yet), or None."""
        with self._lock:
            for _placement, item in reversed(self._pending.values()):
                if item.path == path and item.kind in ("image", "labels"):
                    return item.array
        return None

    def __len__(self) -> int:
        return len(self._pending)
