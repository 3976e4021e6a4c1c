"""A sender's shared-memory slots: the ring (made on first use), a slot taken for an item and
given back when it does not go out, waiting for a free one, and giving up on those no receiver
gave back.

The ring itself (stamped segments, their release by acks) is :class:`~polystore.streaming.shm.SlotRing`;
this is the sender's use of it, with what a user is told when no slot comes free.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from polystore.exceptions import StorageIOError
from polystore.streaming.acks import ACK_POLL_S, AckTracker
from polystore.streaming.errors import StreamTimeoutError
from polystore.streaming.outgoing import Outgoing
from polystore.streaming.shm import SlotRing


class Slots:
    """The slots of one sender; acks that free them are taken through ``tracker``."""

    def __init__(self, prefix: str, count: int, stream: str, tracker: AckTracker, address: str) -> None:
        self.prefix = prefix
        self.count = count
        self.stream = stream
        self.address = address
        """The sender's data address, for the errors."""
        self._tracker = tracker
        self.ring: SlotRing | None = None
        """The ring, once an item has used shared memory."""

    def made(self) -> SlotRing:
        """The ring, made now if no item has used it yet."""
        if self.ring is None:
            self.ring = SlotRing(self.prefix, self.count, self.stream)
        return self.ring

    @property
    def in_flight(self) -> int:
        """Slots sent and not yet given back by a receiver."""
        return self.ring.in_flight if self.ring is not None else 0

    def free(self) -> bool:
        """Whether a slot is free, taking the acks that have come in if none is."""
        ring = self.made()
        if ring.has_free():
            return True
        self._tracker.drain(0.0, ring)
        return ring.has_free()

    def wait(self, deadline: float, path: str, timeout: float, send_timeout: float,
             service: Callable[[], None]) -> None:
        """Wait until a slot is free until ``deadline``, running ``service`` (the sender's queue)
        meanwhile, and reclaiming a slot no receiver gave back in ``send_timeout``."""
        ring = self.made()
        while not self.free():
            if ring.in_flight and ring.oldest_age() > send_timeout:
                # its receiver died or lost it: a fresh segment takes the slot's place (a reader
                # still holding the old one keeps its pages; its late ack is ignored)
                ring.reclaim_oldest()
                self._tracker.reclaimed += 1
                break
            service()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeoutError(
                    f"No shared-memory slot was released within {timeout:g} s while streaming "
                    f"'{path}': is a receiver on {self.address} running? (all "
                    f"{ring.slots} slots are {'held by receivers' if ring.in_flight else 'waiting for one'}; "
                    "raise shm_slots or send_timeout, or use policy='latest')"
                )
            self._tracker.drain(min(ACK_POLL_S, remaining), self.ring)

    def take(self, item: Outgoing) -> np.ndarray:
        """A free slot for ``item`` (the caller checked there is one), as an array to fill."""
        ring = self.made()
        try:
            slot, _ = ring.acquire(item.nbytes)
        except OSError as error:
            raise StorageIOError(
                f"Could not make a shared-memory segment of {item.nbytes} bytes for "
                f"'{item.path}': {error.strerror or error}. Free space in /dev/shm, send smaller "
                "frames, or use transport='inline'."
            ) from error
        item.slot, item.segment_name, item.prefix = slot, ring.name_of(slot), None
        try:
            return ring.view(slot, item.shape, item.dtype, item.order)
        except BaseException:
            self.give_back(item)
            raise

    def fill(self, item: Outgoing, array: np.ndarray) -> None:
        """Copy ``array`` into a free slot for ``item``."""
        np.copyto(self.take(item), array, casting="no")

    def give_back(self, item: Outgoing) -> None:
        """``item`` did not go out: its slot is free again."""
        if item.slot is not None and self.ring is not None:
            self.ring.release(item.slot)
        item.slot = item.segment_name = item.prefix = None

    def reclaim_stale(self, older_than: float) -> None:
        """Give up slots no receiver gave back within ``older_than`` seconds."""
        ring = self.ring
        while ring is not None and ring.in_flight and ring.oldest_age() > older_than:
            ring.reclaim_oldest()
            self._tracker.reclaimed += 1

    def close(self) -> None:
        """Unlink every segment."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None
