"""The sending end of a stream against real receivers: other processes over real ZeroMQ sockets.

Each test is the regression test of a sender bug a review found (it fails on the code before
the fix). Receivers, floods and stray peers run as separate processes (``python -c``);
nothing is mocked. Waits have generous bounds that only catch a hang; no timing is asserted.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from net_helpers import free_port_block  # noqa: E402

from polystore import StreamingBackend  # noqa: E402
from polystore.exceptions import InvalidOptionError, InvalidPathError, PathTypeError, PolystoreError  # noqa: E402
from polystore.streaming import CurveKeys, StreamConfigError, StreamTimeoutError  # noqa: E402
from polystore.streaming.errors import AddressInUseError  # noqa: E402
from polystore.streaming.shm import list_segments  # noqa: E402

TEST_PREFIX = "pstsend_"


class ShmBackend(StreamingBackend):  # type: ignore[misc]
    """Shared-memory segments under a prefix of these tests' own."""

    SHM_PREFIX = TEST_PREFIX


@pytest.fixture
def port() -> int:
    return free_port_block(2)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def start(processes: list[subprocess.Popen[str]], script: str, *args: object) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    return process


def said(process: subprocess.Popen[str]) -> str:
    """The next line the process prints (it prints one when it is ready, or done)."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, f"the process ended without a word (exit code {process.wait(30)})"
    return line


# a receiver that reads every item and reports the frames whose bytes are not all the value
# their path names; "ready" once it is connected (it has received warm.npy)
CHECKING_RECEIVER = """
import sys
from polystore import StreamingBackend
port, count = int(sys.argv[1]), int(sys.argv[2])
with StreamingBackend(mode="pull", port=port) as pull:
    pull.load("warm.npy", timeout=60)
    print("ready", flush=True)
    wrong = 0
    for _ in range(count):
        item = pull.receive(timeout=60)
        value = int(item.path.split("/")[1].split(".")[0]) % 251
        wrong += not bool((item.array == value).all())
    print(wrong, flush=True)
"""


@pytest.mark.parametrize(("size", "options"), [
    (128 * 1024, {}),  # under shm_threshold: inline, where ZeroMQ took it without a copy
    (4 * 2**20, {"transport": "inline"}),
    (4 * 2**20, {"transport": "inline", "policy": "latest"}),
], ids=["128KiB-auto", "4MiB-inline", "4MiB-inline-latest"])
def test_a_buffer_reused_after_save_changes_no_frame_already_saved(
    port: int, processes: list[subprocess.Popen[str]], size: int, options: dict[str, str]
) -> None:
    count = 40
    receiver = start(processes, CHECKING_RECEIVER, port, count)
    with StreamingBackend(port=port, send_timeout=60, **options) as backend:
        backend.save(np.zeros(4, np.uint8), "warm.npy", wait_for_ack=True, policy="block")
        assert said(receiver) == "ready"
        buffer = np.empty(size, np.uint8)
        for index in range(count):
            buffer[...] = index % 251  # a camera loop: the next frame goes into the same buffer
            backend.save(buffer, f"cam/{index}.npy")
        assert backend.sender.wait_delivered(60)
    assert said(receiver) == "0"  # frames whose bytes changed after their save returned


FLOOD = """
import json, sys, zmq
socket = zmq.Context.instance().socket(zmq.PUSH)
socket.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
junk = [json.dumps({"v": 2, "stream": "not-yours", "ack": 1}).encode()] * 2000
socket.send_multipart(junk)
print("flooding", flush=True)
while True:  # until the test ends it
    socket.send_multipart(junk)
"""


def test_a_flood_on_the_ack_port_does_not_hold_save(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    backend = StreamingBackend(port=port, linger=0.5)
    backend.save(np.zeros(8), "first.npy")  # the sockets are open; nobody receives
    flood = start(processes, FLOOD, port + 1)
    assert said(flood) == "flooding"
    returned = threading.Event()

    def save() -> None:
        backend.save(np.zeros(8), "during.npy", timeout=1)
        returned.set()

    thread = threading.Thread(target=save, daemon=True)
    thread.start()
    try:
        assert returned.wait(30), "save() did not return while the ack port was flooded"
    finally:
        flood.kill()
        thread.join(60)
        backend.close(0)


STALLED_RECEIVER = """
import sys
from polystore import StreamingBackend
with StreamingBackend(mode="pull", port=int(sys.argv[1])) as pull:
    pull.load("hello.npy", timeout=60)
    print("stalled", flush=True)
    sys.stdin.readline()  # reads nothing more until told
    count = 0
    while pull.receive(timeout=2) is not None:
        count += 1
    print(count, flush=True)
