"""What receivers have not acknowledged yet: the sender's bytes in flight, awaited items, peers.

Every item is acknowledged by the receiver (inline ones on receipt, shared-memory ones when the
slot is free again), so "bytes in flight" is what receivers have not taken yet. An
:class:`AckTracker` reads the back channel and the data socket's monitor a bounded number of
messages at a time (anyone on the host may write to the ack port, or connect and disconnect),
and keeps the counts the sender's limits are checked against.
"""

from __future__ import annotations

import logging
from typing import Any

from polystore.streaming._zmq import EVENTS, POLLIN, RCVMORE
from polystore.streaming.outlet import EVENT_DISCONNECTED
from polystore.streaming.protocol import Ack, AckReader
from polystore.streaming.shm import SlotRing
from polystore.streaming.throttle import ThrottledWarning

logger = logging.getLogger("polystore.streaming.sender")  # the sender's log, as before the split

READ_LIMIT = 256
"""Messages one look at the ack or monitor socket reads beyond those it can expect: anyone on
the host may write to the ack port, and a flood must not keep a caller inside ``save``."""
ACK_POLL_S = 0.005
"""The longest a waiting caller polls the back channel before looking at the rest again."""


class AckTracker:
    """Inline items in flight (bytes, send number), items awaited by ``wait_for_ack``, the data
    socket's peers; slots are given back to ``ring`` as their acks come."""

    def __init__(self, stream: str, ack_address: str) -> None:
        self.stream = stream
        self._socket: Any = None
        self._monitor: Any = None
        self._address = ack_address
        self._reader = AckReader()
        self.refusals = ThrottledWarning(logger, "messages ignored on the ack socket")
        self.in_flight: dict[int, tuple[int, int]] = {}
        """Inline id -> (bytes, send number)."""
        self.peers: set[int] = set()
        """The data socket's connections (file descriptors)."""
        self.pending_bytes = 0
        """Inline bytes accepted and not yet acknowledged."""
        self.awaited: set[int] = set()
        self.acked: set[int] = set()
        self.taken = 0
        """Acknowledgements of this stream read (a slot given back through its segment needs none)."""
        self.reclaimed = 0
        """Inline items given up on (and slots, counted by the sender): no receiver will ack them."""
        self._suspect = 0  # inline items sent up to this send number may have gone to a peer that left
        self._acked_upto = 0  # the latest send number of an acknowledged inline item

    def attach(self, acks: Any, monitor: Any) -> None:
        """Read acks from ``acks`` and connections from ``monitor`` (the sender's open sockets)."""
        self._socket, self._monitor = acks, monitor

    def detach(self) -> None:
        """The sockets are closed: nothing more is read (the counts stay)."""
        self._socket = self._monitor = None
        self.refusals.flush()

    def sent_inline(self, msg_id: int, nbytes: int, number: int) -> None:
        self.in_flight[msg_id] = (nbytes, number)

    def drain(self, wait: float, ring: SlotRing | None) -> None:
        """Take the acknowledgements that have arrived (waiting up to ``wait`` s for the first),
        at most what the items out could have earned plus :data:`READ_LIMIT`: the rest waits for
        the next call, so that a flood of messages on the ack port cannot hold the caller."""
        socket = self._socket
        if socket is None:
            return
        if ring is not None and ring.in_flight:
            freed = ring.collect()
            if wait > 0 and not freed and ring.in_flight:
                # about to wait: receivers that give slots back through the segment send a
                # message too from now on; one given back before the ask is seen by this look
                ring.ask_wake()
                freed = ring.collect()
            if freed:
                wait = 0.0  # a slot came back: the caller has something to look at now
        if wait > 0 and not socket.poll(int(wait * 1000) or 1, POLLIN):
            return
        budget = len(self.in_flight) + (ring.in_flight if ring is not None else 0) + READ_LIMIT
        # asking for EVENTS costs a fraction of a recv that raises Again
        while budget and socket.getsockopt(EVENTS) & POLLIN:
            budget -= 1
            frame = socket.recv(copy=False)  # says whether more follow: no getsockopt(RCVMORE)
            if frame.more:
                self._refuse_multipart()
                continue
            ack = self._reader.decode(frame.bytes)
            if ack is None:
                self.refusals.warn("ignored a malformed acknowledgement on %s", self._address)
            elif ack.stream == self.stream:  # others are meant for an earlier sender on this port
                self.taken += 1
                self._on_ack(ack, ring)

    def _refuse_multipart(self) -> None:
        """An ack is one frame: read the rest of a longer message one frame at a time, keep none
        of it, and say so once (libzmq caps each frame, not a message: docs/streaming.md)."""
        frames, size = 1, 0
        while self._socket.getsockopt(RCVMORE):
            size += len(self._socket.recv(copy=False))
            frames += 1
        self.refusals.warn("ignored a message of %d frames (%d bytes past the first) on the ack socket "
                           "%s: an acknowledgement is one frame", frames, size, self._address)

    def _on_ack(self, ack: Ack, ring: SlotRing | None) -> None:
        if ack.id is not None:
            sent = self.in_flight.pop(ack.id, None)
            if sent is not None:
                self.pending_bytes -= sent[0]
                self._acked_upto = max(self._acked_upto, sent[1])
            if ack.id in self.awaited:
                self.awaited.discard(ack.id)
                self.acked.add(ack.id)
        if ack.slot is not None and ring is not None:
            ring.release_if(ack.slot, ack.name, ack.id)

    def watch_peers(self, sent: int) -> None:
        """Follow who is connected to the data socket (its monitor), a bounded number of events
        at a time (anyone on the host can connect and disconnect). ``sent``: items sent so far."""
        from zmq.utils.monitor import parse_monitor_message

        monitor = self._monitor
        if monitor is None:
            return
        for _ in range(READ_LIMIT):
            if not monitor.getsockopt(EVENTS) & POLLIN:
                return
            event = parse_monitor_message(monitor.recv_multipart())
            peer = event["value"]  # the connection's file descriptor
            if event["event"] != EVENT_DISCONNECTED:
                self.peers.add(peer)
                continue
            self.peers.discard(peer)
            if not self.in_flight:
                continue
            if self.peers:
                self._suspect = sent
            else:
                self.forget(list(self.in_flight))

    def reclaim_lost(self) -> None:
        """Forget inline items that went to a receiver that has left.

        ZeroMQ drops what a departed peer had not read, but a PUSH socket does not say which
        items went to which peer. So: when the last peer leaves, every inline item in flight is
        lost; when others stay, an item sent before the departure is lost once an item sent
        after it has been acknowledged (a receiver acknowledges in the order it receives). A
        receiver that is slow but alive keeps its items counted, so that it is what bounds the
        sender (``max_pending_bytes``), however long it takes, whoever else comes and goes.
        """
        if self.in_flight and self._suspect and self._acked_upto:
            lost = [msg_id for msg_id, (_, number) in self.in_flight.items()
                    if number <= self._suspect and number < self._acked_upto]
            self.forget(lost)

    def forget(self, msg_ids: list[int]) -> None:
        """Stop counting inline items in flight that no receiver will acknowledge."""
        for msg_id in msg_ids:
            self.pending_bytes -= self.in_flight.pop(msg_id)[0]
        self.reclaimed += len(msg_ids)
