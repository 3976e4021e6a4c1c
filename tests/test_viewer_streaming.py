"""The viewer family's shared parts: control channel, ViewerService, launch on demand.

Real processes and sockets: a viewer process (tests/viewer_process.py) launched by the
backend, pipelines in other processes, raw ZeroMQ clients throwing bad requests.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("zmq", reason="pyzmq is not installed (pip install 'polystore[streaming]')")

import zmq
from net_helpers import free_port_block

from polystore import FileManager, ViewerError, ViewerUnavailableError
from polystore.registry import BackendRegistry
from polystore.streaming.protocol import StreamItem
from polystore.streaming.shm import list_segments
from polystore.streaming.viewer import ViewerService, ViewerStreamingBackend
from polystore.streaming.viewer.control import ControlServer, array_from_reply, array_reply, request

SPAWN = mp.get_context("spawn")
VIEWER_SCRIPT = Path(__file__).with_name("viewer_process.py")
SHM_PREFIX = "pstest_viewer_"


class TestViewerBackend(ViewerStreamingBackend):
    """A viewer backend whose viewer is tests/viewer_process.py (not registered: no _backend_type)."""

    __test__ = False
    VIEWER_TYPE: ClassVar[str] = "testviewer"
    SHM_PREFIX: ClassVar[str] = SHM_PREFIX

    def launch_command(self) -> list[str]:
        return [sys.executable, str(VIEWER_SCRIPT), "--port", str(self.port), "--host", self.host]


@pytest.fixture
def port() -> int:
    return free_port_block(3)


@pytest.fixture
def kill_launched() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def _collecting_service(port: int, items: list[StreamItem], viewer_type: str = "testviewer") -> ViewerService:
    return ViewerService(viewer_type, port, on_item=items.append, shm_prefixes=(SHM_PREFIX,))


def _wait_for(items: list[Any], count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(items) >= count, f"received {len(items)} of {count} items"


# ---- control channel -------------------------------------------------------------------------


def test_control_round_trip_with_buffers_and_arrays(port: int) -> None:
    def echo_sum(params: dict[str, Any], buffers: list[memoryview]) -> Any:
        total = sum(np.frombuffer(b, dtype=np.int32).sum() for b in buffers)
        return array_reply(np.full((2, 3), total, dtype=np.uint16), label=params["label"])

    server = ControlServer(port, handlers={"sum": echo_sum}).start()
    try:
        reply = request("127.0.0.1", port, "sum", {"label": "x"},
                        [np.arange(4, dtype=np.int32).tobytes(), np.array([10], dtype=np.int32).tobytes()])
        assert reply.header["label"] == "x"
        np.testing.assert_array_equal(array_from_reply(reply), np.full((2, 3), 16, dtype=np.uint16))
        assert server.served == 1
    finally:
        server.stop()


def test_control_refuses_bad_requests_and_keeps_serving(port: int) -> None:
    def boom(params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        raise KeyError("no window titled 'w'")

    server = ControlServer(port, handlers={"boom": boom, "ok": lambda p, b: {"fine": True}}).start()
    context = zmq.Context.instance()
    try:
        with pytest.raises(ViewerError, match="unknown op 'nope'; this viewer answers: boom, ok"):
            request("127.0.0.1", port, "nope")
        with pytest.raises(ViewerError, match="no window titled"):
            request("127.0.0.1", port, "boom")
        bad_requests = [b"\xff\xfe", b"[1, 2]", b'{"v": 99, "op": "ok"}', b'{"v": 1, "op": 3}',
                        json.dumps({"v": 1, "op": "ok", "params": []}).encode(), b"x" * 70000]
        for raw in bad_requests:
            socket = context.socket(zmq.REQ)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(f"tcp://127.0.0.1:{port}")
            socket.send(raw)
            assert socket.poll(5000), f"no reply to {raw[:20]!r}"
            reply = json.loads(socket.recv())
            socket.close(0)
            assert reply["ok"] is False and reply["error"]
        assert request("127.0.0.1", port, "ok").header["fine"] is True
        assert server.refused == 2 + len(bad_requests)
    finally:
        server.stop()


def test_control_requests_are_capped(port: int) -> None:
    """A ping carrying 1.5 GiB used to be read and answered. Ops that take no buffers refuse
    any; a request over max_request_bytes is dropped by libzmq before it is buffered (no reply,
    the handler never runs) and the server keeps serving."""
    from polystore.streaming.viewer.control import DEFAULT_MAX_REQUEST_BYTES

    calls: list[int] = []

    def put(params: dict[str, Any], buffers: list[memoryview]) -> dict[str, Any]:
        calls.append(sum(len(b) for b in buffers))
        return {"bytes": calls[-1]}

    assert DEFAULT_MAX_REQUEST_BYTES < 1.5 * 1024**3
    server = ControlServer(port, handlers={"ping": lambda p, b: {"pong": True}, "put": put},
                           max_request_bytes=4 * 1024**2).start()
    try:
        with pytest.raises(ViewerError, match="'ping' takes no buffers"):
            request("127.0.0.1", port, "ping", buffers=[b"\0" * 1024])
        assert request("127.0.0.1", port, "put", buffers=[b"\0" * 1024**2]).header["bytes"] == 1024**2
        with pytest.raises(ViewerUnavailableError):
            request("127.0.0.1", port, "put", buffers=[b"\0" * (8 * 1024**2)], timeout=1.0)
        with pytest.raises(ViewerError, match="at most 4194304"):
            request("127.0.0.1", port, "put", buffers=[b"\0" * (3 * 1024**2)] * 2)
        assert calls == [1024**2]
        assert request("127.0.0.1", port, "ping").header["pong"] is True
    finally:
        server.stop()


def test_control_request_to_nobody_times_out_clearly(port: int) -> None:
    started = time.monotonic()
    with pytest.raises(ViewerUnavailableError, match="No viewer answered 'ping'"):
        request("127.0.0.1", port, "ping", timeout=0.3)
    assert time.monotonic() - started < 3


def test_array_from_reply_rejects_lying_sizes(port: int) -> None:
    server = ControlServer(port, handlers={
        "liar": lambda p, b: ({"shape": [1000, 1000], "dtype": "<u2"}, [b"\0" * 10]),
        "object": lambda p, b: ({"shape": [1], "dtype": "|O"}, [b"\0" * 8]),
    }).start()
    try:
        with pytest.raises(ViewerError, match="sent 10 bytes"):
            array_from_reply(request("127.0.0.1", port, "liar"))
        with pytest.raises(ViewerError, match="dtype object"):
            array_from_reply(request("127.0.0.1", port, "object"))
    finally:
        server.stop()


def test_array_from_reply_counts_a_huge_shape_exactly(port: int) -> None:
    """The announced size was a product in int64: [2**32, 2**32] wrapped to 0 bytes, which an
    empty buffer matched, and [2**70] overflowed; both ended in NumPy's bare ValueError or
    OverflowError instead of the refusal that names the lie."""
    server = ControlServer(port, handlers={
        "wraps": lambda p, b: ({"shape": [2**32, 2**32], "dtype": "|u1"}, [b""]),
        "overflows": lambda p, b: ({"shape": [2**70], "dtype": "|u1"}, [b""]),
    }).start()
    try:
        for op in ("wraps", "overflows"):
            with pytest.raises(ViewerError, match="but sent 0 bytes"):
                array_from_reply(request("127.0.0.1", port, op))
    finally:
        server.stop()


# ---- service and sender ----------------------------------------------------------------------


def _pipeline(port: int, count: int) -> None:
    backend = TestViewerBackend(port=port)
    for index in range(count):
        backend.save(np.full((512, 512), index, dtype=np.uint16), f"plate/A0{index + 1}_s1_w1.tif")
    backend.save(np.arange(6, dtype=np.float32), "small/vector.npy")
    backend.close()


def test_pipeline_process_streams_to_a_bound_viewer(port: int) -> None:
    items: list[StreamItem] = []
    before = set(list_segments(SHM_PREFIX))
    with _collecting_service(port, items) as service:
        process = SPAWN.Process(target=_pipeline, args=(port, 3))
        process.start()
        process.join(60)
        assert process.exitcode == 0
        _wait_for(items, 4)
        info = request("127.0.0.1", port + 2, "ping").header
        assert info["viewer"] == "testviewer" and info["received"] == 4 and info["pid"] == os.getpid()
        assert service.rejected == 0
    assert [item.path for item in items][:3] == [f"plate/A0{i}_s1_w1.tif" for i in (1, 2, 3)]
    assert [int(item.array[0, 0]) for item in items[:3]] == [0, 1, 2]
    assert items[0].metadata["well"] == "A01" and items[0].metadata["plate"] == "plate"
    assert items[0].header["transport"] == "shm" and items[3].header["transport"] == "inline"
    assert set(list_segments(SHM_PREFIX)) == before


def test_viewer_backends_offer_the_zero_copy_producer(port: int) -> None:
    items: list[StreamItem] = []
    with _collecting_service(port, items), TestViewerBackend(port=port) as backend:
        with backend.frame((256, 256), np.uint16, "plate/A01_s1_w1.tif") as buffer:
            buffer[...] = 9
        _wait_for(items, 1)
    assert items[0].header["transport"] == "shm" and int(items[0].array[5, 5]) == 9
    assert items[0].metadata["well"] == "A01"


def test_no_viewer_and_no_launch_says_how_to_start_one(port: int) -> None:
    backend = TestViewerBackend(port=port, probe_timeout=0.2)
    with pytest.raises(ViewerUnavailableError, match=r"launch=True\) or POLYSTORE_TESTVIEWER_LAUNCH=1"):
        backend.save(np.zeros(4), "a.tif")
    backend.close()


def test_a_viewer_of_another_type_is_refused(port: int) -> None:
    with _collecting_service(port, [], viewer_type="napari"):
        backend = TestViewerBackend(port=port)
        with pytest.raises(ViewerError, match="is a 'napari' viewer, not 'testviewer'"):
            backend.save(np.zeros(4), "a.tif")
        backend.close()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("POLYSTORE_TESTVIEWER_PORT", str(port))
    monkeypatch.setenv("POLYSTORE_TESTVIEWER_LAUNCH", "yes")
    backend = TestViewerBackend()
    assert (backend.port, backend.control_port, backend.launch) == (port, port + 2, True)
    assert TestViewerBackend(port=port + 10, launch=False).launch is False


def _launching_pipeline(port: int, tag: int, results: Any) -> None:
    backend = TestViewerBackend(port=port, launch=True, launch_timeout=60)
    backend.save(np.full((8, 8), tag, dtype=np.uint8), f"from-{tag}.tif", wait_for_ack=True)
    results.put((tag, backend.viewer["pid"] if backend.viewer else None,
                 backend.launched.pid if backend.launched else None))
    backend.close()


def test_launch_on_demand_starts_one_viewer_for_concurrent_pipelines(
    port: int, kill_launched: list[int]
) -> None:
    results = SPAWN.Queue()
    pipelines = [SPAWN.Process(target=_launching_pipeline, args=(port, tag, results)) for tag in (1, 2)]
    for process in pipelines:
        process.start()
    answers = [results.get(timeout=90) for _ in pipelines]
    for process in pipelines:
        process.join(30)
    viewer_pids = {pid for _, pid, _ in answers}
    launched = [pid for _, _, pid in answers if pid is not None]
    kill_launched.extend(viewer_pids)
    assert len(viewer_pids) == 1, answers  # both pipelines stream to the same viewer
    assert launched == list(viewer_pids)  # exactly one of them launched it
    paths = request("127.0.0.1", port + 2, "received_paths").header["paths"]
    assert sorted(paths) == ["from-1.tif", "from-2.tif"]
    # a third pipeline reuses the running viewer instead of launching another
    backend = TestViewerBackend(port=port, launch=True)
    backend.save(np.full((4, 4), 7, dtype=np.int16), "third.tif", wait_for_ack=True)
    assert backend.launched is None and backend.viewer is not None and backend.viewer["pid"] in viewer_pids
    np.testing.assert_array_equal(backend.load("third.tif"), np.full((4, 4), 7, dtype=np.int16))
    with pytest.raises(ViewerError, match=r"nothing was received as 'never\.tif'"):
        backend.load("never.tif")
    backend.close()


def test_a_launched_viewer_that_dies_reports_its_output(port: int) -> None:
    class BrokenViewer(TestViewerBackend):
        def launch_command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; print('cannot open display :99'); sys.exit(3)"]

    backend = BrokenViewer(port=port, launch=True, probe_timeout=0.2)
    expected = r"(?s)exited with status 3 before it answered.*cannot open display :99"
    with pytest.raises(ViewerError, match=expected):
        backend.save(np.zeros(4), "a.tif")
    backend.close()


def test_roi_sets_travel_as_roi_zip_bytes(port: int) -> None:
    roifile = pytest.importorskip("roifile", reason="roifile is not installed (pip install 'polystore[roi]')")
    rois = [roifile.ImagejRoi.frompoints([[1, 2], [30, 4], [15, 40]], name=f"cell{i}") for i in range(3)]
    rois[1].t_position = 5
    items: list[StreamItem] = []
    registry = BackendRegistry({"testviewer": TestViewerBackend(port=port)})
    with _collecting_service(port, items):
        FileManager(registry).save(rois, "A01/cells.roi.zip", backend="testviewer")
        _wait_for(items, 1)
        registry["testviewer"].close()
    assert items[0].kind == "roi_set" and items[0].array.dtype == np.uint8
    received = items[0].rois()
    assert [r.name for r in received] == ["cell0", "cell1", "cell2"]
    np.testing.assert_array_equal(received[2].coordinates(), rois[2].coordinates())
    assert received[1].t_position == 5


def test_a_second_viewer_on_a_taken_port_is_refused_clearly(port: int) -> None:
    with _collecting_service(port, []), pytest.raises(ViewerError, match="in use") as refused:
        _collecting_service(port, []).start()
    assert str(refused.value).count("another port") == 1  # the advice once, not twice


# ---- one call, two places ------------------------------------------------------------------------


def test_one_save_writes_storage_losslessly_and_a_stalled_viewer_never_slows_it(port: int) -> None:
    """``fm.save(img, path, backend=("memory", viewer))``: every frame is stored; the viewer gets
    the newest (policy="latest"), and one that stops reading makes no save wait or fail, where
    a plain save to it (policy="block") times out."""
    import threading

    stalled = threading.Event()
    items: list[StreamItem] = []

    def hang(item: StreamItem) -> None:
        items.append(item)
        stalled.wait(30)

    viewer = TestViewerBackend(port=port, send_timeout=0.3, transport="inline", max_pending_bytes=64 * 1024)
    manager = FileManager(BackendRegistry({"testviewer": viewer}))
    with ViewerService("testviewer", port, on_item=hang, shm_prefixes=(SHM_PREFIX,)):
        try:
            frames = [np.full((64, 64), index, dtype=np.uint16) for index in range(40)]  # 8 KiB each
            for index, frame in enumerate(frames):
                manager.save(frame, f"/run/frame{index % 2}.npy", backend=("testviewer", "memory"))
            for index in (38, 39):  # storage holds every frame, exactly
                stored = manager.load(f"/run/frame{index % 2}.npy", "memory")
                np.testing.assert_array_equal(stored, frames[index])
            assert viewer.dropped > 0 and viewer.pending <= 2  # the viewer keeps the newest per path
            with pytest.raises(TimeoutError):  # the same viewer, asked to block, holds the pipeline up
                for frame in frames:
                    manager.save(frame, "/run/blocking.npy", backend="testviewer")
        finally:
            stalled.set()
        viewer.flush(5)
        _wait_for(items, 3)
    viewer.close(1)
    assert items[0].array[0, 0] == 0


LATEST_PIPELINE = """
import sys
import numpy as np
from polystore import FileManager
from polystore_napari.backend import NapariStreamingBackend

