"""The receiving end against what a peer may send: real processes, real ZeroMQ sockets.

Each test here was written for a finding of a review and fails on the code before its fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from net_helpers import free_port_block  # noqa: E402

from polystore import StreamingBackend  # noqa: E402
from polystore.streaming import StreamReceiver, sweep_orphaned_segments  # noqa: E402
from polystore.streaming.errors import StreamConfigError, StreamTimeoutError  # noqa: E402
from polystore.streaming.shm import list_segments, stamp  # noqa: E402

SHM = Path("/dev/shm")
PREFIX = "psrecv_"


def _header(**fields: Any) -> bytes:
    header = {"v": 2, "kind": "image", "path": "x.npy", "shape": [4], "dtype": "|u1", "order": "C",
              "nbytes": 4, "metadata": {}, "transport": "inline", **fields}
    return json.dumps(header).encode()


def _push(port: int) -> Any:
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.LINGER, 1000)
    socket.connect(f"tcp://127.0.0.1:{port}")
    return socket


def _wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---- headers -------------------------------------------------------------------------------


def test_a_header_without_an_id_is_refused_for_that_reason() -> None:
    port = free_port_block(2)
    items: list[Any] = []
    receiver = StreamReceiver(port=port, bind=True).start(items.append)
    push = _push(port)
    try:
        push.send_multipart([_header(), b"abcd"])
        _wait_for(lambda: receiver.rejected == 1, "the id-less message to be rejected")
        # the reason names the rule, not a KeyError from deep inside the loop
        assert receiver.last_reason is not None and receiver.last_reason.startswith("id must be an integer")
        push.send_multipart([_header(id=1), b"abcd"])
        _wait_for(lambda: len(items) == 1, "the good message")
        assert items[0].array.tolist() == [97, 98, 99, 100]
    finally:
        push.close()
        receiver.stop()


def test_a_receiver_that_cannot_open_its_sockets_says_why_in_our_errors(tmp_path: Path) -> None:
    from polystore.exceptions import PolystoreError
    from polystore.streaming.errors import AddressInUseError, StreamConfigError

    port = free_port_block(2)
    with StreamReceiver(port=port, bind=True).start():
        with pytest.raises(AddressInUseError, match="the address is in use") as taken:
            StreamReceiver(port=port, bind=True).start()
        pull = StreamingBackend(mode="pull", port=port, bind=True)
        with pytest.raises(AddressInUseError, match="pick another port"):
            pull.inbox  # noqa: B018
        pull.close()
    assert isinstance(taken.value, PolystoreError) and isinstance(taken.value, OSError)
    missing = f"ipc://{tmp_path}/no-such-folder/stream"
    with pytest.raises(StreamConfigError, match="in a folder that exists") as bad:
        StreamReceiver(host=missing, bind=True).start()
    assert isinstance(bad.value, ValueError)


def test_a_control_request_that_cannot_be_written_says_why_in_our_errors() -> None:
    from polystore.exceptions import InvalidOptionError
    from polystore.streaming.viewer import request

    port = free_port_block(3)
    with pytest.raises(InvalidOptionError, match="params must be JSON"):
        request("127.0.0.1", port, "ping", {"when": object()}, timeout=1)
    with pytest.raises(InvalidOptionError, match="buffers bytes-like"):
        request("127.0.0.1", port, "put", buffers=[12], timeout=1)


# ---- a message of many frames ----------------------------------------------------------------


def test_a_message_of_many_frames_is_refused_with_its_real_size() -> None:
    port = free_port_block(2)
    items: list[Any] = []
    receiver = StreamReceiver(port=port, bind=True, max_bytes=1024).start(items.append)
    push = _push(port)
    try:
        push.send_multipart([_header(id=1)] + [b"\0" * 1000] * 40)
        _wait_for(lambda: receiver.rejected == 1, "the 41-frame message to be rejected")
        assert receiver.last_reason is not None
        size = len(_header(id=1)) + 40_000
        assert receiver.last_reason.startswith(f"a message of 41 frames ({size} bytes)")
        push.send_multipart([_header(id=2), b"abcd"])
        _wait_for(lambda: len(items) == 1, "the good message after it")
        assert receiver.rejected == 1
    finally:
        push.close()
        receiver.stop()


def test_a_control_request_of_many_frames_is_refused_with_its_real_size() -> None:
    from polystore.streaming.viewer import ViewerService
    from polystore.streaming.viewer.control import MAX_BUFFERS

    port = free_port_block(3)
    with ViewerService("demo", port, on_item=lambda item: None, max_request_bytes=4096) as service:
        socket = zmq.Context.instance().socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(service.endpoints.control)
        try:
            request = json.dumps({"v": 1, "op": "ping", "params": {}}).encode()
            socket.send_multipart([request] + [b"\0" * 100] * 40)
            assert socket.poll(20_000)
            reply = json.loads(socket.recv_multipart()[0])
        finally:
            socket.close()
        assert reply["ok"] is False
        assert reply["error"].startswith(f"request carries 40 buffers (4000 bytes); at most {MAX_BUFFERS}")
        assert service.control.refused == 1


# ---- the pull backend's inbox ----------------------------------------------------------------

_PUSH_MANY = """
import sys
import numpy as np
from polystore import StreamingBackend
with StreamingBackend(port=int(sys.argv[1]), transport="inline") as backend:
    for index in range(40):
        backend.save(np.full(1000, index, np.uint8), f"other/{index}.npy", timeout=60)
    backend.save(np.arange(3), "wanted.npy", wait_for_ack=True, timeout=60)