"""

CHURN = """
import sys, time, zmq
context = zmq.Context.instance()
print("churning", flush=True)
while True:  # until the test ends it: connect, stay a moment, leave
    socket = context.socket(zmq.PULL)
    socket.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
    time.sleep(0.01)
    socket.close(0)
"""


def test_peers_that_come_and_go_do_not_lift_the_byte_bound_of_a_stalled_receiver(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    limit, size = 2**20, 100 * 1024
    receiver = start(processes, STALLED_RECEIVER, port)
    backend = StreamingBackend(port=port, transport="inline", max_pending_bytes=limit)
    try:
        backend.save(np.zeros(4), "hello.npy", wait_for_ack=True, timeout=60)
        assert said(receiver) == "stalled"
        for _ in range(limit // size):  # what the bound admits, all to the stalled receiver
            backend.save(np.zeros(size, np.uint8), "x.npy", timeout=10)
        churn = start(processes, CHURN, port)
        assert said(churn) == "churning"
        accepted = 0
        for _ in range(20):
            try:
                backend.save(np.zeros(size, np.uint8), "x.npy", timeout=0.2)
                accepted += 1
            except StreamTimeoutError:
                pass
            assert backend.sender.pending_bytes <= limit
        churn.kill()
        assert accepted == 0  # the stalled receiver still holds the others, unacknowledged
        assert backend.reclaimed == 0
        assert receiver.stdin is not None
        receiver.stdin.write("go\n")
        receiver.stdin.flush()
        assert int(said(receiver)) == limit // size  # all queued in the receiver, none lost
    finally:
        backend.close(0)


# reads one message at a time with a pause, through the smallest buffers ZeroMQ and the kernel
# allow, so that the sender's socket is full most of the time; reports how many arrived
SLOW_RAW_RECEIVER = """
import sys, time, zmq
socket = zmq.Context.instance().socket(zmq.PULL)
socket.rcvhwm = 1
socket.setsockopt(zmq.RCVBUF, 4096)
socket.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
count, expected = 0, int(sys.argv[2])
print("connected", flush=True)
while count < expected and socket.poll(30000):
    socket.recv_multipart()
    count += 1
    time.sleep(0.005)
print(count, flush=True)
"""


def test_policy_block_waits_for_a_slow_receiver_and_drops_nothing(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    count = 200
    receiver = start(processes, SLOW_RAW_RECEIVER, port, count)
    assert said(receiver) == "connected"
    # linger far shorter than the receiver needs: items that wait for it must not expire
    backend = StreamingBackend(port=port, transport="inline", linger=0.2, high_water_mark=1)
    try:
        for index in range(count):
            backend.save(np.full(64 * 1024, index % 256, np.uint8), f"p/{index}.npy")
        assert backend.flush(120)  # everything handed to ZeroMQ
        assert int(said(receiver)) == count
        assert backend.expired == 0
    finally:
        backend.close(0)


ONE_LOAD = """
import sys
from polystore import StreamingBackend
class Pull(StreamingBackend):
    SHM_PREFIX = "pstsend_"
with Pull(mode="pull", port=int(sys.argv[1])) as pull:
    for path in sys.argv[2:]:
        print(pull.load(path, timeout=60).tolist(), flush=True)
