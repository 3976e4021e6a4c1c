"""The one place pyzmq is imported (lazily, naming the ``streaming`` extra)."""

from __future__ import annotations

from typing import Any

from polystore.lazy import optional_import


def zmq() -> Any:
    """The ``zmq`` module, or :class:`MissingDependencyError` naming ``polystore[streaming]``."""
    return optional_import("zmq", extra="streaming", purpose="Streaming arrays over ZeroMQ")
