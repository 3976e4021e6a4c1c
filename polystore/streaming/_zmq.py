"""The one place pyzmq is imported (lazily, naming the ``streaming`` extra)."""

from __future__ import annotations

from typing import Any

from polystore.lazy import optional_import


def zmq() -> Any:
    """The ``zmq`` module, or :class:`MissingDependencyError` naming ``polystore[streaming]``."""
    return optional_import("zmq", extra="streaming", purpose="Streaming arrays over ZeroMQ")


def endpoint(host: str, port: int) -> str:
    """``tcp://host:port``, or ``host`` itself when it is already a ZeroMQ endpoint (ipc://...)."""
    return host if "://" in host else f"tcp://{host}:{port}"


BIND_RETRY_S = 1.0
"""How long a bind waits for an address a socket of this process has just closed: ZeroMQ
closes sockets on its I/O thread, after ``close()`` returns, so the port may still be held."""


def bind(socket: Any, address: str, retry_for: float = BIND_RETRY_S) -> None:
    """``socket.bind(address)``, retrying for ``retry_for`` seconds while the address is in use."""
    import time

    z = zmq()
    deadline = time.monotonic() + retry_for
    while True:
        try:
            socket.bind(address)
            return
        except z.ZMQError as error:
            if error.errno != z.EADDRINUSE or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