"""


def test_pull_load_keeps_a_bounded_number_of_other_paths_items(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="polystore.streaming.receiver")
    port = free_port_block(2)
    pull = StreamingBackend(mode="pull", port=port, inbox_items=8, inbox_bytes=5000)
    sender = subprocess.Popen([sys.executable, "-c", _PUSH_MANY, str(port)])
    try:
        assert pull.load("wanted.npy", timeout=60).tolist() == [0, 1, 2]
        kept = pull.list_files("", recursive=True)
        # bytes bind first: 5 items of 1000 bytes; the newest kept, the oldest dropped
        assert kept == sorted(f"other/{index}.npy" for index in range(35, 40))
        assert pull.inbox_dropped == 35
        messages = [record.getMessage() for record in caplog.records]
        drops = [message for message in messages if "dropped a kept item" in message]
        assert [message.rsplit("(", 1)[1] for message in drops] == [
            f"{count} dropped so far)" for count in (1, 2, 4, 8, 16, 32)
        ]
        assert pull.load("other/35.npy").tolist() == [35] * 1000
        assert pull.inbox.kept_bytes == 4000
    finally:
        assert sender.wait(60) == 0
        pull.close()


def test_pull_inbox_limits_must_be_sane() -> None:
    from polystore.streaming.errors import StreamConfigError

    pull = StreamingBackend(mode="pull", port=free_port_block(2), inbox_items=-1)
    with pytest.raises(StreamConfigError, match="inbox limits"):
        pull.inbox  # noqa: B018
    pull.close()


# ---- shared memory left by a killed process group --------------------------------------------

_SENDER = """
import sys
import numpy as np
from polystore import StreamingBackend
from polystore.streaming.shm import SlotRing
ring = SlotRing(sys.argv[1], 3, "killed")
for _ in range(3):
    slot, _segment = ring.acquire(1 << 16)
    ring.sent(slot, slot + 1)
