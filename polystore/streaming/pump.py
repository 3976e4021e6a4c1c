"""The pump: the background thread that delivers what waits in a sender.

A :class:`Pump` runs only while something waits (or a closed sender still delivers): it calls
its ``step`` under the sender's lock, and sleeps between calls outside it, so that a caller of
``save`` never waits long for the lock. ``step`` does the work and says how long to pause
before the next look, or that there is nothing left to do and the thread ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

PUMP_INTERVAL_S = 0.002
"""How often the pump looks again while items wait (it runs only then)."""
PUMP_IDLE_INTERVAL_S = 0.02
"""How often it looks while no receiver is connected: only a connection can change anything."""

Step = Callable[[], float | None]
"""One look (under the lock): the pause before the next, or None to end the thread."""


class Pump:
    """A daemon thread calling ``step`` under ``lock`` until it returns None; started again by
    :meth:`start` once it has ended."""

    def __init__(self, lock: Any, step: Step, name: str = "polystore-send") -> None:
        self._lock = lock  # the sender's RLock: held while a step runs, never while sleeping
        self._step = step
        self._name = name
        self._thread: threading.Thread | None = None
        self._ended = False  # the thread made its last step (it may not have exited yet)

    def start(self) -> None:
        """Start the thread unless one runs (call under the lock)."""
        if self._thread is None or self._ended or not self._thread.is_alive():
            self._ended = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the latest thread to exit (not only to make its last step): at interpreter
        exit, a daemon thread frozen while it still holds the lock would hang the next taker."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                pause = self._step()
                if pause is None:
                    self._ended = True  # a start from now on makes a new thread
                    return
            time.sleep(pause)
