"""Warnings a peer can cause, rate-limited: a flood of bad messages must not flood the log.

Anyone on the host can write to a stream's ports, so every warning about what arrived there
(a rejected item, a malformed ack, a refused control request) goes through a
:class:`ThrottledWarning`: the first ``burst`` of each ``interval`` seconds are logged as they
come; the rest are counted, and one summary line per interval gives their number and the last
one. ``logging``'s filters could drop records but not count them into a summary, hence this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 10.0


class ThrottledWarning:
    """``warn(message, *args)``: at most ``burst`` warnings per ``interval`` seconds to
    ``logger``, then one summary per interval (at the next warning after it, or :meth:`flush`)."""

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = DEFAULT_BURST,
                 interval: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        """What is counted, for the summary ("stream messages rejected")."""
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._logged = 0
        self.suppressed = 0
        """Warnings counted but not logged since the last summary."""
        self._last: str | None = None

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.interval:
                self._summarize()
                self._window_start, self._logged = now, 0
            if self._logged < self.burst:
                self._logged += 1
                self.logger.warning(message, *args)
                return
            self.suppressed += 1
            self._last = message % args if args else message

    def flush(self) -> None:
        """Log the summary of what was counted and not logged, if anything was (when closing)."""
        with self._lock:
            self._summarize()

    def due(self) -> bool:
        """Whether a summary waits and its interval is over (a loop may then :meth:`flush`)."""
        return bool(self.suppressed) and self._clock() - self._window_start >= self.interval

    def _summarize(self) -> None:
        if not self.suppressed:
            return
        self.logger.warning("%d more %s not logged one by one (at most %d every %g s); the last: %s",
                            self.suppressed, self.what, self.burst, self.interval, self._last)
        self.suppressed, self._last = 0, None