print("up", flush=True)
import time
time.sleep(600)
"""


def test_segments_of_a_killed_process_group_are_swept_even_before_it_is_reaped() -> None:
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, PREFIX], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert sender.stdout is not None and sender.stdout.readline().strip() == "up"
        mine = [name for name in list_segments(PREFIX) if name.startswith(f"{PREFIX}{sender.pid}_")]
        assert len(mine) == 3
        os.killpg(sender.pid, signal.SIGKILL)  # the resource tracker too: nobody unlinks them
        _wait_for(lambda: Path(f"/proc/{sender.pid}/stat").read_text().split(")")[-1].split()[0] == "Z",
                  "the killed sender to be a zombie")
        # not reaped yet (its parent is busy): a zombie holds nothing, its segments are orphans
        assert sorted(sweep_orphaned_segments(PREFIX)) == mine
        assert not [name for name in list_segments(PREFIX) if name.startswith(f"{PREFIX}{sender.pid}_")]
    finally:
        if sender.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sender.pid, signal.SIGKILL)
        sender.wait(30)
        if sender.stdout is not None:
            sender.stdout.close()
        for name in list_segments(PREFIX):
            if name.startswith(f"{PREFIX}{sender.pid}_"):
                (SHM / name).unlink(missing_ok=True)


def test_the_sweep_leaves_names_like_ours_that_carry_no_stamp() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    unstamped = SHM / f"{PREFIX}{dead.pid}_1"
    stamped = SHM / f"{PREFIX}{dead.pid}_2"
    unstamped.write_bytes(b"\0" * 128)  # someone else's file under a name like ours
    stamped.write_bytes(stamp("s1") + b"\0" * 64)
    try:
        assert sweep_orphaned_segments(PREFIX) == [stamped.name]
        assert unstamped.exists() and not stamped.exists()
    finally:
        unstamped.unlink(missing_ok=True)
        stamped.unlink(missing_ok=True)


def test_a_receiver_sweeps_when_it_starts() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    orphan = SHM / f"{PREFIX}{dead.pid}_3"
    orphan.write_bytes(stamp("s1") + b"\0" * 64)
    receiver = StreamReceiver(port=free_port_block(2), bind=True, shm_prefixes=(PREFIX,)).start()
    try:
        _wait_for(lambda: not orphan.exists(), "the receiver to sweep the orphan")
    finally:
        receiver.stop()
        orphan.unlink(missing_ok=True)


# ---- a two-place save ------------------------------------------------------------------------


def _demo_backend(**options: Any) -> Any:
    from polystore.streaming.viewer import ViewerStreamingBackend

    class DemoViewerBackend(ViewerStreamingBackend):
        VIEWER_TYPE = "demo"

    return DemoViewerBackend(**options)


def test_an_absent_viewer_is_asked_once_not_at_every_save(tmp_path: Path) -> None:
    import numpy as np

    from polystore import FileManager
    from polystore.exceptions import ViewerUnavailableError
    from polystore.streaming.endpoints import Endpoints

    port = free_port_block(3)
    # something listens where the viewer's control socket would be, and never answers: each
    # ping it receives is a save that waited probe_timeout for nothing
    silent = zmq.Context.instance().socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(Endpoints("127.0.0.1", port).control)
    demo = _demo_backend(port=port, probe_timeout=0.2, absent_backoff=600)
    fm = FileManager({"demo": demo})
    try:
        for index in range(5):
            with pytest.raises(ViewerUnavailableError, match="No demo viewer"):
                fm.save(np.full((4, 4), index, np.uint8), str(tmp_path / f"{index}.npy"),
                        backend=("disk", "demo"))
        assert sorted(path.name for path in tmp_path.iterdir()) == [f"{index}.npy" for index in range(5)]
        asked = 0
        while silent.poll(0):
            silent.recv_multipart()
            asked += 1
        assert asked == 1
    finally:
        demo.close(0)
        silent.close()


def test_a_viewer_that_starts_later_is_found_once_the_backoff_is_over(tmp_path: Path) -> None:
    import numpy as np

    from polystore.exceptions import ViewerUnavailableError
    from polystore.streaming.viewer import ViewerService

    port = free_port_block(3)
    backend = _demo_backend(port=port, probe_timeout=0.2, absent_backoff=0)
    items: list[Any] = []
    try:
        with pytest.raises(ViewerUnavailableError):
            backend.save(np.zeros(3), "a.npy")
        with ViewerService("demo", port, on_item=items.append):
            backend.save(np.ones(3), "b.npy", wait_for_ack=True, timeout=30)
            _wait_for(lambda: len(items) == 1, "the item")
        assert items[0].path == "b.npy"
    finally:
        backend.close(0)


def test_a_two_place_save_gives_each_backend_its_own_options(tmp_path: Path) -> None:
    import numpy as np

    from polystore import FileManager
    from polystore.streaming.viewer import ViewerService

    port = free_port_block(3)
    items: list[Any] = []
    demo = _demo_backend(port=port)
    fm = FileManager({"demo": demo})
    try:
        with ViewerService("demo", port, on_item=items.append):
            target = str(tmp_path / "A01_s1_w1.npy")
            # kind= and wait_for_ack= are the stream's: npy takes no options and says so
            fm.save(np.eye(3, dtype=np.uint8), target, backend=("disk", "demo"), kind="labels",
                    wait_for_ack=True, timeout=30)
            _wait_for(lambda: len(items) == 1, "the streamed item")
        assert np.load(target).tolist() == np.eye(3).tolist()
        assert items[0].kind == "labels"
    finally:
        demo.close(0)


# ---- endpoints -------------------------------------------------------------------------------


def test_free_ports_finds_the_ports_endpoints_derives() -> None:
    import socket

    from polystore.exceptions import InvalidOptionError
    from polystore.streaming.endpoints import Endpoints
    from polystore.streaming.viewer import free_ports

    endpoints = Endpoints("127.0.0.1", free_ports(3))
    assert len(endpoints.ports) == 3
    with contextlib.ExitStack() as held:
        for port in endpoints.ports:  # each is free: binding them all succeeds
            held.enter_context(socket.socket()).bind(("127.0.0.1", port))
    assert Endpoints("ipc:///tmp/polystore-x").ports == ()
    with pytest.raises(InvalidOptionError, match="3 channels"):
        free_ports(4)
    # a preferred port whose channels would pass the last port is passed over, not an error
    assert free_ports(3, preferred=(65534,)) != 65534


def test_a_sender_refuses_a_message_of_many_frames_on_its_ack_socket_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import numpy as np

    from polystore.streaming.endpoints import Endpoints

    port = free_port_block(2)
    backend = StreamingBackend(port=port)
    caplog.set_level("WARNING", logger="polystore.streaming.sender")
    rogue = _push(port + 1)  # onto the sender's bound ack socket, as anything local could
    try:
        with StreamReceiver(port=port).start(lambda item: None):
            backend.save(np.zeros(4), "first.npy", wait_for_ack=True, timeout=30)
            assert Endpoints("127.0.0.1", port).ack == f"tcp://127.0.0.1:{port + 1}"
            rogue.send_multipart([b"{}"] * 1000)

            def refused() -> bool:
                backend.save(np.zeros(4), "next.npy", wait_for_ack=True, timeout=30)
                return any("ack" in record.getMessage() for record in caplog.records)

            _wait_for(refused, "the sender to read the rogue message")
            backend.save(np.zeros(4), "last.npy", wait_for_ack=True, timeout=30)
        messages = [record.getMessage() for record in caplog.records]
        # one warning naming the message, not one per frame
        assert [m for m in messages if "acknowledgement" in m] == [
            f"ignored a message of 1000 frames (1998 bytes past the first) on the ack socket "
            f"tcp://127.0.0.1:{port + 1}: an acknowledgement is one frame"
        ]
    finally:
        rogue.close()
        backend.close(0)


@pytest.mark.parametrize("options", [{"port": 70000}, {"port": 65534}, {"port": 0},
                                     {"port": 5555, "ack_port": 99999}])
def test_a_port_no_tcp_address_can_have_is_refused_when_the_stream_is_made(options: dict[str, int]) -> None:
    # before: bound nothing usable, and every save was dropped as 'never delivered'
    with pytest.raises(StreamConfigError, match="is not a TCP port"):
        StreamingBackend(**options)


# ---- the log under a flood ------------------------------------------------------------------


def test_a_flood_of_bad_messages_logs_a_few_warnings_and_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anyone on the host can write to the data port: every rejection is counted, but only the
    first few are logged one by one, and the rest as one summary with their number."""
    from polystore.streaming.throttle import DEFAULT_BURST

    port = free_port_block(2)
    flood = 500
    caplog.set_level("WARNING", logger="polystore.streaming.receiver")
    items: list[Any] = []
    receiver = StreamReceiver(port=port, bind=True).start(items.append)
    push = _push(port)
    try:
        for _ in range(flood):
            push.send_multipart([b"not json", b"abcd"])
        push.send_multipart([_header(id=1), b"abcd"])
        _wait_for(lambda: len(items) == 1, "the good message after the flood")
    finally:
        push.close()
        receiver.stop()  # logs the summary of what was not logged one by one
    assert receiver.rejected == flood
    messages = [record.getMessage() for record in caplog.records]
    one_by_one = [m for m in messages if m.startswith("Rejected stream message: header is not UTF-8 JSON")]
    summaries = [m for m in messages if "stream messages rejected not logged one by one" in m]
    assert DEFAULT_BURST <= len(one_by_one) < flood
    assert summaries, messages[-3:]
    assert len(one_by_one) + sum(int(m.split()[0]) for m in summaries) == flood
    # the last rejection is told, one by one or as the last one of a summary
    assert any(m.endswith(f"header is not UTF-8 JSON (JSONDecodeError) ({flood} rejected so far)")
               for m in messages)


