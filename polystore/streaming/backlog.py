"""``policy="block"``: what a sender accepted and ZeroMQ could not take yet, kept in order.

An item goes to ZeroMQ at once when nothing waits before it and ZeroMQ takes it without
waiting; otherwise it waits here, in order, for the pump. An item that waits holds its slot,
or a private copy of its inline bytes (the caller's array is free again as ``save`` returns).
How much may wait is bounded before an item gets here (room under ``max_pending_bytes``, a
free slot: :mod:`~polystore.streaming.delivery`); how long, by ``linger``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from polystore.streaming.delivery import Delivery
from polystore.streaming.outgoing import Outgoing


class Backlog:
    """Accepted items not yet handed to ZeroMQ, in order (call under the sender's lock)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.items: deque[Outgoing] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def accept(self, item: Outgoing) -> bool:
        """Send ``item`` now if nothing waits before it and ZeroMQ takes it; otherwise keep it.
        Whether it was kept (then the pump must look again)."""
        delivery = self._delivery
        tracker = delivery.tracker
        tracker.pending_bytes += item.inline_bytes
        if item.options["ack"]:
            tracker.awaited.add(item.msg_id)
        if not self.items:
            try:
                if delivery.try_send(item):
                    return False
            except BaseException:  # nothing went out: undo what accepting it took
                tracker.pending_bytes -= item.inline_bytes
                tracker.awaited.discard(item.msg_id)
                delivery.slots.give_back(item)
                raise
        if item.data is not None and item.slot is None and not item.owned:
            item.data = np.array(item.data, order="A", copy=True)  # the caller's array is free again
            item.owned = True
        item.options["queued"] = True
        self.items.append(item)
        return True

    def send_waiting(self) -> None:
        """Send what waits, in order, while ZeroMQ takes it."""
        items, try_send = self.items, self._delivery.try_send
        while items:
            if not try_send(items[0]):
                return
            items.popleft()

    def take_all(self) -> list[Outgoing]:
        """Every waiting item, no longer kept (the sender closes)."""
        items = list(self.items)
        self.items.clear()
        return items
