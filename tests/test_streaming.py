"""StreamingBackend, the wire protocol and the receiver loop, with real processes and sockets.

Senders and receivers run in separate processes (multiprocessing 'spawn') talking over
127.0.0.1; nothing is mocked. No timing is asserted.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from net_helpers import free_port_block  # noqa: E402

from polystore import MissingDependencyError, StreamingBackend  # noqa: E402
from polystore.streaming import (  # noqa: E402
    CurveKeys,
    ProtocolError,
    StreamConfigError,
    StreamReceiver,
    StreamTimeoutError,
    UnsupportedOperationError,
)
from polystore.streaming.protocol import (  # noqa: E402
    Ack,
    HeaderReader,
    HeaderWriter,
    Limits,
    StreamItem,
    decode,
    encode_ack,
    make_header,
)
from polystore.streaming.shm import list_segments, stamp, sweep_orphaned_segments  # noqa: E402

SPAWN = mp.get_context("spawn")
TEST_PREFIX = "pstest_"


def free_port_pair() -> int:
    """A port p such that p and p + 1 (the ack channel) are both free on 127.0.0.1."""
    return free_port_block(2)


@pytest.fixture
def port() -> int:
    return free_port_pair()


# ---- the documented examples, as written ---------------------------------------------------


class MyStreamingBackend(StreamingBackend):
    """Custom streaming backend with extension filtering (custom_backends.txt, as written)."""

    _backend_type = "my_stream"
    VIEWER_TYPE = "myviewer"
    SHM_PREFIX = "myviewer_"

    # Declare which extensions this backend can stream
    SUPPORTED_EXTENSIONS = {
        ".tif", ".tiff", ".png", ".jpg", ".jpeg",
        ".roi.zip",  # Compound extensions work too
    }

    def save_batch(self, data_list, file_paths, **kwargs):  # type: ignore[no-untyped-def]
        """Stream data, automatically filtering unsupported files."""
        # Filter to only supported file types
        data_list, file_paths, skipped = self._filter_streamable_files(  # noqa: RUF059
            data_list, file_paths
        )

        if not data_list:
            return

        # Now stream only the supported files...
        for data, path in zip(data_list, file_paths, strict=False):
            self._stream_data(data, path, **kwargs)


class NapariStreamingBackend(StreamingBackend):
    """Stand-in for polystore_napari's backend (which comes later): same base, no registration."""

    VIEWER_TYPE = "napari"
    SHM_PREFIX = "napari_"
    SUPPORTED_EXTENSIONS = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".roi.zip"}


class RestrictedNapariBackend(NapariStreamingBackend):
    """Napari backend that only supports TIFF files."""

    SUPPORTED_EXTENSIONS = {".tif", ".tiff"}


def _spec_sender(port: int) -> None:
    from polystore import StreamingBackend

    # Sender
    backend = StreamingBackend(mode="push", port=port)
    data = np.array([1, 2, 3])
    backend.save(data, "stream")
    # no close(), as in the spec: a backend that goes away still delivers what it sent


def _spec_receiver(port: int, results: Any) -> None:
    from polystore import StreamingBackend

    # Receiver
    backend = StreamingBackend(mode="pull", port=port)
    received = backend.load("stream")
    results.put(received.tolist())


def test_spec_example_push_then_pull_in_two_processes(port: int) -> None:
    results = SPAWN.Queue()
    sender = SPAWN.Process(target=_spec_sender, args=(port,))
    receiver = SPAWN.Process(target=_spec_receiver, args=(port, results))
    sender.start()
    receiver.start()
    try:
        assert results.get(timeout=30) == [1, 2, 3]
    finally:
        sender.join(20)
        receiver.join(20)
    assert sender.exitcode == 0
    assert receiver.exitcode == 0


def _batch_sender(port: int, kind: str, count: int) -> None:
    backend: StreamingBackend
    if kind == "my_stream":
        backend = MyStreamingBackend(port=port, transport="inline")
    elif kind == "restricted":
        backend = RestrictedNapariBackend(port=port, transport="inline")
    else:
        backend = StreamingBackend(port=port, transport="inline")
    names = []
    for i in range(count):
        names += [f"plate/A0{i % 9 + 1}_s1_w1.tif", f"plate/m{i}.roi.zip"]
        names += [f"plate/t{i}.csv", f"plate/p{i}.PNG"]
    import roifile

    # ROI sets are ImagejRoi objects (they travel as .roi.zip bytes); everything else arrays
    data = [
        [roifile.ImagejRoi.frompoints([[i, 0], [4, 5], [0, 5]], name=f"r{i}")] if name.endswith(".roi.zip")
        else np.full((4, 5), i, dtype=np.uint16)
        for i, name in enumerate(names)
    ]
    backend.save_batch(data, names)
    backend.close()


def _collect(receiver: StreamReceiver, expected: int, timeout: float = 30) -> list[Any]:
    items = []
    deadline = time.monotonic() + timeout
    while len(items) < expected and time.monotonic() < deadline:
        try:
            items.append(receiver.get(timeout=0.5))
        except queue.Empty:
            continue
    return items


@pytest.mark.parametrize(
    ("kind", "suffixes"),
    [
        ("plain", [".tif", ".roi.zip", ".csv", ".PNG"]),
        ("my_stream", [".tif", ".roi.zip", ".PNG"]),
        ("restricted", [".tif"]),
    ],
)
def test_save_batch_streams_supported_items_in_order(port: int, kind: str, suffixes: list[str]) -> None:
    count = 5
    with StreamReceiver(port=port).start() as receiver:
        sender = SPAWN.Process(target=_batch_sender, args=(port, kind, count))
        sender.start()
        items = _collect(receiver, count * len(suffixes))
        sender.join(30)
        assert sender.exitcode == 0
        time.sleep(0.2)
        assert receiver.rejected == 0
        assert receiver.received == count * len(suffixes)  # nothing beyond the supported ones
    assert [item.path.rsplit("/", 1)[-1][item.path.rsplit("/", 1)[-1].index("."):] for item in items] == (
        suffixes * count
    )
    arrays = [item for item in items if item.kind != "roi_set"]
    assert all(item.array.shape == (4, 5) and item.array.dtype == np.uint16 for item in arrays)
    values = [int(item.array[0, 0]) if item.kind != "roi_set" else int(item.rois()[0].coordinates()[0, 0])
              for item in items]
    assert values == sorted(values)
    assert all(item.kind == "roi_set" for item in items if item.path.endswith(".roi.zip"))
    tif = next(item for item in items if item.path.endswith(".tif"))
    assert tif.metadata["well"] == "A01" and tif.metadata["site"] == 0 and tif.kind == "image"
    assert tif.metadata["plate"] == "plate" and tif.metadata["channel"] == 0


def test_my_streaming_backend_registers_under_its_name() -> None:
    from polystore.registry import registered_backend_classes

    assert registered_backend_classes()["my_stream"] is MyStreamingBackend
    assert registered_backend_classes()["streaming"] is StreamingBackend
    assert StreamingBackend.SUPPORTED_EXTENSIONS is None


# ---- extension filtering ---------------------------------------------------------------------


def test_filter_streamable_files_keeps_supported_and_logs_skipped(caplog: pytest.LogCaptureFixture) -> None:
    backend = MyStreamingBackend()
    paths = ["a/x.tif", "a/y.csv", "a/z.ROI.ZIP", "a/w.zip", Path("a/v.json"), "a/u.TIFF"]
    data = list(range(len(paths)))
    with caplog.at_level(logging.INFO, logger="polystore.streaming.backend"):
        kept, kept_paths, skipped = backend._filter_streamable_files(data, paths)
    assert kept == [0, 2, 5]
    assert kept_paths == ["a/x.tif", "a/z.ROI.ZIP", "a/u.TIFF"]
    assert skipped == ["a/y.csv", "a/w.zip", Path("a/v.json")]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "a/y.csv" in infos[0].getMessage() and "a/v.json" in infos[0].getMessage()

    everything = StreamingBackend()._filter_streamable_files(data, paths)
    assert everything == (data, paths, [])
    assert RestrictedNapariBackend()._filter_streamable_files(data, paths)[1] == ["a/x.tif", "a/u.TIFF"]
    with pytest.raises(ValueError, match="one path per item"):
        backend._filter_streamable_files([1], [])


