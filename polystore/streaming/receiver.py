"""The receiving end: a validated loop that any viewer reuses.

:class:`StreamReceiver` connects a PULL socket to a sender (or binds one, ``bind=True``),
validates each message with :func:`polystore.streaming.protocol.decode`, turns it into a
:class:`StreamItem` and hands it to a callback or to an iterator. Bad messages are logged
with their reason, counted in ``rejected`` and skipped; the loop keeps running.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from polystore.streaming import shm as shm_mod
from polystore.streaming._zmq import bind as bind_address
from polystore.streaming._zmq import endpoint, zmq
from polystore.streaming.protocol import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SHM_PREFIX,
    MAX_HEADER_BYTES,
    Limits,
    ProtocolError,
    StreamItem,
    array_from_buffer,
    decode,
)
from polystore.streaming.security import CurveKeys, require_keys_for

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 5.0
ACK_ROUTE_WINDOW_S = 5.0
_MAX_ATTACHED = 16
_MAX_SENDERS_TRACKED = 1024


class Inbound:
    """A PULL socket plus the back channel for acknowledgements (one thread uses it at a time)."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        ack_port: int | None = None,
        bind: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        shm_prefixes: Sequence[str] = (DEFAULT_SHM_PREFIX,),
        curve: CurveKeys | None = None,
        zero_copy: bool = False,
    ) -> None:
        require_keys_for(host, bind, curve)  # before anything is allocated
        self.limits = Limits(max_bytes=max_bytes, shm_prefixes=tuple(shm_prefixes))
        self.zero_copy = zero_copy
        # zero-copy slots are given back when their last array is collected, on any thread
        # (a finalizer may even run inside a garbage collection on this thread, hence RLock);
        # the socket belongs to the receiving thread, so the release waits in this deque and
        # a byte on the pipe wakes the receiving thread's poll to send it
        self._releases: collections.deque[bytes] = collections.deque()
        self._closing = threading.RLock()
        self._closed = False
        self._wake_read: int | None = None
        self._wake_write: int | None = None
        self._bound = bind
        self._pattern = self.limits.shm_pattern()
        self.received = 0
        self.rejected = 0
        self.dropped = 0
        self.last_reason: str | None = None
        self._last_id: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._attached: collections.OrderedDict[str, shm_mod.AttachedSegment] = collections.OrderedDict()
        self._last_sweep = 0.0
        self._unrouted: list[tuple[bytes, bytes, float]] = []
        z = zmq()
        self._own_context = curve is not None
        self._context = z.Context() if self._own_context else z.Context.instance()
        self._authenticator: Any = None
        self._socket = self._context.socket(z.PULL)
        # connecting: PUSH into the sender's bound PULL. Binding (one receiver, many senders):
        # ROUTER, so each ack goes to the sender that asked (its reply_to routing id).
        self._ack = self._context.socket(z.ROUTER if bind else z.PUSH)
        try:
            self._authenticator = curve.start_authenticator(self._context) if curve and bind else None
            self._socket.setsockopt(z.LINGER, 0)
            # libzmq would otherwise buffer a frame of any size before max_bytes is checked
            self._socket.setsockopt(z.MAXMSGSIZE, max_bytes + MAX_HEADER_BYTES)
            if bind:
                self._ack.setsockopt(z.ROUTER_MANDATORY, 1)
            self._ack.setsockopt(z.LINGER, 0)
            self._ack.setsockopt(z.SNDHWM, 10000)
            if curve is not None:
                curve.secure(self._socket, server=bind)
                curve.secure(self._ack, server=bind)
            address = endpoint(host, port)
            ack_address = endpoint(host, ack_port if ack_port is not None else port + 1)
            if "://" in host:
                ack_address = host + ".ack"
            if bind:
                bind_address(self._socket, address)
                bind_address(self._ack, ack_address)
            else:
                self._socket.connect(address)
                self._ack.connect(ack_address)
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
        except BaseException:
            self.close()  # a taken address must not leave sockets, fds or an authenticator behind
            raise
        self._poller = z.Poller()
        self._poller.register(self._socket, z.POLLIN)
        self._poller.register(self._wake_read, z.POLLIN)

    def receive(self, timeout: float | None) -> StreamItem | None:
        """The next valid item, or ``None`` when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._unrouted:
                self._retry_unrouted()
            now = time.monotonic()
            if now - self._last_sweep > SWEEP_INTERVAL_S:
                self._last_sweep = now
                for prefix in self.limits.shm_prefixes:
                    shm_mod.sweep_orphaned_segments(prefix)
            wait_ms = 1000 if deadline is None else max(0, int((deadline - now) * 1000))
            if self._unrouted:
                wait_ms = min(wait_ms, 10)
            ready = dict(self._poller.poll(wait_ms))
            if self._wake_read in ready:
                self._send_releases()
            if self._socket not in ready:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            frames = self._socket.recv_multipart(copy=False)
            item = self._accept(frames)
            if item is not None:
                return item

    def _accept(self, frames: Sequence[Any]) -> StreamItem | None:
        try:
            header = decode(frames, self.limits, self._pattern)
            if header["transport"] == "inline":
                array = array_from_buffer(header, frames[1].buffer)
            else:
                array = self._from_shm(header)
        except Exception as error:  # whatever a message does, the loop goes on serving
            reason = error.reason if isinstance(error, ProtocolError) else f"{type(error).__name__}: {error}"
            self.rejected += 1
            self.last_reason = reason
            logger.warning("Rejected stream message: %s (%d rejected so far)", reason, self.rejected)
            return None
        self.received += 1
        sender = header.get("sender")
        if type(sender) is int:
            last = self._last_id.get(sender)
            if last is not None and header["id"] > last + 1:
                self.dropped += header["id"] - last - 1
            self._last_id[sender] = header["id"]
            self._last_id.move_to_end(sender)
            if len(self._last_id) > _MAX_SENDERS_TRACKED:  # sender ids come from the wire: bound them
                self._last_id.popitem(last=False)
        slot_later = self.zero_copy and header["transport"] == "shm"
        if header.get("ack") or (header["transport"] == "shm" and not slot_later):
            self._send_ack(header, give_slot=not slot_later)
        return StreamItem(array, header)

    def _from_shm(self, header: dict[str, Any]) -> np.ndarray:
        info = header["shm"]
        name = info["name"]
        segment = self._attached.get(name)
        if segment is not None and not segment.is_current():
            # unlinked and the name used again (a new sender with a recycled pid): remap
            del self._attached[name]
            segment.close()
            segment = None
        if segment is None:
            try:
                segment = shm_mod.attach(name)
            except (FileNotFoundError, OSError, ValueError) as error:
                raise ProtocolError(f"shared-memory segment {name!r} cannot be opened ({error})") from None
            self._attached[name] = segment
            while len(self._attached) > _MAX_ATTACHED:
                _, old = self._attached.popitem(last=False)
                old.close()
        else:
            self._attached.move_to_end(name)
        if info["offset"] + info["size"] > segment.size:
            self._send_ack(header)  # give the slot back even though its contents are refused
            raise ProtocolError(f"shm slot {name!r} is {segment.size} bytes, smaller than announced")
        if self.zero_copy:
            owner = segment.exported(info["offset"], info["size"])
            array = array_from_buffer(header, owner)
            array.flags.writeable = False  # the sender's memory: never written from here
            weakref.finalize(owner, self._release_later, self._release_message(header))
            return array
        view = segment.buf[info["offset"] : info["offset"] + info["size"]]
        try:
            return array_from_buffer(header, view).copy()
        finally:
            view.release()

    @staticmethod
    def _ack_message(header: dict[str, Any], *, ack: int | None, give_slot: bool) -> bytes:
        """An acknowledgement; it names the sender's stream and the segment, so that a sender
        ignores acks meant for another sender (or for a slot it has replaced since)."""
        shm = header.get("shm") if header["transport"] == "shm" and give_slot else None
        message = {
            "v": 1, "ack": ack, "stream": header.get("stream"), "pid": os.getpid(),
            "slot": shm["slot"] if shm else None, "name": shm["name"] if shm else None,
        }
        return json.dumps(message).encode()

    def _release_message(self, header: dict[str, Any]) -> bytes:
        """Routing id (or empty) + the message that gives a zero-copy item's slot back."""
        release = self._ack_message(header, ack=None, give_slot=True)
        return (header.get("reply_to") or "").encode() + b"\0" + release

    def _release_later(self, message: bytes) -> None:
        # runs wherever the item's last array died: queue it for the receiving thread
        with self._closing:
            if self._closed or self._wake_write is None:
                return
            self._releases.append(message)
            with contextlib.suppress(BlockingIOError):  # a full pipe is awake already
                os.write(self._wake_write, b"\0")

    def _send_releases(self) -> None:
        if self._wake_read is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)
        while self._releases:
            reply_to, _, message = self._releases.popleft().partition(b"\0")
            self._deliver(reply_to.decode() or None, message)

    def _send_ack(self, header: dict[str, Any], give_slot: bool = True) -> None:
        message = self._ack_message(header, ack=header["id"], give_slot=give_slot)
        self._deliver(header.get("reply_to"), message)

    def _deliver(self, reply_to: str | None, message: bytes) -> None:
        z = zmq()
        if not self._bound:
            with contextlib.suppress(z.Again):
                self._ack.send(message, z.NOBLOCK)
            return
        if reply_to is None:
            return  # a sender that binds its own back channel cannot be reached from here
        self._route(reply_to.encode(), message, time.monotonic() + ACK_ROUTE_WINDOW_S)

    def _route(self, identity: bytes, message: bytes, deadline: float) -> None:
        z = zmq()
        try:
            self._ack.send_multipart([identity, message], z.NOBLOCK)
        except z.ZMQError as error:
            # EHOSTUNREACH: the sender's back channel has not finished connecting yet (it
            # races the data channel); keep the ack and try again for a few seconds
            if error.errno == z.EHOSTUNREACH and time.monotonic() < deadline:
                self._unrouted.append((identity, message, deadline))

    def _retry_unrouted(self) -> None:
        waiting, self._unrouted = self._unrouted, []
        for identity, message, deadline in waiting:
            self._route(identity, message, deadline)

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wake_read, self._wake_write):
                if fd is not None:
                    os.close(fd)
        for segment in self._attached.values():
            segment.close()
        self._attached.clear()
        self._socket.close(0)
        self._ack.close(0)
        if self._authenticator is not None:
            self._authenticator.stop()
        if self._own_context:
            self._context.term()


