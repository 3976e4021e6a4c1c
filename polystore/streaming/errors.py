"""The errors a stream raises: each a :class:`PolystoreError` and the builtin it stands for."""

from __future__ import annotations

import numbers
import queue
from typing import Any

from polystore.exceptions import PolystoreError


class ProtocolError(PolystoreError, ValueError):
    """A message that does not follow the protocol; ``reason`` says which rule it broke."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Rejected stream message: {reason}")
        self.reason = reason

    def __reduce__(self) -> tuple[type[ProtocolError], tuple[str]]:
        return type(self), (self.reason,)


class StreamTimeoutError(PolystoreError, TimeoutError):
    """A stream did not get what it waited for in time: room in its queue, a receiver's
    acknowledgement, an item to receive. The message says what and how to wait longer."""


class ReceiveTimeoutError(StreamTimeoutError, queue.Empty):
    """No item arrived in time (``StreamReceiver.get``); also the ``queue.Empty`` it raised before."""


class StreamConfigError(PolystoreError, ValueError):
    """A stream setting that cannot work (an unknown policy, binding a public address without
    keys, shared memory to another host); the message names the setting and the fix."""


class StreamStateError(PolystoreError, RuntimeError):
    """A stream object asked to do what its state does not allow (a receiver started twice)."""


class AddressInUseError(PolystoreError, OSError):
    """A stream's address is bound by another socket (often a closed sender still delivering
    what it holds); the message says who may hold it and what to do."""


class UnsupportedOperationError(PolystoreError, NotImplementedError):
    """An operation a backend declares it does not support (see its ``supports_*`` flags)."""


def check_settings(**settings: tuple[Any, int, bool]) -> None:
    """Refuse, when a sender or receiver is made, a setting (``name=(value, minimum, whole)``)
    that is not a number of at least its minimum: taken as it was, it failed at first use, with
    a bare TypeError or a misleading error."""
    for name, (value, minimum, whole) in settings.items():
        kind = numbers.Integral if whole else numbers.Real  # NumPy's scalars too
        if isinstance(value, bool) or not isinstance(value, kind) or not float(value) >= minimum:  # NaN too
            what = "a whole number" if whole else "a number of seconds"
            raise StreamConfigError(f"{name} must be {what} >= {minimum}, got {value!r}")
