"""How an item a sender accepted goes out, and the bounds it is held to until receivers give it back.

:class:`Delivery` owns one sender's wire: its sockets (:mod:`~polystore.streaming.outlet`),
what receivers have not acknowledged (:mod:`~polystore.streaming.acks`), its shared-memory
slots (:mod:`~polystore.streaming.slots`) and the headers it writes. It hands an item to
ZeroMQ without waiting (:meth:`Delivery.try_send`), and waits, when a caller must, for room
under ``max_pending_bytes`` or for an item's acknowledgement. What waits to be sent, and in
what order, is the sender's (its queue) and the ``latest`` policy's
(:mod:`~polystore.streaming.latest`); this module knows nothing of policies.

Everything here runs under the sender's lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from polystore.streaming.acks import ACK_POLL_S, AckTracker
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import StreamTimeoutError
from polystore.streaming.outgoing import Outgoing
from polystore.streaming.outlet import Outlet
from polystore.streaming.protocol import HeaderWriter
from polystore.streaming.slots import Slots

Service = Callable[[], None]
"""The sender's look at what waits (acks, its queue, the latest frames), run while a caller waits."""


class Delivery:
    """One sender's wire and bounds (see the module's documentation)."""

    def __init__(self, endpoints: Endpoints, *, stream: str, reply_to: str | None, shm_prefix: str,
                 shm_slots: int, max_pending_bytes: int, send_timeout: float) -> None:
        self.endpoints = endpoints
        self.max_pending_bytes = max_pending_bytes
        self.send_timeout = send_timeout
        """How long a caller waits for room; a slot not given back within it is reclaimed."""
        self.tracker = AckTracker(stream, endpoints.ack)
        self.slots = Slots(shm_prefix, shm_slots, stream, self.tracker, endpoints.data)
        self.headers = HeaderWriter(sender=os.getpid(), stream=stream, reply_to=reply_to)
        self.outlet: Outlet | None = None
        """The sockets, while open."""
        self.sent = 0
        """Items handed to ZeroMQ."""

    # -- the sockets -------------------------------------------------------------------------------
    def attach(self, outlet: Outlet) -> None:
        """Send through ``outlet`` (just opened) and read its acks and connections."""
        self.outlet = outlet
        self.tracker.attach(outlet.acks, outlet.monitor)

    def close(self, drop: bool) -> None:
        """Close the sockets (``drop``: what ZeroMQ still holds is dropped at once) and unlink the
        segments; the counts stay."""
        self.tracker.detach()
        if self.outlet is not None:
            self.outlet.close(drop)
            self.outlet = None
        self.slots.close()

    # -- sending without waiting -------------------------------------------------------------------
    def try_send(self, item: Outgoing) -> bool:
        """Hand ``item`` to ZeroMQ without waiting; False when it would have to wait."""
        assert self.outlet is not None  # opened before anything is accepted
        raw = item.header(self.headers)
        body = None
        if item.slot is None:
            assert item.data is not None
            body = item.data.reshape(-1, order="A").view(np.uint8).data if item.nbytes else b""
        # the caller's array is copied into ZeroMQ's message; a copy of our own it may keep
        if not self.outlet.push(raw, body, copy=not item.owned):
            return False
        if item.slot is not None:
            self.slots.made().sent(item.slot, item.msg_id)
        else:
            self.tracker.sent_inline(item.msg_id, item.nbytes, self.sent + 1)
        self.sent += 1
        return True

    def forget(self, items: list[Outgoing]) -> None:
        """Items that will never be sent: give back what they held (a slot, counted bytes, a wait)."""
        for item in items:
            if item.slot is not None:
                self.slots.give_back(item)
            elif item.options["queued"]:
                self.tracker.pending_bytes -= item.inline_bytes  # counted when queued (latest: when sent)
            self.tracker.awaited.discard(item.msg_id)

    # -- what receivers have not given back --------------------------------------------------------
    def take_acks(self, wait: float) -> None:
        """Read the acknowledgements that have come, waiting up to ``wait`` s for the first."""
        self.tracker.drain(wait, self.slots.ring)

    def watch_peers(self) -> None:
        self.tracker.watch_peers(self.sent)

    def reclaim_stale(self) -> None:
        """Forget inline items that went to a receiver that has left (see
        :meth:`AckTracker.reclaim_lost`), and give up slots no receiver gave back in ``send_timeout``."""
        self.watch_peers()
        self.tracker.reclaim_lost()
        self.slots.reclaim_stale(self.send_timeout)

    @property
    def in_flight(self) -> bool:
        """Whether anything sent is not acknowledged yet (inline items, slots)."""
        return bool(self.tracker.in_flight or self.slots.in_flight)

    def over_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more inline bytes would pass ``max_pending_bytes`` (an item larger
        than the limit goes alone)."""
        pending = self.tracker.pending_bytes
        return bool(pending) and pending + nbytes > self.max_pending_bytes

    # -- waiting, for a caller that must ----------------------------------------------------------
    def wait_for_room(self, nbytes: int, deadline: float, path: str, timeout: float,
                      service: Service) -> None:
        """Wait until ``nbytes`` more inline bytes fit in ``max_pending_bytes``."""
        while self.over_room(nbytes):
            self.reclaim_stale()
            service()
            if not self.over_room(nbytes):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"Could not stream '{path}' within {timeout:g} s: {self.tracker.pending_bytes} bytes "
                    f"are still waiting for a receiver on {self.endpoints.data} (the limit is "
                    f"max_pending_bytes={self.max_pending_bytes}). Start a receiver, raise "
                    "send_timeout or max_pending_bytes, or use policy='latest' to drop stale frames."
                )
            self.take_acks(min(ACK_POLL_S, remaining))

    def wait_for_slot(self, deadline: float, path: str, timeout: float, service: Service) -> None:
        """Wait until a shared-memory slot is free (see :meth:`Slots.wait`)."""
        self.slots.wait(deadline, path, timeout, self.send_timeout, service)

    def wait_for_ack(self, msg_id: int, deadline: float, path: str, timeout: float, service: Service) -> None:
        """Wait until a receiver has acknowledged item ``msg_id`` (accepted with ``ack``)."""
        tracker = self.tracker
        while msg_id not in tracker.acked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tracker.awaited.discard(msg_id)
                raise StreamTimeoutError(
                    f"The receiver did not acknowledge '{path}' within {timeout:g} s "
                    f"(is one reading from {self.endpoints.data}?)."
                )
            service()
            self.take_acks(min(remaining, ACK_POLL_S))
        tracker.acked.discard(msg_id)