def test_throttled_warnings_log_a_burst_per_interval_then_one_summary() -> None:
    """The limiter itself, on a clock of the test's own (no waiting)."""
    import logging

    from polystore.streaming.throttle import ThrottledWarning

    now = [0.0]
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("polystore.test.throttle")
    log.addHandler(Keep())
    log.propagate = False
    limiter = ThrottledWarning(log, "things refused", burst=3, interval=10.0, clock=lambda: now[0])
    for number in range(8):
        limiter.warn("refused %d", number)
    assert records == ["refused 0", "refused 1", "refused 2"]
    assert limiter.suppressed == 5 and not limiter.due()
    now[0] = 10.0
    assert limiter.due()
    limiter.warn("refused %d", 8)  # a new interval: the summary first, then this one as it comes
    assert records[3:] == [
        "5 more things refused not logged one by one (at most 3 every 10 s); the last: refused 7",
        "refused 8",
    ]
    limiter.flush()  # nothing counted since: nothing to say
    assert len(records) == 5


def test_a_flood_of_bad_control_requests_logs_a_few_warnings_and_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from polystore.streaming.throttle import DEFAULT_BURST
    from polystore.streaming.viewer.control import ControlServer

    port = free_port_block(3)
    flood = 60
    caplog.set_level("WARNING", logger="polystore.streaming.viewer.control")
    server = ControlServer(port, handlers={"ping": lambda params, buffers: {}}).start()
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _ in range(flood):
            socket.send(json.dumps({"v": 1, "op": "no such op", "params": {}}).encode())
            assert socket.poll(20_000)
            assert json.loads(socket.recv())["ok"] is False
    finally:
        socket.close()
        server.stop()  # logs the summary of what was not logged one by one
    assert server.refused == flood
    messages = [record.getMessage() for record in caplog.records]
    one_by_one = [m for m in messages if m.startswith("control request refused: unknown op")]
    summaries = [m for m in messages if "control requests refused not logged one by one" in m]
    assert DEFAULT_BURST <= len(one_by_one) < flood and summaries
    assert len(one_by_one) + sum(int(m.split()[0]) for m in summaries) == flood