"""


def test_wait_for_ack_is_honoured_under_policy_latest(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    with StreamingBackend(port=port, policy="latest", linger=30) as backend:
        with pytest.raises(StreamTimeoutError, match="did not acknowledge"):  # nobody listens
            backend.save(np.arange(3), "nobody.npy", wait_for_ack=True, timeout=0.3)
        receiver = start(processes, ONE_LOAD, port, "late.npy")
        backend.save(np.arange(4), "late.npy", wait_for_ack=True, timeout=60)
        assert backend.sender.pending == 0  # acknowledged, so nothing of it waits
        assert said(receiver) == "[0, 1, 2, 3]"


def test_a_frame_whose_buffer_cannot_be_made_gives_its_slot_back(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    before = list_segments(TEST_PREFIX)
    receiver = start(processes, ONE_LOAD, port, "good.npy")
    errors: list[BaseException] = []
    with ShmBackend(port=port, shm_slots=1, send_timeout=10) as backend:
        for _ in range(2):  # one slot: a leak shows at once
            with pytest.raises(OSError) as huge, backend.frame((2**62,), np.uint8, "huge.npy") as buffer:
                buffer[0] = 1  # never reached: no segment is that large
            with pytest.raises(ValueError) as negative, backend.frame((-4,), np.uint8, "negative.npy"):
                pass
            errors += [huge.value, negative.value]
        with backend.frame((3,), np.int64, "good.npy", wait_for_ack=True) as buffer:
            buffer[...] = (7, 8, 9)
        assert said(receiver) == "[7, 8, 9]"
    assert list_segments(TEST_PREFIX) == before
    assert all(isinstance(error, PolystoreError) for error in errors)
    assert "shared-memory segment" in str(errors[0]) and isinstance(errors[1], StreamConfigError)


def test_a_closed_backend_whose_sender_still_delivers_saves_again(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    backend = StreamingBackend(port=port)
    backend.save(np.arange(2), "first.npy")  # nobody receives yet: it waits
    backend.close()  # returns at once; the sender keeps the port to deliver first.npy
    backend.save(np.arange(3), "second.npy")  # the same sender streams again
    backend.close()  # and delivers in the background again
    with pytest.raises(AddressInUseError, match="linger") as raised:  # another backend: it says why
        StreamingBackend(port=port).save(np.arange(1), "other.npy")
    assert isinstance(raised.value, PolystoreError) and isinstance(raised.value, OSError)
    backend.save(np.arange(4), "third.npy")
    receiver = start(processes, ONE_LOAD, port, "first.npy", "second.npy", "third.npy")
    assert [said(receiver) for _ in range(3)] == ["[0, 1]", "[0, 1, 2]", "[0, 1, 2, 3]"]
    backend.close(10)


BIND_AND_WAIT = """
import sys, zmq
socket = zmq.Context.instance().socket(zmq.PULL)
socket.bind(f"tcp://127.0.0.1:{sys.argv[1]}")
print("bound", flush=True)
sys.stdin.readline()
"""


def test_a_port_another_program_holds_is_a_clear_error(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    holder = start(processes, BIND_AND_WAIT, port)
    assert said(holder) == "bound"
    backend = StreamingBackend(port=port)
    with pytest.raises(AddressInUseError, match=r"in use \(another sender or program"):
        backend.save(np.arange(1), "x.npy")
    backend.close(0)


def test_an_address_that_cannot_be_bound_is_a_clear_error(tmp_path: Path) -> None:
    backend = StreamingBackend(host=f"ipc://{tmp_path}/no-such-folder/stream")
    with pytest.raises(StreamConfigError, match=r"Cannot bind ipc://.*Check host and port"):
        backend.save(np.arange(1), "x.npy")
    backend.close(0)


ORDER_RECEIVER = """
import sys
from polystore.streaming import StreamReceiver
with StreamReceiver(port=int(sys.argv[1])).start() as receiver:
    got = []
    while True:
        item = receiver.get(timeout=60)
        if item.path == "end.npy":
            break
        got.append(int(item.array[0, 0]))
