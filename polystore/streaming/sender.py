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

The pieces: :mod:`~polystore.streaming.outlet` (the sockets), :mod:`~polystore.streaming.acks`
(what is not acknowledged yet), :mod:`~polystore.streaming.slots` (the sender's shared-memory
slots), :mod:`~polystore.streaming.pump` (the background thread),
:mod:`~polystore.streaming.linger` (the time bound: expiry, closing in the background, exit),
:mod:`~polystore.streaming.producer` (:meth:`Sender.frame`, the zero-copy producer: the next
slot as an array to fill in place). This module is the queue and its policies, and the
sender's lifetime.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from polystore.streaming._zmq import zmq
from polystore.streaming.acks import ACK_POLL_S, READ_LIMIT, AckTracker
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import StreamConfigError, StreamTimeoutError
from polystore.streaming.linger import DEFAULT_LINGER_S, Linger, holder_of, register_for_exit
from polystore.streaming.outgoing import Outgoing, checked_options, private_copy
from polystore.streaming.outlet import Outlet, open_error
from polystore.streaming.producer import Frame
from polystore.streaming.protocol import DEFAULT_SHM_PREFIX, HeaderWriter, checked_dtype
from polystore.streaming.pump import PUMP_IDLE_INTERVAL_S, PUMP_INTERVAL_S, Pump
from polystore.streaming.security import CurveKeys
from polystore.streaming.shm import SlotRing
from polystore.streaming.slots import Slots

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
        self.endpoints = endpoints
        self.local = endpoints.local
        """Whether receivers are on this host (shared memory may be used): worked out once."""
        self.bind = bind
        self.curve = curve
        self.policy: Policy = policy
        self.send_timeout = send_timeout
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
        self._lock = threading.RLock()
        self._outlet: Outlet | None = None
        self._out: Any = None  # the outlet's data socket, while open
        self._pid = os.getpid()
        self._next_id = 1
        self._queue: deque[Outgoing] = deque()  # accepted, not yet handed to ZeroMQ, in order
        self._latest: dict[str, Outgoing] = {}  # policy="latest": the newest per path not yet sent
        self._tracker = AckTracker(self.stream, endpoints.ack)
        self._slots = Slots(shm_prefix, shm_slots, self.stream, self._tracker, endpoints.data)
        self._linger = Linger(linger, endpoints.data)
        self._headers = HeaderWriter(sender=self._pid, stream=self.stream, reply_to=self.reply_to)
        self._pump = Pump(self._lock, self._pump_step)
        self._closed = False
        register_for_exit(self)

    # -- state anyone may read ------------------------------------------------------------------
    @property
    def linger(self) -> float:
        """Seconds an item may wait with no receiver, and a close goes on in the background."""
        return self._linger.seconds

    @linger.setter
    def linger(self, seconds: float) -> None:
        self._linger.seconds = seconds

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
        return self._tracker.pending_bytes

    @property
    def reclaimed(self) -> int:
        """Slots (or inline bytes) given up on: no receiver acknowledged them in ``send_timeout``."""
        return self._tracker.reclaimed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        """Closed by its owner, still delivering in the background (up to ``linger``)."""
        return self._linger.deadline is not None and not self._closed

    @property
    def ring(self) -> SlotRing | None:
        return self._slots.ring

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
        options = checked_options(kind, metadata, wait_for_ack)
        use_shm = self._uses_shm(array.nbytes, transport)
        with self._lock:
            self._check_open()
            self._catch_up()
            item = Outgoing(self._take_id(), path, array.shape, dtype, order, options, time.monotonic(),
                            use_shm)
            deadline = time.monotonic() + timeout
            if policy == "latest":
                self._offer_latest(item, array)
                if wait_for_ack:
                    self._wait_for_ack(item.msg_id, deadline, path, timeout)
                return
            if item.use_shm:
                self._slots.wait(deadline, path, timeout, self.send_timeout, self._service)
                self._slots.fill(item, array)
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
        dims = (shape,) if isinstance(shape, int) else tuple(map(int, shape))
        if dims and min(dims) < 0:
            raise StreamConfigError(f"frame shape {dims} has a negative dimension: pass sizes >= 0")
        options = checked_options(kind, metadata, wait_for_ack)
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
            if self._closed or self._linger.deadline is not None:
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
            if self._closed or self._linger.deadline is not None:
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
        if self._out is None:
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
        self._outlet, self._out = outlet, outlet.data
        self._tracker.attach(outlet.acks, outlet.monitor)

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
        elif len(self._tracker.in_flight) >= ACK_BATCH:
            self._drain_acks(0.0)

    def _wait_for_room(self, nbytes: int, deadline: float, path: str, timeout: float) -> None:
        """Wait until ``nbytes`` more inline bytes fit in ``max_pending_bytes`` (an item larger
        than the limit goes alone)."""
        while self._over_room(nbytes):
            self._reclaim_stale()
            self._service()
            if not self._over_room(nbytes):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"Could not stream '{path}' within {timeout:g} s: {self._tracker.pending_bytes} bytes "
                    f"are still waiting for a receiver on {self.endpoints.data} (the limit is "
                    f"max_pending_bytes={self.max_pending_bytes}). Start a receiver, raise "
                    "send_timeout or max_pending_bytes, or use policy='latest' to drop stale frames."
                )
            self._drain_acks(min(ACK_POLL_S, remaining))

    def _over_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more inline bytes would pass ``max_pending_bytes`` (an item larger
        than the limit goes alone)."""
        pending = self._tracker.pending_bytes
        return bool(pending) and pending + nbytes > self.max_pending_bytes

    def _accept(self, item: Outgoing) -> None:
        """Send ``item`` now if nothing waits before it and ZeroMQ takes it; otherwise queue it."""
        self._tracker.pending_bytes += item.inline_bytes
        if item.options["ack"]:
            self._tracker.awaited.add(item.msg_id)
        if not self._queue:
            try:
                if self._try_send(item):
                    return
            except BaseException:  # nothing went out: undo what accepting it took
                self._tracker.pending_bytes -= item.inline_bytes
                self._tracker.awaited.discard(item.msg_id)
                self._slots.give_back(item)
                raise
        if item.data is not None and item.slot is None and not item.owned:
            item.data = np.array(item.data, order="A", copy=True)  # the caller's array is free again
            item.owned = True
        item.options["queued"] = True
        self._queue.append(item)
        self._start_pump()

    def _offer_latest(self, item: Outgoing, array: np.ndarray) -> None:
        """policy="latest": the newest frame of its path replaces the one kept before (a path's
        frames never overtake each other); it goes now if a slot (or room) is free and no
        block-policy item waits, or is kept until it can. A kept frame holds its slot (or a
        private copy), so that trying again copies nothing."""
        if item.options["ack"]:
            self._tracker.awaited.add(item.msg_id)
        previous = self._latest.pop(item.path, None)
        reuse = None
        if previous is not None:
            self.dropped += 1
            self._tracker.awaited.discard(previous.msg_id)
            reuse = previous.data if previous.owned else None
            self._slots.give_back(previous)
        if not self._queue and self._send_now(item, array):
            return
        if item.slot is None and not item.owned:
            item.data = private_copy(array, reuse)
            item.owned = True
        self._latest[item.path] = item
        self._start_pump()

    def _send_now(self, item: Outgoing, array: np.ndarray | None) -> bool:
        """Send ``item`` if that needs no waiting: a free slot, or room for its inline bytes.
        A slot it took stays its own when ZeroMQ cannot take it yet."""
        if item.slot is None and item.use_shm:
            if not self._slots.free():
                self._reclaim_stale()
                if not self._slots.made().has_free():
                    return False
            assert array is not None  # a kept frame without a slot has its private copy
            self._slots.fill(item, array)
        elif item.slot is None:
            if self._over_room(item.nbytes):
                self._drain_acks(0.0)
                self._reclaim_stale()
                if self._over_room(item.nbytes):
                    return False
            if item.data is None:
                item.data = array
        self._tracker.pending_bytes += item.inline_bytes
        try:
            sent = self._try_send(item)
        except BaseException:
            self._tracker.pending_bytes -= item.inline_bytes
            self._slots.give_back(item)
            raise
        if not sent:
            self._tracker.pending_bytes -= item.inline_bytes
        return sent

    def _try_send(self, item: Outgoing) -> bool:
        """Hand ``item`` to ZeroMQ without waiting; False when it would have to wait."""
        assert self._outlet is not None  # opened by _check_open before anything is accepted
        raw = item.header(self._headers)
        body = None
        if item.slot is None:
            assert item.data is not None
            body = item.data.reshape(-1, order="A").view(np.uint8).data if item.nbytes else b""
        # the caller's array is copied into ZeroMQ's message; a copy of our own it may keep
        if not self._outlet.push(raw, body, copy=not item.owned):
            return False
        if item.slot is not None:
            self._slots.made().sent(item.slot)
        else:
            self._tracker.sent_inline(item.msg_id, item.nbytes, self.sent + 1)
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
        if self._tracker.peers:
            return
        expired = self._linger.stale(self._queue, self._latest)
        if expired:
            self._drop(expired, f"no receiver took them within linger={self.linger:g} s")

    def _drop(self, items: list[Outgoing], why: str) -> None:
        """Forget items taken out of the queue or the latest frames, never sent."""
        for item in items:
            if item.slot is not None:
                self._slots.give_back(item)
            elif item.options["queued"]:
                self._tracker.pending_bytes -= item.inline_bytes  # counted when queued (latest: when sent)
            self._tracker.awaited.discard(item.msg_id)
        self._linger.dropped(items, why)

    def _reclaim_stale(self) -> None:
        """Forget inline items that went to a receiver that has left (see
        :meth:`AckTracker.reclaim_lost`), and give up slots no receiver gave back in ``send_timeout``."""
        self._watch_peers()
        self._tracker.reclaim_lost()
        self._slots.reclaim_stale(self.send_timeout)

    def _watch_peers(self) -> None:
        self._tracker.watch_peers(self.sent)

    def _drain_acks(self, wait: float) -> None:
        self._tracker.drain(wait, self._slots.ring)

    def _wait_for_ack(self, msg_id: int, deadline: float, path: str, timeout: float) -> None:
        while msg_id not in self._tracker.acked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._tracker.awaited.discard(msg_id)
                raise StreamTimeoutError(
                    f"The receiver did not acknowledge '{path}' within {timeout:g} s "
                    f"(is one reading from {self.endpoints.data}?)."
                )
            self._service()
            self._drain_acks(min(remaining, ACK_POLL_S))
        self._tracker.acked.discard(msg_id)

    def _all_delivered(self) -> bool:
        return not (self._queue or self._latest or self._tracker.in_flight or self._slots.in_flight)

    # -- the pump: delivers what waits, in the background -------------------------------------------
    def _start_pump(self) -> None:
        self._pump.start()

    def _pump_step(self) -> float | None:
        """One look of the pump (under the lock): the pause before the next, or None when done."""
        if self._closed:
            return None
        with contextlib.suppress(Exception):
            self._service()
        if self._linger.deadline is not None:  # closing: deliver until done or out of time
            self._reclaim_stale()
            if self._all_delivered() or self._linger.over():
                self._finish(drop=True)
                return None
        elif not (self._queue or self._latest):
            return None
        return PUMP_INTERVAL_S if self._tracker.peers else PUMP_IDLE_INTERVAL_S

    def _linger_in_background(self) -> None:
        self._linger.begin(self)
        self._pump.start()

    def _finish(self, drop: bool = False) -> None:
        """Drop what is left, close the sockets, unlink the segments. ``drop``: what ZeroMQ still
        holds is dropped too, at once (by default it keeps sending it for ``linger`` seconds,
        and a CURVE sender's own context would wait that long here to end)."""
        if self._closed:
            return
        left = list(self._queue) + list(self._latest.values())
        self._queue.clear()
        self._latest.clear()
        if left:
            self._drop(left, "the sender closed before a receiver took them")
        self._tracker.detach()
        if self._outlet is not None:
            self._outlet.close(drop)
            self._outlet = None
        self._out = None
        self._slots.close()
        self._closed = True
        self._linger.finished(self)