def test_a_copying_receiver_reuses_the_memory_of_dropped_items_never_of_held_ones() -> None:
    port = free_port_block(2)
    with (
        StreamingBackend(mode="pull", port=port) as pull,
        StreamingBackend(port=port, transport="shm") as push,
    ):

        def received(value: int) -> Any:
            push.save(np.full((256, 256), value, np.uint16), "frame.tif", timeout=30)
            item = pull.receive(timeout=30)
            assert item is not None and item.header["transport"] == "shm"
            assert item.array.flags.writeable  # a private copy: the caller's to change
            return item.array

        copies = pull.inbox.inbound.copies
        first = received(1)
        corner = first[:8, :8]  # a view holds the copy's memory as its array does
        del first
        second, third = received(2), received(3)
        assert copies.reused == 0  # nothing was dropped yet: every copy in memory of its own
        del second
        fourth = received(4)
        assert copies.reused == 1  # the second's memory, free since it was dropped
        del corner
        fifth = received(5)
        assert copies.reused == 2  # the first's memory, free once its last view was gone
        for array, value in ((third, 3), (fourth, 4), (fifth, 5)):
            assert int(array.min()) == int(array.max()) == value
        fifth[...] = 0  # changing one copy changes no other
        assert int(fourth.min()) == 4 and int(third.min()) == 3


