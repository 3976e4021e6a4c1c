"""How many stream items the bridge has shown, and waiting for a number of them.

Every item the bridge receives is reported done exactly once (shown, or failed with its error),
by whichever thread finished it: the receiver, a converting thread, or the event thread. Control
ops wait here until the items received before them are done (``wait``, and every question about
what the bridge shows).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from polystore.exceptions import InvalidOptionError

MAX_WAIT_S = 120.0
"""The longest one request may wait: the control channel answers one request at a time."""


def wait_timeout(value: Any, default: float) -> float:
    """A request's ``timeout`` in seconds, at most :data:`MAX_WAIT_S`; refused unless a finite
    number from 0 (a NaN made ``Condition.wait_for`` wait forever, and the control channel with it)."""
    if value is None:
        return default
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise InvalidOptionError(f"'timeout' is a finite number of seconds from 0, not {value!r}: "
                                 f"give how long to wait (at most {MAX_WAIT_S:g} s)")
    return min(float(value), MAX_WAIT_S)


def item_count(value: Any) -> int:
    """A request's ``handled`` (a number of items): a whole number from 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOptionError(f"'handled' is a number of items (a whole number from 0), not {value!r}")
    return value


class Progress:
    """Items done (shown or failed), the last error, and threads waiting for a count."""

    def __init__(self) -> None:
        self.handled = 0
        self.failed = 0
        self.last_error: str | None = None
        self._changed = threading.Condition()
        self._awaited: list[int] = []
        """The counts threads wait for (only reaching one of them wakes the waiters)."""

    def done(self, title: str, error: BaseException | None = None) -> None:
        """One item is done: shown in ``title``, or failed there with ``error``."""
        with self._changed:
            self.handled += 1
            if error is not None:
                self.failed += 1
                self.last_error = f"{title}: {error}"
            if any(self.handled >= target for target in self._awaited):
                self._changed.notify_all()  # only when a waiter is done, not at every frame

    def wait(self, target: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s (finite, see :func:`wait_timeout`) until ``target`` items are
        done; whether they are."""
        with self._changed:
            self._awaited.append(target)
            try:
                return self._changed.wait_for(lambda: self.handled >= target, timeout)
            finally:
                self._awaited.remove(target)

    def snapshot(self) -> dict[str, Any]:
        with self._changed:
            return {"handled": self.handled, "failed": self.failed, "last_error": self.last_error}
