"""Acknowledgements back to senders, from a receiver: routed, kept while a sender connects, bounded.

A receiver that connects to a sender pushes its acks into the sender's bound PULL. One that
binds (a viewer, serving many senders) sends each ack through a ROUTER to the sender named in
the item's ``reply_to``; a sender's back channel may not have finished connecting when its
first item arrives (it races the data channel), so such acks wait a few seconds, bounded per
sender and in senders (a flood of items naming senders that never connect costs a bounded
amount of memory and work).

Zero-copy slots are given back when their last array is collected, on any thread (a finalizer
may even run inside a garbage collection on the receiving thread, hence an RLock); the socket
belongs to the receiving thread, so the release waits in :attr:`AckRoute.releases` and a byte
on the wake pipe wakes the receiving thread's poll to send it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from typing import Any

from polystore.streaming._zmq import NOBLOCK, zmq
from polystore.streaming.protocol import Ack, encode_ack

ACK_ROUTE_WINDOW_S = 5.0
"""How long an ack waits for its sender's back channel to finish connecting."""
UNROUTED_RETRY_S = 0.01
MAX_UNROUTED_PEERS = 64
MAX_UNROUTED_PER_PEER = 256
"""Acks kept for senders whose back channel is not connected yet, at most: a flood of items
naming senders that never connect costs a bounded amount of memory and work."""
_MAX_RELEASE_MESSAGES = 64


class _UnroutedAcks:
    """Acks for senders (by routing id) whose DEALER has not connected yet, bounded."""

    def __init__(self) -> None:
        self.waiting: collections.OrderedDict[bytes, tuple[float, collections.deque[bytes]]] = (
            collections.OrderedDict()
        )
        self.dropped = 0
        self.next_retry = 0.0

    def __len__(self) -> int:
        return sum(len(messages) for _, messages in self.waiting.values())

    def keep(self, identity: bytes, message: bytes) -> None:
        entry = self.waiting.get(identity)
        if entry is None:
            if len(self.waiting) >= MAX_UNROUTED_PEERS:
                _, (_, evicted) = self.waiting.popitem(last=False)
                self.dropped += len(evicted)
            entry = self.waiting[identity] = (time.monotonic() + ACK_ROUTE_WINDOW_S, collections.deque())
        if len(entry[1]) >= MAX_UNROUTED_PER_PEER:
            entry[1].popleft()
            self.dropped += 1
        entry[1].append(message)


class AckRoute:
    """Sends acks on ``socket`` (a PUSH, or with ``bound`` a ROUTER) from the receiving thread."""

    def __init__(self, socket: Any, bound: bool) -> None:
        self.socket = socket
        self.bound = bound
        self.unrouted = _UnroutedAcks()
        self.releases: collections.deque[tuple[bytes, bytes]] = collections.deque()
        """Slot releases queued by any thread, for the receiving thread to send."""
        self.receiving_thread: int | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._release_messages: dict[tuple[str, int, str], bytes] = {}
        self.wake_read, self._wake_write = os.pipe()
        for fd in (self.wake_read, self._wake_write):
            os.set_blocking(fd, False)

    def release_message(self, stream: str, slot: int, name: str) -> bytes:
        """The ack that gives ``slot`` back (the same few per stream: made once, kept a while)."""
        key = (stream, slot, name)
        message = self._release_messages.get(key)
        if message is None:
            if len(self._release_messages) >= _MAX_RELEASE_MESSAGES:
                self._release_messages.clear()
            message = self._release_messages[key] = encode_ack(Ack(stream, None, slot, name))
        return message

    def release_later(self, reply_to: bytes, message: bytes) -> None:
        """Queue a slot release; runs wherever the item's last array died."""
        with self._lock:
            if self._closed:
                return
            self.releases.append((reply_to, message))
            if threading.get_ident() == self.receiving_thread:
                return  # the receiving loop sends it before it next waits: no need to wake it
            with contextlib.suppress(BlockingIOError):  # a full pipe is awake already
                os.write(self._wake_write, b"\0")

    def send_releases(self) -> None:
        while self.releases:
            reply_to, message = self.releases.popleft()
            self.send(reply_to, message)

    def drain_wake(self) -> None:
        """Empty the wake pipe (the receiving thread woke up)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_read, 4096)

    def send(self, reply_to: bytes, message: bytes) -> None:
        """Send an ack to the sender named ``reply_to`` (or the one sender connected to)."""
        z = zmq()
        if not self.bound:
            with contextlib.suppress(z.Again):
                self.socket.send(message, NOBLOCK)
            return
        if not reply_to:
            return  # a sender that binds its own back channel cannot be reached from here
        if reply_to in self.unrouted.waiting:
            self.unrouted.keep(reply_to, message)  # behind the ones already waiting: in order
            return
        try:
            self.socket.send_multipart([reply_to, message], NOBLOCK)
        except z.ZMQError as error:
            # EHOSTUNREACH: the sender's back channel has not finished connecting yet (it
            # races the data channel); keep the ack and try again for a few seconds
            if error.errno == z.EHOSTUNREACH:
                self.unrouted.keep(reply_to, message)

    def retry_unrouted(self, now: float) -> None:
        z = zmq()
        unrouted = self.unrouted
        unrouted.next_retry = now + UNROUTED_RETRY_S
        for identity, (deadline, messages) in list(unrouted.waiting.items()):
            while messages:
                try:
                    self.socket.send_multipart([identity, messages[0]], z.NOBLOCK)
                except z.ZMQError:
                    break
                messages.popleft()
            if not messages:
                del unrouted.waiting[identity]
            elif now >= deadline:
                del unrouted.waiting[identity]
                unrouted.dropped += len(messages)

    def close(self) -> None:
        """Stop taking releases and close the wake pipe (the socket is its Link's to close)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self.wake_read, self._wake_write):
                os.close(fd)
