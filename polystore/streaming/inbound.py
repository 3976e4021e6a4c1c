"""One receiver's socket end: a PULL socket, validation, mapping, zero-copy views, acks.

:class:`Inbound` validates each message with :func:`polystore.streaming.protocol.decode`,
reads the array (from the message, or from a checked shared-memory segment: copied out, or a
zero-copy view) and acknowledges it (:mod:`~polystore.streaming.ackroute`). Bad messages are
logged with their reason (rate-limited: :mod:`~polystore.streaming.throttle`), counted in
``rejected`` and skipped. :class:`~polystore.streaming.receiver.StreamReceiver` runs one on a
thread; :class:`~polystore.streaming.inbox.PathInbox` keeps its items by path.
"""

from __future__ import annotations

import collections
import functools
import logging
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from polystore.streaming._zmq import EVENTS, NOBLOCK, POLLIN, RCVMORE, zmq
from polystore.streaming.ackroute import UNROUTED_RETRY_S, AckRoute
from polystore.streaming.copies import CopyBuffers
from polystore.streaming.endpoints import Endpoints, Link
from polystore.streaming.errors import AddressInUseError, ProtocolError, StreamConfigError, check_settings
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

logger = logging.getLogger("polystore.streaming.receiver")  # the receiver's log, as before the split

SWEEP_INTERVAL_S = 5.0
ACK_LINGER_MS = 500
_MAX_ATTACHED = 16
_MAX_STREAMS_TRACKED = 1024
_MAX_PLANS = 64


class _ShmPlan:
    """A shared-memory header validated before, with what reading its slot takes, worked out once.

    A camera sends the same header (path, shape, slot, segment) again and again with a new id:
    for those bytes the checks of the header are done, the segment is mapped and its stamp
    read, so each item costs only what must be done per read (the segment's size checked
    again), the array and the ack.
    """

    __slots__ = ("ack_parts", "dtype", "end", "header", "name", "offset", "order", "release",
                 "released_here", "reply_to", "segment", "shape", "size", "slot", "stream", "wants_ack")

    def __init__(self, header: Mapping[str, Any], segment: AttachedSegment,
                 release: Callable[[], None] | None, ack_parts: tuple[bytes, bytes] | None) -> None:
        info = header["shm"]
        self.header = header
        self.segment = segment
        self.offset: int = info["offset"]
        self.size: int = info["size"]
        self.end = self.offset + self.size
        """Where the frame ends: the segment must hold this many bytes at every read."""
        self.stream: str = header["stream"]
        self.shape = tuple(header["shape"])
        self.dtype = np.dtype(header["dtype"])
        self.order: Literal["C", "F"] = header.get("order", "C")
        self.release = release
        """A zero-copy slot's release, the same for every item (a sender without ``shm.release``)."""
        self.released_here: bool = info.get("release", False)
        """The slot is given back through the segment's control block (``shm.release``)."""
        self.slot: int = info["slot"]
        self.name: str = info["name"]
        self.reply_to = (header.get("reply_to") or "").encode()
        self.wants_ack = bool(header.get("ack"))
        self.ack_parts = ack_parts
        """The ack that gives the slot back, split where the item's id goes (copying receivers)."""


