"""How long what a sender accepted may wait for a receiver, and what becomes of it after.

An item that waited ``linger`` seconds with no receiver connected is dropped, counted in
``expired`` and logged at WARNING; while a receiver is connected, however slow, nothing expires.
A sender closed (or garbage-collected) with items still waiting keeps delivering them in the
background (its :mod:`~polystore.streaming.pump`) until they are delivered or ``linger`` has
passed; what is left then is dropped the same way. :class:`Linger` is one sender's share of
this; the module keeps every sender closing in the background alive until it is done, and at
interpreter exit gives every sender its ``linger`` to deliver.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
import weakref
from collections import deque
from typing import Protocol

from polystore.streaming.endpoints import Endpoints
from polystore.streaming.outgoing import Outgoing

logger = logging.getLogger("polystore.streaming.sender")  # the sender's log, as before the split

DEFAULT_LINGER_S = 5.0


class Lingering(Protocol):
    """What this module needs of a sender."""

    endpoints: Endpoints

    @property
    def linger(self) -> float: ...

    @property
    def closing(self) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...

    def join(self, timeout: float | None = None) -> bool: ...


class Linger:
    """One sender's time bound: items that waited ``seconds`` with no receiver are dropped, and
    a close in the background ends at ``deadline``; ``expired`` counts what was dropped."""

    def __init__(self, seconds: float, address: str) -> None:
        self.seconds = seconds
        self.address = address
        """The sender's data address, for the warning."""
        self.deadline: float | None = None
        """While the sender closes in the background: when it stops delivering."""
        self.expired = 0

    def begin(self, sender: Lingering) -> None:
        """The owner closed ``sender`` with items waiting: keep it alive until it is done."""
        self.deadline = time.monotonic() + self.seconds
        _LINGERING.add(sender)

    def cancel(self, sender: Lingering) -> None:
        """The owner took the close back: ``sender`` streams again."""
        self.deadline = None
        _LINGERING.discard(sender)

    def finished(self, sender: Lingering) -> None:
        """``sender`` is closed: nothing keeps it alive any more."""
        _LINGERING.discard(sender)

    def over(self) -> bool:
        """Whether a close in the background has run out of time."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def stale(self, queue: deque[Outgoing], latest: dict[str, Outgoing]) -> list[Outgoing]:
        """Take out of ``queue`` and ``latest`` what waited longer than ``seconds`` (call only
        while no receiver is connected: one that is connected is slow, not absent)."""
        cutoff = time.monotonic() - self.seconds
        expired: list[Outgoing] = []
        while queue and queue[0].accepted_at < cutoff:
            expired.append(queue.popleft())
        for path, item in list(latest.items()):
            if item.accepted_at < cutoff:
                expired.append(latest.pop(path))
        return expired

    def dropped(self, items: list[Outgoing], why: str) -> None:
        """Count and log ``items``, never delivered (the sender has given back what they held)."""
        self.expired += len(items)
        logger.warning(
            "dropped %d item(s) never delivered to %s (%s), e.g. '%s'; %d dropped so far",
            len(items), self.address, why, items[0].path, self.expired,
        )


def register_for_exit(sender: Lingering) -> None:
    """Give ``sender`` its linger at interpreter exit (held weakly: it may be collected before)."""
    _SENDERS.add(sender)


def holder_of(endpoints: Endpoints, other_than: Lingering) -> Lingering | None:
    """A sender of this process still delivering in the background on ``endpoints``, if any
    (it holds the address: a new sender there cannot bind it until it is done)."""
    return next((s for s in _LINGERING if s.endpoints == endpoints and s is not other_than), None)


_SENDERS: weakref.WeakSet[Lingering] = weakref.WeakSet()
_LINGERING: set[Lingering] = set()
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
            if not sender.closing:
                sender.close(sender.linger)
            # its pump must be gone before finalization freezes daemon threads, or one frozen
            # while holding the sender's lock would hang whoever asks for it next
            sender.join(1.0)
