"""What a running bridge does when windows are closed, planes and ROIs arrive in any order,
labels share a well with images, headers ask for too much, and requests are malformed: it
keeps answering, with a message saying what was wrong.

One bridge process (a real JVM with ImageJ's jar, under Xvfb) with a small heap, so that the
bound on a window's pixels is reached by a few small planes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fiji_helpers import requires_imagej, running_bridge

from polystore.exceptions import InvalidOptionError, UnsupportedDataError, ViewerError
from polystore_fiji.backend import FijiStreamingBackend
from polystore_fiji.client import FijiClient
from polystore_fiji.jvm import JVM_OPTIONS_ENV

roifile = pytest.importorskip("roifile")

HEAP = "-Xms256m -Xmx256m"
"""The bridge's heap: a window may hold 128 MiB of pixels, 256 planes of 512x512 uint16."""
WAIT_S = 30.0


@pytest.fixture(scope="module")
def bridge_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fiji") / "bridge.log"


@pytest.fixture(scope="module")
def bridge(bridge_log: Path) -> Iterator[FijiClient]:
    requires_imagej()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(JVM_OPTIONS_ENV, HEAP)
        with running_bridge(bridge_log, "--allow-macros") as (client, _process):
            yield client


@pytest.fixture
def send(bridge: FijiClient) -> Iterator[Callable[..., None]]:
    """``send(data, path, **options)``: one item to the bridge, acknowledged once received."""
    backend = FijiStreamingBackend(port=bridge.port)
    try:
        yield lambda data, path, **options: backend.save(data, path, wait_for_ack=True, **options)
    finally:
        backend.close()


def settle(bridge: FijiClient) -> dict[str, Any]:
    """The status once every item received so far is done."""
    return bridge.wait(int(bridge.status()["received"]), timeout=WAIT_S)


def titles(bridge: FijiClient) -> set[str]:
    return {window["title"] for window in bridge.windows()}


def test_a_window_the_user_closed_answers_cleanly_and_opens_again(
    bridge: FijiClient, send: Callable[..., None]
) -> None:
    send(np.full((16, 16), 7, np.uint16), "closed/A01_s1_w1.tif")
    assert "closed/A01" in titles(bridge)
    bridge.run_macro('selectImage("closed/A01"); close();')  # as the window's close box does
    assert "closed/A01" not in titles(bridge)
    with pytest.raises(ViewerError, match="no image titled 'closed/A01'"):
        bridge.fetch_image("closed/A01")
    assert bridge.close("closed/A01") == 0
    assert settle(bridge)["failed"] == 0
    send(np.full((16, 16), 9, np.uint16), "closed/A01_s1_w1.tif")
    assert "closed/A01" in titles(bridge)
    np.testing.assert_array_equal(bridge.fetch_image("closed/A01"), np.full((16, 16), 9))


def test_labels_get_a_window_beside_the_images(bridge: FijiClient, send: Callable[..., None]) -> None:
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    labels = (image % 3).astype(np.uint16)
    send(image, "seg/B02_s1_w1.tif")
    send(labels, "seg/B02_s1_w1.tif", kind="labels")
    assert {"seg/B02", "seg/B02 labels"} <= titles(bridge)
    np.testing.assert_array_equal(bridge.fetch_image("seg/B02"), image)
    np.testing.assert_array_equal(bridge.fetch_image("seg/B02 labels"), labels)


def roi_positions(bridge: FijiClient, name: str) -> list[tuple[int, int, int]]:
    return [(r.c_position, r.z_position, r.t_position) for r in bridge.fetch_roifile() if r.name == name]


