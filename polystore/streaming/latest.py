"""``policy="latest"``: what cannot go now is kept as the newest frame of its path, never waited for.

A frame that finds no free slot (or no room for its inline bytes) replaces the one its path
kept before (counted in ``dropped``), so a viewer shows recent frames while the pipeline
runs, not a backlog. A kept frame holds the slot it was copied into, or a private copy (the
caller may reuse its array at once), so sending it later copies nothing more. A path's frames
never overtake each other, and none overtakes an item the sender's queue holds (the caller
says so with ``behind``). The pump sends kept frames as soon as a slot or room is free.
"""

from __future__ import annotations

import numpy as np

from polystore.streaming.delivery import Delivery
from polystore.streaming.outgoing import Outgoing, private_copy


class LatestFrames:
    """The newest frame per path not yet sent (call under the sender's lock)."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.frames: dict[str, Outgoing] = {}
        """Path -> its newest frame not yet sent, in the order the paths came."""
        self.dropped = 0
        """Frames replaced by a newer one of their path before they went out."""

    def __len__(self) -> int:
        return len(self.frames)

    def offer(self, item: Outgoing, array: np.ndarray, *, behind: bool) -> bool:
        """Send ``item`` now if that needs no waiting and nothing is ahead of it (``behind``: the
        sender's queue holds items), else keep it as its path's newest frame. Whether it was
        kept (then the pump must look again)."""
        tracker = self._delivery.tracker
        if item.options["ack"]:
            tracker.awaited.add(item.msg_id)
        previous = self.frames.pop(item.path, None)
        reuse = None
        if previous is not None:
            self.dropped += 1
            tracker.awaited.discard(previous.msg_id)
            reuse = previous.data if previous.owned else None
            self._delivery.slots.give_back(previous)
        if not behind and self._send_now(item, array):
            return False
        if item.slot is None and not item.owned:
            item.data = private_copy(array, reuse)
            item.owned = True
        self.frames[item.path] = item
        return True

    def send_waiting(self) -> None:
        """Send the kept frames, in the order their paths came, while none has to wait."""
        frames = self.frames
        for path in list(frames):
            item = frames[path]
            if not self._send_now(item, item.data):
                return
            del frames[path]

    def take_all(self) -> list[Outgoing]:
        """Every kept frame, no longer kept (the sender closes)."""
        frames = list(self.frames.values())
        self.frames.clear()
        return frames

    def _send_now(self, item: Outgoing, array: np.ndarray | None) -> bool:
        """Send ``item`` if that needs no waiting: a free slot, or room for its inline bytes.
        A slot it took stays its own when ZeroMQ cannot take it yet."""
        delivery = self._delivery
        slots, tracker = delivery.slots, delivery.tracker
        if item.slot is None and item.use_shm:
            if not slots.free():
                delivery.reclaim_stale()
                if not slots.made().has_free():
                    return False
            assert array is not None  # a kept frame without a slot has its private copy
            slots.fill(item, array)
        elif item.slot is None:
            if delivery.over_room(item.nbytes):
                delivery.take_acks(0.0)
                delivery.reclaim_stale()
                if delivery.over_room(item.nbytes):
                    return False
            if item.data is None:
                item.data = array
        tracker.pending_bytes += item.inline_bytes
        try:
            sent = delivery.try_send(item)
        except BaseException:
            tracker.pending_bytes -= item.inline_bytes
            slots.give_back(item)
            raise
        if not sent:
            tracker.pending_bytes -= item.inline_bytes
        return sent