class StreamReceiver:
    """A receiver loop on its own thread.

    >>> receiver = StreamReceiver(port=5555).start(lambda item: print(item.path, item.array.shape))
    >>> receiver.stop()

    Without a callback, iterate over the receiver (or call :meth:`get`) for the items.

    ``zero_copy=True``: an item that came through shared memory is a read-only array *inside*
    the sender's slot, not a copy; the slot goes back to the sender when the last array built
    on it is collected. Faster (one copy per frame instead of two), but a consumer that keeps
    items stalls the sender once its ring (``shm_slots``, 4 by default) is held: copy what you keep.
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
        self._options: dict[str, Any] = dict(
            port=port, host=host, ack_port=ack_port, bind=bind, max_bytes=max_bytes,
            shm_prefixes=tuple(shm_prefixes), curve=curve, zero_copy=zero_copy,
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
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, callback: Callable[[StreamItem], Any] | None = None) -> StreamReceiver:
        """Start the loop; ``callback(item)`` runs on the receiver thread for each item."""
        if self.running:
            raise RuntimeError("this StreamReceiver is already running")
        self._stop.clear()
        self._ready.clear()
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
            self._inbound = Inbound(**self._options)
        except BaseException as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    item = self._inbound.receive(0.1)
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
                    continue
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                    self.queue_dropped += 1
                    self._queue.put_nowait(item)
        finally:
            self._inbound.close()

    def get(self, timeout: float | None = None) -> StreamItem:
        """The next item (when started without a callback); ``queue.Empty`` after ``timeout``."""
        return self._queue.get(timeout=timeout)

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