backend = NapariStreamingBackend()
fm = FileManager({"napari": backend})
for index in range(30):  # a burst, faster than this viewer takes frames
    fm.save(np.full((512, 512), index, np.uint16), "live/frame.tif", backend=("memory", "napari"))
print("sent", flush=True)
sys.stdin.readline()  # the pipeline goes on computing: nothing else is saved for a while
backend.close()
"""


@pytest.mark.napari
def test_latest_frames_show_in_napari_while_the_pipeline_runs(make_napari_viewer: Any, qtbot: Any) -> None:
    """policy="latest" used to keep the frames it could not send at once until the next save or
    the pipeline's exit: a pipeline that paused after a burst showed a stale frame meanwhile."""
    import subprocess

    from polystore_napari.receiver_widget import StreamReceiverWidget

    port = free_port_block(3)
    viewer = make_napari_viewer(show=True)
    widget = StreamReceiverWidget(viewer, port=port, autostart=False)
    arrived = widget._arrived

    def busy(item: StreamItem) -> None:  # a viewer slower than the pipeline (a busy GUI, a big frame)
        time.sleep(0.02)
        arrived(item)

    widget._arrived = busy  # type: ignore[method-assign]
    assert widget.start(), widget.error
    env = {**os.environ, "POLYSTORE_NAPARI_PORT": str(port)}
    pipeline = subprocess.Popen([sys.executable, "-c", LATEST_PIPELINE], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pipeline.stdout is not None and pipeline.stdout.readline().strip() == "sent"

        def last_frame_shown() -> bool:
            shown = widget.live.plane("live/frame.tif")
            return shown is not None and int(shown[0, 0]) == 29

        qtbot.waitUntil(last_frame_shown, timeout=30_000)
        assert pipeline.poll() is None  # shown while the pipeline still runs
    finally:
        _, err = pipeline.communicate("stop\n", timeout=60)
    assert pipeline.returncode == 0, err
    widget.stop()
