"""Where a stream's sockets are, and how they are opened: the one place for both.

A stream has three endpoints, all derived from ``host`` and ``port``:

========  =================================  =========================
channel   tcp (host is a name or address)    ipc (host is ``ipc://p``)
========  =================================  =========================
data      ``tcp://host:port``                ``ipc://p``
acks      ``tcp://host:port+1``              ``ipc://p.ack``
control   ``tcp://host:port+2`` (viewers)    ``ipc://p.ctl``
========  =================================  =========================

:class:`Link` opens sockets for one side: the side that binds is the CURVE server, the side
that connects a client; LINGER, CURVE options and the authenticator are set here once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polystore.streaming._zmq import zmq
from polystore.streaming.errors import StreamConfigError
from polystore.streaming.security import CurveKeys, is_local, require_keys_for

ACK_PORT_OFFSET = 1
CONTROL_PORT_OFFSET = 2
BIND_RETRY_S = 1.0
"""How long a bind waits for an address a socket of this process has just closed: ZeroMQ
closes sockets on its I/O thread, after ``close()`` returns, so the port may still be held."""


@dataclass(frozen=True)
class Endpoints:
    """The data, acknowledgement and control addresses of one stream."""

    host: str = "127.0.0.1"
    port: int = 5555
    ack_port: int | None = None
    """Default ``port + 1``."""
    control_port: int | None = None
    """Default ``port + 2``."""

    def __post_init__(self) -> None:
        if self.is_ipc:
            return
        named = {"port": self.port, "ack_port": self.ack_port_number,
                 "control_port": self.control_port_number}
        for name, number in named.items():
            # ZeroMQ takes any number in an address and fails later, or binds a port it made
            # of the number, so a mistyped port would stream to nowhere
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                raise StreamConfigError(
                    f"{name}={number!r} is not a TCP port (1-65535); the ack and control ports "
                    f"are port+{ACK_PORT_OFFSET} and port+{CONTROL_PORT_OFFSET} unless given. "
                    "Choose a port up to 65533, or give ack_port and control_port."
                )

    @property
    def is_ipc(self) -> bool:
        return "://" in self.host

    @property
    def local(self) -> bool:
        """Whether the stream stays on this host (loopback or ipc): shared memory may be used."""
        return is_local(self.host)

    @property
    def data(self) -> str:
        return self.host if self.is_ipc else f"tcp://{self.host}:{self.port}"

    @property
    def ack(self) -> str:
        return self.host + ".ack" if self.is_ipc else f"tcp://{self.host}:{self.ack_port_number}"

    @property
    def control(self) -> str:
        return control_address(self.host, self.control_port_number)

    @property
    def ack_port_number(self) -> int:
        return self.ack_port if self.ack_port is not None else self.port + ACK_PORT_OFFSET

    @property
    def control_port_number(self) -> int:
        return self.control_port if self.control_port is not None else self.port + CONTROL_PORT_OFFSET

    @property
    def ports(self) -> tuple[int, ...]:
        """The TCP ports of the data, ack and control channels, in that order (none for ipc)."""
        return () if self.is_ipc else (self.port, self.ack_port_number, self.control_port_number)


def control_address(host: str, control_port: int) -> str:
    """The control channel's address on ``host`` at ``control_port`` (``<ipc path>.ctl`` beside
    an ipc:// data endpoint): what a client that knows only a viewer's control port dials."""
    return host + ".ctl" if "://" in host else f"tcp://{host}:{control_port}"


def bind(socket: Any, address: str, retry_for: float = BIND_RETRY_S) -> None:
    """``socket.bind(address)``, retrying for ``retry_for`` seconds while the address is in use."""
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


class Link:
    """A ZeroMQ context for one side of a stream and the sockets it opens.

    ``serve``: this side binds (and is the CURVE server, with an authenticator admitting
    ``curve.authorized_clients``); otherwise it connects (a CURVE client). Binding a public
    address without keys is refused here, before any socket exists.
    """

    def __init__(self, host: str, *, serve: bool, curve: CurveKeys | None = None,
                 bind_retry: float = BIND_RETRY_S) -> None:
        require_keys_for(host, serve, curve)
        z = zmq()
        self.serve = serve
        self.curve = curve
        self.bind_retry = bind_retry
        # a context of our own with CURVE, so that its authenticator admits only our clients
        self._own_context = curve is not None
        self.context: Any = z.Context() if self._own_context else z.Context.instance()
        self._authenticator: Any = None
        self._sockets: list[Any] = []
        try:
            if curve is not None and serve:
                self._authenticator = curve.start_authenticator(self.context)
        except BaseException:
            self.close()
            raise

    def open(self, kind: int, address: str, options: Mapping[int, int | bytes] | None = None) -> Any:
        """A socket of ``kind`` bound to (or connected to) ``address``, with ``options`` set first."""
        z = zmq()
        socket = self.context.socket(kind)
        try:
            socket.setsockopt(z.LINGER, 0)
            for option, value in (options or {}).items():
                socket.setsockopt(option, value)
            if self.curve is not None:
                self.curve.secure(socket, server=self.serve)
            if self.serve:
                bind(socket, address, self.bind_retry)
            else:
                socket.connect(address)
        except BaseException:
            socket.close(0)
            raise
        self._sockets.append(socket)
        return socket

    def close(self) -> None:
        """Close every socket opened here (each with its own LINGER: 0 unless it was given one),
        stop the authenticator, end an own context."""
        for socket in self._sockets:
            socket.close()
        self._sockets.clear()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._own_context:
            self.context.term()
            self._own_context = False
