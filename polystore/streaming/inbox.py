"""A pull backend's end: items received in the caller's thread, kept by path until loaded."""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING

from polystore.streaming.errors import StreamConfigError, StreamTimeoutError, check_settings
from polystore.streaming.protocol import StreamItem

if TYPE_CHECKING:
    from polystore.streaming.inbound import Inbound

logger = logging.getLogger("polystore.streaming.receiver")  # the receiver's log, as before the split

DEFAULT_INBOX_ITEMS = 64
DEFAULT_INBOX_BYTES = 256 * 1024**2


class PathInbox:
    """Items received in the caller's thread, kept by path until loaded (a pull backend's end).

    Waiting for one path keeps the items of others that arrive first, at most ``max_items``
    items and ``max_bytes`` bytes of them: beyond either, the oldest kept item is dropped (a
    sender streams faster than ``load`` asks for it; what is newest is what a reader wants),
    counted in ``dropped`` and logged (at the 1st, 2nd, 4th, 8th... drop).
    """

    def __init__(self, inbound: Inbound, recv_timeout: float, *, max_items: int = DEFAULT_INBOX_ITEMS,
                 max_bytes: int = DEFAULT_INBOX_BYTES) -> None:
        try:
            check_settings(max_items=(max_items, 0, True), max_bytes=(max_bytes, 0, True))
        except StreamConfigError as error:
            raise StreamConfigError(f"inbox limits: {error}") from None
        self.inbound = inbound
        self.recv_timeout = recv_timeout
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0
        """Items kept for a path nobody loaded, dropped to stay within the limits."""
        self.kept_bytes = 0
        # arrival order over every path, so the oldest is dropped first; each path's own queue
        # is the same items in the same order
        self._order: collections.deque[StreamItem] = collections.deque()
        self._items: dict[str, collections.deque[StreamItem]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def receive(self, timeout: float | None = None) -> StreamItem | None:
        """The next item of any path (kept ones first), or None after ``timeout`` seconds."""
        if self._order:
            return self._pop(self._order[0].path)
        return self.inbound.receive(self.recv_timeout if timeout is None else timeout)

    def take(self, path: str, timeout: float | None = None) -> StreamItem:
        """The next item streamed as ``path``, keeping (within the limits) others that arrive first."""
        timeout = self.recv_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if path in self._items:
                return self._pop(path)
            received = self.inbound.receive(max(0.0, deadline - time.monotonic()))
            if received is None:
                raise StreamTimeoutError(
                    f"Nothing was streamed as '{path}' to {self.inbound.endpoints.data} within {timeout:g} s."
                )
            if received.path == path:
                return received
            self._keep(received)

    def _keep(self, item: StreamItem) -> None:
        self._items.setdefault(item.path, collections.deque()).append(item)
        self._order.append(item)
        self.kept_bytes += item.array.nbytes
        while self._order and (len(self._order) > self.max_items or self.kept_bytes > self.max_bytes):
            oldest = self._order[0]
            self._pop(oldest.path)
            self.dropped += 1
            if self.dropped & (self.dropped - 1):
                continue  # logged at 1, 2, 4, 8... drops: a fast stream must not flood the log
            logger.warning(
                "pull stream: dropped a kept item of %r (%d bytes): more than %d items or %d bytes "
                "wait for paths nobody loaded (%d dropped so far)",
                oldest.path, oldest.array.nbytes, self.max_items, self.max_bytes, self.dropped,
            )

    def _pop(self, path: str) -> StreamItem:
        """The oldest kept item of ``path`` (there is one)."""
        items = self._items[path]
        item = items.popleft()
        if not items:
            del self._items[path]
        self._order.remove(item)  # bounded by max_items; usually the first
        self.kept_bytes -= item.array.nbytes
        return item

    def paths(self) -> list[str]:
        return sorted(self._items)

    def discard(self, path: str) -> None:
        for item in self._items.pop(path, ()):
            self._order.remove(item)
            self.kept_bytes -= item.array.nbytes

    def close(self) -> None:
        self._items.clear()
        self._order.clear()
        self.kept_bytes = 0
        self.inbound.close()
