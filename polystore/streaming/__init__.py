"""Live streaming of arrays to viewers: a versioned wire protocol over ZeroMQ.

pyzmq (``pip install 'polystore[streaming]'``) is imported when a socket is first opened;
:mod:`polystore.streaming.protocol` needs only NumPy. The protocol is written down in
``docs/streaming.md``.
"""

from __future__ import annotations

from polystore.streaming.backend import StreamingBackend
from polystore.streaming.protocol import PROTOCOL_VERSION, ProtocolError, StreamItem
from polystore.streaming.receiver import StreamReceiver
from polystore.streaming.security import CurveKeys

__all__ = [
    "PROTOCOL_VERSION",
    "CurveKeys",
    "ProtocolError",
    "StreamItem",
    "StreamReceiver",
    "StreamingBackend",
]
