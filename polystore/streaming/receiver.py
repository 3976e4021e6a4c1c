"""The receiving end: a validated loop that any viewer reuses.

:class:`Inbound` owns a PULL socket and the back channel: it validates each message with
:func:`polystore.streaming.protocol.decode`, reads the array (from the message, or from a
checked shared-memory segment: copied out, or a zero-copy view) and acknowledges it.
:class:`StreamReceiver` runs an Inbound on its own thread and hands items to a callback or an
iterator; :class:`PathInbox` keeps items by path for ``StreamingBackend(mode="pull").load``.
Bad messages are logged with their reason, counted in ``rejected`` and skipped; the loop keeps
running.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from polystore.streaming._zmq import EVENTS, NOBLOCK, POLLIN, RCVMORE, zmq
from polystore.streaming.endpoints import Endpoints, Link
from polystore.streaming.errors import AddressInUseError, ProtocolError, StreamConfigError, StreamTimeoutError
from polystore.streaming.protocol import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SHM_PREFIX,
    MAX_HEADER_BYTES,
    Ack,
    HeaderReader,
    Limits,
    StreamItem,
    array_from_buffer,
    encode_ack,
    split_id,
)
from polystore.streaming.security import CurveKeys
from polystore.streaming.shm import AttachedSegment, sweep_orphaned_segments
from polystore.streaming.throttle import ThrottledWarning

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 5.0
ACK_ROUTE_WINDOW_S = 5.0
"""How long an ack waits for its sender's back channel to finish connecting."""
UNROUTED_RETRY_S = 0.01
MAX_UNROUTED_PEERS = 64
MAX_UNROUTED_PER_PEER = 256
"""Acks kept for senders whose back channel is not connected yet, at most: a flood of items
naming senders that never connect costs a bounded amount of memory and work."""
ACK_LINGER_MS = 500
_MAX_ATTACHED = 16
_MAX_STREAMS_TRACKED = 1024
_MAX_PLANS = 64


class _ShmPlan:
    """A shared-memory header validated before, with what reading its slot takes, worked out once.

    A camera sends the same header (path, shape, slot, segment) again and again with a new id:
    for those bytes the checks of the header are done and the segment is mapped, so each item
    costs only what must be done per read (the segment's size and links checked again with
    ``fstat``), the array and the ack.
    """

    __slots__ = ("ack_parts", "dtype", "header", "offset", "order", "release", "reply_to", "segment",
                 "shape", "size", "stream", "wants_ack")

    def __init__(self, header: Mapping[str, Any], segment: AttachedSegment,
                 release: Callable[[], None] | None, ack_parts: tuple[bytes, bytes] | None) -> None:
        info = header["shm"]
        self.header = header
        self.segment = segment
        self.offset: int = info["offset"]
        self.size: int = info["size"]
        self.stream: str = header["stream"]
        self.shape = tuple(header["shape"])
        self.dtype = np.dtype(header["dtype"])
        self.order: Literal["C", "F"] = header.get("order", "C")
        self.release = release
        self.reply_to = (header.get("reply_to") or "").encode()
        self.wants_ack = bool(header.get("ack"))
        self.ack_parts = ack_parts
        """The ack that gives the slot back, split where the item's id goes (copying receivers)."""


class _UnroutedAcks:
    """Acks for senders (by routing id) whose DEALER has not connected yet, bounded."""

    def __init__(self) -> None:
        self.waiting: collections.OrderedDict[bytes, tuple[float, collections.deque[bytes]]] = (
            collections.OrderedDict()
        )
        self.dropped = 0
        self.next_retry = 0.0

    def __len__(self) -> int:
        return sum(len(messages) for _, messages in self.waiting.values())

    def keep(self, identity: bytes, message: bytes) -> None:
        entry = self.waiting.get(identity)
        if entry is None:
            if len(self.waiting) >= MAX_UNROUTED_PEERS:
                _, (_, evicted) = self.waiting.popitem(last=False)
                self.dropped += len(evicted)
            entry = self.waiting[identity] = (time.monotonic() + ACK_ROUTE_WINDOW_S, collections.deque())
        if len(entry[1]) >= MAX_UNROUTED_PER_PEER:
            entry[1].popleft()
            self.dropped += 1
        entry[1].append(message)