def test_a_roi_stays_on_its_plane_whatever_arrives_first(
    bridge: FijiClient, send: Callable[..., None]
) -> None:
    bridge.clear_rois()
    point = np.array([[3.0, 4.0]])
    # the ROI before any plane of its well: it waits for its plane
    send(point, "order/C03_s2_w3_z2.tif", kind="points")
    send(np.ones((8, 8), np.uint16), "order/C03_s2_w3_z2.tif")
    assert settle(bridge)["failed"] == 0
    assert roi_positions(bridge, "order/C03_s2_w3_z2") == [(1, 1, 1)]
    # planes inserted before its channel, z and site: the ROI moves with its plane
    for path in ("order/C03_s1_w1_z1.tif", "order/C03_s2_w2_z1.tif", "order/C03_s1_w3_z2.tif"):
        send(np.ones((8, 8), np.uint16), path)
    assert settle(bridge)["failed"] == 0
    (window,) = [w for w in bridge.windows() if w["title"] == "order/C03"]
    assert (window["channels"], window["slices"], window["frames"]) == (3, 2, 2)
    assert roi_positions(bridge, "order/C03_s2_w3_z2") == [(3, 2, 2)]


def test_a_wait_with_a_timeout_that_is_no_duration_is_refused(bridge: FijiClient) -> None:
    for timeout in (float("nan"), float("inf"), -1.0, "soon"):
        with pytest.raises(InvalidOptionError, match="'timeout' is a finite number of seconds"):
            bridge.wait(0, timeout=timeout)  # type: ignore[arg-type]
        # a client that does not check: the bridge refuses it, and keeps answering
        with pytest.raises(ViewerError, match="'timeout' is a finite number of seconds"):
            bridge.request("wait", {"handled": 0, "timeout": timeout}, timeout=WAIT_S)
    with pytest.raises(ViewerError, match="'handled' is a number of items"):
        bridge.request("wait", {"handled": "all"})
    assert bridge.status()["imagej"]


def test_a_window_is_not_grown_beyond_the_heap(bridge: FijiClient, send: Callable[..., None]) -> None:
    """Each item names a new channel, z and t: the window would hold every combination, 7 x 7 x 7
    planes of 512 KiB (172 MiB, over half the 256 MiB heap) at the seventh."""
    before = int(bridge.status()["failed"])
    for index in range(7):
        send(np.full((512, 512), index, np.uint16), "bomb/x.tif",
             metadata={"channel": index, "z": index, "t": index})
    status = settle(bridge)
    assert status["failed"] == before + 1
    assert "would grow window 'bomb/x' to 7 channels x 7 z x 7 frames" in status["last_error"]
    assert "POLYSTORE_JVM_OPTIONS" in status["last_error"]
    (window,) = [w for w in bridge.windows() if w["title"] == "bomb/x"]
    assert (window["channels"], window["slices"], window["frames"]) == (6, 6, 6)
    bridge.close("bomb/x")


def test_the_newest_frame_is_reported_once_painted(bridge: FijiClient, send: Callable[..., None]) -> None:
    paths = [f"paint/A01_s1_w1_t{t}.tif" for t in range(1, 6)]
    for value, path in enumerate(paths):
        send(np.full((32, 32), value, np.uint16), path)
    settle(bridge)
    deadline = time.monotonic() + WAIT_S
    while (drawn := next(w for w in bridge.windows() if w["title"] == "paint/A01")["drawn"]) != paths[-1]:
        assert time.monotonic() < deadline, f"the last frame was not painted; the window reports {drawn!r}"
    bridge.close("paint/A01")


def test_closing_a_window_with_a_draw_due_leaves_no_error(
    bridge: FijiClient, bridge_log: Path, send: Callable[..., None]
) -> None:
    before, failed = bridge_log.read_text(errors="replace"), int(bridge.status()["failed"])
    for round_ in range(5):
        # the second frame comes within the window's draw interval: its draw is scheduled
        send(np.zeros((64, 64), np.uint16), f"due/A0{round_ + 1}_s1_w1_t1.tif")
        send(np.ones((64, 64), np.uint16), f"due/A0{round_ + 1}_s1_w1_t2.tif")
        assert bridge.close(f"due/A0{round_ + 1}") == 1
    time.sleep(1.5)  # past every draw that was due (at most 4 updates' time after the last)
    new = bridge_log.read_text(errors="replace")[len(before):]
    # a failure on the event thread: JPype's "Exception in thread ..." (a Python error inside a
    # Java call), or the bridge's own log of one
    for sign in ("Exception", "Traceback", "Error"):
        assert sign not in new, new[-3000:]
    assert settle(bridge)["failed"] == failed


