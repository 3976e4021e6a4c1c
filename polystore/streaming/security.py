"""CurveZMQ for streams that leave the machine: encryption and client authentication.

The side that binds is the CURVE server; the side that connects is a client and must know
the server's public key. A server with ``authorized_clients`` accepts only those client
public keys (checked by a ``zmq.auth.thread.ThreadAuthenticator`` on its own context).

>>> server_public, server_secret = CurveKeys.keypair()
>>> client_public, client_secret = CurveKeys.keypair()
>>> sender = StreamingBackend(host="0.0.0.0", curve=CurveKeys(server_public, server_secret,
...                           authorized_clients=(client_public,)))
>>> receiver = StreamReceiver(host="10.0.0.5", curve=CurveKeys(client_public, client_secret,
...                           server_key=server_public))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from polystore.streaming._zmq import zmq
from polystore.streaming.errors import StreamConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local(host: str) -> bool:
    """Whether ``host`` is this machine only (loopback or an ipc:// endpoint)."""
    return host in LOOPBACK_HOSTS or host.startswith(("ipc://", "inproc://"))


def require_keys_for(host: str, bind: bool, curve: CurveKeys | None) -> None:
    """Binding a non-loopback address needs CurveZMQ keys *and* the list of clients to admit:
    keys alone would encrypt the traffic but let any client that knows the public key in."""
    if not bind or is_local(host):
        return
    if curve is None or not curve.authorized_clients:
        raise StreamConfigError(
            f"Binding {host!r} would let any machine that reaches it stream to or from this "
            "process. Pass curve=CurveKeys(public, secret, authorized_clients=[...]) "
            "(keys from CurveKeys.keypair()), or bind 127.0.0.1."
        )


@dataclass(frozen=True)
class CurveKeys:
    """One side's CurveZMQ keys (Z85 bytes, as ``zmq.curve_keypair()`` makes them)."""

    public_key: bytes | str
    secret_key: bytes | str
    server_key: bytes | str | None = None
    """Client side: the public key of the server it connects to."""
    authorized_clients: tuple[bytes | str, ...] | None = None
    """Server side: the client public keys it accepts (None: any client that has its key)."""

    def __post_init__(self) -> None:
        # keys are often kept as text; pyzmq takes bytes, and says only "Invalid argument" (at
        # bind or connect) for a key of the wrong length
        for field in ("public_key", "secret_key", "server_key"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _z85_key(value, field))
        if self.authorized_clients is not None:
            clients = tuple(_z85_key(key, "authorized_clients") for key in self.authorized_clients)
            object.__setattr__(self, "authorized_clients", clients)

    @staticmethod
    def keypair() -> tuple[bytes, bytes]:
        """A new ``(public, secret)`` pair."""
        public, secret = zmq().curve_keypair()
        return bytes(public), bytes(secret)

    def with_clients(self, clients: Iterable[bytes]) -> CurveKeys:
        return CurveKeys(self.public_key, self.secret_key, self.server_key, tuple(clients))

    def secure(self, socket: Any, *, server: bool) -> None:
        """Set the CURVE options on ``socket`` before it binds or connects."""
        z = zmq()
        socket.setsockopt(z.CURVE_PUBLICKEY, self.public_key)
        socket.setsockopt(z.CURVE_SECRETKEY, self.secret_key)
        if server:
            socket.setsockopt(z.CURVE_SERVER, 1)
        else:
            if self.server_key is None:
                raise StreamConfigError(
                    "a connecting CURVE client needs server_key (the binding side's public key)"
                )
            socket.setsockopt(z.CURVE_SERVERKEY, self.server_key)

    def start_authenticator(self, context: Any) -> Any:
        """A running ThreadAuthenticator on ``context`` that admits the authorized clients only."""
        from zmq.auth import CURVE_ALLOW_ANY
        from zmq.auth.thread import ThreadAuthenticator

        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        if self.authorized_clients is None:
            authenticator.configure_curve(domain="*", location=CURVE_ALLOW_ANY)
        else:
            authenticator.configure_curve_callback(
                domain="*", credentials_provider=_Allowed(self.authorized_clients)
            )
        return authenticator


_Z85 = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _z85_key(value: bytes | str, field: str) -> bytes:
    """``value`` as the 40 bytes of a Z85 key; :class:`StreamConfigError` naming ``field`` (never
    the value: it may be a secret) otherwise."""
    key = value.encode("ascii", "replace") if isinstance(value, str) else value
    if not isinstance(key, bytes | bytearray) or len(key) != 40 or not _Z85.issuperset(key):
        raise StreamConfigError(
            f"CurveKeys {field} must be a 40-character Z85 key (bytes or str), as CurveKeys.keypair() "
            f"makes them; got a {type(value).__name__} of length "
            f"{len(value) if isinstance(value, bytes | bytearray | str) else '?'}"
        )
    return bytes(key)


class _Allowed:
    def __init__(self, keys: Iterable[bytes | str]) -> None:
        self.keys = {_z85_key(k, "authorized_clients") for k in keys}

    def callback(self, domain: str, key: bytes) -> bool:
        # pyzmq's authenticator hands over the client key in Z85, as we hold them
        return bytes(key) in self.keys
