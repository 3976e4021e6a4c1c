"""The Fiji bridge for real: a JVM with ImageJ's jar in a bridge process, under Xvfb.

A pipeline in another process streams a plate with ``backend="fiji"``; the test asks the
bridge which windows exist and what they hold; ROIs and measurements made inside ImageJ (by
macro, as a user's clicks would) come back through ``.roi.zip`` and columns; a window's
Robot screenshot shows the image; arrays of every supported dtype and dimensionality go
into ImageJ and come back equal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fiji_helpers import REPO, requires_imagej, running_bridge

from polystore import FileManager
from polystore.exceptions import ViewerError
from polystore_fiji.client import FijiClient
from polystore_fiji.convert import DTYPE_RULES

roifile = pytest.importorskip("roifile")

WELLS = ("A01", "B02")
SITES = (1, 2)
CHANNELS = (1, 2)
ZS = (1, 2)
HEIGHT, WIDTH = 24, 32


def plane_value(well: str, site: int, channel: int, z: int) -> int:
    """The pixel value the pipeline writes for one plane (so every plane is told apart)."""
    return 1000 * (WELLS.index(well) + 1) + 100 * site + 10 * channel + z


def plane(well: str, site: int, channel: int, z: int) -> np.ndarray:
    """A plane of ``plane_value`` with a bright square and a horizontal ramp in its first row."""
    data = np.full((HEIGHT, WIDTH), plane_value(well, site, channel, z), dtype=np.uint16)
    data[4:12, 6:20] += 5000
    data[0] = np.arange(WIDTH, dtype=np.uint16)
    return data


PIPELINE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from polystore import FileManager
    sys.path.insert(0, {tests!r})
    from test_fiji_bridge import CHANNELS, SITES, WELLS, ZS, plane

    fm = FileManager()
    for well in WELLS:
        for site in SITES:
            for z in ZS:
                for channel in CHANNELS:
                    path = f"plate1/{{well}}_s{{site}}_w{{channel}}_z{{z}}.tif"
                    fm.save(plane(well, site, channel, z), path, backend="fiji")
    fm.get_backend("fiji").close()
    """
)
PLANES = len(WELLS) * len(SITES) * len(CHANNELS) * len(ZS)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FijiClient]:
    """A bridge with the plate already streamed to it by a pipeline process."""
    requires_imagej()
    log = tmp_path_factory.mktemp("fiji") / "bridge.log"
    with running_bridge(log, "--allow-macros") as (client, _process):
        pipeline = subprocess.run(
            [sys.executable, "-c", PIPELINE.format(tests=str(REPO / "tests"))],
            env={**os.environ, "POLYSTORE_FIJI_PORT": str(client.port)},
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
        assert pipeline.returncode == 0, pipeline.stderr
        status = client.wait(PLANES, timeout=60)
        assert status["failed"] == 0, status["last_error"]
        yield client


def test_windows_group_the_plate_by_well(bridge: FijiClient) -> None:
    windows = {w["title"]: w for w in bridge.windows()}
    assert {"plate1/A01", "plate1/B02"} <= set(windows)
    for well in WELLS:
        window = windows[f"plate1/{well}"]
        assert (window["channels"], window["slices"], window["frames"]) == (2, 2, 2)
        assert (window["width"], window["height"]) == (WIDTH, HEIGHT)
        assert window["dtype"] == "uint16"
        assert window["composite"] and window["visible"]


def test_window_pixels_are_the_streamed_planes(bridge: FijiClient) -> None:
    for well in WELLS:
        hyperstack = bridge.fetch_image(f"plate1/{well}", axes="TZCYX")
        assert hyperstack.shape == (len(SITES), len(ZS), len(CHANNELS), HEIGHT, WIDTH)
        for t, site in enumerate(SITES):
            for zi, z in enumerate(ZS):
                for ci, channel in enumerate(CHANNELS):
                    np.testing.assert_array_equal(hyperstack[t, zi, ci], plane(well, site, channel, z))


def test_backend_load_reads_the_window_a_path_went_to(bridge: FijiClient) -> None:
    from polystore_fiji.backend import FijiStreamingBackend

    backend = FijiStreamingBackend(port=bridge.port)
    try:
        window = backend.load("plate1/A01_s1_w1.tif")
    finally:
        backend.close()
    assert window.shape == (len(SITES), len(ZS), len(CHANNELS), HEIGHT, WIDTH)  # squeezed TZCYX: none is 1
    np.testing.assert_array_equal(window[1, 0, 1], plane("A01", 2, 2, 1))


def test_a_roi_drawn_in_imagej_comes_back_as_roi_zip(bridge: FijiClient, tmp_path: Path) -> None:
    bridge.clear_rois()
    bridge.run_macro(
        'selectImage("plate1/A01"); Stack.setPosition(2, 1, 2);'
        'makeOval(5, 3, 14, 9); Roi.setPosition(2, 1, 2); Roi.setName("nucleus");'
        'roiManager("add");'
        'makePolygon(1, 1, 20, 2, 9, 15); Roi.setPosition(1, 2, 1); roiManager("add");'
    )
    payload = bridge.fetch_rois()
    with zipfile.ZipFile(BytesIO(payload)) as archive:
        assert len(archive.namelist()) == 2
    oval, polygon = bridge.fetch_roifile()
    assert oval.name == "nucleus"
    assert oval.roitype == roifile.ROI_TYPE.OVAL
    assert (oval.left, oval.top, oval.right, oval.bottom) == (5, 3, 19, 12)
    assert (oval.c_position, oval.z_position, oval.t_position) == (2, 1, 2)
    assert polygon.roitype == roifile.ROI_TYPE.POLYGON
    corners = polygon.integer_coordinates + np.array([polygon.left, polygon.top])
    np.testing.assert_array_equal(corners, [[1, 1], [20, 2], [9, 15]])
    assert (polygon.c_position, polygon.z_position, polygon.t_position) == (1, 2, 1)

    # and they save like any .roi.zip, which roifile (and Fiji) open again
    fm = FileManager()
    fm.save(payload, str(tmp_path / "cells.roi.zip"), backend="disk")
    reread = roifile.roiread(tmp_path / "cells.roi.zip")
    assert [(r.left, r.top, r.right, r.bottom, r.c_position, r.z_position, r.t_position) for r in reread] == [
        (5, 3, 19, 12, 2, 1, 2), (1, 1, 20, 15, 1, 2, 1)
    ]


def test_a_roi_set_streamed_from_python_lands_at_its_positions(bridge: FijiClient) -> None:
    bridge.clear_rois()
    box = roifile.ImagejRoi.frompoints(np.array([[2.0, 3.0], [12.0, 3.0], [12.0, 9.0], [2.0, 9.0]]))
    box.name = "box"
    box.c_position, box.z_position, box.t_position = 2, 2, 1
    box.roitype = roifile.ROI_TYPE.POLYGON
    point = roifile.ImagejRoi.frompoints(np.array([[7.0, 8.0]]))
    point.name = "spot"
    point.c_position, point.z_position, point.t_position = 1, 1, 2
    from polystore_fiji.backend import FijiStreamingBackend

    backend = FijiStreamingBackend(port=bridge.port)
    try:
        backend.save([box, point], "plate1/A01_cells.roi.zip")
    finally:
        backend.close()
    bridge.wait(PLANES + 1, timeout=30)
    back = {r.name: r for r in bridge.fetch_roifile()}
    assert set(back) == {"box", "spot"}
    assert (back["box"].c_position, back["box"].z_position, back["box"].t_position) == (2, 2, 1)
    assert (back["box"].left, back["box"].top, back["box"].right, back["box"].bottom) == (2, 3, 12, 9)
    assert (back["spot"].c_position, back["spot"].z_position, back["spot"].t_position) == (1, 1, 2)


def test_a_results_table_comes_back_with_imagejs_values(bridge: FijiClient) -> None:
    bridge.run_macro(
        'run("Clear Results"); run("Set Measurements...", "area mean min redirect=None decimal=3");'
        'selectImage("plate1/B02"); Stack.setPosition(1, 2, 1); makeRectangle(4, 2, 10, 6); run("Measure");'
        'Stack.setPosition(2, 1, 2); makeRectangle(0, 0, 32, 1); run("Measure"); run("Select None");'
    )
    table = bridge.fetch_results("Results")
    assert len(table) == 2
    first = plane("B02", 1, 1, 2)[2:8, 4:14]
    second = plane("B02", 2, 2, 1)[0:1, 0:32]
    np.testing.assert_allclose(table["Area"], [first.size, second.size])
    np.testing.assert_allclose(table["Mean"], [first.mean(), second.mean()], rtol=1e-9)
    np.testing.assert_allclose(table["Min"], [first.min(), second.min()])
    np.testing.assert_allclose(table["Max"], [first.max(), second.max()])


def test_a_window_is_on_the_virtual_display(bridge: FijiClient) -> None:
    screenshot = bridge.screenshot("plate1/A01")
    assert screenshot.ndim == 3 and screenshot.shape[2] == 3
    assert screenshot.shape[0] >= HEIGHT and screenshot.shape[1] >= WIDTH
    # the image at 100 %: its bright square where the planes have it, over a darker ground
    brightness = screenshot.astype(float).sum(axis=2)
    square, ground = brightness[5:11, 7:19], brightness[14:HEIGHT, 22:WIDTH]
    assert square.min() > 100 and square.min() > 2 * ground.max(), "the canvas does not show the image"
    (window,) = [w for w in bridge.windows() if w["title"] == "plate1/A01"]
    assert window["painted"]  # what the benchmark waits for on both sides


def test_a_dataframe_arrives_as_a_results_table_with_its_columns(bridge: FijiClient) -> None:
    pandas = pytest.importorskip("pandas")
    from polystore_fiji.backend import FijiStreamingBackend

    cells = pandas.DataFrame({
        "Label": ["c1", "c2", "c3"], "area": [12.5, 30.0, 7.25], "count": [3, 0, 11],
        "kind": ["round", "long", None], "mitotic": [True, False, True], "ratio": [0.5, float("nan"), 2.0],
    })
    backend = FijiStreamingBackend(port=bridge.port)
    try:
        FileManager({"fiji": backend}).save(cells, "results/cells.csv", backend="fiji", wait_for_ack=True)
    finally:
        backend.close()
    # shown in ImageJ: its own macro functions find the table window, with every row
    shown = bridge.run_macro('return "" + isOpen("results/cells") + " " + Table.size("results/cells");')
    assert shown == "1 3"
    for title in ("results/cells", "results/cells.csv"):  # the table's title, or the path it was saved as
        table = bridge.fetch_results(title)
        assert list(table.columns) == ["Label", "area", "count", "kind", "mitotic", "ratio"]
        assert list(table["Label"]) == ["c1", "c2", "c3"]
        np.testing.assert_array_equal(table["area"], [12.5, 30.0, 7.25])
        np.testing.assert_array_equal(table["count"], [3, 0, 11])
        assert list(table["kind"]) == ["round", "long", ""]
        np.testing.assert_array_equal(table["mitotic"], [1, 0, 1])
        np.testing.assert_array_equal(table["ratio"], [0.5, np.nan, 2.0])


def test_numbers_saved_as_csv_arrive_as_a_results_table(bridge: FijiClient) -> None:
    from polystore_fiji.backend import FijiStreamingBackend

    matrix = np.arange(12, dtype=np.int32).reshape(4, 3) * 1.5
    backend = FijiStreamingBackend(port=bridge.port)
    try:
        backend.save(matrix, "results/named.csv", metadata={"columns": ["x", "y", "z"]}, wait_for_ack=True)
        backend.save(matrix, "results/plain.csv", wait_for_ack=True)
        backend.save(np.array([4.0, 5.0]), "results/one.csv", wait_for_ack=True)
    finally:
        backend.close()
    named = bridge.fetch_results("results/named")
    assert list(named.columns) == ["x", "y", "z"]
    np.testing.assert_array_equal(named.to_numpy(), matrix)
    assert list(bridge.fetch_results("results/plain").columns) == ["C1", "C2", "C3"]
    np.testing.assert_array_equal(bridge.fetch_results("results/one")["C1"], [4.0, 5.0])


def test_a_missing_table_is_an_error_naming_the_tables_and_an_empty_one_is_none(bridge: FijiClient) -> None:
    from polystore_fiji.backend import FijiStreamingBackend

    backend = FijiStreamingBackend(port=bridge.port)
    try:
        backend.save(np.ones((2, 2)), "results/here.csv", wait_for_ack=True)
    finally:
        backend.close()
    with pytest.raises(ViewerError, match=r"no results table titled 'nowhere'; tables: .*results/here"):
        bridge.fetch_results("nowhere")
    bridge.run_macro('run("Clear Results");')
    assert bridge.fetch_results() is None  # ImageJ's own table, with nothing measured
    assert bridge.results_columns("Results") is None


def test_what_an_acknowledged_save_sent_is_shown_when_asked(bridge: FijiClient) -> None:
    """The bridge acknowledges an item when it has it, before it is shown: a question that
    follows the acknowledgement must still see it."""
    pandas = pytest.importorskip("pandas")
    from polystore_fiji.backend import FijiStreamingBackend

    backend = FijiStreamingBackend(port=bridge.port)
    try:
        for number in range(12):
            plane = np.full((64, 48), number, np.uint16)
            backend.save(plane, f"acked/img{number}p.tif", wait_for_ack=True)
            assert f"acked/img{number}p" in {w["title"] for w in bridge.windows()}, number
            backend.save(plane + 1, f"acked/img{number}q.tif", wait_for_ack=True)
            assert bridge.fetch_image(f"acked/img{number}q")[0, 0] == number + 1, number
            backend.save(pandas.DataFrame({"n": [number]}), f"acked/t{number}.csv", wait_for_ack=True)
            assert list(bridge.fetch_results(f"acked/t{number}")["n"]) == [number]
    finally:
        backend.close()
    for number in range(12):
        bridge.close(f"acked/img{number}p")
        bridge.close(f"acked/img{number}q")


def test_an_image_from_imagej_goes_to_any_backend(bridge: FijiClient, tmp_path: Path) -> None:
    bridge.run_macro('selectImage("plate1/A01"); run("Select None");'
                     'run("Duplicate...", "title=projected duplicate");'
                     'run("Z Project...", "projection=[Max Intensity] all"); rename("A01-max");')
    projected = bridge.fetch_image("A01-max", axes="TCYX")
    expected = np.maximum(plane("A01", 2, 1, 1), plane("A01", 2, 1, 2))
    np.testing.assert_array_equal(projected[1, 0], expected)
    fm = FileManager()
    fm.save(projected, str(tmp_path / "A01-max.npy"), backend="disk")
    np.testing.assert_array_equal(fm.load(str(tmp_path / "A01-max.npy"), backend="disk"), projected)


def test_a_macro_error_comes_back_as_its_message(bridge: FijiClient) -> None:
    with pytest.raises(ViewerError, match="Undefined identifier"):
        bridge.run_macro("x = 1; y = no_such_function(x);")


def test_unknown_titles_are_named_in_the_error(bridge: FijiClient) -> None:
    with pytest.raises(ViewerError, match=r"no image titled 'nope'.*plate1/A01"):
        bridge.fetch_image("nope")


# -- conversions, through ImageJ and back --------------------------------------------------------

SHAPES = {2: (5, 7), 3: (3, 5, 7), 4: (2, 3, 5, 7), 5: (2, 3, 2, 5, 7)}


def sample(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Values that use the dtype's range (negative, large, fractional) where ImageJ keeps them exactly."""
    count = int(np.prod(shape))
    if dtype == np.bool_:
        flags: np.ndarray = np.arange(count) % 3 == 0
        return flags.reshape(shape)
    if dtype.kind == "f":
        values = np.linspace(-1000.5, min(2.0**20, float(np.finfo(dtype).max) / 2), count)
    else:
        info = np.iinfo(dtype)
        low, high = max(info.min, -(2**24)), min(info.max, 2**24)  # float32 holds these exactly
        values = np.linspace(low, high, count).round()
    return values.astype(dtype).reshape(shape)


@pytest.mark.parametrize("ndim", sorted(SHAPES))
@pytest.mark.parametrize("dtype", sorted(DTYPE_RULES, key=str), ids=str)
def test_arrays_round_trip_through_imagej(bridge: FijiClient, dtype: np.dtype, ndim: int) -> None:
    array = sample(dtype, SHAPES[ndim])
    title = f"roundtrip-{dtype}-{ndim}d"
    window = bridge.put_image(array, title, show=False)
    rule = DTYPE_RULES[dtype]
    assert window["bit_depth"] == rule.stored.itemsize * 8
    back = bridge.fetch_image(title)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    if dtype == np.float64:  # the stated rule: float64 is held as float32
        np.testing.assert_array_equal(back, array.astype(np.float32).astype(np.float64))
    else:
        np.testing.assert_array_equal(back, array)
    bridge.close(title)


def test_explicit_axes_and_native_values(bridge: FijiClient) -> None:
    stack = np.arange(-300, 300, dtype=np.int16).reshape(4, 10, 15)
    window = bridge.put_image(stack, "signed-z", axes="ZYX", show=False)
    assert (window["channels"], window["slices"], window["frames"]) == (1, 4, 1)
    assert window["dtype"] == "int16"
    native = bridge.fetch_image("signed-z", native=True)
    np.testing.assert_array_equal(native, (stack.astype(np.int32) + 32768).astype(np.uint16))
    np.testing.assert_array_equal(bridge.fetch_image("signed-z", axes="ZYX"), stack)
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:6] = True
    bridge.put_image(mask, "mask", show=False)
    np.testing.assert_array_equal(bridge.fetch_image("mask", native=True), mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(bridge.fetch_image("mask"), mask)
    with pytest.raises(ViewerError, match="complex"):
        bridge.put_image(np.zeros((4, 4), np.complex64), "complex", show=False)


ORDER_PIPELINE = """
import numpy as np
from polystore_fiji.backend import FijiStreamingBackend
backend = FijiStreamingBackend()
base = np.full((64, 64), 100, np.uint16)
base[4, 4] = 3000
for index in range(40):  # back to back: converted by two threads, placed in arrival order
    backend.save(base + index, "order/A09_s1_w1.tif")
backend.close()
"""


def test_what_starting_imagej_made_is_frozen_out_of_python_s_collections(bridge: FijiClient) -> None:
    """JPype's proxies of ImageJ's classes live as long as the JVM; scanning them in every full
    collection stopped the bridge (and the stream) for 12-37 ms several times a run."""
    assert int(bridge.status()["python_objects_frozen"]) > 10_000


def test_the_newest_frame_wins_and_the_display_range_is_measured_once(bridge: FijiClient) -> None:
    """Forty frames for one position: the window ends on the last one sent, whatever order
    the converting threads finish in, and its display range is a real frame's, set once."""
    handled = int(bridge.status()["handled"])
    for round_ in range(2):  # the second time after closing the window: a fresh range again
        pipeline = subprocess.run(
            [sys.executable, "-c", ORDER_PIPELINE],
            env={**os.environ, "POLYSTORE_FIJI_PORT": str(bridge.port)},
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
        assert pipeline.returncode == 0, pipeline.stderr
        handled += 40
        bridge.wait(handled, timeout=60)
        image = bridge.fetch_image("order/A09")
        assert np.all(image[image != 3039] == 139), f"round {round_}: not the last frame"
        (window,) = [w for w in bridge.windows() if w["title"] == "order/A09"]
        ((low, high),) = window["display_ranges"]
        assert 100 <= low < 140 and high - low == 2900, (round_, low, high)  # one frame's, not (0, 1)
        bridge.close("order/A09")


def test_points_and_shapes_land_on_their_windows_c_z_t(bridge: FijiClient) -> None:
    """The window's T is (site, t): a point from site 2 belongs on T=2, not on its t (T=1)."""
    bridge.clear_rois()
    handled = int(bridge.status()["handled"])
    from polystore_fiji.backend import FijiStreamingBackend

    backend = FijiStreamingBackend(port=bridge.port)
    try:
        backend.save(np.array([[5.0, 6.0], [7.0, 8.0]]), "plate1/A01_s2_w2_z2.tif", kind="points")
        backend.save(np.array([[1.0, 1.0], [1.0, 9.0], [6.0, 9.0]]), "plate1/B02_s1_w1_z2.tif", kind="shapes")
    finally:
        backend.close()
    bridge.wait(handled + 2, timeout=30)
    positions = sorted((r.roitype, r.c_position, r.z_position, r.t_position) for r in bridge.fetch_roifile())
    assert positions == sorted([(roifile.ROI_TYPE.POINT, 2, 2, 2), (roifile.ROI_TYPE.POLYGON, 1, 2, 1)])


def test_several_shapes_of_one_kind_arrive_as_that_kind_of_roi(bridge: FijiClient) -> None:
    """An (M, N, 2) array is M shapes; ``shape_type`` says what they are (polystore.rois)."""
    bridge.clear_rois()
    handled = int(bridge.status()["handled"])
    from polystore_fiji.backend import FijiStreamingBackend

    boxes = np.array([[[2, 3], [2, 9], [6, 9], [6, 3]], [[10, 1], [10, 5], [14, 5], [14, 1]]], float)
    backend = FijiStreamingBackend(port=bridge.port)
    try:
        backend.save(boxes, "plate1/B02_s2_w1_z1.tif", kind="shapes", metadata={"shape_type": "rectangle"})
    finally:
        backend.close()
    bridge.wait(handled + 1, timeout=30)
    rois = bridge.fetch_roifile()
    assert [r.roitype for r in rois] == [roifile.ROI_TYPE.RECT] * 2
    assert [(r.top, r.left, r.bottom, r.right) for r in rois] == [(2, 3, 6, 9), (10, 1, 14, 5)]
    assert {(r.c_position, r.z_position, r.t_position) for r in rois} == {(1, 1, 2)}  # site 2: T=2
