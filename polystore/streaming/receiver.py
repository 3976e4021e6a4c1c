"""The receiving end: a validated loop on its own thread, that any viewer reuses.

:class:`StreamReceiver` runs an :class:`~polystore.streaming.inbound.Inbound` (the socket end:
validation, shared-memory mapping, zero-copy views, acks) on its own thread and hands items
to a callback or an iterator; :class:`~polystore.streaming.inbox.PathInbox` keeps items by
path for ``StreamingBackend(mode="pull").load``. Bad messages are logged with their reason
(rate-limited), counted in ``rejected`` and skipped; the loop keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from polystore.streaming.ackroute import MAX_UNROUTED_PEERS, MAX_UNROUTED_PER_PEER
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import (
    ReceiveTimeoutError,
    StreamConfigError,
    StreamStateError,
    check_settings,
)
from polystore.streaming.inbound import Inbound
from polystore.streaming.inbox import DEFAULT_INBOX_BYTES, DEFAULT_INBOX_ITEMS, PathInbox
from polystore.streaming.protocol import DEFAULT_MAX_BYTES, DEFAULT_SHM_PREFIX, StreamItem
from polystore.streaming.security import CurveKeys

__all__ = [
    "DEFAULT_INBOX_BYTES",
    "DEFAULT_INBOX_ITEMS",
    "MAX_UNROUTED_PEERS",
    "MAX_UNROUTED_PER_PEER",
    "Inbound",
    "PathInbox",
    "StreamReceiver",
]

logger = logging.getLogger(__name__)


class StreamReceiver:
    """A receiver loop on its own thread.

    >>> receiver = StreamReceiver(port=5555).start(lambda item: print(item.path, item.array.shape))
    >>> receiver.stop()

    Without a callback, iterate over the receiver (or call :meth:`get`) for the items.

    ``zero_copy=True``: an item that came through shared memory is a read-only array *inside*
    the sender's slot, not a copy; the slot goes back to the sender when the last array built
    on it is collected. Faster (one copy per frame instead of two), but a consumer that keeps
    items stalls the sender once its ring (``shm_slots``, 4 by default) is held: copy what you keep.

    ``queue_size``: the items kept for :meth:`get` and iteration (at least 1); when nobody takes
    them fast enough the oldest is dropped (counted in ``dropped``).
    """

    def __init__(
        self,
        port: int = 5555,
        host: str = "127.0.0.1",
        *,
        ack_port: int | None = None,
        bind: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        shm_prefixes: Sequence[str] = (DEFAULT_SHM_PREFIX,),
        curve: CurveKeys | None = None,
        queue_size: int = 64,
        zero_copy: bool = False,
    ) -> None:
        try:  # queue.Queue(0) is unbounded: what was meant as a bound would be none
            check_settings(queue_size=(queue_size, 1, True), max_bytes=(max_bytes, 0, True))
        except StreamConfigError as error:
            raise StreamConfigError(f"StreamReceiver: {error}") from None
        self.endpoints = Endpoints(host, port, ack_port)
        self._options: dict[str, Any] = dict(
            bind=bind, max_bytes=max_bytes, shm_prefixes=tuple(shm_prefixes), curve=curve,
            zero_copy=zero_copy,
        )
        self._queue: queue.Queue[StreamItem] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._inbound: Inbound | None = None
        self._error: BaseException | None = None
        self.queue_dropped = 0
        """Items dropped because nobody read the iterator's queue fast enough."""

    # counters, read from any thread
    @property
    def received(self) -> int:
        return self._inbound.received if self._inbound else 0

    @property
    def rejected(self) -> int:
        return self._inbound.rejected if self._inbound else 0

    @property
    def dropped(self) -> int:
        """Frames the sender numbered but that never arrived, plus queue overflow."""
        return (self._inbound.dropped if self._inbound else 0) + self.queue_dropped

    @property
    def last_reason(self) -> str | None:
        return self._inbound.last_reason if self._inbound else None

    @property
    def inbound(self) -> Inbound | None:
        """The socket end, while running (its counters: ``unrouted_acks``...)."""
        return self._inbound

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, callback: Callable[[StreamItem], Any] | None = None) -> StreamReceiver:
        """Start the loop; ``callback(item)`` runs on the receiver thread for each item."""
        if self.running:
            raise StreamStateError("this StreamReceiver is already running; stop() it first, or make another")
        self._stop.clear()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(callback,), daemon=True, name="polystore-recv"
        )
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self, callback: Callable[[StreamItem], Any] | None) -> None:
        try:
            inbound = self._inbound = Inbound(self.endpoints, **self._options)
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    item = inbound.receive(0.1)
                except Exception:  # a socket error must not end the viewer's only receiver
                    logger.exception("the stream receiver hit an error; it keeps serving")
                    time.sleep(0.1)
                    continue
                if item is None:
                    continue
                if callback is not None:
                    try:
                        callback(item)
                    except Exception:
                        logger.exception("stream callback failed on %s", item.path)
                    item = None  # a zero-copy slot goes back now, not when the next item comes
                    continue
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                    self.queue_dropped += 1
                    self._queue.put_nowait(item)
                item = None
        finally:
            inbound.close()

    def get(self, timeout: float | None = None) -> StreamItem:
        """The next item (when started without a callback); :class:`ReceiveTimeoutError` (a
        ``TimeoutError`` and a ``queue.Empty``) after ``timeout`` seconds."""
        if timeout is not None:
            check_settings(timeout=(timeout, 0, False))
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise ReceiveTimeoutError(
                f"No item arrived within {timeout:g} s on {self.endpoints.data}: is a sender streaming "
                "there (same host, port and bind)? Wait longer with get(timeout=...)."
            ) from None

    def __iter__(self) -> Iterator[StreamItem]:
        while self.running or not self._queue.empty():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the sockets; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> StreamReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