def test_unsupported_single_save_sends_nothing(port: int) -> None:
    # No receiver exists: a .csv is skipped before anything is queued; a .tif waits in the queue.
    backend = RestrictedNapariBackend(port=port, send_timeout=0.2)
    backend.save(np.zeros(3), "table.csv")
    assert backend.sent == 0 and backend.pending == 0
    backend.save(np.zeros(3), "image.tif")
    assert backend.sent == 0 and backend.pending == 1
    backend.close(0.1)
    assert backend.expired == 1


# ---- late receiver, backpressure, acknowledgements ------------------------------------------


def _latest_sender(port: int, stop: Any, report: Any, alone: Any) -> None:
    backend = StreamingBackend(port=port, policy="latest", transport="inline")
    frame = 0
    while not stop.is_set():
        backend.save(np.full((8, 8), frame, dtype=np.int32), "live/frame.tif")
        frame += 1
        if frame == 50:
            alone.set()  # 50 frames with nobody listening: all but the newest were replaced
        time.sleep(0.01)
    backend.flush(2)
    report.put({"sent": backend.sent, "dropped": backend.dropped, "frames": frame})
    backend.close(2)


def test_receiver_started_after_sender_gets_next_frames(port: int) -> None:
    stop, alone = SPAWN.Event(), SPAWN.Event()
    report = SPAWN.Queue()
    sender = SPAWN.Process(target=_latest_sender, args=(port, stop, report, alone))
    sender.start()
    try:
        assert alone.wait(60)  # the sender runs with nobody listening: it keeps only the newest frame
        with StreamReceiver(port=port).start() as receiver:
            items = _collect(receiver, 10)
            stop.set()
            stats = report.get(timeout=20)
    finally:
        stop.set()
        sender.join(20)
    assert sender.exitcode == 0
    assert len(items) == 10
    values = [int(item.array[0, 0]) for item in items]
    assert values == sorted(set(values))  # newer and newer frames, none twice
    assert stats["dropped"] > 0  # frames replaced while no receiver was there
    assert stats["sent"] + stats["dropped"] == stats["frames"]


def test_without_a_receiver_save_queues_until_the_byte_limit_then_send_timeout_bounds_it(port: int) -> None:
    backend = StreamingBackend(port=port, send_timeout=0.3, max_pending_bytes=4096, transport="inline")
    for index in range(4):
        backend.save(np.full(128, index, np.float64), f"nobody/{index}.npy")  # 1 KiB each: queued
    assert (backend.sent, backend.pending, backend.sender.pending_bytes) == (0, 4, 4096)
    with pytest.raises(StreamTimeoutError, match=f"127.0.0.1:{port}.*max_pending_bytes=4096"):
        backend.save(np.zeros(128), "nobody/listens.npy")
    with pytest.raises(TimeoutError, match="waiting for a receiver"):  # also the builtin
        backend.save(np.zeros(128), "nobody/listens.npy", timeout=0.1)
    assert backend.sent == 0 and backend.pending == 4
    backend.close(0.1)
    assert backend.expired == 4


def test_latest_policy_never_blocks_and_counts_drops(port: int) -> None:
    backend = StreamingBackend(port=port, policy="latest")
    for i in range(50):
        backend.save(np.full(4, i), "a.tif")
        backend.save(np.full(4, i), "b.tif")
    assert backend.sent == 0
    assert backend.pending == 2  # only the newest frame per path is kept
    assert backend.dropped == 98
    assert backend.flush(0.1) is False
    backend.close(0.1)


def _ack_sender(port: int, results: Any) -> None:
    backend = StreamingBackend(port=port, send_timeout=20)
    for i in range(3):
        backend.save(np.full(10, i, dtype=np.float32), f"acked/{i}.tif", wait_for_ack=True)
        results.put(("acked", i))
    backend.close()


def test_wait_for_ack_returns_after_the_receiver_has_the_item(port: int) -> None:
    results = SPAWN.Queue()
    got: list[int] = []
    with StreamReceiver(port=port).start(lambda item: got.append(int(item.array[0]))) as receiver:
        sender = SPAWN.Process(target=_ack_sender, args=(port, results))
        sender.start()
        acked = [results.get(timeout=30) for _ in range(3)]
        # each save returned only once its item had been received (the ack follows receipt)
        assert acked == [("acked", 0), ("acked", 1), ("acked", 2)]
        # the callback runs after the item was acknowledged: give the last one a moment
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [0, 1, 2]
        sender.join(20)
    assert sender.exitcode == 0
    assert receiver.received == 3


def test_wait_for_ack_times_out_without_an_acknowledging_receiver(port: int) -> None:
    # a raw PULL socket takes the frame but never acknowledges it
    raw = zmq.Context.instance().socket(zmq.PULL)
    raw.connect(f"tcp://127.0.0.1:{port}")
    backend = StreamingBackend(port=port, send_timeout=0.5)
    try:
        with pytest.raises(TimeoutError, match="acknowledge"):
            backend.save(np.zeros(3), "x.tif", wait_for_ack=True)
        assert raw.poll(5000)
        header = json.loads(raw.recv_multipart()[0])
        assert header["ack"] is True and header["path"] == "x.tif"
    finally:
        backend.close(0.1)
        raw.close(0)


def test_pull_backend_load_times_out_and_load_picks_by_path(port: int) -> None:
    receiver = StreamingBackend(mode="pull", port=port, recv_timeout=0.2)
    with pytest.raises(TimeoutError, match="'missing'"):
        receiver.load("missing")
    sender = StreamingBackend(port=port)
    sender.save(np.array([1]), "first")
    sender.save(np.array([2]), "second")
    assert receiver.load("second", timeout=10).tolist() == [2]
    assert receiver.exists("first") and receiver.list_files("") == ["first"]
    assert receiver.load("first").tolist() == [1]
    assert not receiver.exists("first")
    with pytest.raises(UnsupportedOperationError, match="mode='push'"):
        receiver.save(np.zeros(1), "x")
    with pytest.raises(NotImplementedError, match="mode='pull'"):
        sender.load("x")
    with pytest.raises(UnsupportedOperationError, match="no directories"):
        receiver.ensure_directory("a")
    with pytest.raises(UnsupportedOperationError, match="no directories"):
        sender.list_dir("a")
    assert StreamingBackend.supports_directories is False
    assert receiver.supports_listing and not sender.supports_listing
    sender.close()
    receiver.close()


def test_arrays_of_every_layout_and_dtype_round_trip(port: int) -> None:
    arrays = {
        "bool": np.array([[True, False]]),
        "f_order": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "strided": np.arange(20, dtype=np.int64)[::3],
        "complex": np.array([1 + 2j, 3 - 4j]),
        "empty": np.zeros((0, 3), dtype=np.uint8),
        "scalar": np.array(7, dtype=">i4"),
        "big_inline": np.arange(512 * 512, dtype=np.uint16).reshape(512, 512),
    }
    with StreamReceiver(port=port).start() as receiver, StreamingBackend(port=port) as sender:
        for name, array in arrays.items():
            sender.save(array, name, transport="inline", kind="labels" if name == "bool" else "image")
        items = {item.path: item for item in _collect(receiver, len(arrays))}
    for name, array in arrays.items():
        np.testing.assert_array_equal(items[name].array, array)
        assert items[name].array.dtype == array.dtype
    assert items["bool"].kind == "labels"


def test_object_arrays_and_bad_kinds_are_refused_by_the_sender(port: int) -> None:
    backend = StreamingBackend(port=port)
    with pytest.raises(ProtocolError, match="dtype object"):
        backend.save(np.array([{}, None], dtype=object), "x")
    with pytest.raises(ProtocolError, match="unknown kind"):
        backend.save(np.zeros(2), "x", kind="movie")
    with pytest.raises(ProtocolError, match="JSON"):
        backend.save(np.zeros(2), "x", metadata={"bad": object()})
    backend.close(0.1)


def test_missing_pyzmq_names_the_streaming_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zmq", None)  # what Python does for a package that is absent
    with pytest.raises(MissingDependencyError, match=r"polystore\[streaming\]"):
        StreamingBackend(port=free_port_pair()).save(np.zeros(1), "x")


