"""The sending end's sockets: data out, acknowledgements back, who is connected; why they cannot open.

:class:`Outlet` opens, for one :class:`~polystore.streaming.sender.Sender`, the PUSH socket items
go out on, the socket acknowledgements come back on (a PULL when the sender binds and every
receiver connects to it; a DEALER named ``reply_to`` when it connects to a receiver that binds,
whose ROUTER sends each ack to the sender that asked) and a monitor of the data socket's
connections. Socket options and CURVE are set by :class:`~polystore.streaming.endpoints.Link`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from polystore.streaming._zmq import NOBLOCK, SNDMORE, zmq
from polystore.streaming.endpoints import Endpoints, Link
from polystore.streaming.errors import AddressInUseError, StreamConfigError
from polystore.streaming.protocol import MAX_ACK_BYTES
from polystore.streaming.security import CurveKeys

# zmq.h's socket events (plain ints, as in _zmq): who is connected to the data socket
EVENT_CONNECTED = 0x0001
EVENT_ACCEPTED = 0x0020
EVENT_DISCONNECTED = 0x0200


class Outlet:
    """The data, ack and monitor sockets of one sender; a ZMQError if they cannot be opened
    (nothing is left open then)."""

    def __init__(self, endpoints: Endpoints, *, bind: bool, curve: CurveKeys | None, high_water_mark: int,
                 linger: float, reply_to: str | None) -> None:
        z = zmq()
        link = Link(endpoints.host, serve=bind, curve=curve)
        try:
            self.data: Any = link.open(z.PUSH, endpoints.data, {
                z.SNDHWM: high_water_mark, z.LINGER: int(linger * 1000),
            })
            ack_options: dict[int, int | bytes] = {z.MAXMSGSIZE: MAX_ACK_BYTES * 4}
            if bind:
                self.acks: Any = link.open(z.PULL, endpoints.ack, ack_options)  # acks of every receiver
            else:
                assert reply_to is not None
                ack_options[z.IDENTITY] = reply_to.encode()
                self.acks = link.open(z.DEALER, endpoints.ack, ack_options)
            self.monitor: Any = self.data.get_monitor_socket(
                EVENT_CONNECTED | EVENT_ACCEPTED | EVENT_DISCONNECTED
            )
        except BaseException:
            link.close()
            raise
        self._link = link

    def push(self, header: bytes, body: Any, *, copy: bool) -> bool:
        """Hand an item to the data socket without waiting: its header alone (``body`` None: a
        shared-memory item) or header and body. False when ZeroMQ would have to wait (then
        nothing went out). ``copy``: the body is the caller's array, copied into ZeroMQ's message
        (one memcpy), because ZeroMQ holds a zero-copy part until it has written it, long after
        save returns; a copy of the sender's own it may keep. Waiting on a MessageTracker instead
        would make save wait for the receiver."""
        try:
            if body is None:
                self.data.send(header, NOBLOCK)  # a copy of a few hundred bytes: cheaper than tracking
            else:
                self.data.send(header, NOBLOCK | SNDMORE)
                self.data.send(body, copy=copy)  # accepted with the first part: parts are atomic
        except zmq().Again:
            return False
        return True

    def close(self, drop: bool = False) -> None:
        """Close every socket. ``drop``: what ZeroMQ still holds is dropped at once (by default
        it keeps sending it for the sender's ``linger``, and a CURVE sender's own context would
        wait that long here to end)."""
        if drop:
            with contextlib.suppress(Exception):
                self.data.setsockopt(zmq().LINGER, 0)
        with contextlib.suppress(Exception):
            self.data.disable_monitor()
        self.monitor.close(0)
        self._link.close()


def open_error(error: Any, endpoints: Endpoints, *, bind: bool, holder_linger: float | None) -> Exception:
    """What a user is told when a sender's sockets cannot be opened (``error``: the ZMQError).
    ``holder_linger``: the linger of a sender of this process that still holds the address."""
    addresses = f"{endpoints.data} (acks on {endpoints.ack})"
    if error.errno == zmq().EADDRINUSE:
        why = (
            f"a sender of this process closed with items not yet delivered holds it for up to "
            f"its linger={holder_linger:g} s; wait with its join(), or close it with "
            "close(timeout=0) to drop them"
            if holder_linger is not None else "another sender or program has bound it; close that one"
        )
        return AddressInUseError(
            f"Cannot stream on {addresses}: the address is in use ({why}), or pick another port."
        )
    verb = "bind" if bind else "connect to"
    return StreamConfigError(
        f"Cannot {verb} {addresses}: {error.strerror}. Check host and port "
        f"(host={endpoints.host!r}, port={endpoints.port})."
    )