print(got, flush=True)
"""


def test_policy_latest_delivers_a_paths_frames_in_order(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    backend = StreamingBackend(port=port, policy="latest", linger=60)

    def produce(value: int) -> None:
        with backend.frame((64, 64), np.uint16, "live/cam.tif") as buffer:
            buffer[...] = value

    produce(1)  # nobody receives yet: each frame replaces the one before
    backend.save(np.full((64, 64), 2, np.uint16), "live/cam.tif")
    produce(3)
    produce(4)
    backend.save(np.zeros((1, 1)), "end.npy")
    receiver = start(processes, ORDER_RECEIVER, port)
    assert said(receiver) == "[4]"  # the newest only, and nothing older after it
    assert backend.dropped == 3
    backend.close(10)


# an authorized CURVE receiver that stops reading, through the smallest buffers
STALLED_CURVE_RECEIVER = """
import sys, zmq
public, secret, server = (key.encode() for key in sys.argv[2:5])
socket = zmq.Context.instance().socket(zmq.PULL)
socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = public, secret, server
socket.rcvhwm = 1
socket.setsockopt(zmq.RCVBUF, 4096)
socket.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
print("connected", flush=True)
sys.stdin.readline()
"""


def test_close_with_timeout_zero_does_not_wait_for_linger_under_curve(
    port: int, processes: list[subprocess.Popen[str]]
) -> None:
    server_public, server_secret = CurveKeys.keypair()
    client_public, client_secret = CurveKeys.keypair()
    keys = CurveKeys(server_public, server_secret, authorized_clients=(client_public,))
    backend = StreamingBackend(port=port, transport="inline", linger=600, send_timeout=1, curve=keys)
    backend.save(np.zeros(1), "open.npy")  # the sockets are bound
    receiver = start(processes, STALLED_CURVE_RECEIVER, port, client_public.decode(),
                     client_secret.decode(), server_public.decode())
    assert said(receiver) == "connected"
    for index in range(30):  # more than the stalled receiver takes: ZeroMQ holds the rest
        with contextlib.suppress(StreamTimeoutError):
            backend.save(np.zeros(2**20, np.uint8), f"{index}.npy", timeout=0.05)
    closed = threading.Event()

    def close() -> None:
        backend.close(0)
        closed.set()

    threading.Thread(target=close, daemon=True).start()
    assert closed.wait(60), "close(timeout=0) waited for the sender's linger"


LAYOUT_RECEIVER = """
import sys
import numpy as np
from polystore.streaming import StreamReceiver
with StreamReceiver(port=int(sys.argv[1]), shm_prefixes=("pstsend_",)).start() as receiver:
    arrays = {}
    for _ in range(int(sys.argv[2])):
        item = receiver.get(timeout=60)
        arrays[item.path] = np.array(item.array)