# ---- the receiver survives anything -------------------------------------------------------------


def _malformed_messages(count: int, rng: random.Random) -> Iterator[list[bytes]]:
    good = make_header(np.zeros((4, 4), np.uint8), "ok.tif", msg_id=1)

    def variant(**changes: Any) -> dict[str, Any]:
        header = dict(good)
        header.update(changes)
        return header

    def shm(name: Any, size: Any = 16, **more: Any) -> dict[str, Any]:
        return variant(transport="shm", stream="s1", shm={"name": name, "offset": 64, "size": size, "slot": 0,
                                                          **more})

    headers: list[Any] = [
        variant(v=1), variant(v=3), variant(v="2"), variant(v=None),
        variant(kind="movie"), variant(kind=None),
        variant(shape=[4, 5]), variant(shape=[-4, -4]), variant(shape="4x4"), variant(shape=[1] * 40),
        variant(shape=[4.0, 4.0]), variant(dtype="O"), variant(dtype="|O"), variant(dtype="V16"),
        variant(dtype="<U4"), variant(dtype="M8[s]"), variant(dtype=[["a", "<i4"]]), variant(dtype="nope"),
        variant(shape=[2**31, 2**31], nbytes=2**62), variant(shape=[2**20, 2**20], nbytes=2**40),
        variant(nbytes=15), variant(nbytes=True), variant(order="K"), variant(transport="carrier-pigeon"),
        variant(metadata=[1]), variant(path=3), variant(path="x" * 5000), variant(id=-1),
        variant(reply_to="../x"), variant(reply_to=5), variant(reply_to="r" * 65),
        variant(stream="../x"), variant(stream=7),
        # shapes NumPy itself refuses, or whose product is too large to print in a message
        variant(shape=[0, 2**63], nbytes=0), variant(shape=[10**2200, 10**2200], nbytes=0),
        shm("psm_deadbeef"), shm("/etc/passwd"), shm("polystore_12_x"), shm("polystore_1_2/../../x"),
        shm("otherapp_1_2"), shm(None), shm("polystore_999999999_0"), shm("polystore_1_0", size=17),
        shm("polystore_1_0", size=-1), variant(transport="shm"),
        [1, 2, 3], "a string", None, 42,
    ]
    for i in range(count):
        choice = i % 6
        if choice == 0:
            yield [rng.randbytes(rng.randint(0, 64))]
        elif choice == 1:
            yield [rng.randbytes(rng.randint(1, 32)), rng.randbytes(16)]
        elif choice == 2:
            yield [b'{"v": 1, "kind": "image", "shape": [4, 4' + rng.randbytes(4), b"\x00" * 16]
        elif choice == 3:
            header = headers[(i // 6) % len(headers)]  # every header, whatever their count
            extra = [] if isinstance(header, dict) and header.get("transport") == "shm" else [b"\x00" * 16]
            yield [json.dumps(header).encode(), *extra]
        elif choice == 4:
            # lying sizes: the header promises 16 bytes and something else arrives
            yield [json.dumps(good).encode(), b"\x00" * rng.choice([0, 1, 15, 17, 1000])]
        else:
            # wrong frame counts, a header too large, an inline message that says shm
            yield rng.choice(
                [
                    [json.dumps(good).encode()],
                    [json.dumps(good).encode(), b"\x00" * 16, b"extra"],
                    [b" " * 70000 + json.dumps(good).encode(), b"\x00" * 16],
                    [json.dumps(shm("polystore_1_0")).encode(), b"\x00" * 16],
                ]
            )


def test_fuzzed_messages_are_rejected_and_counted_and_a_good_frame_still_arrives(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    count = 10_000
    rng = random.Random(1234)
    messages = list(_malformed_messages(count, rng))
    assert len(messages) == count
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.bind(f"tcp://127.0.0.1:{port}")
    good = np.arange(16, dtype=np.uint8).reshape(4, 4)
    with caplog.at_level(logging.WARNING, logger="polystore.streaming.receiver"):
        receiver = StreamReceiver(port=port, max_bytes=1024**3).start()
        assert receiver.inbound is not None
        receiver.inbound.rejections.burst = count  # every reason logged: this test reads them
        try:
            for message in messages:
                push.send_multipart(message)
            header = make_header(good, "good.tif", msg_id=1)
            push.send_multipart([json.dumps(header).encode(), good.tobytes()])
            item = receiver.get(timeout=30)
        finally:
            receiver.stop()
            push.close(0)
    np.testing.assert_array_equal(item.array, good)
    assert item.path == "good.tif"
    assert receiver.rejected == len(messages)
    assert receiver.received == 1
    reasons = {r.getMessage().split(": ", 1)[1].split(" (")[0] for r in caplog.records}
    assert any("unsupported protocol version" in r for r in reasons)
    assert any("not one of ours" in r for r in reasons)
    assert any("not allowed" in r for r in reasons)
    assert any("bytes arrived" in r for r in reasons)
    assert any("over this receiver's limit" in r for r in reasons)


def test_decode_rejects_sizes_over_the_configured_limit() -> None:
    array = np.zeros(1000, np.uint8)
    frames = [json.dumps(make_header(array, "x")).encode(), array.tobytes()]
    assert decode(frames, Limits(max_bytes=1000))["nbytes"] == 1000
    with pytest.raises(ProtocolError, match="limit of 999"):
        decode(frames, Limits(max_bytes=999))


def _decoded_or_refused(decoder: Any, frames: list[bytes]) -> Any:
    try:
        return decoder(frames)
    except ProtocolError:
        return "refused"


def test_a_remembered_header_decodes_as_the_full_validation_does() -> None:
    """The receiver validates a header once and then only its trailing id: for any message that
    begins like a remembered header, the result must be exactly what full validation gives."""
    writer = HeaderWriter(sender=7, stream="s1", reply_to=None)
    shm = ("polystore_7_0", 64, 32, 0)  # name, offset, size, slot
    shm_raw = writer.encode((4, 4), np.dtype("<u2"), "C", "plate/A01_s1_w2.tif", kind="image", metadata=None,
                            ack=False, shm=shm, msg_id=5)
    inline_raw = writer.encode((4, 4), np.dtype("<u2"), "C", "x.tif", kind="image", metadata=None, ack=True,
                               shm=None, msg_id=6)
    assert shm_raw.endswith(b',"id":5}') and inline_raw.endswith(b',"id":6}')
    reader = HeaderReader(Limits())

    def remembered(frames: list[bytes]) -> dict[str, Any]:
        header, msg_id = reader.decode(frames)
        return {**header, "id": msg_id}

    full = lambda frames: decode(frames, Limits())  # noqa: E731
    rng = random.Random(99)
    tails = [b"0", b"7", b"00", b"07", b"-1", b"1.5", b"1e3", b" 1", b"1 ", b"", b"x", b"9" * 18, b"9" * 19,
             b'1,"id":2', b"1}", b'"1"', b"null"]
    data = b"\x00" * 32
    for raw, extra in ((shm_raw, []), (inline_raw, [data])):
        prefix = raw[: raw.rindex(b',"id":')]
        assert remembered([raw, *extra]) == full([raw, *extra])  # validated whole, remembered
        messages = [[prefix + b',"id":' + tail + b"}", *extra] for tail in tails]
        messages += [[prefix + b',"id":3}', *more] for more in ([], [data], [data, data], [b"\x00" * 31])]
        for _ in range(400):  # one byte of the remembered part changed
            flipped = bytearray(prefix)
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            messages.append([bytes(flipped) + b',"id":3}', *extra])
        for frames in messages:
            assert _decoded_or_refused(remembered, frames) == _decoded_or_refused(full, frames), frames


def test_items_sharing_a_remembered_header_each_have_their_own() -> None:
    writer = HeaderWriter(sender=7, stream="s1", reply_to=None)
    shm = ("polystore_7_0", 64, 32, 0)  # name, offset, size, slot
    raws = [writer.encode((4, 4), np.dtype("<u2"), "C", "plate/A01_s1_w2.tif", kind="image", metadata=None,
                          ack=False, shm=shm, msg_id=msg_id) for msg_id in (5, 8, 9)]
    reader = HeaderReader(Limits())
    items = [StreamItem.received(np.zeros((4, 4), np.uint16), *reader.decode([raw])) for raw in raws]
    first, second, third = items
    assert (first.header["id"], second.header["id"]) == (5, 8) and second.metadata["well"] == "A01"
    second.header["metadata"]["well"] = "changed"  # each item has its own header
    second.header["shm"]["size"] = 10**9
    second.header["shape"].append(1)
    second.metadata["bases"]["field"] = 7
    assert third.header == {**decode([raws[2]], Limits()), "id": 9} and third.metadata["bases"]["field"] == 1
    assert third.path == "plate/A01_s1_w2.tif" and third.kind == "image"


# ---- shared memory: reused slots, nothing leaks -----------------------------------------------


class ShmTestBackend(StreamingBackend):
    """Segments named pstest_{pid}_{n}, so these tests see only their own in /dev/shm."""

    SHM_PREFIX = TEST_PREFIX


FRAME = (512, 512)


def _frame(i: int) -> np.ndarray:
    return np.full(FRAME, i, dtype=np.uint16)


def _shm_receiver(port: int, count: int, results: Any) -> None:
    with StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver:
        items = _collect(receiver, count)
    results.put(
        [(item.header["transport"], item.header["shm"]["name"], int(item.array[0, 0])) for item in items]
    )


def test_shm_slots_are_reused_and_unlinked_on_close(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    results = SPAWN.Queue()
    count = 12
    receiver = SPAWN.Process(target=_shm_receiver, args=(port, count, results))
    receiver.start()
    sender = ShmTestBackend(port=port, send_timeout=30, shm_slots=3)
    for i in range(count):
        sender.save(_frame(i), f"shm/{i}.tif")
    got = results.get(timeout=30)
    receiver.join(20)
    assert receiver.exitcode == 0
    assert [value for _, _, value in got] == list(range(count))
    assert {transport for transport, _, _ in got} == {"shm"}
    names = {name for _, name, _ in got}
    assert len(names) == 3  # three slots, reused for twelve frames
    assert all(name.startswith(f"{TEST_PREFIX}{os.getpid()}_") for name in names)
    # the receiver exited normally and did not take the sender's segments with it
    assert names <= set(list_segments(TEST_PREFIX))
    sender.close(5)
    assert list_segments(TEST_PREFIX) == before


def test_transport_can_be_forced_either_way(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    with (
        StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver,
        ShmTestBackend(port=port, send_timeout=10) as sender,
    ):
        sender.save(np.arange(4), "small_shm", transport="shm")
        sender.save(_frame(3), "big_inline", transport="inline")
        sender.save(_frame(4), "big_auto")
        items = {item.path: item for item in _collect(receiver, 3)}
    assert items["small_shm"].header["transport"] == "shm"
    assert items["big_inline"].header["transport"] == "inline"
    assert items["big_auto"].header["transport"] == "shm"
    np.testing.assert_array_equal(items["small_shm"].array, np.arange(4))
    np.testing.assert_array_equal(items["big_auto"].array, _frame(4))
    assert list_segments(TEST_PREFIX) == before
    with pytest.raises(ValueError, match="needs a receiver on this host"):
        StreamingBackend(port=port, host="192.0.2.1").save(np.zeros(1), "x", transport="shm")


def _zero_copy_receiver(port: int, commands: Any, report: Any) -> None:
    """Holds what it receives until told to drop it; reports what it sees."""
    held: dict[str, np.ndarray] = {}
    with StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,), zero_copy=True).start() as receiver:
        while True:
            command, path = commands.get(timeout=60)
            if command == "take":
                item = receiver.get(timeout=20)
                array = item.array
                report.put((item.path, int(array[0, 0]), array.flags.writeable, item.header["transport"]))
                held[item.path] = array if path == "whole" else array[::2, 1:]  # a derived view
                del item, array
            elif command == "drop":
                del held[path]
            else:
                report.put(sorted(held))
                return


def test_zero_copy_receiver_gives_a_slot_back_only_when_its_last_view_is_gone(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    commands, report = SPAWN.Queue(), SPAWN.Queue()
    receiver = SPAWN.Process(target=_zero_copy_receiver, args=(port, commands, report))
    receiver.start()
    sender = ShmTestBackend(port=port, send_timeout=20, shm_slots=2)
    try:
        sender.save(_frame(1), "a.tif")
        commands.put(("take", "whole"))
        sender.save(_frame(2), "b.tif")
        commands.put(("take", "view"))
        assert report.get(timeout=20) == ("a.tif", 1, False, "shm")  # read-only, in the slot
        assert report.get(timeout=20) == ("b.tif", 2, False, "shm")
        # both slots are held by the receiver's arrays (one of them only through a derived view)
        with pytest.raises(TimeoutError, match="No shared-memory slot was released"):
            sender.save(_frame(3), "c.tif", timeout=1.0)
        commands.put(("drop", "b.tif"))  # the last view of b's slot goes: the slot comes back
        sender.save(_frame(4), "d.tif", timeout=10)
        commands.put(("take", "whole"))
        assert report.get(timeout=20) == ("d.tif", 4, False, "shm")
        commands.put(("drop", "a.tif"))
        commands.put(("drop", "d.tif"))
        commands.put(("report", ""))
        assert report.get(timeout=20) == []
        receiver.join(20)
        assert receiver.exitcode == 0
    finally:
        sender.close(5)
        if receiver.is_alive():
            receiver.kill()
    assert list_segments(TEST_PREFIX) == before


def _forever_receiver(port: int, progress: Any) -> None:
    receiver = StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,))
    receiver.start(lambda item: progress.put(int(item.array[0, 0])))
    time.sleep(600)


def test_receiver_killed_mid_stream_leaves_no_segments(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    progress = SPAWN.Queue()
    receiver = SPAWN.Process(target=_forever_receiver, args=(port, progress))
    receiver.start()
    sender = ShmTestBackend(port=port, send_timeout=30, shm_slots=2)
    try:
        for i in range(5):
            sender.save(_frame(i), "killed/receiver.tif")
        assert [progress.get(timeout=30) for _ in range(5)] == list(range(5))
        os.kill(receiver.pid or 0, signal.SIGKILL)
        receiver.join(10)
        sender.send_timeout = 0.3
        with pytest.raises(TimeoutError):  # no slot comes back from a dead receiver
            for i in range(5, 20):
                sender.save(_frame(i), "killed/receiver.tif")
        assert list_segments(TEST_PREFIX) != before  # the sender still owns its slots...
    finally:
        sender.close(0.3)
    assert list_segments(TEST_PREFIX) == before  # ...and unlinks them when it closes


def _forever_sender(port: int) -> None:
    backend = ShmTestBackend(port=port, send_timeout=60)
    i = 0
    while True:
        backend.save(_frame(i % 1000), "killed/sender.tif")
        i += 1


def test_sender_killed_mid_stream_is_swept(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    receiver = StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start()
    sender = SPAWN.Process(target=_forever_sender, args=(port,))
    sender.start()
    try:
        items = _collect(receiver, 5)
        assert len(items) == 5 and items[0].header["transport"] == "shm"
        mine = f"{TEST_PREFIX}{sender.pid}_"
        owned = [name for name in list_segments(TEST_PREFIX) if name.startswith(mine)]
        assert owned  # the live sender's slots are in /dev/shm
        os.kill(sender.pid or 0, signal.SIGKILL)
        sender.join(10)
    finally:
        receiver.stop()
    sweep_orphaned_segments(TEST_PREFIX)
    assert not [n for n in list_segments(TEST_PREFIX) if n.startswith(f"{TEST_PREFIX}{sender.pid}_")]
    assert list_segments(TEST_PREFIX) == before


def test_sweep_removes_segments_of_dead_pids_only() -> None:
    dead = SPAWN.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join(10)
    orphan = Path("/dev/shm") / f"{TEST_PREFIX}{dead.pid}_7"
    alive = Path("/dev/shm") / f"{TEST_PREFIX}{os.getpid()}_999"
    foreign = Path("/dev/shm") / f"{TEST_PREFIX}notapid_1"
    for path in (orphan, alive, foreign):
        path.write_bytes(stamp("sweep-test"))  # what a sender writes first: only those are swept
    try:
        removed = sweep_orphaned_segments(TEST_PREFIX)
        assert removed == [orphan.name]
        assert not orphan.exists() and alive.exists() and foreign.exists()
    finally:
        for path in (orphan, alive, foreign):
            path.unlink(missing_ok=True)


# ---- CurveZMQ -----------------------------------------------------------------------------------


def test_binding_a_non_loopback_address_needs_curve_keys(port: int) -> None:
    with pytest.raises(ValueError, match="CurveKeys"):
        StreamingBackend(port=port, host="0.0.0.0").save(np.zeros(1), "x")
    with pytest.raises(ValueError, match="CurveKeys"):
        StreamReceiver(port=port, host="0.0.0.0", bind=True).start()


def _curve_receiver(port: int, keys: CurveKeys, results: Any) -> None:
    with StreamReceiver(port=port, curve=keys).start() as receiver:
        item = receiver.get(timeout=30)
        results.put((item.path, item.array.tolist()))


def test_curve_admits_the_authorized_client_and_refuses_others(port: int) -> None:
    server_public, server_secret = CurveKeys.keypair()
    client_public, client_secret = CurveKeys.keypair()
    stranger_public, stranger_secret = CurveKeys.keypair()
    server = CurveKeys(server_public, server_secret, authorized_clients=(client_public,))
    sender = StreamingBackend(port=port, curve=server, send_timeout=1.0)
    context = zmq.Context()
    plain = context.socket(zmq.PULL)  # no CURVE at all
    stranger = context.socket(zmq.PULL)  # CURVE, knows the server key, but not authorized
    stranger.setsockopt(zmq.CURVE_PUBLICKEY, stranger_public)
    stranger.setsockopt(zmq.CURVE_SECRETKEY, stranger_secret)
    stranger.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    try:
        for sock in (plain, stranger):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://127.0.0.1:{port}")
        sender.save(np.array([1, 2]), "secret.tif")  # queued: no receiver yet
        assert not plain.poll(300) and not stranger.poll(300)
        assert (sender.sent, sender.pending) == (0, 1)  # neither peer counts as a receiver

        results = SPAWN.Queue()
        client = CurveKeys(client_public, client_secret, server_key=server_public)
        receiver = SPAWN.Process(target=_curve_receiver, args=(port, client, results))
        receiver.start()
        assert results.get(timeout=30) == ("secret.tif", [1, 2])  # delivered once it connected
        receiver.join(20)
        assert receiver.exitcode == 0
        assert not plain.poll(100) and not stranger.poll(100)
    finally:
        plain.close(0)
        stranger.close(0)
        context.term()
        sender.close(1)


def test_curve_keys_as_text_work_and_a_bad_key_is_named_without_its_value(port: int) -> None:
    """Z85 keys are text: given as ``str`` they were a bare TypeError from pyzmq ("unicode not
    allowed"); a key of the wrong length was "Cannot bind ...: Invalid argument. Check host and
    port", which sent the user to the wrong place."""
    server_public, server_secret = CurveKeys.keypair()
    client_public, client_secret = CurveKeys.keypair()
    server = CurveKeys(server_public.decode(), server_secret.decode(),
                       authorized_clients=(client_public.decode(),))
    client = CurveKeys(client_public.decode(), client_secret.decode(), server_key=server_public.decode())
    with StreamReceiver(port=port, curve=client).start() as receiver, \
            StreamingBackend(port=port, curve=server, send_timeout=30) as sender:
        sender.save(np.array([4, 5]), "text-keys.tif", wait_for_ack=True)
        assert receiver.get(timeout=30).array.tolist() == [4, 5]
    secret = b"s" * 39
    with pytest.raises(StreamConfigError, match="secret_key") as error:
        CurveKeys(server_public, secret)
    assert "sss" not in str(error.value)  # a secret is never echoed
    with pytest.raises(StreamConfigError, match="authorized_clients"):
        CurveKeys(server_public, server_secret, authorized_clients=(b"short",))


# ---- topology and the iterator ------------------------------------------------------------------


def _connecting_sender(port: int, count: int) -> None:
    # many pipelines -> one viewer: the viewer binds, each pipeline connects
    with StreamingBackend(port=port, bind=False, send_timeout=30) as backend:
        for i in range(count):
            backend.save(np.array([i], dtype=np.int16), f"connect/{i}.tif", wait_for_ack=True)


def test_a_binding_receiver_iterates_over_items_from_connecting_senders(port: int) -> None:
    receiver = StreamReceiver(port=port, bind=True).start()
    senders = [SPAWN.Process(target=_connecting_sender, args=(port, 3)) for _ in range(2)]
    for sender in senders:
        sender.start()
    seen = []
    guard = threading.Timer(30, receiver.stop)  # the iteration ends even if items go missing
    guard.start()
    for item in receiver:
        seen.append((item.header["sender"], int(item.array[0])))
        if len(seen) == 6:
            receiver.stop()
    guard.cancel()
    for sender in senders:
        sender.join(30)
        assert sender.exitcode == 0  # every save was acknowledged through the bound back channel
    assert sorted(value for _, value in seen) == [0, 0, 1, 1, 2, 2]
    assert len({pid for pid, _ in seen}) == 2
    for pid in {pid for pid, _ in seen}:
        assert [value for p, value in seen if p == pid] == [0, 1, 2]  # in order per sender
    assert not receiver.running and receiver.received == 6 and receiver.dropped == 0


def test_pull_backend_receive_returns_the_next_item_of_any_path(port: int) -> None:
    with (
        StreamingBackend(mode="pull", port=port) as pull,
        StreamingBackend(mode="push", port=port) as push,
    ):
        assert pull.receive(timeout=0.1) is None
        push.save(np.eye(2), "a/b.tif", metadata={"note": "hello"})
        item = pull.receive(timeout=10)
        assert item is not None and item.path == "a/b.tif"
        np.testing.assert_array_equal(item.array, np.eye(2))
        assert item.metadata == {"note": "hello"} and item.header["v"] == 2
        assert pull.received == 1 and pull.rejected == 0


def test_the_streaming_entry_point_and_lazy_export_resolve() -> None:
    from importlib import metadata

    import polystore
    from polystore.registry import BackendRegistry

    points = {ep.name: ep.value for ep in metadata.entry_points(group="polystore.backends")}
    assert points["streaming"] == "polystore.streaming.backend:StreamingBackend"
    assert polystore.StreamingBackend is StreamingBackend
    backend = BackendRegistry()["streaming"]  # made with no arguments: no socket is opened yet
    assert isinstance(backend, StreamingBackend)
    assert (backend.mode, backend.host, backend.port) == ("push", "127.0.0.1", 5555)
    assert not backend.sender.opened


def test_tables_stream_with_their_string_columns_and_arrays_as_tables(port: int) -> None:
    pandas = pytest.importorskip("pandas", reason="pandas is not installed (pip install 'polystore[pandas]')")
    table = pandas.DataFrame({"label": ["nucleus", "cell", "spot"], "area": [12.5, 340.0, 1.25],
                              "count": [1, 2, 3]})
    with StreamReceiver(port=port).start() as receiver, StreamingBackend(port=port) as sender:
        sender.save(table, "A01/measurements.csv")
        sender.save(np.arange(6, dtype=np.float64).reshape(3, 2), "A01/xy.csv", kind="table")
        items = {item.path: item for item in _collect(receiver, 2)}
    received = items["A01/measurements.csv"]
    assert received.kind == "table" and received.metadata["encoding"] == "polystore-table-1"
    pandas.testing.assert_frame_equal(received.table(), table)
    np.testing.assert_array_equal(items["A01/xy.csv"].table().to_numpy(), np.arange(6).reshape(3, 2))
    with pytest.raises(ProtocolError, match="is a 'table', not a roi_set"):
        received.rois()


def test_a_sender_recovers_its_slots_from_a_receiver_that_died_without_acknowledging(port: int) -> None:
    """The slots the dead receiver held are given up after send_timeout and replaced by fresh
    segments; the next receiver gets every later frame."""
    before = list_segments(TEST_PREFIX)
    sender = ShmTestBackend(port=port, send_timeout=1.0, shm_slots=2)
    commands, report = SPAWN.Queue(), SPAWN.Queue()
    first = SPAWN.Process(target=_zero_copy_receiver, args=(port, commands, report))
    first.start()
    try:
        sender.save(_frame(1), "a.tif")  # held by the zero-copy receiver: not given back yet
        sender.save(_frame(2), "b.tif")
        commands.put(("take", "whole"))
        commands.put(("take", "whole"))
        assert [report.get(timeout=20)[1] for _ in range(2)] == [1, 2]
        first.kill()  # dies holding both slots
        first.join(10)
        second = StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start()
        try:
            for value in (3, 4, 5):
                sender.save(_frame(value), f"{value}.tif", timeout=10)
            got = _collect(second, 3)
        finally:
            second.stop()
        assert [int(item.array[0, 0]) for item in got] == [3, 4, 5]
        assert sender.reclaimed >= 1  # as many as needed: the new receiver gives its slots back
    finally:
        sender.close(1)
    assert list_segments(TEST_PREFIX) == before


def test_a_send_that_fails_after_taking_a_slot_gives_it_back(port: int) -> None:
    with StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver:
        sender = ShmTestBackend(port=port, send_timeout=5, shm_slots=2)
        try:
            sender.save(_frame(5), "first.tif", wait_for_ack=True)
            assert int(receiver.get(timeout=10).array[0, 0]) == 5
            for _ in range(4):
                with pytest.raises(ProtocolError, match="unknown kind"):  # refused before a slot
                    sender.save(_frame(0), "x.tif", kind="bogus")
                with pytest.raises(ProtocolError, match="JSON"):
                    sender.save(_frame(0), "x.tif", metadata={"bad": {1, 2}})
                with pytest.raises(ProtocolError, match=r"65536-byte limit"):
                    # metadata that fits alone, not with the rest of the header: found when the
                    # header is written, the slot filled
                    sender.save(_frame(0), "x.tif", metadata={"m": "x" * 65_500})
            ring = sender.sender.ring
            assert ring is not None and sender.sender.wait_delivered(5) and ring.free_slots == 2
            sender.save(_frame(6), "ok.tif", wait_for_ack=True)
            assert int(receiver.get(timeout=10).array[0, 0]) == 6
        finally:
            sender.close(2)


def test_acknowledgements_meant_for_an_earlier_sender_are_ignored(port: int) -> None:
    """A receiver's back channel outlives the sender it answered; the next sender on the port
    must not free a slot because of an ack for a frame it never sent."""
    with StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver:
        first = ShmTestBackend(port=port, send_timeout=5, shm_slots=1)
        first.save(_frame(1), "one.tif", wait_for_ack=True)
        first.close(2)
        second = ShmTestBackend(port=port, send_timeout=5, shm_slots=1)
        try:
            assert int(receiver.get(timeout=10).array[0, 0]) == 1
            second.save(_frame(2), "two.tif", wait_for_ack=True)
            assert int(receiver.get(timeout=10).array[0, 0]) == 2
            # a slot in flight, as if sent: only its own ack may free it
            ring = second.sender.ring
            assert ring is not None and second.sender.wait_delivered(5)
            slot, segment = ring.acquire(16)
            ring.sent(slot, 999)
            forged = [
                Ack(first.sender.stream, 1, slot, segment.name),  # the earlier sender's stream
                Ack("other", None, slot, segment.name),
                Ack(second.sender.stream, None, slot, "pstest_1_99"),  # the right stream, another segment
                Ack(second.sender.stream, 998, slot, segment.name),  # an earlier item of the slot
            ]
            push = zmq.Context.instance().socket(zmq.PUSH)
            push.connect(f"tcp://127.0.0.1:{port + 1}")
            for ack in forged:
                push.send(encode_ack(ack))
            push.send(b'{"v": 2, "stream": 5}')  # malformed: ignored
            assert not second.sender.wait_delivered(1.0)
            assert ring.free_slots == 0
            push.send(encode_ack(Ack(second.sender.stream, None, slot, segment.name)))  # its own
            push.close(1000)
            assert second.sender.wait_delivered(5) and ring.free_slots == 1
        finally:
            second.close(2)


def test_failed_receivers_leak_no_file_descriptors(port: int) -> None:
    from polystore.streaming.errors import AddressInUseError

    holder = StreamReceiver(port=port, bind=True).start()
    try:
        opened = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(AddressInUseError):
                StreamReceiver(port=port, bind=True).start()
        assert len(os.listdir("/proc/self/fd")) <= opened + 2  # zmq may keep an fd or two around
    finally:
        holder.stop()


def test_a_sender_can_bind_the_port_its_predecessor_just_closed(port: int) -> None:
    """ZeroMQ lets go of a closed socket's port on its own thread, a moment after close():
    a pipeline that closes its backend and opens a new one must not fail with EADDRINUSE."""
    with StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver:
        for index in range(20):
            with ShmTestBackend(port=port, send_timeout=5) as sender:  # binds the port again
                sender.save(_frame(index), f"{index}.tif", wait_for_ack=True)
            assert int(receiver.get(timeout=10).array[0, 0]) == index


# ---- what no message, segment or peer can do (issue 11) ------------------------------------------


def _bound_receiver(port: int, zero_copy: bool, commands: Any, report: Any) -> None:
    """A binding receiver in its own process (a crash here is not the test's), reporting its counters."""
    receiver = StreamReceiver(port=port, bind=True, shm_prefixes=(TEST_PREFIX,), zero_copy=zero_copy).start()
    while True:
        command = commands.get(timeout=60)
        if command == "take":
            item = receiver.get(timeout=20)
            report.put((item.path, int(item.array[0, 0])))
            del item  # a zero-copy slot goes back
        elif command == "counters":
            report.put((receiver.received, receiver.rejected, receiver.last_reason))
        else:
            receiver.stop()
            return


def _forged(name: str, stream: str, size: int, *, offset: int = 64, msg_id: int = 1) -> bytes:
    shm = {"name": name, "offset": offset, "size": size, "slot": 0}
    header = make_header(np.zeros(size, np.uint8), "forged.tif", transport="shm", msg_id=msg_id,
                         stream=stream, shm=shm)
    return json.dumps(header).encode()


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_a_segment_shrunk_after_it_was_mapped_is_refused_not_read(port: int, zero_copy: bool) -> None:
    """Reading past the end of a shrunk segment is a SIGBUS: the receiver checks the segment's real
    size before every read, so it refuses the frame, counts it, and keeps serving."""
    commands, report = SPAWN.Queue(), SPAWN.Queue()
    receiver = SPAWN.Process(target=_bound_receiver, args=(port, zero_copy, commands, report))
    receiver.start()
    sender = ShmTestBackend(port=port, bind=False, send_timeout=20, shm_slots=1)
    push = zmq.Context.instance().socket(zmq.PUSH)
    try:
        sender.save(_frame(1), "legit.tif", wait_for_ack=True)  # the receiver maps (and caches) the slot
        commands.put("take")
        assert report.get(timeout=20) == ("legit.tif", 1)
        ring = sender.sender.ring
        assert ring is not None
        name = ring.name_of(0)
        assert name is not None
        fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        os.ftruncate(fd, 4096)  # same inode, now 4 KiB
        os.close(fd)
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(_forged(name, sender.sender.stream, _frame(0).nbytes))
        commands.put("counters")
        deadline = time.monotonic() + 20
        received, rejected, reason = report.get(timeout=20)
        while rejected == 0 and time.monotonic() < deadline:
            commands.put("counters")
            received, rejected, reason = report.get(timeout=20)
        assert receiver.is_alive() and (received, rejected) == (1, 1)
        assert "holds bytes 64..4096" in reason
    finally:
        push.close(0)
        sender.close(0.1)  # unmaps its own view of the shrunk segment without touching it
    # and it still serves: a new sender's frame arrives
    with ShmTestBackend(port=port, bind=False, send_timeout=20) as second:
        second.save(_frame(2), "after.tif", wait_for_ack=True)
        commands.put("take")
        assert report.get(timeout=20) == ("after.tif", 2)
    commands.put("stop")


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_a_header_seen_before_still_has_its_segment_checked_at_every_read(port: int, zero_copy: bool) -> None:
    """A receiver keeps what it worked out for a header it has seen before (the same bytes but the
    id: a camera's frames), but the segment's size is still checked before every read: a slot
    shrunk between two frames of the same header is refused, not read past its end."""
    commands, report = SPAWN.Queue(), SPAWN.Queue()
    receiver = SPAWN.Process(target=_bound_receiver, args=(port, zero_copy, commands, report))
    receiver.start()
    sender = ShmTestBackend(port=port, bind=False, send_timeout=20, shm_slots=1)
    try:
        for value in (1, 2, 3):  # the same header bytes each time, but the id
            sender.save(np.full((16, 16), value, np.uint16), "same.tif", transport="shm")
            commands.put("take")
            assert report.get(timeout=20) == ("same.tif", value)
        ring = sender.sender.ring
        assert ring is not None
        name = ring.name_of(0)
        assert name is not None
        fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        os.ftruncate(fd, 128)  # same inode; the frame (bytes 64..576) stays on the page of the end
        os.close(fd)
        sender.save(np.full((16, 16), 4, np.uint16), "same.tif", transport="shm")
        deadline = time.monotonic() + 20
        received, rejected, reason = 0, 0, None
        while rejected == 0 and time.monotonic() < deadline:
            commands.put("counters")
            received, rejected, reason = report.get(timeout=20)
        assert (received, rejected) == (3, 1)
        assert "holds bytes 64..128" in reason
    finally:
        sender.close(0.1)
    with ShmTestBackend(port=port, bind=False, send_timeout=20) as second:
        second.save(_frame(2), "after.tif", wait_for_ack=True)
        commands.put("take")
        assert report.get(timeout=20) == ("after.tif", 2)
    commands.put("stop")
    receiver.join(20)
    assert receiver.exitcode == 0


def _stamped(stream: str, size: int) -> bytes:
    from polystore.streaming.shm import stamp

    return stamp(stream) + b"\x07" * size


def test_a_segment_of_ours_in_name_only_is_refused(port: int) -> None:
    """A hard link under our naming to a foreign segment, an unstamped copy, another user's
    segment: none is read, whatever the header says."""
    shm_dir = Path("/dev/shm")
    foreign = shm_dir / f"otherapp_secret_{os.getpid()}"
    foreign.write_bytes(_stamped("s1", 64))  # even a stamp does not make a hard link ours
    os.chmod(foreign, 0o600)
    linked = shm_dir / f"{TEST_PREFIX}{os.getpid()}_9001"
    unstamped = shm_dir / f"{TEST_PREFIX}{os.getpid()}_9002"
    stranger = shm_dir / f"{TEST_PREFIX}{os.getpid()}_9003"
    os.link(foreign, linked)
    unstamped.write_bytes(b"\x00" * 128)
    stranger.write_bytes(_stamped("s1", 64))
    for path in (unstamped, stranger):
        os.chmod(path, 0o600)
    os.chown(stranger, 65534, 65534)  # nobody's (these tests run as root)
    push = zmq.Context.instance().socket(zmq.PUSH)
    try:
        with StreamReceiver(port=port, bind=True, shm_prefixes=(TEST_PREFIX,)).start() as receiver:
            push.connect(f"tcp://127.0.0.1:{port}")
            reasons = []
            for path, stream in ((linked, "s1"), (unstamped, "s1"), (stranger, "s1")):
                push.send(_forged(path.name, stream, 64))
                deadline = time.monotonic() + 10
                while receiver.rejected < len(reasons) + 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                reasons.append(receiver.last_reason)
            assert receiver.received == 0 and receiver.rejected == 3
        assert "has 2 links" in reasons[0]
        assert "was not made by stream 's1'" in reasons[1]
        assert "belongs to another user" in reasons[2]
    finally:
        push.close(0)
        for path in (foreign, linked, unstamped, stranger):
            path.unlink(missing_ok=True)


def test_a_segment_name_with_an_impossible_pid_breaks_nothing(port: int) -> None:
    """``/dev/shm/{prefix}9999999999_0`` made every shm save and pull load raise OverflowError
    (from os.kill), for every user of the host. It is not ours: left alone, and refused as a name."""
    planted = Path("/dev/shm") / f"{TEST_PREFIX}9999999999_0"
    planted.write_bytes(b"\x00" * 64)
    try:
        assert sweep_orphaned_segments(TEST_PREFIX) == [] and planted.exists()
        with (
            ShmTestBackend(mode="pull", port=port) as pull,
            ShmTestBackend(port=port, send_timeout=10) as push,
        ):
            push.save(_frame(3), "a.tif")
            assert int(pull.load("a.tif", timeout=10)[0, 0]) == 3
        with pytest.raises(ProtocolError, match="not one of ours"):
            decode([_forged(planted.name, "s1", 64)], Limits(shm_prefixes=(TEST_PREFIX,)))
        assert planted.exists()
    finally:
        planted.unlink(missing_ok=True)


def test_an_ack_flood_for_senders_that_never_connect_is_bounded(port: int) -> None:
    """Items asking for an ack on behalf of reply_to ids nobody connects: each ack is kept a
    while for its sender's back channel (bounded per sender and in senders), and retried
    every few milliseconds, not on every message (that made 20k messages take minutes)."""
    from polystore.streaming.receiver import MAX_UNROUTED_PEERS

    count = 5000
    good = np.arange(4, dtype=np.uint8)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    with StreamReceiver(port=port, bind=True, queue_size=count + 10).start() as receiver:
        push.connect(f"tcp://127.0.0.1:{port}")
        for index in range(count):
            header = make_header(good, f"flood/{index}", msg_id=index + 1, ack=True,
                                 reply_to=f"ghost-{index}", stream="flood")
            push.send_multipart([json.dumps(header).encode(), good.tobytes()])
        items = _collect(receiver, count, timeout=120)
        assert len(items) == count and receiver.rejected == 0
        inbound = receiver.inbound
        assert inbound is not None
        assert inbound.unrouted_acks <= MAX_UNROUTED_PEERS  # one each for the last ghosts, no more
        assert inbound.unrouted_dropped >= count - MAX_UNROUTED_PEERS
        # a real sender that connects still gets its acks
        with StreamingBackend(port=port, bind=False, send_timeout=20) as sender:
            sender.save(good, "real.tif", wait_for_ack=True)
        assert _collect(receiver, 1)[0].path == "real.tif"
    push.close(0)


def _stalled_receiver(port: int, started: Any, release: Any) -> None:
    """Takes the first item and then never returns from its callback (a viewer that hangs)."""

    def hang(item: Any) -> None:
        started.set()
        release.wait(120)

    with StreamReceiver(port=port, queue_size=1).start(hang):
        release.wait(120)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_inline_frames_to_a_stalled_receiver_are_bounded_by_bytes(port: int) -> None:
    """policy="block" bounds what a receiver has not taken by bytes (max_pending_bytes), inline
    frames included: 1,500 frames of 1 MiB used to "succeed" at once and grow the receiver by
    600 MiB."""
    started, release = SPAWN.Event(), SPAWN.Event()
    receiver = SPAWN.Process(target=_stalled_receiver, args=(port, started, release))
    receiver.start()
    frame = np.ones(1024 * 1024, np.uint8)
    limit = 8 * 1024 * 1024
    sender = StreamingBackend(port=port, transport="inline", send_timeout=0.5, max_pending_bytes=limit)
    try:
        sender.save(frame, "first.npy", timeout=30)
        assert started.wait(30)
        rss_before = _rss_kib(receiver.pid or 0)
        accepted = 0
        with pytest.raises(StreamTimeoutError, match="max_pending_bytes"):
            for index in range(200):
                sender.save(frame, f"{index}.npy")
                accepted += 1
        assert accepted <= limit // frame.nbytes
        assert sender.sender.pending_bytes <= limit
        growth_mib = (_rss_kib(receiver.pid or 0) - rss_before) / 1024
        assert growth_mib < 2 * limit / 1024**2  # what it holds unread is bounded by the sender's limit
    finally:
        release.set()
        sender.close(0.5)
        receiver.join(20)


# ---- a receiver that comes later: the spec's example as one script --------------------------------

SPEC_SCRIPT = """
from polystore import StreamingBackend
import numpy as np

# Sender
backend = StreamingBackend(mode="push", port=5555)
data = np.array([1, 2, 3])
backend.save(data, "stream")

# Receiver
backend = StreamingBackend(mode="pull", port=5555)
received = backend.load("stream")
"""


def test_the_spec_example_runs_as_one_script(port: int, tmp_path: Path) -> None:
    """The spec's sender and receiver, one after the other in one script: save returns once the
    item is queued, the sender object is replaced by the receiver, and the item still arrives."""
    import subprocess

    script = tmp_path / "spec_example.py"
    script.write_text(SPEC_SCRIPT.replace("5555", str(port)) + "assert received.tolist() == [1, 2, 3]\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dropped" not in done.stderr


def test_a_replaced_sender_still_delivers_what_it_accepted(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    sender = ShmTestBackend(port=port)
    sender.save(np.arange(3), "small.npy")  # inline
    sender.save(_frame(7), "big.tif")  # shared memory
    sender.save(_frame(8), "big2.tif", transport="inline")
    stream = sender.sender
    assert stream.sent == 0 and stream.pending == 3
    del sender  # as `backend = StreamingBackend(mode="pull", ...)` does in the spec's example
    import gc

    gc.collect()
    with ShmTestBackend(mode="pull", port=port) as pull:
        assert pull.load("small.npy", timeout=10).tolist() == [0, 1, 2]
        assert int(pull.load("big.tif", timeout=10)[0, 0]) == 7
        assert int(pull.load("big2.tif", timeout=10)[0, 0]) == 8
        assert stream.join(10)  # everything acknowledged: it closed itself
    assert stream.expired == 0 and stream.closed
    assert list_segments(TEST_PREFIX) == before


def test_what_no_receiver_takes_within_linger_is_dropped_with_a_warning(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    before = list_segments(TEST_PREFIX)
    with caplog.at_level(logging.WARNING, logger="polystore.streaming.sender"):
        sender = ShmTestBackend(port=port, linger=0.3)
        sender.save(np.arange(3), "a.npy")
        sender.save(_frame(1), "b.tif")
        sender.close()  # returns at once: the items may still find a receiver for 0.3 s
        assert sender.sender.join(10)
    assert sender.expired == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    dropped = [message for message in warnings if "never delivered" in message]
    assert dropped and "a.npy" in dropped[0]  # one warning, or one per batch that expired
    assert list_segments(TEST_PREFIX) == before


def test_wait_for_ack_waits_for_a_receiver_that_comes_later(port: int) -> None:
    def late_receiver() -> None:
        time.sleep(0.5)
        with StreamingBackend(mode="pull", port=port) as pull:
            got.append(pull.load("late.npy", timeout=20).tolist())

    got: list[Any] = []
    thread = threading.Thread(target=late_receiver)
    thread.start()
    with StreamingBackend(port=port, send_timeout=20) as sender:
        sender.save(np.arange(2), "late.npy", wait_for_ack=True)  # returns only once it was received
        assert sender.sender.pending == 0
    thread.join(20)
    assert got == [[0, 1]]


# ---- the zero-copy producer ----------------------------------------------------------------------


def test_a_frame_written_in_place_arrives_intact(port: int) -> None:
    before = list_segments(TEST_PREFIX)
    pattern = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
    with (
        StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,), zero_copy=True).start() as receiver,
        ShmTestBackend(port=port, send_timeout=10, shm_slots=2) as sender,
    ):
        for index in range(5):
            with sender.frame((512, 512), np.uint16, f"camera/{index}.tif", metadata={"n": index}) as buffer:
                assert buffer.shape == (512, 512) and buffer.dtype == np.uint16 and buffer.flags.writeable
                np.add(pattern, index, out=buffer)  # the acquisition writes straight into the slot
            item = receiver.get(timeout=10)
            assert item.header["transport"] == "shm" and item.metadata["n"] == index
            np.testing.assert_array_equal(item.array, pattern + index)
            del item
        assert sender.sent == 5 and receiver.dropped == 0
    assert list_segments(TEST_PREFIX) == before


def test_a_slot_hands_out_the_shape_asked_for_whatever_the_last_block_did_to_its_buffer(port: int) -> None:
    """A slot's array is kept for the next frame of the same shape, but never handed out changed:
    a block that reshaped its buffer in place, or made it read-only, leaves the next one as asked."""
    with (
        StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver,
        ShmTestBackend(port=port, send_timeout=10, shm_slots=1) as sender,
    ):
        for value, tamper in enumerate(["reshape", "readonly", None, "dtype"]):
            with sender.frame((4, 6), np.uint16, "cam.tif", wait_for_ack=True) as buffer:
                assert buffer.shape == (4, 6) and buffer.dtype == np.uint16 and buffer.flags.writeable
                buffer[...] = value
                if tamper == "reshape":
                    buffer.shape = (6, 4)
                elif tamper == "readonly":
                    buffer.flags.writeable = False
                elif tamper == "dtype":
                    buffer.dtype = np.int16
            item = receiver.get(timeout=10)
            assert item.array.shape == (4, 6) and item.array.tolist() == [[value] * 6] * 4
        with sender.frame((3, 2), np.float32, "other.tif", wait_for_ack=True) as buffer:
            assert buffer.shape == (3, 2) and buffer.dtype == np.float32
            buffer[...] = 0.5
        assert receiver.get(timeout=10).array.tolist() == [[0.5] * 2] * 3


def test_a_frame_block_that_raises_sends_nothing_and_returns_the_slot(port: int) -> None:
    with (
        StreamReceiver(port=port, shm_prefixes=(TEST_PREFIX,)).start() as receiver,
        ShmTestBackend(port=port, send_timeout=10, shm_slots=1) as sender,
    ):
        for _ in range(3):  # one slot: it must come back every time
            with (
                pytest.raises(RuntimeError, match="camera fault"),
                sender.frame(16, np.float32, "x.tif") as buffer,
            ):
                buffer[:] = 1
                raise RuntimeError("camera fault")
        ring = sender.sender.ring
        assert ring is not None and ring.free_slots == 1 and sender.sent == 0
        with sender.frame(16, np.float32, "y.tif", wait_for_ack=True) as buffer:
            buffer[:] = 2
        item = receiver.get(timeout=10)
        assert item.path == "y.tif" and item.array.tolist() == [2.0] * 16
        assert receiver.received == 1 and receiver.dropped == 0  # no id was used by the failed blocks
        with pytest.raises(queue.Empty):
            receiver.get(timeout=0.2)


def test_a_frame_sent_inline_is_a_private_buffer(port: int) -> None:
    with (
        StreamReceiver(port=port).start() as receiver,
        StreamingBackend(port=port, transport="inline") as sender,
    ):
        with sender.frame((2, 3), "<i4", "inline.tif") as buffer:
            buffer[...] = 5
        item = receiver.get(timeout=10)
    assert item.header["transport"] == "inline" and item.array.tolist() == [[5] * 3] * 2


def test_a_closed_backend_streams_again_at_the_next_save(port: int) -> None:
    with StreamReceiver(port=port).start() as receiver:
        push = StreamingBackend(port=port)
        push.save(np.arange(2), "one.npy", wait_for_ack=True)
        push.close()
        push.save(np.arange(3), "two.npy", wait_for_ack=True)  # a fresh sender, same settings
        push.close()
        assert [receiver.get(timeout=10).array.tolist() for _ in range(2)] == [[0, 1], [0, 1, 2]]


EXIT_SCRIPT = """
import time
import numpy as np
from polystore import StreamingBackend

backend = StreamingBackend(port={port}, policy="latest", transport="inline", linger=0.2)
for frame in range(30):  # nobody listens: the newest waits, the pump runs at exit
    backend.save(np.full(8, frame), "live/frame.npy")
    time.sleep(0.002)
"""


def test_a_script_that_ends_with_items_waiting_exits(port: int, tmp_path: Path) -> None:
    """At exit a sender's pump (a daemon thread) could be frozen holding the sender's lock, and
    the backend's __del__ then waited for that lock forever: the script never ended."""
    import subprocess

    script = tmp_path / "ends.py"
    script.write_text(EXIT_SCRIPT.format(port=port))
    for _ in range(3):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "dropped 1 item(s) never delivered" in done.stderr  # said, and counted