def test_a_header_that_is_no_plate_position_is_shown_by_its_path(
    bridge: FijiClient, send: Callable[..., None]
) -> None:
    before = int(bridge.status()["failed"])
    send(np.ones((4, 4), np.uint16), "odd/row_as_list.tif", metadata={"row": [1], "column": 2})
    assert settle(bridge)["failed"] == before
    assert "odd/row_as_list" in titles(bridge)


def test_empty_images_are_refused_with_their_shape(bridge: FijiClient) -> None:
    with pytest.raises(ViewerError, match=r"one pixel along each; got shape \[0, 5\]"):
        bridge.put_image(np.zeros((0, 5), np.uint16), "empty")
    assert bridge.status()["imagej"]


def test_a_streamed_table_is_shown_in_imagej(bridge: FijiClient, send: Callable[..., None]) -> None:
    """ImageJ itself finds the table (its window), with every row: a long one too, filled in bulk."""
    pandas = pytest.importorskip("pandas")
    rows = 200_000
    frame = pandas.DataFrame({"Label": [f"c{i}" for i in range(rows)], "area": np.arange(rows) * 0.5,
                              "kind": ["round", "long"] * (rows // 2)})
    send(frame, "long/cells.csv")
    settle(bridge)
    shown = bridge.run_macro('return "" + isOpen("long/cells") + " " + Table.size("long/cells");')
    assert shown == f"1 {rows}"
    back = bridge.fetch_results("long/cells")
    assert list(back.columns) == ["Label", "area", "kind"]
    assert list(back["Label"][:3]) == ["c0", "c1", "c2"] and back["Label"].iloc[-1] == f"c{rows - 1}"
    np.testing.assert_array_equal(back["area"], frame["area"])
    assert list(back["kind"]) == list(frame["kind"])



def test_empty_tables_arrive_empty_and_empty_streamed_images_are_refused(
    bridge: FijiClient, send: Callable[..., None]
) -> None:
    pandas = pytest.importorskip("pandas")
    before = int(bridge.status()["failed"])
    send(pandas.DataFrame({"a": pandas.Series([], dtype=float)}), "empty/frame.csv")
    send(np.zeros((0, 3)), "empty/numbers.csv")
    assert settle(bridge)["failed"] == before
    assert bridge.fetch_results("empty/frame") is None  # a table with no rows, as ImageJ's own
    assert bridge.fetch_results("empty/numbers") is None
    send(np.zeros((0, 5), np.uint16), "empty/image.tif")
    status = settle(bridge)
    assert status["failed"] == before + 1
    assert "has shape (0, 5): an image has at least one pixel along Y and X" in status["last_error"]


def test_a_tables_columns_come_back_in_their_order_and_as_text_or_numbers(
    bridge: FijiClient, send: Callable[..., None]
) -> None:
    """ImageJ lists row labels first and keeps text cells apart from numbers: the columns come
    back as sent, a text column with no text in it (all missing) included."""
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({
        "area": [1.5, 2.5], "Label": ["a", "b"], "note": pandas.Series([None, None], dtype=object),
        "word": ["NaN", "1.5"], "empty": [np.nan, np.nan],
    })
    send(frame, "order/table.csv")
    columns = bridge.results_columns("order/table")
    assert columns is not None and list(columns) == ["area", "Label", "note", "word", "empty"]
    assert columns["note"] == ["", ""] and columns["word"] == ["NaN", "1.5"]
    assert columns["Label"] == ["a", "b"]
    np.testing.assert_array_equal(columns["area"], [1.5, 2.5])
    assert isinstance(columns["empty"], np.ndarray) and np.isnan(columns["empty"]).all()
    with pytest.raises(UnsupportedDataError, match="has no name"):
        send(pandas.DataFrame({" ": [1.0]}), "order/blank.csv")
