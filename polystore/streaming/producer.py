"""The zero-copy producer: ``with sender.frame(shape, dtype, path) as buffer:`` (see :meth:`Sender.frame`).

The block hands out the sender's next free shared-memory slot as an array; the acquisition
writes into it in place, and the frame is sent when the block exits (nothing is copied after
the acquisition's own write). If the block raises, nothing is sent and the slot is free again.
Where shared memory cannot be used (another host, ``transport="inline"``) the buffer is a
private array, sent inline.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.streaming.outgoing import Outgoing

if TYPE_CHECKING:
    from polystore.streaming.sender import Sender


class Frame:
    """``with sender.frame(...) as buffer``: see :meth:`Sender.frame`."""

    __slots__ = ("_buffer", "_item", "_sender", "_timeout")

    def __init__(self, sender: Sender, shape: tuple[int, ...], dtype: np.dtype[Any], path: str,
                 options: dict[str, Any], timeout: float) -> None:
        self._sender = sender
        self._timeout = timeout
        self._item = Outgoing(0, path, shape, dtype, "C", options, 0.0)
        self._buffer: np.ndarray | None = None

    def __enter__(self) -> np.ndarray:
        sender, item = self._sender, self._item
        item.use_shm = sender.local and sender.transport != "inline"
        with sender._lock:
            sender._check_open()
            sender._catch_up()
            if item.use_shm:
                slots = sender._slots
                if sender.policy == "block":
                    slots.wait(time.monotonic() + self._timeout, item.path, self._timeout,
                               sender.send_timeout, sender._service)
                if slots.free():
                    self._buffer = slots.take(item)
                    item.plan_header(sender._headers)  # while the block fills the slot, not after
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
                sender._slots.give_back(item)  # nothing was sent: the slot is free again
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