def test_copy_buffers_keep_at_most_their_bound_of_dropped_memory() -> None:
    from polystore.streaming.copies import CopyBuffers

    copies = CopyBuffers(max_bytes=100)
    leases = [copies.copy(np.full(60, index, np.uint8)) for index in range(3)]
    assert [bytes(lease)[0] for lease in leases] == [0, 1, 2]
    del leases
    assert copies.kept_bytes == 60  # one of the three fits the bound; the others were freed
    again = copies.copy(np.full(60, 7, np.uint8))
    assert copies.reused == 1 and bytes(again) == bytes([7] * 60) and copies.kept_bytes == 0
    copies.close()
    del again
    assert copies.kept_bytes == 0  # a closed receiver keeps nothing its holders drop later


def test_get_on_a_quiet_stream_says_what_it_waited_for_in_our_error() -> None:
    """``get(timeout)`` raised a bare ``queue.Empty`` with no message; it is a StreamTimeoutError
    (a TimeoutError) that still is a ``queue.Empty`` for code that caught that."""
    port = free_port_block(2)
    with StreamReceiver(port=port).start() as receiver, pytest.raises(StreamTimeoutError) as error:
        receiver.get(timeout=0.1)
    assert isinstance(error.value, queue.Empty) and isinstance(error.value, TimeoutError)
    assert f"tcp://127.0.0.1:{port}" in str(error.value) and "0.1 s" in str(error.value)


@pytest.mark.parametrize("options", [{"max_bytes": None}, {"max_bytes": -1}, {"max_bytes": "1"}],
                         ids=["none", "negative", "text"])
def test_a_receiver_limit_that_cannot_work_is_our_error(options: dict[str, Any]) -> None:
    """max_bytes=None or "1" was a bare TypeError from inside the receiver's start; -1 started a
    receiver that refused every message."""
    port = free_port_block(2)
    with pytest.raises(StreamConfigError, match="max_bytes"):
        StreamReceiver(port=port, **options).start()
    pull = StreamingBackend(mode="pull", port=port, inbox_items=None)
    with pytest.raises(StreamConfigError, match="inbox limits"):
        pull.inbox  # noqa: B018
    pull.close()


@pytest.mark.parametrize("queue_size", [0, -1, 2.5, None])
def test_a_receiver_queue_size_that_is_no_bound_is_refused(queue_size: Any) -> None:
    # queue.Queue(0) (and any size <= 0) is unbounded: a receiver nobody reads kept every item
    with pytest.raises(StreamConfigError, match="queue_size must be a whole number >= 1") as error:
        StreamReceiver(port=free_port_block(2), queue_size=queue_size)
    assert isinstance(error.value, ValueError)
    assert StreamReceiver(port=free_port_block(2), queue_size=1)._queue.maxsize == 1


def test_timeouts_and_sizes_that_cannot_work_are_refused_when_given() -> None:
    """A NaN recv_timeout failed the first load with a bare ValueError; a negative get timeout
    was queue's bare ValueError; a negative max_request_bytes is no limit for libzmq."""
    from polystore.streaming.viewer.control import ControlServer

    port = free_port_block(2)
    with pytest.raises(StreamConfigError, match="recv_timeout"):
        StreamingBackend(mode="pull", port=port, recv_timeout=float("nan"))
    receiver = StreamReceiver(port=port)
    with pytest.raises(StreamConfigError, match="timeout must be a number of seconds >= 0"):
        receiver.get(timeout=-1)
    with pytest.raises(StreamConfigError, match="max_request_bytes"):
        ControlServer(port, max_request_bytes=-1)
