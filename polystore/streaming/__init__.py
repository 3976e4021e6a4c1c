"""Live streaming of arrays to viewers: a versioned wire protocol over ZeroMQ.

=============  =====================================================================
module         what
=============  =====================================================================
endpoints      data/ack/control addresses from host and port; sockets and CURVE, once
protocol       headers (versioned JSON), validation, acks, :class:`StreamItem`
payloads       ROI sets and tables as bytes for the wire
shm            the shared-memory ring, and what a receiver checks before reading it
outlet         a sender's sockets: data out, acks back, who is connected
acks           what receivers have not acknowledged yet (bytes in flight, awaited items)
outgoing       an item a sender accepted: header fields, where its bytes are
producer       :class:`Frame`: the zero-copy producer (``sender.frame(...)``): reserve, commit
slots          a sender's shared-memory slots: taken, given back, waited for
pump           the thread that delivers what waits in a sender
linger         how long items wait for a receiver; closing in the background; exit
delivery       a sender's wire: an item out without waiting; the bounds a caller waits on
backlog        ``policy="block"``: what waits to be sent, in order
latest         ``policy="latest"``: the newest frame per path
sender         :class:`Sender`: what a caller calls, the policies composed, lifetime
inbound        :class:`Inbound`: a receiver's socket end: validation, mapping, zero-copy views
ackroute       acks from a receiver back to its senders, routed and bounded
inbox          :class:`PathInbox`: a pull backend's items, kept by path
receiver       :class:`StreamReceiver`: the loop on its own thread that viewers reuse
throttle       rate-limited warnings about what peers send
backend        :class:`StreamingBackend`: a sender (push) or a receiver (pull), composed
viewer         the control channel, :class:`ViewerService`, launching, ViewerStreamingBackend
=============  =====================================================================

pyzmq (``pip install 'polystore[streaming]'``) is imported when a socket is first opened;
:mod:`polystore.streaming.protocol` needs only NumPy. The protocol is written down in
``docs/streaming.md``.
"""

from __future__ import annotations

from polystore.streaming.backend import StreamingBackend
from polystore.streaming.endpoints import Endpoints
from polystore.streaming.errors import (
    ProtocolError,
    ReceiveTimeoutError,
    StreamConfigError,
    StreamStateError,
    StreamTimeoutError,
    UnsupportedOperationError,
)
from polystore.streaming.protocol import DEFAULT_SHM_PREFIX, PROTOCOL_VERSION, StreamItem, path_metadata
from polystore.streaming.receiver import StreamReceiver
from polystore.streaming.security import CurveKeys
from polystore.streaming.sender import Frame, Sender
from polystore.streaming.shm import sweep_orphaned_segments

__all__ = [
    "DEFAULT_SHM_PREFIX",
    "PROTOCOL_VERSION",
    "CurveKeys",
    "Endpoints",
    "Frame",
    "ProtocolError",
    "ReceiveTimeoutError",
    "Sender",
    "StreamConfigError",
    "StreamItem",
    "StreamReceiver",
    "StreamStateError",
    "StreamTimeoutError",
    "StreamingBackend",
    "UnsupportedOperationError",
    "path_metadata",
    "sweep_orphaned_segments",
]
