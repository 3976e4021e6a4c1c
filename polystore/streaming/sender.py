"""The sending end of a stream: sockets, the shared-memory ring, acknowledgements and policies.

:class:`Sender` takes items from the caller's thread and sends them at once when it can; what
cannot go now (no receiver yet, a full queue, no free slot under ``policy="latest"``) waits in
the sender and a background thread (the *pump*, running only while something waits) delivers
it when a receiver is there. What waits is bounded:

* by bytes: inline items accepted and not yet acknowledged by a receiver take at most
  ``max_pending_bytes`` (64 MiB by default); shared-memory items at most the ring
  (``shm_slots`` segments). ``policy="block"`` waits up to ``send_timeout`` for room, then
  raises :class:`StreamTimeoutError`; ``policy="latest"`` keeps the newest item per path;
* by time: an item that waited ``linger`` seconds (5 by default) with no receiver connected
  is dropped, counted in ``expired`` and logged at WARNING; while a receiver is connected,
  however slow, nothing expires (``policy="block"`` waits for it, bounded by bytes and
  ``send_timeout``). A sender closed (or garbage-collected) with items still waiting keeps
  delivering them in the background for ``linger`` seconds.

``save`` returns with nothing of the caller's array still referenced: bytes that go out at
once are copied by ZeroMQ into its own message, bytes that wait are copied first.

Every item is acknowledged by the receiver (inline ones on receipt, shared-memory ones when
the slot is free again), so "bytes in flight" is what receivers have not taken yet.

:meth:`Sender.frame` is the zero-copy producer: the next slot as an array to fill in place.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import secrets
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np

from polystore.exceptions import StorageIOError
from polystore.streaming._zmq import EVENTS, NOBLOCK, POLLIN, RCVMORE, SNDMORE, zmq
from polystore.streaming.endpoints import Endpoints, Link
from polystore.streaming.errors import (
    AddressInUseError,
    ProtocolError,
    StreamConfigError,
    StreamTimeoutError,
)
from polystore.streaming.protocol import (
    DEFAULT_SHM_PREFIX,
    KINDS,
    MAX_ACK_BYTES,
    Ack,
    AckReader,
    HeaderWriter,
    checked_dtype,
    encode_header,
)
from polystore.streaming.security import CurveKeys
from polystore.streaming.shm import DATA_OFFSET, SlotRing

logger = logging.getLogger(__name__)

Policy = Literal["block", "latest"]
TransportChoice = Literal["auto", "inline", "shm"]
POLICIES = ("block", "latest")
TRANSPORTS = ("auto", "inline", "shm")

DEFAULT_SHM_THRESHOLD = 256 * 1024
DEFAULT_SHM_SLOTS = 4
DEFAULT_MAX_PENDING_BYTES = 64 * 1024**2
DEFAULT_LINGER_S = 5.0
PUMP_INTERVAL_S = 0.002
"""How often the pump looks again while items wait (it runs only then)."""
PUMP_IDLE_INTERVAL_S = 0.02
"""How often it looks while no receiver is connected: only a connection can change anything."""
ACK_POLL_S = 0.005
"""The longest a waiting caller polls the back channel before looking at the rest again."""
ACK_BATCH = 32
"""Inline items out before a send takes their acks: acks are read when they are needed (a slot,
room, an awaited item) or in batches, not on every send."""
READ_LIMIT = 256
"""Messages one look at the ack or monitor socket reads beyond those it can expect: anyone on
the host may write to the ack port, and a flood must not keep a caller inside ``save``."""

# zmq.h's socket events (plain ints, as in _zmq): who is connected to the data socket
EVENT_CONNECTED = 0x0001
EVENT_ACCEPTED = 0x0020
EVENT_DISCONNECTED = 0x0200


@dataclass(eq=False)
class _Item:
    """One accepted item: its header fields and where its bytes are until it is sent."""

    msg_id: int
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    order: Literal["C", "F"]
    options: dict[str, Any]
    """kind, metadata, ack (wait_for_ack)."""
    accepted_at: float
    use_shm: bool = False
    data: np.ndarray | None = None
    """Inline bytes (or, under policy="latest" without a slot, the frame to put in one)."""
    slot: int | None = None
    segment_name: str | None = None
    owned: bool = False
    """``data`` is a copy of our own (ZeroMQ may keep it); otherwise it is the caller's array."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def inline_bytes(self) -> int:
        return self.nbytes if self.slot is None else 0