def _open_error(error: Any, endpoints: Endpoints, bind: bool) -> Exception:
    """What a user is told when a receiver's socket cannot be bound or connected (ZMQError)."""
    addresses = f"{endpoints.data} (acks {endpoints.ack})"
    if error.errno == zmq().EADDRINUSE:
        return AddressInUseError(
            f"Cannot receive on {addresses}: the address is in use. Another receiver or viewer "
            "may be listening there: stream to it, stop it, or pick another port."
        )
    verb = "bind" if bind else "connect to"
    return StreamConfigError(
        f"Cannot {verb} {addresses}: {error.strerror}. Check the host (a name or address this "
        "machine has, or ipc://<path> in a folder that exists) and the port."
    )


class Inbound:
    """A PULL socket plus the back channel for acknowledgements (one thread uses it at a time)."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        bind: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        shm_prefixes: Sequence[str] = (DEFAULT_SHM_PREFIX,),
        curve: CurveKeys | None = None,
        zero_copy: bool = False,
    ) -> None:
        self.limits = Limits(max_bytes=max_bytes, shm_prefixes=tuple(shm_prefixes))
        self.endpoints = endpoints
        self.zero_copy = zero_copy
        # zero-copy slots are given back when their last array is collected, on any thread
        # (a finalizer may even run inside a garbage collection on this thread, hence RLock);
        # the socket belongs to the receiving thread, so the release waits in this deque and
        # a byte on the pipe wakes the receiving thread's poll to send it
        self._releases: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._closing = threading.RLock()
        self._closed = False
        self._bound = bind
        self._headers = HeaderReader(self.limits)
        self.received = 0
        self.rejected = 0
        self.dropped = 0
        self.last_reason: str | None = None
        self.rejections = ThrottledWarning(logger, "stream messages rejected")
        """How rejections are logged: a few at once, then a count (a peer may send many)."""
        self._last_id: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._attached: collections.OrderedDict[str, AttachedSegment] = collections.OrderedDict()
        self._last_sweep = 0.0
        self._unrouted = _UnroutedAcks()
        self._receiving_thread: int | None = None
        self._release_messages: dict[tuple[str, int, str], bytes] = {}
        self._plans: dict[bytes, _ShmPlan] = {}
        z = zmq()
        self._link = Link(endpoints.host, serve=bind, curve=curve)  # refuses a public bind without keys
        self._wake_read, self._wake_write = os.pipe()
        try:
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
            # libzmq would otherwise buffer a frame of any size before max_bytes is checked
            data_options = {z.MAXMSGSIZE: max_bytes + MAX_HEADER_BYTES}
            self._socket = self._link.open(z.PULL, endpoints.data, data_options)
            # connecting: PUSH into the sender's bound PULL. Binding (one receiver, many senders):
            # ROUTER, so each ack goes to the sender that asked (its reply_to routing id).
            # acks still queued when the receiver closes go out for a moment more (the last
            # item's ack is what a sender with wait_for_ack waits for)
            ack_options = {z.SNDHWM: 10000, z.LINGER: ACK_LINGER_MS}
            if bind:
                ack_options[z.ROUTER_MANDATORY] = 1
            self._ack = self._link.open(z.ROUTER if bind else z.PUSH, endpoints.ack, ack_options)
        except BaseException as error:
            self.close()  # a taken address must not leave sockets, fds or an authenticator behind
            if isinstance(error, z.ZMQError):
                raise _open_error(error, endpoints, bind) from error
            raise
        # one poll(2) on the socket's signalling fd and the wake pipe: zmq.Poller would ask the
        # socket for its events before and after, a few system calls more per frame. The fd
        # only signals new events, so it is waited on only after a recv found nothing
        self._waiter = select.poll()
        self._waiter.register(self._socket.getsockopt(z.FD), select.POLLIN)
        self._waiter.register(self._wake_read, select.POLLIN)

    @property
    def unrouted_acks(self) -> int:
        """Acks waiting for a sender's back channel to connect (bounded)."""
        return len(self._unrouted)

    @property
    def unrouted_dropped(self) -> int:
        """Acks given up on: their sender never connected its back channel, or too many waited."""
        return self._unrouted.dropped

    def receive(self, timeout: float | None) -> StreamItem | None:
        """The next valid item, or ``None`` when ``timeout`` seconds pass first."""
        self._receiving_thread = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._releases:
                self._send_releases()
            now = time.monotonic()
            if self._unrouted.waiting and now >= self._unrouted.next_retry:
                self._retry_unrouted(now)
            if self.rejections.suppressed and self.rejections.due():
                self.rejections.flush()
            if now - self._last_sweep > SWEEP_INTERVAL_S:
                self._last_sweep = now
                for prefix in self.limits.shm_prefixes:
                    sweep_orphaned_segments(prefix)
            frames = self._recv_message()
            if frames is not None and not frames:
                continue  # a message refused while it was read (too many frames)
            if frames is None:
                wait_ms = 1000 if deadline is None else max(0, int((deadline - now) * 1000))
                if self._unrouted.waiting:
                    wait_ms = min(wait_ms, int(UNROUTED_RETRY_S * 1000))
                ready = self._waiter.poll(wait_ms)
                if any(fd == self._wake_read for fd, _ in ready):
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            item = self._accept(frames)
            if item is not None:
                return item

    def _recv_message(self) -> list[Any] | None:
        """The next message's frames, None when none waits, or [] for a message refused here
        (more than 2 frames; the header is small: taken as bytes)."""
        socket = self._socket
        # asking for EVENTS costs a fraction of a recv that raises Again (pyzmq builds the error)
        if not socket.getsockopt(EVENTS) & POLLIN:
            return None
        first = socket.recv(NOBLOCK, copy=False)
        frames: list[Any] = [first.bytes if len(first) <= MAX_HEADER_BYTES else first]
        if first.more:  # the frame's own flag: no getsockopt(RCVMORE) call
            second = socket.recv(copy=False)
            frames.append(second)
            if second.more:
                self._refuse_rest(frames)
                return []
        return frames

    def _refuse_rest(self, frames: list[Any]) -> None:
        """Read the rest of a message of more than 2 frames, one frame at a time, keeping none of
        it, and refuse it with its real size (libzmq caps each frame, not a message: see
        docs/streaming.md, "Limits")."""
        count, size = len(frames), sum(len(frame) for frame in frames)
        frames.clear()
        socket = self._socket
        while socket.getsockopt(RCVMORE):
            size += len(socket.recv(copy=False))
            count += 1
        self._reject(f"a message of {count} frames ({size} bytes) is not one of ours: an item is "
                     "1 frame (shared memory) or 2 (header, data)")

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_reason = reason
        self.rejections.warn("Rejected stream message: %s (%d rejected so far)", reason, self.rejected)

    def _accept(self, frames: Sequence[Any]) -> StreamItem | None:
        if len(frames) == 1 and type(frames[0]) is bytes and self._plans:
            split = split_id(frames[0])
            plan = None if split is None else self._plans.get(split[0])
            if plan is not None:
                assert split is not None
                item = self._accept_planned(plan, split[0], split[1])
                if item is not None:
                    return item
        try:
            header, msg_id = self._headers.decode(frames)  # shared: read, never changed here
            if header["transport"] == "inline":
                array = array_from_buffer(header, frames[1].buffer)
            else:
                array = self._from_shm(header)
        except Exception as error:  # whatever a message does, the loop goes on serving
            reason = error.reason if isinstance(error, ProtocolError) else f"{type(error).__name__}: {error}"
            self._reject(reason)
            return None
        self.received += 1
        stream = header.get("stream")
        self._count_gaps(stream or str(header.get("sender")), msg_id)
        if stream is not None:
            shm = header.get("shm")
            if shm is None:  # inline: acknowledged on receipt (the sender's bytes in flight)
                self._send_ack(header, Ack(stream, msg_id))
            elif not self.zero_copy:  # copied out: the slot is free again
                self._send_ack(header, Ack(stream, msg_id, shm["slot"], shm["name"]))
            elif header.get("ack"):  # zero-copy: received now, the slot comes back later
                self._send_ack(header, Ack(stream, msg_id))
        if header["transport"] == "shm" and type(frames[0]) is bytes:
            self._plan(frames[0], header)
        return StreamItem.received(array, header, msg_id)

    def _plan(self, raw: bytes, header: Mapping[str, Any]) -> None:
        """Keep a plan for a shared-memory header the header reader remembers (validated)."""
        split = split_id(raw)
        if split is None or self._headers.known(split[0]) is not header:
            return
        info = header["shm"]
        segment = self._attached.get(info["name"])
        if segment is None:
            return
        release = ack_parts = None
        if self.zero_copy:
            release = functools.partial(self._release_later, (header.get("reply_to") or "").encode(),
                                        self._release_message(header["stream"], info["slot"], info["name"]))
        else:
            ack = encode_ack(Ack(header["stream"], 0, info["slot"], info["name"]))
            before, _, after = ack.partition(b'"ack":0,')
            ack_parts = (before + b'"ack":', b"," + after)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[split[0]] = _ShmPlan(header, segment, release, ack_parts)

    def _accept_planned(self, plan: _ShmPlan, prefix: bytes, msg_id: int) -> StreamItem | None:
        """An item of a planned header; None (the plan dropped) when its slot fails a check, for
        the full path to map again or refuse."""
        segment = plan.segment
        try:
            segment.check(plan.offset, plan.size, plan.stream)
            if self.zero_copy:
                assert plan.release is not None
                lease = segment.lease(plan.offset, plan.size, plan.release)
                array = np.ndarray(plan.shape, plan.dtype, lease, order=plan.order)  # type: ignore[arg-type]
                array.flags.writeable = False  # the sender's memory: never written from here
            else:
                array = np.ndarray(plan.shape, plan.dtype, segment.copy_out(plan.offset, plan.size),
                                   order=plan.order)
        except Exception:
            del self._plans[prefix]
            return None
        self.received += 1
        self._count_gaps(plan.stream, msg_id)
        if plan.ack_parts is not None:  # copied out: the slot is free again
            self._deliver(plan.reply_to, b"%b%d%b" % (plan.ack_parts[0], msg_id, plan.ack_parts[1]))
        elif plan.wants_ack:  # zero-copy: received now, the slot comes back later
            self._deliver(plan.reply_to, encode_ack(Ack(plan.stream, msg_id)))
        return StreamItem.received(array, plan.header, msg_id)

    def _forget_plans(self, segment: AttachedSegment) -> None:
        """Plans that read ``segment`` go with it (it is being closed)."""
        self._plans = {key: plan for key, plan in self._plans.items() if plan.segment is not segment}

    def _count_gaps(self, key: str, msg_id: int) -> None:
        last = self._last_id.get(key)
        if last is not None and msg_id > last + 1:
            self.dropped += msg_id - last - 1
        self._last_id[key] = msg_id
        if last is not None and len(self._last_id) > 1:  # a new key is at the end already
            self._last_id.move_to_end(key)
        if len(self._last_id) > _MAX_STREAMS_TRACKED:  # stream ids come from the wire: bound them
            self._last_id.popitem(last=False)

    def _segment(self, name: str) -> AttachedSegment:
        segment = self._attached.get(name)
        if segment is None:
            try:
                segment = AttachedSegment(name)
            except OSError as error:
                raise ProtocolError(f"shared-memory segment {name!r} cannot be opened ({error})") from None
            self._attached[name] = segment
            while len(self._attached) > _MAX_ATTACHED:
                _, old = self._attached.popitem(last=False)
                self._forget_plans(old)
                old.close()
        else:
            self._attached.move_to_end(name)
        return segment

    def _from_shm(self, header: Mapping[str, Any]) -> np.ndarray:
        info = header["shm"]
        name = info["name"]
        segment = self._segment(name)
        try:
            segment.check(info["offset"], info["size"], header["stream"])  # its size now, its stamp
        except ProtocolError:
            if segment.is_current():
                raise
            # unlinked and the name used again (a new sender with a recycled pid): map the new one
            del self._attached[name]
            self._forget_plans(segment)
            segment.close()
            segment = self._segment(name)
            segment.check(info["offset"], info["size"], header["stream"])
        if self.zero_copy:
            release = functools.partial(self._release_later, (header.get("reply_to") or "").encode(),
                                        self._release_message(header["stream"], info["slot"], info["name"]))
            array = array_from_buffer(header, segment.lease(info["offset"], info["size"], release))
            array.flags.writeable = False  # the sender's memory: never written from here
            return array
        return array_from_buffer(header, segment.copy_out(info["offset"], info["size"]))

    def _release_message(self, stream: str, slot: int, name: str) -> bytes:
        """The ack that gives ``slot`` back (the same few per stream: made once, kept a while)."""
        key = (stream, slot, name)
        message = self._release_messages.get(key)
        if message is None:
            if len(self._release_messages) >= _MAX_ATTACHED * 4:
                self._release_messages.clear()
            message = self._release_messages[key] = encode_ack(Ack(stream, None, slot, name))
        return message

    def _release_later(self, reply_to: bytes, message: bytes) -> None:
        # runs wherever the item's last array died: queue it for the receiving thread
        with self._closing:
            if self._closed:
                return
            self._releases.append((reply_to, message))
            if threading.get_ident() == self._receiving_thread:
                return  # the receiving loop sends it before it next waits: no need to wake it
            with contextlib.suppress(BlockingIOError):  # a full pipe is awake already
                os.write(self._wake_write, b"\0")

    def _send_releases(self) -> None:
        while self._releases:
            reply_to, message = self._releases.popleft()
            self._deliver(reply_to, message)

    def _send_ack(self, header: Mapping[str, Any], ack: Ack) -> None:
        self._deliver((header.get("reply_to") or "").encode(), encode_ack(ack))

    def _deliver(self, reply_to: bytes, message: bytes) -> None:
        z = zmq()
        if not self._bound:
            with contextlib.suppress(z.Again):
                self._ack.send(message, NOBLOCK)
            return
        if not reply_to:
            return  # a sender that binds its own back channel cannot be reached from here
        if reply_to in self._unrouted.waiting:
            self._unrouted.keep(reply_to, message)  # behind the ones already waiting: in order
            return
        try:
            self._ack.send_multipart([reply_to, message], NOBLOCK)
        except z.ZMQError as error:
            # EHOSTUNREACH: the sender's back channel has not finished connecting yet (it
            # races the data channel); keep the ack and try again for a few seconds
            if error.errno == z.EHOSTUNREACH:
                self._unrouted.keep(reply_to, message)

    def _retry_unrouted(self, now: float) -> None:
        z = zmq()
        self._unrouted.next_retry = now + UNROUTED_RETRY_S
        for identity, (deadline, messages) in list(self._unrouted.waiting.items()):
            while messages:
                try:
                    self._ack.send_multipart([identity, messages[0]], z.NOBLOCK)
                except z.ZMQError:
                    break
                messages.popleft()
            if not messages:
                del self._unrouted.waiting[identity]
            elif now >= deadline:
                del self._unrouted.waiting[identity]
                self._unrouted.dropped += len(messages)

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)
        self.rejections.flush()
        self._plans.clear()
        for segment in self._attached.values():
            segment.close()
        self._attached.clear()
        self._link.close()


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
            raise RuntimeError("this StreamReceiver is already running")
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
        if max_items < 0 or max_bytes < 0:
            raise StreamConfigError(f"inbox limits must be >= 0, got max_items={max_items}, "
                                    f"max_bytes={max_bytes}")
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