np.savez(sys.argv[3], **arrays)
print("saved", flush=True)
"""


def test_sender_send_keeps_the_layout_of_any_array(
    port: int, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    base = np.arange(600 * 700, dtype=np.int32).reshape(600, 700)
    arrays = {
        "fortran": np.asfortranarray(base[:30, :40]),
        "sliced": base[::3, 1::2][:50, :60],
        "transposed": base[:40, :50].T,
        "reversed": base[::-1, ::-2][:20],
        "big_sliced": base[:, ::2],  # over the shm threshold
        "big_fortran": np.asfortranarray(base),
    }
    received = tmp_path / "received.npz"
    receiver = start(processes, LAYOUT_RECEIVER, port, 2 * len(arrays), received)
    with ShmBackend(port=port, send_timeout=60) as backend:
        for name, array in arrays.items():
            for transport in ("inline", "auto"):
                backend.sender.send(array, f"{name}-{transport}", transport=transport)
        assert said(receiver) == "saved"
    with np.load(received) as got:
        for name, array in arrays.items():
            for transport in ("inline", "auto"):
                np.testing.assert_array_equal(got[f"{name}-{transport}"], np.asarray(array))


def test_a_frame_waiting_under_latest_is_copied_once_not_on_every_pump_tick(port: int) -> None:
    """With no receiver the pump retries every few milliseconds; a frame that waits keeps the
    slot it was copied into, where before it was copied into a slot and given back each time."""
    with ShmBackend(port=port, policy="latest", shm_slots=4, linger=60) as backend:
        backend.save(np.ones((512, 512), np.uint16), "cam/a.tif")
        backend.save(np.ones((512, 512), np.uint16), "cam/b.tif")
        assert backend.sender.flush(0.2) is False  # the pump tried, for a while; nobody took them
        ring = backend.sender.ring
        assert ring is not None and ring.free_slots == 2 and ring.in_flight == 0
        assert backend.pending == 2
        backend.close(0)


def test_a_frames_header_made_while_it_is_filled_names_its_own_slot_path_and_id(port: int) -> None:
    """A frame() block's header is worked out when the slot is handed out (so that the block's
    exit only adds the id): each header, fully validated, names the path, shape and slot of its
    own frame, ids run on past a block that raised, and a block's metadata is what it holds
    when the block ends (such headers are made at the exit)."""
    from polystore.streaming.protocol import Ack, Limits, decode, encode_ack

    context = zmq.Context.instance()
    pull, acks = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    pull.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        with ShmBackend(port=port, shm_slots=2, send_timeout=10) as backend:
            pull.connect(f"tcp://127.0.0.1:{port}")
            acks.connect(f"tcp://127.0.0.1:{port + 1}")
            blocks = [("a.tif", (4, 4)), ("b.tif", (4, 4)), ("a.tif", (8, 2)), ("fault", (4, 4)),
                      ("a.tif", (4, 4)), ("b.tif", (2, 8)), ("a.tif", (4, 4))]
            ids = []
            for value, (path, shape) in enumerate(blocks, start=1):
                if path == "fault":
                    with pytest.raises(RuntimeError), backend.frame(shape, np.uint16, path) as buffer:
                        raise RuntimeError("camera fault")
                    continue
                with backend.frame(shape, np.uint16, path) as buffer:
                    buffer[...] = value
                header = decode([pull.recv()], Limits(shm_prefixes=(TEST_PREFIX,)))
                shm = header["shm"]
                assert (header["path"], header["shape"]) == (path, list(shape))
                with open(f"/dev/shm/{shm['name']}", "rb") as segment:
                    segment.seek(shm["offset"])
                    written = np.frombuffer(segment.read(shm["size"]), np.uint16)
                assert (written == value).all()  # the segment the header names holds this frame
                ring = backend.sender.ring
                assert ring is not None and ring.name_of(shm["slot"]) == shm["name"]  # in that slot
                ids.append(header["id"])
                acks.send(encode_ack(Ack(header["stream"], None, shm["slot"], shm["name"])))
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            metadata = {"n": 0}
            with backend.frame((4, 4), np.uint16, "a.tif", metadata=metadata) as buffer:
                buffer[...] = 0
                metadata["n"] = 5
            assert decode([pull.recv()], Limits(shm_prefixes=(TEST_PREFIX,)))["metadata"]["n"] == 5
            backend.close(0)
    finally:
        pull.close(0)
        acks.close(0)


def test_a_frames_metadata_given_empty_and_filled_in_the_block_goes_out(port: int) -> None:
    """A frame() block's header is worked out early only where it has no metadata at all: a
    dict given empty and filled while the frame is acquired (a timestamp taken then) was sent
    as the empty dict it was at the block's entry, its keys lost."""
    from polystore.streaming.protocol import Limits, decode

    context = zmq.Context.instance()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 10_000)
    try:
        with ShmBackend(port=port, shm_slots=2, send_timeout=10) as backend:
            pull.connect(f"tcp://127.0.0.1:{port}")
            metadata: dict[str, int] = {}
            with backend.frame((4, 4), np.uint16, "a.tif", metadata=metadata) as buffer:
                buffer[...] = 1
                metadata["exposure_us"] = 500
            header = decode([pull.recv()], Limits(shm_prefixes=(TEST_PREFIX,)))
            assert header.get("metadata") == {"exposure_us": 500}
            backend.close(0)
    finally:
        pull.close(0)


# a sender and its receiver on a /dev/shm of 16 MiB (a container's is 64 MiB by default), saving
# and producing frames of 32 MiB: each says what it got, then a small frame must still arrive
SMALL_SHM_SENDER = """
import sys
import numpy as np
from polystore import StreamingBackend
from polystore.streaming import StreamReceiver
port, size = int(sys.argv[1]), 32 * 2**20
with StreamReceiver(port=port).start() as receiver, StreamingBackend(port=port, send_timeout=10) as backend:
    try:
        backend.save(np.ones(size, np.uint8), "big.npy")
        print("save: sent", flush=True)
    except OSError as error:
        print("save:", type(error).__name__, error, flush=True)
    try:
        with backend.frame((size,), np.uint8, "big.tif") as buffer:
            buffer[...] = 1
        print("frame: sent", flush=True)
    except OSError as error:
        print("frame:", type(error).__name__, error, flush=True)
    backend.save(np.arange(3), "small.npy", transport="inline")
    print("small:", receiver.get(timeout=30).array.tolist(), flush=True)
"""