class Sender:
    """Push items to receivers over ZeroMQ (see the module's documentation for the guarantees).

    ``bind=True``: this side binds the data and ack endpoints (receivers connect); ``False``:
    it connects to a receiver that binds (a viewer), naming itself in ``reply_to`` so that the
    receiver's ROUTER routes its acks back here.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        bind: bool = True,
        curve: CurveKeys | None = None,
        policy: Policy = "block",
        send_timeout: float = 5.0,
        linger: float = DEFAULT_LINGER_S,
        transport: TransportChoice = "auto",
        shm_threshold: int = DEFAULT_SHM_THRESHOLD,
        shm_slots: int = DEFAULT_SHM_SLOTS,
        shm_prefix: str = DEFAULT_SHM_PREFIX,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        high_water_mark: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise StreamConfigError(f"policy must be 'block' or 'latest', got {policy!r}")
        if transport not in TRANSPORTS:
            raise StreamConfigError(f"transport must be 'auto', 'inline' or 'shm', got {transport!r}")
        if transport == "shm" and not endpoints.local:
            raise StreamConfigError(
                f"transport='shm' needs a receiver on this host; host is {endpoints.host!r}"
            )
        self.endpoints = endpoints
        self.bind = bind
        self.curve = curve
        self.policy: Policy = policy
        self.send_timeout = send_timeout
        self.linger = linger
        self.transport: TransportChoice = transport
        self.shm_threshold = shm_threshold
        self.shm_slots = shm_slots
        self.shm_prefix = shm_prefix
        self.max_pending_bytes = max_pending_bytes
        self.high_water_mark = high_water_mark if high_water_mark is not None else (
            2 if policy == "latest" else 1000
        )
        self.stream = secrets.token_hex(8)
        self.reply_to: str | None = None if bind else f"{os.getpid()}-{self.stream}"
        self.sent = 0
        """Items handed to ZeroMQ."""
        self.dropped = 0
        """Items replaced by a newer one for the same path before they went out (``latest``)."""
        self.expired = 0
        """Items dropped because no receiver took them within ``linger`` seconds."""
        self.reclaimed = 0
        """Slots (or inline bytes) given up on: no receiver acknowledged them in ``send_timeout``."""
        self._lock = threading.RLock()
        self._link: Link | None = None
        self._out: Any = None
        self._acks: Any = None
        self._monitor: Any = None
        self._ring: SlotRing | None = None
        self._pid = os.getpid()
        self._next_id = 1
        self._queue: deque[_Item] = deque()  # accepted, not yet handed to ZeroMQ, in order
        self._latest: dict[str, _Item] = {}  # policy="latest": the newest per path not yet sent
        self._in_flight: dict[int, tuple[int, int]] = {}  # inline id -> (bytes, send number)
        self._peers: set[int] = set()  # the data socket's connections (file descriptors)
        self._suspect = 0  # inline items sent up to this send number may have gone to a peer that left
        self._acked_upto = 0  # the latest send number of an acknowledged inline item
        self._pending_bytes = 0  # inline bytes accepted and not yet acknowledged
        self._awaited: set[int] = set()
        self._acked: set[int] = set()
        self._headers = HeaderWriter(sender=self._pid, stream=self.stream, reply_to=self.reply_to)
        self._ack_reader = AckReader()
        self._pump: threading.Thread | None = None
        self._closing_deadline: float | None = None
        self._closed = False
        _SENDERS.add(self)

    # -- state anyone may read ------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Items accepted and not yet handed to ZeroMQ."""
        with self._lock:
            return len(self._queue) + len(self._latest)

    @property
    def pending_bytes(self) -> int:
        """Inline bytes accepted and not yet acknowledged (bounded by ``max_pending_bytes``)."""
        return self._pending_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        """Closed by its owner, still delivering in the background (up to ``linger``)."""
        return self._closing_deadline is not None and not self._closed

    @property
    def ring(self) -> SlotRing | None:
        return self._ring

    # -- sending ---------------------------------------------------------------------------------
    def send(
        self,
        array: np.ndarray,
        path: str,
        *,
        kind: str = "image",
        metadata: Mapping[str, Any] | None = None,
        transport: str | None = None,
        wait_for_ack: bool = False,
        timeout: float | None = None,
        policy: Policy | None = None,
    ) -> None:
        """Send ``array`` as ``path``: now, or queued for delivery. It arrives equal to
        ``np.asarray(array)``; the caller may change ``array`` as soon as this returns."""
        timeout = self.send_timeout if timeout is None else timeout
        policy = self.policy if policy is None else policy
        if policy not in POLICIES:
            raise StreamConfigError(f"policy must be 'block' or 'latest', got {policy!r}")
        array = np.asarray(array)
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            array = np.ascontiguousarray(array)  # the wire carries one of the two layouts
        dtype = checked_dtype(array.dtype)
        order: Literal["C", "F"] = "C" if array.flags.c_contiguous else "F"
        options = _checked_options(kind, metadata, wait_for_ack)
        use_shm = self._uses_shm(array.nbytes, transport)
        with self._lock:
            self._check_open()
            self._catch_up()
            item = _Item(self._take_id(), path, array.shape, dtype, order, options, time.monotonic(), use_shm)
            deadline = time.monotonic() + timeout
            if policy == "latest":
                self._offer_latest(item, array)
                if wait_for_ack:
                    self._wait_for_ack(item.msg_id, deadline, path, timeout)
                return
            if item.use_shm:
                self._wait_for_slot(deadline, path, timeout)
                self._fill(item, array)
            else:
                self._wait_for_room(item.nbytes, deadline, path, timeout)
                item.data = array
            self._accept(item)
            if wait_for_ack:
                self._wait_for_ack(item.msg_id, deadline, path, timeout)

    def frame(
        self,
        shape: tuple[int, ...] | int,
        dtype: Any,
        path: str,
        *,
        kind: str = "image",
        metadata: Mapping[str, Any] | None = None,
        wait_for_ack: bool = False,
        timeout: float | None = None,
    ) -> Frame:
        """The zero-copy producer: ``with sender.frame(shape, dtype, path) as buffer:`` hands out
        the next shared-memory slot as a C-ordered array to fill in place; the frame is sent when
        the block exits, and if the block raises nothing is sent and the slot is free again.

        Do not keep ``buffer`` past the block: the slot is the receiver's from then on. Where
        shared memory cannot be used (another host, ``transport="inline"``) the buffer is a
        private array, sent inline.
        """
        dims = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        if any(n < 0 for n in dims):
            raise StreamConfigError(f"frame shape {dims} has a negative dimension: pass sizes >= 0")
        options = _checked_options(kind, metadata, wait_for_ack)
        return Frame(self, dims, checked_dtype(dtype), path, options,
                     self.send_timeout if timeout is None else timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Hand what waits to ZeroMQ, for up to ``timeout`` seconds; whether nothing waits now."""
        deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
        with self._lock:
            while True:
                self._service()
                if not (self._queue or self._latest) or time.monotonic() >= deadline:
                    return not (self._queue or self._latest)
                self._drain_acks(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Wait until every item is acknowledged and every slot given back; whether that happened."""
        deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
        with self._lock:
            while True:
                self._service()
                if self._all_delivered() or time.monotonic() >= deadline:
                    return self._all_delivered()
                self._reclaim_stale()
                self._drain_acks(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Close: what was never delivered (no receiver yet) keeps going out in the background for
        up to ``linger`` seconds; what was delivered is waited for (slots given back) up to
        ``send_timeout``. With ``timeout``, everything is waited for here, for at most that long,
        and what is left is dropped."""
        with self._lock:
            if self._closed or self._closing_deadline is not None:
                return
            if os.getpid() != self._pid:
                self._closed = True  # a forked child must not touch its parent's sockets
                return
            if self._out is None:
                self._finish()
                return
            self._service()
            undelivered = bool(self._queue or self._latest)
            if timeout is None and undelivered:
                self._linger_in_background()
                return
        self.wait_delivered(self.send_timeout if timeout is None else timeout)
        with self._lock:
            self._finish(drop=timeout is not None)

    def close_in_background(self) -> None:
        """Close without waiting: whatever is still out is waited for by the pump, up to ``linger``."""
        # never wait long for the lock here: this runs from __del__, and at interpreter shutdown
        # a daemon thread frozen while holding it would hang the exit
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._closed or self._closing_deadline is not None:
                return
            if os.getpid() != self._pid:
                self._closed = True
                return
            if self._out is None or self._all_delivered():
                self._finish()
                return
            self._linger_in_background()
        finally:
            self._lock.release()

    def reopen(self) -> bool:
        """Take back a close that is still delivering in the background: the sender streams
        again, on the sockets it holds. Whether it could (False once it has finished)."""
        with self._lock:
            if self._closed or self._closing_deadline is None:
                return False
            self._closing_deadline = None
            _LINGERING.discard(self)
            return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until a background close has finished; whether it has."""
        pump = self._pump
        if pump is not None:
            pump.join(timeout)
        return self._closed

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if sys.is_finalizing():
            return  # the atexit handler has closed every sender; no thread can start now
        with contextlib.suppress(Exception):
            self.close_in_background()

    # -- internals (all under self._lock) ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._closing_deadline is not None:
            raise StreamConfigError("this sender is closed: make a new one to stream again")
        if self._out is None:
            self._open()

    def _open(self) -> None:
        z = zmq()
        try:
            link = Link(self.endpoints.host, serve=self.bind, curve=self.curve)
        except z.ZMQError as error:
            raise self._open_error(error) from error
        try:
            self._out = link.open(z.PUSH, self.endpoints.data, {
                z.SNDHWM: self.high_water_mark, z.LINGER: int(self.linger * 1000),
            })
            ack_options: dict[int, int | bytes] = {z.MAXMSGSIZE: MAX_ACK_BYTES * 4}
            if self.bind:
                self._acks = link.open(z.PULL, self.endpoints.ack, ack_options)  # acks of every receiver
            else:
                # the receiver binds and may serve many senders: its ROUTER sends each ack to
                # the sender named in the header's reply_to
                assert self.reply_to is not None
                ack_options[z.IDENTITY] = self.reply_to.encode()
                self._acks = link.open(z.DEALER, self.endpoints.ack, ack_options)
            self._monitor = self._out.get_monitor_socket(
                EVENT_CONNECTED | EVENT_ACCEPTED | EVENT_DISCONNECTED
            )
        except BaseException as error:
            link.close()
            self._out = self._acks = self._monitor = None
            if isinstance(error, z.ZMQError):
                raise self._open_error(error) from error
            raise
        self._link = link

    def _open_error(self, error: Any) -> Exception:
        """What a user is told when the stream's sockets cannot be opened."""
        z = zmq()
        addresses = f"{self.endpoints.data} (acks on {self.endpoints.ack})"
        if error.errno == z.EADDRINUSE:
            holder: Sender | None = next(
                (s for s in _LINGERING if s.endpoints == self.endpoints and s is not self), None
            )
            why = (
                f"a sender of this process closed with items not yet delivered holds it for up to "
                f"its linger={holder.linger:g} s; wait with its join(), or close it with "
                "close(timeout=0) to drop them"
                if holder is not None else "another sender or program has bound it; close that one"
            )
            return AddressInUseError(
                f"Cannot stream on {addresses}: the address is in use ({why}), or pick another port."
            )
        verb = "bind" if self.bind else "connect to"
        return StreamConfigError(
            f"Cannot {verb} {addresses}: {error.strerror}. Check host and port "
            f"(host={self.endpoints.host!r}, port={self.endpoints.port})."
        )

    def _uses_shm(self, nbytes: int, requested: str | None) -> bool:
        choice = requested or self.transport
        if choice == "auto":
            return self.endpoints.local and nbytes >= self.shm_threshold
        if choice == "shm":
            if not self.endpoints.local:
                raise StreamConfigError(
                    f"transport='shm' needs a receiver on this host; host is {self.endpoints.host!r}"
                )
            return True
        if choice != "inline":
            raise StreamConfigError(f"transport must be 'auto', 'inline' or 'shm', got {choice!r}")
        return False

    def _take_id(self) -> int:
        msg_id = self._next_id
        self._next_id += 1
        return msg_id

    def _slot_ring(self) -> SlotRing:
        if self._ring is None:
            self._ring = SlotRing(self.shm_prefix, self.shm_slots, self.stream)
        return self._ring

    def _wait_for_slot(self, deadline: float, path: str, timeout: float) -> None:
        """Wait until a slot is free (reclaiming slots no receiver gave back) until ``deadline``."""
        ring = self._slot_ring()
        while not self._free_slot():
            if ring.in_flight and ring.oldest_age() > self.send_timeout:
                # its receiver died or lost it: a fresh segment takes the slot's place (a reader
                # still holding the old one keeps its pages; its late ack is ignored)
                ring.reclaim_oldest()
                self.reclaimed += 1
                break
            self._service()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"No shared-memory slot was released within {timeout:g} s while streaming "
                    f"'{path}': is a receiver on {self.endpoints.data} running? (all "
                    f"{ring.slots} slots are {'held by receivers' if ring.in_flight else 'waiting for one'}; "
                    "raise shm_slots or send_timeout, or use policy='latest')"
                )
            self._drain_acks(min(ACK_POLL_S, remaining))

    def _free_slot(self) -> bool:
        """Whether a slot is free, taking the acks that have come in if none is."""
        ring = self._slot_ring()
        if ring.has_free():
            return True
        self._drain_acks(0.0)
        return ring.has_free()

    def _catch_up(self) -> None:
        """Before a new item: what waits goes first. With nothing waiting, acks are left on the
        socket until they are needed (a slot, room, an awaited item) or a batch has come."""
        if self._queue or self._latest:
            self._service()
        elif len(self._in_flight) >= ACK_BATCH:
            self._drain_acks(0.0)

    def _take(self, item: _Item) -> np.ndarray:
        """A free slot for ``item`` (the caller checked there is one), as an array to fill."""
        ring = self._slot_ring()
        try:
            slot, segment = ring.acquire(item.nbytes)
        except OSError as error:
            raise StorageIOError(
                f"Could not make a shared-memory segment of {item.nbytes} bytes for "
                f"'{item.path}': {error.strerror or error}. Free space in /dev/shm, send smaller "
                "frames, or use transport='inline'."
            ) from error
        item.slot, item.segment_name = slot, segment.name
        try:
            return ring.view(slot, item.shape, item.dtype, item.order)
        except BaseException:
            self._give_back(item)
            raise

    def _give_back(self, item: _Item) -> None:
        """``item`` did not go out: its slot is free again."""
        if item.slot is not None and self._ring is not None:
            self._ring.release(item.slot)
        item.slot = item.segment_name = None

    def _fill(self, item: _Item, array: np.ndarray) -> None:
        """Copy ``array`` into a free slot for ``item``."""
        np.copyto(self._take(item), array, casting="no")

    def _wait_for_room(self, nbytes: int, deadline: float, path: str, timeout: float) -> None:
        """Wait until ``nbytes`` more inline bytes fit in ``max_pending_bytes`` (an item larger
        than the limit goes alone)."""
        while self._pending_bytes and self._pending_bytes + nbytes > self.max_pending_bytes:
            self._reclaim_stale()
            self._service()
            if not self._pending_bytes or self._pending_bytes + nbytes <= self.max_pending_bytes:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"Could not stream '{path}' within {timeout:g} s: {self._pending_bytes} bytes "
                    f"are still waiting for a receiver on {self.endpoints.data} (the limit is "
                    f"max_pending_bytes={self.max_pending_bytes}). Start a receiver, raise "
                    "send_timeout or max_pending_bytes, or use policy='latest' to drop stale frames."
                )
            self._drain_acks(min(ACK_POLL_S, remaining))

    def _accept(self, item: _Item) -> None:
        """Send ``item`` now if nothing waits before it and ZeroMQ takes it; otherwise queue it."""
        self._pending_bytes += item.inline_bytes
        if item.options["ack"]:
            self._awaited.add(item.msg_id)
        if not self._queue:
            try:
                if self._try_send(item):
                    return
            except BaseException:  # nothing went out: undo what accepting it took
                self._pending_bytes -= item.inline_bytes
                self._awaited.discard(item.msg_id)
                self._give_back(item)
                raise
        if item.data is not None and item.slot is None and not item.owned:
            item.data = np.array(item.data, order="A", copy=True)  # the caller's array is free again
            item.owned = True
        item.options["queued"] = True
        self._queue.append(item)
        self._start_pump()

    def _offer_latest(self, item: _Item, array: np.ndarray) -> None:
        """policy="latest": the newest frame of its path replaces the one kept before (a path's
        frames never overtake each other); it goes now if a slot (or room) is free and no
        block-policy item waits, or is kept until it can. A kept frame holds its slot (or a
        private copy), so that trying again copies nothing."""
        if item.options["ack"]:
            self._awaited.add(item.msg_id)
        previous = self._latest.pop(item.path, None)
        reuse = None
        if previous is not None:
            self.dropped += 1
            self._awaited.discard(previous.msg_id)
            reuse = previous.data if previous.owned else None
            self._give_back(previous)
        if not self._queue and self._send_now(item, array):
            return
        if item.slot is None and not item.owned:
            item.data = _private_copy(array, reuse)
            item.owned = True
        self._latest[item.path] = item
        self._start_pump()

    def _send_now(self, item: _Item, array: np.ndarray | None) -> bool:
        """Send ``item`` if that needs no waiting: a free slot, or room for its inline bytes.
        A slot it took stays its own when ZeroMQ cannot take it yet."""
        if item.slot is None and item.use_shm:
            if not self._free_slot():
                self._reclaim_stale()
                if not self._slot_ring().has_free():
                    return False
            assert array is not None  # a kept frame without a slot has its private copy
            self._fill(item, array)
        elif item.slot is None:
            if self._pending_bytes and self._pending_bytes + item.nbytes > self.max_pending_bytes:
                self._drain_acks(0.0)
                self._reclaim_stale()
                if self._pending_bytes and self._pending_bytes + item.nbytes > self.max_pending_bytes:
                    return False
            if item.data is None:
                item.data = array
        self._pending_bytes += item.inline_bytes
        try:
            sent = self._try_send(item)
        except BaseException:
            self._pending_bytes -= item.inline_bytes
            self._give_back(item)
            raise
        if not sent:
            self._pending_bytes -= item.inline_bytes
        return sent

    def _try_send(self, item: _Item) -> bool:
        """Hand ``item`` to ZeroMQ without waiting; False when it would have to wait."""
        z = zmq()
        shm = None
        if item.slot is not None:
            shm = {"name": item.segment_name, "offset": DATA_OFFSET, "size": item.nbytes, "slot": item.slot}
        options = item.options
        raw = self._headers.encode(item.shape, item.dtype, item.order, item.path, kind=options["kind"],
                                   metadata=options["metadata"], ack=options["ack"], shm=shm,
                                   msg_id=item.msg_id)
        try:
            if shm is not None:
                self._out.send(raw, NOBLOCK)  # a copy of a few hundred bytes: cheaper than tracking
            else:
                assert item.data is not None
                data = item.data.reshape(-1, order="A").view(np.uint8).data if item.nbytes else b""
                self._out.send(raw, NOBLOCK | SNDMORE)
                # accepted with the first part: ZeroMQ's parts are atomic. The caller's array is
                # copied into ZeroMQ's message (one memcpy), because ZeroMQ holds a zero-copy
                # part until it has written it, long after save returns; a copy of our own it may
                # keep. Waiting on a MessageTracker instead would make save wait for the receiver.
                self._out.send(data, copy=not item.owned)
        except z.Again:
            return False
        if item.slot is not None:
            assert self._ring is not None
            self._ring.sent(item.slot)
        else:
            self._in_flight[item.msg_id] = (item.nbytes, self.sent + 1)
        self.sent += 1
        return True

    def _service(self) -> None:
        """Take acknowledgements, send what waits (in order) while ZeroMQ takes it, expire the stale."""
        self._drain_acks(0.0)
        self._watch_peers()
        while self._queue:
            if not self._try_send(self._queue[0]):
                break
            self._queue.popleft()
        if self._latest:
            self._send_latest()
        if self._queue or self._latest:
            self._expire()

    def _send_latest(self) -> None:
        for path in list(self._latest):
            item = self._latest[path]
            if not self._send_now(item, item.data):
                return
            del self._latest[path]

    def _expire(self) -> None:
        """Drop what waited longer than ``linger`` for a receiver, while none is connected: one
        that is connected is slow, not absent, and ``policy="block"`` waits for it."""
        if self._peers:
            return
        cutoff = time.monotonic() - self.linger
        expired: list[_Item] = []
        while self._queue and self._queue[0].accepted_at < cutoff:
            expired.append(self._queue.popleft())
        for path, item in list(self._latest.items()):
            if item.accepted_at < cutoff:
                expired.append(self._latest.pop(path))
        if expired:
            self._drop(expired, f"no receiver took them within linger={self.linger:g} s")

    def _drop(self, items: list[_Item], why: str) -> None:
        """Forget items taken out of the queue or the latest frames, never sent."""
        for item in items:
            if item.slot is not None:
                self._give_back(item)
            elif item.options["queued"]:
                self._pending_bytes -= item.inline_bytes  # counted when queued (latest: when sent)
            self._awaited.discard(item.msg_id)
        self.expired += len(items)
        logger.warning(
            "dropped %d item(s) never delivered to %s (%s), e.g. '%s'; %d dropped so far",
            len(items), self.endpoints.data, why, items[0].path, self.expired,
        )

    def _reclaim_stale(self) -> None:
        """Forget inline items that went to a receiver that has left, and give up slots that no
        receiver gave back in ``send_timeout``.

        ZeroMQ drops what a departed peer had not read, but a PUSH socket does not say which
        items went to which peer. So: when the last peer leaves, every inline item in flight is
        lost; when others stay, an item sent before the departure is lost once an item sent
        after it has been acknowledged (a receiver acknowledges in the order it receives). A
        receiver that is slow but alive keeps its items counted, so that it is what bounds the
        sender (``max_pending_bytes``), however long it takes, whoever else comes and goes.
        """
        self._watch_peers()
        if self._in_flight and self._suspect and self._acked_upto:
            lost = [msg_id for msg_id, (_, number) in self._in_flight.items()
                    if number <= self._suspect and number < self._acked_upto]
            self._forget(lost)
        ring = self._ring
        while ring is not None and ring.in_flight and ring.oldest_age() > self.send_timeout:
            ring.reclaim_oldest()
            self.reclaimed += 1

    def _forget(self, msg_ids: list[int]) -> None:
        """Stop counting inline items in flight that no receiver will acknowledge."""
        for msg_id in msg_ids:
            self._pending_bytes -= self._in_flight.pop(msg_id)[0]
        self.reclaimed += len(msg_ids)

    def _watch_peers(self) -> None:
        """Follow who is connected to the data socket (its monitor), a bounded number of events
        at a time (anyone on the host can connect and disconnect)."""
        monitor = self._monitor
        if monitor is None:
            return
        from zmq.utils.monitor import parse_monitor_message

        for _ in range(READ_LIMIT):
            if not monitor.getsockopt(EVENTS) & POLLIN:
                return
            event = parse_monitor_message(monitor.recv_multipart())
            peer = event["value"]  # the connection's file descriptor
            if event["event"] != EVENT_DISCONNECTED:
                self._peers.add(peer)
                continue
            self._peers.discard(peer)
            if not self._in_flight:
                continue
            if self._peers:
                self._suspect = self.sent
            else:
                self._forget(list(self._in_flight))

    def _drain_acks(self, wait: float) -> None:
        """Take the acknowledgements that have arrived (waiting up to ``wait`` s for the first),
        at most what the items out could have earned plus :data:`READ_LIMIT`: the rest waits for
        the next call, so that a flood of messages on the ack port cannot hold the caller."""
        socket = self._acks
        if socket is None:
            return
        if wait > 0 and not socket.poll(int(wait * 1000) or 1, POLLIN):
            return
        budget = len(self._in_flight) + (self._ring.in_flight if self._ring is not None else 0) + READ_LIMIT
        # asking for EVENTS costs a fraction of a recv that raises Again
        while budget and socket.getsockopt(EVENTS) & POLLIN:
            budget -= 1
            raw = socket.recv()
            if socket.getsockopt(RCVMORE):
                self._refuse_multipart_ack()
                continue
            ack = self._ack_reader.decode(raw)
            if ack is None:
                logger.warning("ignored a malformed acknowledgement")
            elif ack.stream == self.stream:  # others are meant for an earlier sender on this port
                self._on_ack(ack)

    def _refuse_multipart_ack(self) -> None:
        """An ack is one frame: read the rest of a longer message one frame at a time, keep none
        of it, and say so once (libzmq caps each frame, not a message: docs/streaming.md)."""
        assert self._acks is not None
        frames, size = 1, 0
        while self._acks.getsockopt(RCVMORE):
            size += len(self._acks.recv(copy=False))
            frames += 1
        logger.warning("ignored a message of %d frames (%d bytes past the first) on the ack socket "
                       "%s: an acknowledgement is one frame", frames, size, self.endpoints.ack)

    def _on_ack(self, ack: Ack) -> None:
        if ack.id is not None:
            sent = self._in_flight.pop(ack.id, None)
            if sent is not None:
                self._pending_bytes -= sent[0]
                self._acked_upto = max(self._acked_upto, sent[1])
            if ack.id in self._awaited:
                self._awaited.discard(ack.id)
                self._acked.add(ack.id)
        if ack.slot is not None and self._ring is not None:
            self._ring.release_if(ack.slot, ack.name)

    def _wait_for_ack(self, msg_id: int, deadline: float, path: str, timeout: float) -> None:
        while msg_id not in self._acked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._awaited.discard(msg_id)
                raise StreamTimeoutError(
                    f"The receiver did not acknowledge '{path}' within {timeout:g} s "
                    f"(is one reading from {self.endpoints.data}?)."
                )
            self._service()
            self._drain_acks(min(remaining, ACK_POLL_S))
        self._acked.discard(msg_id)

    def _all_delivered(self) -> bool:
        ring = self._ring
        return not (self._queue or self._latest or self._in_flight or (ring is not None and ring.in_flight))

    # -- the pump: delivers what waits, in the background -------------------------------------------
    def _start_pump(self) -> None:
        if self._pump is None or not self._pump.is_alive():
            self._pump = threading.Thread(target=self._run_pump, name="polystore-send", daemon=True)
            self._pump.start()

    def _run_pump(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                with contextlib.suppress(Exception):
                    self._service()
                closing = self._closing_deadline is not None
                if closing:
                    self._reclaim_stale()
                    done = self._all_delivered()
                    assert self._closing_deadline is not None
                    if done or time.monotonic() >= self._closing_deadline:
                        self._finish(drop=True)
                        return
                elif not (self._queue or self._latest):
                    self._pump = None
                    return
                interval = PUMP_INTERVAL_S if self._peers else PUMP_IDLE_INTERVAL_S
            time.sleep(interval)

    def _linger_in_background(self) -> None:
        self._closing_deadline = time.monotonic() + self.linger
        _LINGERING.add(self)
        self._start_pump()

    def _finish(self, drop: bool = False) -> None:
        """Drop what is left, close the sockets, unlink the segments. ``drop``: what ZeroMQ still
        holds is dropped too, at once (by default it keeps sending it for ``linger`` seconds,
        and a CURVE sender's own context would wait that long here to end)."""
        if self._closed:
            return
        if drop and self._out is not None:
            with contextlib.suppress(Exception):
                self._out.setsockopt(zmq().LINGER, 0)
        left = list(self._queue) + list(self._latest.values())
        self._queue.clear()
        self._latest.clear()
        if left:
            self._drop(left, "the sender closed before a receiver took them")
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._out.disable_monitor()
            self._monitor.close(0)
            self._monitor = None
        if self._link is not None:
            self._link.close()
            self._link = None
        self._out = self._acks = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._closed = True
        _LINGERING.discard(self)


class Frame:
    """``with sender.frame(...) as buffer``: see :meth:`Sender.frame`."""

    __slots__ = ("_buffer", "_item", "_sender", "_timeout")

    def __init__(self, sender: Sender, shape: tuple[int, ...], dtype: np.dtype[Any], path: str,
                 options: dict[str, Any], timeout: float) -> None:
        self._sender = sender
        self._timeout = timeout
        self._item = _Item(0, path, shape, dtype, "C", options, 0.0)
        self._buffer: np.ndarray | None = None

    def __enter__(self) -> np.ndarray:
        sender, item = self._sender, self._item
        item.use_shm = sender.endpoints.local and sender.transport != "inline"
        with sender._lock:
            sender._check_open()
            sender._catch_up()
            if item.use_shm:
                if sender.policy == "block":
                    sender._wait_for_slot(time.monotonic() + self._timeout, item.path, self._timeout)
                if sender._free_slot():
                    self._buffer = sender._take(item)
                    return self._buffer
            self._buffer = np.empty(item.shape, item.dtype)  # inline, or no slot free under "latest"
        return self._buffer

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        sender, item, buffer = self._sender, self._item, self._buffer
        self._buffer = None
        assert buffer is not None
        with sender._lock:
            if kind is not None or sender._closed:
                sender._give_back(item)  # nothing was sent: the slot is free again
                return
            item.msg_id = sender._take_id()
            item.accepted_at = time.monotonic()
            if item.slot is None:
                item.data, item.owned = buffer, True  # a private buffer: the block is over
            if sender.policy == "latest":
                sender._offer_latest(item, buffer)
            else:
                if item.slot is None:
                    sender._wait_for_room(item.nbytes, time.monotonic() + self._timeout, item.path,
                                          self._timeout)
                sender._accept(item)
            if item.options["ack"]:
                sender._wait_for_ack(item.msg_id, time.monotonic() + self._timeout, item.path, self._timeout)


def _checked_options(kind: str, metadata: Mapping[str, Any] | None, wait_for_ack: bool) -> dict[str, Any]:
    """The header options of an item, refused here (not after a slot is taken) if they cannot be sent."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    if metadata:
        encode_header(dict(metadata))  # JSON, or ProtocolError naming why not
    return {"kind": kind, "metadata": metadata, "ack": bool(wait_for_ack), "queued": False}


def _private_copy(array: np.ndarray, reuse: np.ndarray | None) -> np.ndarray:
    """A copy of ``array`` the caller cannot change, in ``reuse`` when that has its shape and dtype."""
    if reuse is not None and reuse.shape == array.shape and reuse.dtype == array.dtype and (
        reuse.flags.c_contiguous == array.flags.c_contiguous
    ):
        np.copyto(reuse, array, casting="no")
        return reuse
    return np.array(array, order="A", copy=True)


_SENDERS: weakref.WeakSet[Sender] = weakref.WeakSet()
_LINGERING: set[Sender] = set()
"""Senders closed with items still on their way: kept alive until their pump finishes."""


@atexit.register
def _deliver_before_exit() -> None:
    """At exit, give every sender its linger time to deliver what it accepted, then drop the rest.

    Here, not in a new thread: from Python 3.12 on, no thread can be started once the
    interpreter is shutting down. Senders already closing in the background are waited for.
    """
    for sender in list(_LINGERING):
        with contextlib.suppress(Exception):
            sender.join(sender.linger + 1.0)
    for sender in list(_SENDERS):
        with contextlib.suppress(Exception):
            if sender._closing_deadline is None:
                sender.close(sender.linger)
            # its pump must be gone before finalization freezes daemon threads, or one frozen
            # while holding the sender's lock would hang whoever asks for it next
            sender.join(1.0)
