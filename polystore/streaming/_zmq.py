"""The one place pyzmq is imported (lazily, naming the ``streaming`` extra)."""

from __future__ import annotations

import sys
from typing import Any

from polystore.lazy import optional_import


def zmq() -> Any:
    """The ``zmq`` module, or :class:`MissingDependencyError` naming ``polystore[streaming]``."""
    module = sys.modules.get("zmq")  # the hot path asks on every frame: no import machinery
    if module is not None:
        return module
    return optional_import("zmq", extra="streaming", purpose="Streaming arrays over ZeroMQ")


# zmq.h's values as plain ints: on the hot path, pyzmq's enum members cost microseconds per
# operation (``socket.get(zmq.EVENTS) & zmq.POLLIN`` builds two enum objects)
EVENTS = 15
POLLIN = 1
NOBLOCK = 1
SNDMORE = 2
RCVMORE = 13