def test_a_frame_larger_than_dev_shm_has_room_for_is_an_error_not_a_bus_error(port: int) -> None:
    """/dev/shm (a tmpfs) lets a segment be made larger than the room it has: the sender's first
    write past that room was a SIGBUS that killed it, in save() and in a frame() block alike."""
    mount = "mount -t tmpfs -o size=16m tmpfs /dev/shm"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True).returncode != 0:
        pytest.skip("needs a mount namespace (unshare -m, as root) to give /dev/shm 16 MiB")
    command = f'{mount} && exec "$0" -c "$1" "$2"'
    child = subprocess.run(
        ["unshare", "-m", "sh", "-c", command, sys.executable, SMALL_SHM_SENDER, str(port)],
        capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 0, f"the sender died (exit code {child.returncode}): {child.stderr[-2000:]}"
    lines = child.stdout.splitlines()
    for line, call in zip(lines, ("save:", "frame:"), strict=False):
        assert line.startswith(f"{call} StorageIOError") and "/dev/shm" in line, lines
    assert lines[2:] == ["small: [0, 1, 2]"], lines


def test_a_frame_no_array_can_hold_is_refused_and_leaves_no_segment(port: int) -> None:
    """A shape of 2**80 bytes raised a bare OverflowError from the segment's ftruncate, and left
    behind a segment with no stamp, which no sweep removes."""
    before = list_segments(TEST_PREFIX)
    with ShmBackend(port=port) as backend:
        for transport in ("auto", "inline"):
            backend.sender.transport = transport
            with pytest.raises(StreamConfigError, match="more than an array can hold"):
                backend.frame((2**40, 2**40), np.uint8, "huge.tif")
    assert list_segments(TEST_PREFIX) == before


def test_a_path_no_receiver_accepts_is_refused_by_the_sender(port: int) -> None:
    """A receiver refuses paths over 4096 characters: the sender sent them anyway, so save() and
    frame() returned as if all was well, nothing arrived, and each shared-memory frame held its
    slot until it was reclaimed. Paths that are not text were bare TypeErrors from deep inside."""
    with ShmBackend(port=port) as backend:
        long_path = "run/" + "x" * 4096 + ".tif"
        with pytest.raises(InvalidPathError, match="4096"):
            backend.save(np.zeros(3), long_path)
        with pytest.raises(InvalidPathError, match="4096"):
            backend.frame((1024, 1024), np.uint8, long_path)
        for path in (b"run/a.tif", 5):
            with pytest.raises(PathTypeError, match="path must be"):
                backend.save(np.zeros(3), path)
            with pytest.raises(PathTypeError, match="path must be"):
                backend.frame((3,), np.uint8, path)
        assert backend.sent == 0 and backend.sender.pending == 0


def test_a_frame_of_a_dtype_numpy_does_not_know_is_our_error(port: int) -> None:
    """``frame(shape, "nope", path)`` was NumPy's bare TypeError ("data type 'nope' not understood")."""
    with ShmBackend(port=port) as backend:
        with pytest.raises(InvalidOptionError, match="'nope' is not a NumPy dtype") as error:
            backend.frame((3,), "nope", "x.tif")
        assert isinstance(error.value, TypeError) and backend.sent == 0


@pytest.mark.parametrize(("option", "value"), [
    ("linger", None), ("linger", -1), ("send_timeout", "5"), ("send_timeout", float("nan")),
    ("shm_threshold", None), ("max_pending_bytes", 0), ("shm_slots", 0), ("high_water_mark", -1),
])
def test_a_sender_setting_that_cannot_work_is_refused_when_the_backend_is_made(
    port: int, option: str, value: object
) -> None:
    """These were taken, then failed at the first save with a bare TypeError (linger=None,
    shm_threshold=None), "Cannot bind ...: Invalid argument. Check host and port"
    (high_water_mark=-1), or did something else without a word (send_timeout="5", nan)."""
    with pytest.raises(StreamConfigError, match=option):
        StreamingBackend(port=port, **{option: value})
