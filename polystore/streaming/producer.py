"""The zero-copy producer: ``with sender.frame(shape, dtype, path) as buffer:`` (see :meth:`Sender.frame`).

The block hands out the sender's next free shared-memory slot as an array; the acquisition
writes into it in place, and the frame is sent when the block exits (nothing is copied after
the acquisition's own write). If the block raises, nothing is sent and the slot is free again.
Where shared memory cannot be used (another host, ``transport="inline"``) the buffer is a
private array, sent inline.

A :class:`Frame` is the ``with`` statement over the sender's producer interface (:class:`Producer`):
``reserve`` on entry, ``commit`` on a normal exit, ``cancel`` when the block raises.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

import numpy as np

from polystore.streaming.outgoing import Outgoing


class Producer(Protocol):
    """What a :class:`Frame` needs of a sender (:class:`~polystore.streaming.sender.Sender`)."""

    def reserve(self, item: Outgoing, timeout: float) -> np.ndarray: ...

    def commit(self, item: Outgoing, buffer: np.ndarray, timeout: float) -> None: ...

    def cancel(self, item: Outgoing) -> None: ...


class Frame:
    """``with sender.frame(...) as buffer``: see :meth:`Sender.frame`."""

    __slots__ = ("_buffer", "_item", "_sender", "_timeout")

    def __init__(self, sender: Producer, item: Outgoing, timeout: float) -> None:
        self._sender = sender
        self._item = item
        self._timeout = timeout
        self._buffer: np.ndarray | None = None

    def __enter__(self) -> np.ndarray:
        self._buffer = self._sender.reserve(self._item, self._timeout)
        return self._buffer

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        buffer, self._buffer = self._buffer, None
        assert buffer is not None  # __exit__ follows an __enter__ that returned it
        if kind is not None:
            self._sender.cancel(self._item)  # nothing is sent: the slot is free again
        else:
            self._sender.commit(self._item, buffer, self._timeout)