def _release_through(segment: AttachedSegment, msg_id: int, route: AckRoute, reply_to: bytes, stream: str,
                     slot: int, name: str) -> None:
    """A zero-copy item's slot given back through the segment's control block (``shm.release``),
    with an ack as well when that is not all (the sender waits for one, or the segment cannot
    take it). Runs wherever the item's last array died."""
    if not segment.give_back(msg_id):
        route.release_later(reply_to, encode_ack(Ack(stream, msg_id, slot, name)))


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
        check_settings(max_bytes=(max_bytes, 0, True))
        self.limits = Limits(max_bytes=max_bytes, shm_prefixes=tuple(shm_prefixes))
        self.endpoints = endpoints
        self.zero_copy = zero_copy
        self._closed = False
        self._route: AckRoute | None = None
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
        self._plans: dict[bytes, _ShmPlan] = {}
        self.copies = CopyBuffers()
        """Where a copying receiver's copies go (memory of dropped items reused)."""
        z = zmq()
        self._link = Link(endpoints.host, serve=bind, curve=curve)  # refuses a public bind without keys
        try:
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
            self._route = AckRoute(self._link.open(z.ROUTER if bind else z.PUSH, endpoints.ack, ack_options),
                                   bind)
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
        self._waiter.register(self._route.wake_read, select.POLLIN)

    @property
    def unrouted_acks(self) -> int:
        """Acks waiting for a sender's back channel to connect (bounded)."""
        return len(self._route.unrouted) if self._route is not None else 0

    @property
    def unrouted_dropped(self) -> int:
        """Acks given up on: their sender never connected its back channel, or too many waited."""
        return self._route.unrouted.dropped if self._route is not None else 0

    def receive(self, timeout: float | None) -> StreamItem | None:
        """The next valid item, or ``None`` when ``timeout`` seconds pass first."""
        route = self._route
        assert route is not None  # made with the sockets, or the constructor raised
        route.receiving_thread = threading.get_ident()
        unrouted = route.unrouted
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = False  # the poll below saw the socket's fd alone: a message most likely waits
        while True:
            if not woken:  # just done before the poll that woke us: straight to the message
                if route.releases:
                    route.send_releases()
                now = time.monotonic()
                if unrouted.waiting and now >= unrouted.next_retry:
                    route.retry_unrouted(now)
                if self.rejections.suppressed and self.rejections.due():
                    self.rejections.flush()
                if now - self._last_sweep > SWEEP_INTERVAL_S:
                    self._last_sweep = now
                    for prefix in self.limits.shm_prefixes:
                        sweep_orphaned_segments(prefix)
            frames = self._recv_message(probe=not woken)
            if frames is None and woken:  # the fd fired for something else: the round as usual
                woken = False
                continue
            woken = False
            if frames is not None and not frames:
                continue  # a message refused while it was read (too many frames)
            if frames is None:
                now = time.monotonic()
                wait_ms = 1000 if deadline is None else max(0, int((deadline - now) * 1000))
                if unrouted.waiting:
                    wait_ms = min(wait_ms, int(UNROUTED_RETRY_S * 1000))
                ready = self._waiter.poll(wait_ms)
                woken = bool(ready)
                for fd, _ in ready:
                    if fd == route.wake_read:  # releases to send first
                        route.drain_wake()
                        woken = False
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            item = self._accept(frames)
            if item is not None:
                return item

    def _recv_message(self, probe: bool = True) -> list[Any] | None:
        """The next message's frames, None when none waits, or [] for a message refused here
        (more than 2 frames; the header is small: taken as bytes). ``probe``: ask the socket
        first whether a message waits (asking for EVENTS costs a fraction of a recv that
        raises Again, for which pyzmq builds an error); without it, right after the socket's fd
        fired, the recv is tried at once."""
        socket = self._socket
        if probe and not socket.getsockopt(EVENTS) & POLLIN:
            return None
        try:
            first = socket.recv(NOBLOCK, copy=False)
        except zmq().Again:  # the fd fired for something else than a message
            return None
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
            segment = None
            if header["transport"] == "inline":
                array = array_from_buffer(header, frames[1].buffer)
            else:
                array, segment = self._from_shm(header, msg_id)
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
                assert segment is not None
                if shm.get("release") and segment.give_back(msg_id):
                    if header.get("ack"):
                        self._send_ack(header, Ack(stream, msg_id))
                else:
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
            release = None if info.get("release") else self._release_by_message(header)
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
            # the size now, before every read (a segment shrunk since it was mapped would be read
            # past its end: SIGBUS); the header, the mapping and the stamp were checked for the plan
            if segment.size_now() < plan.end:
                raise ProtocolError("the segment shrank")
            if self.zero_copy:
                release = plan.release
                if release is None:  # given back through the segment: the item's own id
                    assert self._route is not None
                    release = functools.partial(_release_through, segment, msg_id, self._route, plan.reply_to,
                                                plan.stream, plan.slot, plan.name)
                lease = segment.lease(plan.offset, plan.size, release)
                array = np.ndarray(plan.shape, plan.dtype, lease, order=plan.order)  # type: ignore[arg-type]
                array.flags.writeable = False  # the sender's memory: never written from here
            else:
                copy = segment.copy_out(plan.offset, plan.size, self.copies)
                array = np.ndarray(plan.shape, plan.dtype, copy, order=plan.order)  # type: ignore[arg-type]
        except Exception:
            del self._plans[prefix]
            return None
        self.received += 1
        self._count_gaps(plan.stream, msg_id)
        if plan.ack_parts is not None:  # copied out: the slot is free again
            if plan.released_here and segment.give_back(msg_id):
                if plan.wants_ack:
                    self._send(plan.reply_to, encode_ack(Ack(plan.stream, msg_id)))
            else:
                self._send(plan.reply_to, b"%b%d%b" % (plan.ack_parts[0], msg_id, plan.ack_parts[1]))
        elif plan.wants_ack:  # zero-copy: received now, the slot comes back later
            self._send(plan.reply_to, encode_ack(Ack(plan.stream, msg_id)))
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

    def _from_shm(self, header: Mapping[str, Any], msg_id: int) -> tuple[np.ndarray, AttachedSegment]:
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
            release: Callable[[], None]
            if info.get("release"):
                assert self._route is not None
                release = functools.partial(_release_through, segment, msg_id, self._route,
                                            (header.get("reply_to") or "").encode(), header["stream"],
                                            info["slot"], name)
            else:
                release = self._release_by_message(header)
            array = array_from_buffer(header, segment.lease(info["offset"], info["size"], release))
            array.flags.writeable = False  # the sender's memory: never written from here
            return array, segment
        return array_from_buffer(header, segment.copy_out(info["offset"], info["size"], self.copies)), segment

    def _release_by_message(self, header: Mapping[str, Any]) -> Callable[[], None]:
        """What gives a zero-copy item's slot back, once the last array on it is collected, to
        a sender whose header has no ``shm.release``: an ack (the same for every item)."""
        assert self._route is not None
        info = header["shm"]
        message = self._route.release_message(header["stream"], info["slot"], info["name"])
        return functools.partial(self._route.release_later, (header.get("reply_to") or "").encode(), message)

    def _send_ack(self, header: Mapping[str, Any], ack: Ack) -> None:
        self._send((header.get("reply_to") or "").encode(), encode_ack(ack))

    def _send(self, reply_to: bytes, message: bytes) -> None:
        assert self._route is not None
        self._route.send(reply_to, message)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._route is not None:
            self._route.close()
        self.rejections.flush()
        self._plans.clear()
        for segment in self._attached.values():
            segment.close()
        self._attached.clear()
        self.copies.close()
        self._link.close()


