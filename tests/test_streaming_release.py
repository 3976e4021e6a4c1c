"""Shared-memory slots given back through the segment's control block (``shm.release``).

A receiver that knows ``shm.release`` writes the item's id at RELEASE_AT instead of sending an
acknowledgement, and sends one only when the sender wrote that id at WAKE_AT (it waits for a
slot). The sender frees a slot only for the id of the item the slot carries. Peers that do not
know the field (protocol 2 as before: acks by message, frames at offset 64) still work both
ways. Real sockets and real segments; the peers written by hand here play the other end.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from net_helpers import free_port_block  # noqa: E402

from polystore import StreamingBackend  # noqa: E402
from polystore.streaming import StreamReceiver  # noqa: E402
from polystore.streaming.errors import ProtocolError  # noqa: E402
from polystore.streaming.protocol import (  # noqa: E402
    FRAME_AT,
    RELEASE_AT,
    WAKE_AT,
    Ack,
    Limits,
    decode,
    decode_ack,
    encode_ack,
    make_header,
)
from polystore.streaming.shm import AttachedSegment, stamp  # noqa: E402

PREFIX = "psrel_"
WORD = struct.Struct("<Q")


class ShmBackend(StreamingBackend):  # type: ignore[misc]
    SHM_PREFIX = PREFIX


@pytest.fixture
def port() -> int:
    return free_port_block(2)


@pytest.fixture
def context() -> Iterator[Any]:
    sockets: list[Any] = []

    class Sockets:
        def open(self, kind: int, address: str, *, bind: bool = False) -> Any:
            socket = zmq.Context.instance().socket(kind)
            socket.setsockopt(zmq.RCVTIMEO, 20_000)
            socket.setsockopt(zmq.LINGER, 0)
            (socket.bind if bind else socket.connect)(address)
            sockets.append(socket)
            return socket

    yield Sockets()
    for socket in sockets:
        socket.close(0)


def _frame(value: int) -> np.ndarray:
    return np.full((256, 512), value, np.uint16)  # 256 KiB: shared memory under the default threshold


def _mapped(name: str) -> mmap.mmap:
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_receivers_give_slots_back_in_the_segment_without_a_message(port: int, zero_copy: bool) -> None:
    """Every frame's slot came back as a message (a hand-over between the processes per frame);
    now the receiver writes the release into the segment and the sender reads no message."""
    with (
        StreamReceiver(port=port, zero_copy=zero_copy, shm_prefixes=(PREFIX,)).start() as receiver,
        ShmBackend(port=port, shm_slots=2, send_timeout=20) as backend,
    ):
        for index in range(8):
            backend.save(_frame(index), f"f/{index}.tif")
            item = receiver.get(timeout=20)
            assert int(item.array[0, 0]) == index and item.header["shm"]["release"] is True
            del item  # zero-copy: the slot is the receiver's until its last array is gone
        sender = backend.sender
        assert sender.wait_delivered(20)
        ring = sender.ring
        assert ring is not None and ring.given_back == 8
        assert sender.acknowledgements == 0


def test_a_sender_frees_a_slot_only_for_the_id_of_the_item_it_carries(port: int, context: Any) -> None:
    """Anyone who can map the segment can write its control block: a value other than the id
    of the item the slot carries frees nothing (the slot is reclaimed after send_timeout, its
    frame never written over); the right id frees it at once. A sender that waits asks for a
    message in the wake word."""
    pull = context.open(zmq.PULL, f"tcp://127.0.0.1:{port}")
    backend = ShmBackend(port=port, shm_slots=1, send_timeout=2)
    try:
        backend.save(_frame(1), "a.tif")
        first = json.loads(pull.recv())
        name, first_id = first["shm"]["name"], first["id"]
        assert first["shm"]["offset"] == FRAME_AT
        held = _mapped(name)
        WORD.pack_into(held, RELEASE_AT, first_id + 1)  # not the id it carries
        backend.save(_frame(2), "b.tif")  # no slot comes back: the one out is reclaimed
        second = json.loads(pull.recv())
        assert second["shm"]["name"] != name and backend.reclaimed == 1
        assert WORD.unpack_from(held, WAKE_AT)[0] == first_id  # it asked for a message while it waited
        assert np.frombuffer(held, np.uint16, count=256 * 512, offset=FRAME_AT).max() == 1  # not written over
        held.close()

        current = _mapped(second["shm"]["name"])
        WORD.pack_into(current, RELEASE_AT, second["id"])  # the right id
        backend.save(_frame(3), "c.tif")
        third = json.loads(pull.recv())
        assert third["shm"]["name"] == second["shm"]["name"] and backend.reclaimed == 1
        ring = backend.sender.ring
        assert ring is not None and ring.given_back == 1
        current.close()
    finally:
        backend.close(0)


def test_a_receiver_that_acknowledges_by_message_still_gets_every_frame(port: int, context: Any) -> None:
    """A receiver of protocol 2 before ``shm.release`` ignores the field and gives slots back by
    message, as a zero-copy receiver did (no id): the sender still frees them."""
    pull = context.open(zmq.PULL, f"tcp://127.0.0.1:{port}")
    acks = context.open(zmq.PUSH, f"tcp://127.0.0.1:{port + 1}")
    with ShmBackend(port=port, shm_slots=1, send_timeout=20) as backend:
        for index in range(4):
            backend.save(_frame(index), f"{index}.tif")  # from the second on: waits for the ack
            header = json.loads(pull.recv())
            segment = _mapped(header["shm"]["name"])
            assert int(np.frombuffer(segment, np.uint16, count=1, offset=header["shm"]["offset"])[0]) == index
            segment.close()
            acks.send(encode_ack(Ack(header["stream"], None, header["shm"]["slot"], header["shm"]["name"])))
        assert backend.sender.wait_delivered(20) and backend.sent == 4
        ring = backend.sender.ring
        assert ring is not None and ring.given_back == 0


class _HandSender:
    """A sender written by hand: one segment of ours, frames pushed to a receiver that connects."""

    def __init__(self, context: Any, port: int, *, frame_at: int, number: int) -> None:
        self.push = context.open(zmq.PUSH, f"tcp://127.0.0.1:{port}", bind=True)
        self.acks = context.open(zmq.PULL, f"tcp://127.0.0.1:{port + 1}", bind=True)
        self.frame_at = frame_at
        self.segment = shared_memory.SharedMemory(f"{PREFIX}{os.getpid()}_{number}", create=True,
                                                  size=frame_at + 64)
        buf = self.segment.buf
        assert buf is not None  # just created
        buf[:64] = stamp("s1")
        buf[frame_at:] = b"\x09" * 64
        self.buf: Any = buf

    def send(self, msg_id: int) -> None:
        shm: dict[str, Any] = {"name": self.segment.name, "offset": self.frame_at, "size": 64, "slot": 0}
        if self.frame_at >= FRAME_AT:
            shm["release"] = True
        header = make_header(np.zeros(64, np.uint8), "hand.tif", transport="shm", msg_id=msg_id,
                             stream="s1", shm=shm)
        self.push.send(json.dumps(header).encode())

    def close(self) -> None:
        del self.buf
        self.segment.close()
        self.segment.unlink()


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_a_receiver_writes_the_release_and_sends_a_message_only_when_asked(
    port: int, context: Any, zero_copy: bool
) -> None:
    sender = _HandSender(context, port, frame_at=FRAME_AT, number=9100)
    try:
        with StreamReceiver(port=port, zero_copy=zero_copy, shm_prefixes=(PREFIX,)).start() as receiver:
            sender.send(5)
            item = receiver.get(timeout=20)
            assert item.array.tolist() == [9] * 64
            del item  # zero-copy: given back here, as the last array goes; copying: before get returned
            assert WORD.unpack_from(sender.buf, RELEASE_AT)[0] == 5
            WORD.pack_into(sender.buf, WAKE_AT, 6)  # the sender waits for item 6's slot
            sender.send(6)
            item = receiver.get(timeout=20)
            del item
            ack = decode_ack(sender.acks.recv())  # acks come in order: none was sent for item 5
            assert ack is not None and (ack.id, ack.slot, ack.name) == (6, 0, sender.segment.name)
            assert WORD.unpack_from(sender.buf, RELEASE_AT)[0] == 6
    finally:
        sender.close()


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_a_receiver_writes_nothing_into_the_segment_of_a_sender_without_release(
    port: int, context: Any, zero_copy: bool
) -> None:
    """A sender of protocol 2 before ``shm.release`` puts its frame right after the stamp, at 64:
    the receiver gives the slot back by message, and never writes where the frame is."""
    sender = _HandSender(context, port, frame_at=64, number=9101)
    try:
        with StreamReceiver(port=port, zero_copy=zero_copy, shm_prefixes=(PREFIX,)).start() as receiver:
            sender.send(5)
            item = receiver.get(timeout=20)
            assert item.array.tolist() == [9] * 64
            del item
            ack = decode_ack(sender.acks.recv())
            assert ack is not None and (ack.slot, ack.name) == (0, sender.segment.name)
            assert bytes(sender.buf[64:]) == b"\x09" * 64
    finally:
        sender.close()


def test_a_segment_shrunk_or_closed_takes_no_release() -> None:
    """The release is written from any thread, maybe long after the frame was read: a segment
    shrunk to nothing meanwhile would make the write a SIGBUS (the receiver killed). It is
    checked first; then the caller sends the release as a message."""
    path = Path("/dev/shm") / f"{PREFIX}{os.getpid()}_9200"
    path.write_bytes(stamp("s1") + b"\0" * (FRAME_AT - 64 + 64))
    os.chmod(path, 0o600)
    try:
        segment = AttachedSegment(path.name)
        assert segment.give_back(3) is True
        assert WORD.unpack_from(path.read_bytes(), RELEASE_AT)[0] == 3
        os.truncate(path, 0)
        assert segment.give_back(4) is False
        segment.close()
        assert segment.give_back(5) is False
    finally:
        path.unlink(missing_ok=True)


def test_a_release_written_while_another_of_the_same_segment_is_written_does_not_hang() -> None:
    """Releases run wherever an item's last array dies, garbage collections included: one that
    runs inside another item's release of the same segment, on the same thread, must not wait
    for that thread (a non-reentrant lock would hang the receiver for good). The collection is
    played by the segment's own size check, which runs inside the release."""
    path = Path("/dev/shm") / f"{PREFIX}{os.getpid()}_9201"
    path.write_bytes(stamp("s1") + b"\0" * (FRAME_AT - 64 + 64))
    os.chmod(path, 0o600)
    nested: list[bool] = []

    class CollectedInside(AttachedSegment):
        def size_now(self) -> int:
            if not nested:  # another item of this segment dropped here, as a collection would
                nested.append(False)
                nested[0] = self.give_back(8)
            return super().size_now()

    segment = CollectedInside(path.name)
    thread = threading.Thread(target=segment.give_back, args=(7,), daemon=True)
    try:
        thread.start()
        thread.join(20)
        assert not thread.is_alive() and nested == [True]
        assert WORD.unpack_from(path.read_bytes(), RELEASE_AT)[0] == 7
    finally:
        if not thread.is_alive():  # a hung one holds the segment's lock
            segment.close()
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(("release", "offset", "why"), [
    ("yes", FRAME_AT, "shm.release must be true or false"),
    (1, FRAME_AT, "shm.release must be true or false"),
    (True, 64, "the control block takes bytes 64..128"),
])
def test_a_header_whose_release_cannot_be_honoured_is_refused(release: Any, offset: int, why: str) -> None:
    shm = {"name": f"{PREFIX}1_0", "offset": offset, "size": 8, "slot": 0, "release": release}
    header = make_header(np.zeros(8, np.uint8), "x.tif", transport="shm", stream="s1", shm=shm, msg_id=1)
    with pytest.raises(ProtocolError, match=why):
        decode([json.dumps(header).encode()], Limits(shm_prefixes=(PREFIX,)))


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_an_id_the_control_block_cannot_hold_is_refused_and_the_receiver_goes_on(
    port: int, context: Any, zero_copy: bool
) -> None:
    """The release is the item's id as 8 bytes: an id of 2**64 or more passed the header's checks,
    then the write raised ``struct.error`` (copying: the item counted as received and lost, a
    traceback logged; zero-copy: a traceback in the garbage collector, the slot never given back)."""
    sender = _HandSender(context, port, frame_at=FRAME_AT, number=9102)
    try:
        with StreamReceiver(port=port, zero_copy=zero_copy, shm_prefixes=(PREFIX,)).start() as receiver:
            sender.send(2**64)
            sender.send(7)
            item = receiver.get(timeout=20)
            assert item.header["id"] == 7 and item.array.tolist() == [9] * 64
            del item
            assert receiver.rejected == 1 and receiver.received == 1
            assert receiver.last_reason is not None and "id must be" in receiver.last_reason
            assert WORD.unpack_from(sender.buf, RELEASE_AT)[0] == 7
    finally:
        sender.close()
