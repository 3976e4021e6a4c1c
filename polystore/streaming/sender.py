"""The sending end of a stream: what a caller calls, its policies composed, its lifetime.

:class:`Sender` sends an item at once when it can; what cannot go now (no receiver yet, a full
queue, no free slot) waits in the sender, and a background thread (the *pump*, running only
while something waits) delivers it when a receiver is there. Bounded by bytes
(``max_pending_bytes`` inline, the ring's ``shm_slots``: ``policy="block"`` waits up to
``send_timeout`` for room, then raises :class:`StreamTimeoutError`; ``policy="latest"`` keeps
the newest item per path) and by time (``linger``: an item no connected receiver took is
dropped, counted in ``expired``; a closed sender delivers in the background that long).
``save`` returns with nothing of the caller's array still referenced. docs/streaming.md
("Delivery") has the guarantees.

A sender is composed of: :mod:`~polystore.streaming.delivery` (the wire: sockets, acks, slots,
headers; the bounds a caller waits on), :mod:`~polystore.streaming.backlog` (``policy="block"``:
what waits, in order), :mod:`~polystore.streaming.latest` (``policy="latest"``: the newest frame
per path), :mod:`~polystore.streaming.pump` (the background thread) and
:mod:`~polystore.streaming.linger` (the time bound). :meth:`Sender.frame`
(:mod:`~polystore.streaming.producer`) is built on :meth:`Sender.reserve` and :meth:`Sender.commit`.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from polystore.streaming._zmq import zmq
from polystore.streaming.acks import ACK_POLL_S, READ_LIMIT
from polystore.streaming.backlog import Backlog
from polystore.streaming.delivery import Delivery
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import StreamConfigError, check_settings
from polystore.streaming.latest import LatestFrames
from polystore.streaming.linger import DEFAULT_LINGER_S, Linger, holder_of, register_for_exit
from polystore.streaming.outgoing import Outgoing, checked_options, checked_path
from polystore.streaming.outlet import Outlet, open_error
from polystore.streaming.producer import Frame
from polystore.streaming.protocol import DEFAULT_SHM_PREFIX, checked_dtype
from polystore.streaming.pump import PUMP_IDLE_INTERVAL_S, PUMP_INTERVAL_S, Pump
from polystore.streaming.security import CurveKeys
from polystore.streaming.shm import SlotRing

__all__ = ["DEFAULT_LINGER_S", "READ_LIMIT", "Frame", "Sender"]

Policy = Literal["block", "latest"]
TransportChoice = Literal["auto", "inline", "shm"]
POLICIES = ("block", "latest")
TRANSPORTS = ("auto", "inline", "shm")

DEFAULT_SHM_THRESHOLD = 256 * 1024
DEFAULT_SHM_SLOTS = 4
DEFAULT_MAX_PENDING_BYTES = 64 * 1024**2
ACK_BATCH = 32
"""Inline items out before a send takes their acks: acks are read when they are needed (a slot,
room, an awaited item) or in batches, not on every send."""


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
        check_settings(send_timeout=(send_timeout, 0, False), linger=(linger, 0, False),
                       shm_threshold=(shm_threshold, 0, True), shm_slots=(shm_slots, 1, True),
                       max_pending_bytes=(max_pending_bytes, 1, True),
                       high_water_mark=(0 if high_water_mark is None else high_water_mark, 0, True))
        self.endpoints = endpoints
        self.local = endpoints.local
        """Whether receivers are on this host (shared memory may be used): worked out once."""
        self.bind = bind
        self.curve = curve
        self.policy: Policy = policy
        self.transport: TransportChoice = transport
        self.shm_threshold = shm_threshold
        self.shm_slots = shm_slots
        self.shm_prefix = shm_prefix
        self.high_water_mark = high_water_mark if high_water_mark is not None else (
            2 if policy == "latest" else 1000
        )
        self.stream = secrets.token_hex(8)
        self.reply_to: str | None = None if bind else f"{os.getpid()}-{self.stream}"
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._next_id = 1
        self._delivery = Delivery(endpoints, stream=self.stream, reply_to=self.reply_to,
                                  shm_prefix=shm_prefix, shm_slots=shm_slots,
                                  max_pending_bytes=max_pending_bytes, send_timeout=send_timeout)
        self._queue = Backlog(self._delivery)  # policy="block": what waits, in order
        self._latest = LatestFrames(self._delivery)  # policy="latest": the newest per path not yet sent
        self._linger = Linger(linger, endpoints.data)
        self._pump = Pump(self._lock, self._pump_step)
        self._closed = False
        register_for_exit(self)

    # -- state anyone may read ------------------------------------------------------------------
    @property
    def send_timeout(self) -> float:
        """How long a caller waits for room, a slot or an ack; a slot held longer is reclaimed."""
        return self._delivery.send_timeout

    @send_timeout.setter
    def send_timeout(self, seconds: float) -> None:
        self._delivery.send_timeout = seconds

    @property
    def max_pending_bytes(self) -> int:
        """Inline bytes accepted and not yet acknowledged, at most (an item larger goes alone)."""
        return self._delivery.max_pending_bytes

    @max_pending_bytes.setter
    def max_pending_bytes(self, limit: int) -> None:
        self._delivery.max_pending_bytes = limit

    @property
    def linger(self) -> float:
        """Seconds an item may wait with no receiver, and a close goes on in the background."""
        return self._linger.seconds

    @linger.setter
    def linger(self, seconds: float) -> None:
        self._linger.seconds = seconds

    @property
    def sent(self) -> int:
        """Items handed to ZeroMQ."""
        return self._delivery.sent

    @property
    def dropped(self) -> int:
        """Items replaced by a newer one for the same path before they went out (``latest``)."""
        return self._latest.dropped

    @property
    def expired(self) -> int:
        """Items dropped because no receiver took them within ``linger`` seconds."""
        return self._linger.expired

    @property
    def pending(self) -> int:
        """Items accepted and not yet handed to ZeroMQ."""
        with self._lock:
            return len(self._queue) + len(self._latest)

    @property
    def pending_bytes(self) -> int:
        """Inline bytes accepted and not yet acknowledged (bounded by ``max_pending_bytes``)."""
        return self._delivery.tracker.pending_bytes

    @property
    def reclaimed(self) -> int:
        """Slots (or inline bytes) given up on: no receiver acknowledged them in ``send_timeout``."""
        return self._delivery.tracker.reclaimed

    @property
    def acknowledgements(self) -> int:
        """Acknowledgement messages read from receivers (a shared-memory slot given back through
        its segment, as receivers of this version do, takes none)."""
        return self._delivery.tracker.taken

    @property
    def opened(self) -> bool:
        """Whether its sockets are open (they open with the first item)."""
        return self._delivery.outlet is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        """Closed by its owner, still delivering in the background (up to ``linger``)."""
        return self._linger.deadline is not None and not self._closed

    @property
    def ring(self) -> SlotRing | None:
        return self._delivery.slots.ring

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
        path = checked_path(path)
        timeout = self.send_timeout if timeout is None else timeout
        policy = self.policy if policy is None else policy
        if policy not in POLICIES:
            raise StreamConfigError(f"policy must be 'block' or 'latest', got {policy!r}")
        array = np.asarray(array)
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            array = np.ascontiguousarray(array)  # the wire carries one of the two layouts
        dtype = checked_dtype(array.dtype)
        order: Literal["C", "F"] = "C" if array.flags.c_contiguous else "F"
        options = checked_options(kind, metadata, wait_for_ack)
        use_shm = self._uses_shm(array.nbytes, transport)
        with self._lock:
            self._check_open()
            self._catch_up()
            item = Outgoing(self._take_id(), path, array.shape, dtype, order, options, time.monotonic(),
                            use_shm)
            self._admit(item, array, policy, timeout)

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
        path = checked_path(path)
        dims = (shape,) if isinstance(shape, int) else tuple(map(int, shape))
        if dims and min(dims) < 0:
            raise StreamConfigError(f"frame shape {dims} has a negative dimension: pass sizes >= 0")
        checked = checked_dtype(dtype)
        if math.prod(dims) * checked.itemsize > sys.maxsize:
            raise StreamConfigError(f"frame shape {dims} of {checked} is more than an array can hold: "
                                    "pass a smaller shape")
        options = checked_options(kind, metadata, wait_for_ack)
        item = Outgoing(0, path, dims, checked, "C", options, 0.0)
        return Frame(self, item, self.send_timeout if timeout is None else timeout)

    # -- the producer's interface: a buffer reserved, filled by the caller, committed --------------
    def reserve(self, item: Outgoing, timeout: float) -> np.ndarray:
        """A C-ordered buffer for ``item`` to be filled in place: a free shared-memory slot
        (``policy="block"`` waits up to ``timeout`` for one), else a private array (inline, or
        no slot free under ``"latest"``). Follow with :meth:`commit` or :meth:`cancel`."""
        item.use_shm = self.local and self.transport != "inline"
        with self._lock:
            self._check_open()
            self._catch_up()
            if item.use_shm:
                delivery = self._delivery
                if self.policy == "block":
                    delivery.wait_for_slot(time.monotonic() + timeout, item.path, timeout, self._service)
                if delivery.slots.free():
                    buffer = delivery.slots.take(item)
                    item.plan_header(delivery.headers)  # while the caller fills the slot, not after
                    return buffer
        return np.empty(item.shape, item.dtype)

    def commit(self, item: Outgoing, buffer: np.ndarray, timeout: float) -> None:
        """Send ``item``, reserved with :meth:`reserve` and its ``buffer`` filled, as :meth:`send`
        would (under the sender's policy; ``wait_for_ack`` waits up to ``timeout``). A sender
        closed meanwhile sends nothing."""
        with self._lock:
            if self._closed:
                self._delivery.slots.give_back(item)
                return
            item.msg_id = self._take_id()
            item.accepted_at = time.monotonic()
            if item.slot is None:
                item.data, item.owned = buffer, True  # a private buffer: the caller is done with it
            self._admit(item, buffer, self.policy, timeout)

    def cancel(self, item: Outgoing) -> None:
        """Send nothing for ``item``, reserved with :meth:`reserve`: its slot is free again."""
        with self._lock:
            self._delivery.slots.give_back(item)

    def flush(self, timeout: float | None = None) -> bool:
        """Hand what waits to ZeroMQ, for up to ``timeout`` seconds; whether nothing waits now."""
        deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
        with self._lock:
            while True:
                self._service()
                if not (self._queue or self._latest) or time.monotonic() >= deadline:
                    return not (self._queue or self._latest)
                self._delivery.take_acks(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Wait until every item is acknowledged and every slot given back; whether that happened."""
        deadline = time.monotonic() + (self.send_timeout if timeout is None else timeout)
        with self._lock:
            while True:
                self._service()
                if self._all_delivered() or time.monotonic() >= deadline:
                    return self._all_delivered()
                self._delivery.reclaim_stale()
                self._delivery.take_acks(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Close: what was never delivered (no receiver yet) keeps going out in the background for
        up to ``linger`` seconds; what was delivered is waited for (slots given back) up to
        ``send_timeout``. With ``timeout``, everything is waited for here, for at most that long,
        and what is left is dropped."""
        with self._lock:
            if self._closed or self._linger.deadline is not None:
                return
            if os.getpid() != self._pid:
                self._closed = True  # a forked child must not touch its parent's sockets
                return
            if not self.opened:
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
            if self._closed or self._linger.deadline is not None:
                return
            if os.getpid() != self._pid:
                self._closed = True
                return
            if not self.opened or self._all_delivered():
                self._finish()
                return
            self._linger_in_background()
        finally:
            self._lock.release()

    def reopen(self) -> bool:
        """Take back a close that is still delivering in the background: the sender streams
        again, on the sockets it holds. Whether it could (False once it has finished)."""
        with self._lock:
            if self._closed or self._linger.deadline is None:
                return False
            self._linger.cancel(self)
            return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until a background close has finished; whether it has."""
        self._pump.join(timeout)
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
        if self._closed or self._linger.deadline is not None:
            raise StreamConfigError("this sender is closed: make a new one to stream again")
        if not self.opened:
            self._open()

    def _open(self) -> None:
        z = zmq()
        try:
            outlet = Outlet(self.endpoints, bind=self.bind, curve=self.curve,
                            high_water_mark=self.high_water_mark, linger=self.linger, reply_to=self.reply_to)
        except z.ZMQError as error:
            holder = holder_of(self.endpoints, self)
            raise open_error(error, self.endpoints, bind=self.bind,
                             holder_linger=holder.linger if holder is not None else None) from error
        self._delivery.attach(outlet)

    def _uses_shm(self, nbytes: int, requested: str | None) -> bool:
        choice = requested or self.transport
        if choice == "auto":
            return self.local and nbytes >= self.shm_threshold
        if choice == "shm":
            if not self.local:
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

    def _catch_up(self) -> None:
        """Before a new item: what waits goes first. With nothing waiting, acks are left on the
        socket until they are needed (a slot, room, an awaited item) or a batch has come."""
        if self._queue or self._latest:
            self._service()
        elif len(self._delivery.tracker.in_flight) >= ACK_BATCH:
            self._delivery.take_acks(0.0)

    def _admit(self, item: Outgoing, array: np.ndarray, policy: Policy, timeout: float) -> None:
        """Send an accepted ``item`` (its bytes in ``array``, or already in its slot) under
        ``policy``, or keep it for the pump; with ``ack``, wait until a receiver acknowledged it."""
        delivery = self._delivery
        deadline = time.monotonic() + timeout
        if policy == "latest":  # never waits; block-policy items that wait go first
            kept = self._latest.offer(item, array, behind=bool(self._queue))
        else:
            if item.slot is None and item.use_shm:
                delivery.wait_for_slot(deadline, item.path, timeout, self._service)
                delivery.slots.fill(item, array)
            elif item.slot is None:
                delivery.wait_for_room(item.nbytes, deadline, item.path, timeout, self._service)
                item.data = array
            kept = self._queue.accept(item)
        if kept:
            self._pump.start()
        if item.options["ack"]:
            delivery.wait_for_ack(item.msg_id, deadline, item.path, timeout, self._service)

    def _service(self) -> None:
        """Take acknowledgements, send what waits (in order) while ZeroMQ takes it, expire the stale."""
        delivery = self._delivery
        delivery.take_acks(0.0)
        delivery.watch_peers()
        if self._queue:
            self._queue.send_waiting()
        if self._latest:
            self._latest.send_waiting()
        if self._queue or self._latest:
            self._expire()

    def _expire(self) -> None:
        """Drop what waited longer than ``linger`` for a receiver, while none is connected: one
        that is connected is slow, not absent, and ``policy="block"`` waits for it."""
        if self._delivery.tracker.peers:
            return
        expired = self._linger.stale(self._queue.items, self._latest.frames)
        if expired:
            self._drop(expired, f"no receiver took them within linger={self.linger:g} s")

    def _drop(self, items: list[Outgoing], why: str) -> None:
        """Forget items taken out of the queue or the latest frames, never sent."""
        self._delivery.forget(items)
        self._linger.dropped(items, why)

    def _all_delivered(self) -> bool:
        return not (self._queue or self._latest or self._delivery.in_flight)

    # -- the pump: delivers what waits, in the background -------------------------------------------
    def _pump_step(self) -> float | None:
        """One look of the pump (under the lock): the pause before the next, or None when done."""
        if self._closed:
            return None
        with contextlib.suppress(Exception):
            self._service()
        if self._linger.deadline is not None:  # closing: deliver until done or out of time
            self._delivery.reclaim_stale()
            if self._all_delivered() or self._linger.over():
                self._finish(drop=True)
                return None
        elif not (self._queue or self._latest):
            return None
        return PUMP_INTERVAL_S if self._delivery.tracker.peers else PUMP_IDLE_INTERVAL_S

    def _linger_in_background(self) -> None:
        self._linger.begin(self)
        self._pump.start()

    def _finish(self, drop: bool = False) -> None:
        """Drop what is left, close the sockets, unlink the segments. ``drop``: what ZeroMQ still
        holds is dropped too, at once (by default it keeps sending it for ``linger`` seconds,
        and a CURVE sender's own context would wait that long here to end)."""
        if self._closed:
            return
        left = self._queue.take_all() + self._latest.take_all()
        if left:
            self._drop(left, "the sender closed before a receiver took them")
        self._delivery.close(drop)
        self._closed = True
        self._linger.finished(self)
