"""Live layers from stream items, the reader and the writer: napari's layer models, no window.

``napari.components.ViewerModel`` is the viewer without Qt or OpenGL, so these run in well
under a second each; the tests with a real window are in ``test_napari_plugin.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("roifile")

from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes
from roifile import ROI_TYPE, ImagejRoi

from polystore.backends.zarr import ZarrBackend
from polystore.filemanager import FileManager
from polystore.formats.roi import roi_zip_bytes
from polystore.rois import ELLIPSE_VERTICES
from polystore.streaming import StreamingBackend, StreamReceiver
from polystore.streaming.protocol import StreamItem, make_header
from polystore.streaming.viewer import free_ports
from polystore_napari import _reader, _writer
from polystore_napari.layers import Coalescer, ComponentParser, LiveLayers, PlaneStack, Series

# napari's libraries stay out of the main test process (see addopts in pyproject.toml)
pytestmark = pytest.mark.napari

WELLS = ("A01", "A02", "B01")
SITES = (1, 2)
CHANNELS = (1, 2)


def stream_item(array: np.ndarray, path: str, kind: str = "image", **metadata: Any) -> StreamItem:
    """An item as the receiver hands it over: the header the sender builds, and the array."""
    return StreamItem(array, make_header(array, path, kind=kind, metadata=metadata))


def plate_planes(shape: tuple[int, int] = (12, 16)) -> dict[tuple[str, int, int], np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        (well, site, channel): rng.integers(1, 60000, size=shape, dtype=np.uint16)
        for well in WELLS for site in SITES for channel in CHANNELS
    }


def show(live: LiveLayers, *items: StreamItem) -> int:
    return live.apply([(live.parser.place(item), item) for item in items])


def test_a_streamed_plate_becomes_one_layer_per_channel_with_well_and_site_sliders() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    planes = plate_planes()
    # out of order, one item at a time, as a pipeline's workers finish
    order = sorted(planes, key=lambda k: (k[2], k[1], k[0]), reverse=True)
    for well, site, channel in order:
        show(live, stream_item(planes[well, site, channel], f"plate1/{well}_s{site}_w{channel}.tif"))

    assert [layer.name for layer in viewer.layers] == ["plate1 w2", "plate1 w1"]
    for layer in viewer.layers:
        assert isinstance(layer, Image)
        assert layer.data.shape == (3, 2, 12, 16)
        assert tuple(layer.axis_labels) == ("well", "site", "y", "x")
        assert layer.metadata["polystore"]["components"] == {"well": list(WELLS), "site": [0, 1]}
        # sites as the files number them (ImageXpress s1 is field 0, shown "1")
        assert layer.metadata["polystore"]["texts"] == {"well": list(WELLS), "site": ["1", "2"]}
        assert layer.metadata["polystore"]["arrived"] == {well: [0, 1] for well in WELLS}
    # the sliders say what they point at, not 0..N-1
    assert tuple(viewer.dims.axis_labels) == ("well A01", "site 1", "y", "x")
    viewer.dims.current_step = (2, 1, 0, 0)
    assert tuple(viewer.dims.axis_labels) == ("well B01", "site 2", "y", "x")
    by_name = {layer.name: layer for layer in viewer.layers}
    for (well, site, channel), plane in planes.items():
        layer = by_name[f"plate1 w{channel}"]
        np.testing.assert_array_equal(layer.data[WELLS.index(well), site - 1], plane)
    # the whole stack materialises as NumPy would index it
    full = np.asarray(by_name["plate1 w1"].data)
    np.testing.assert_array_equal(full[2, 1], planes["B01", 2, 1])
    assert by_name["plate1 w1"].colormap.name == "green"
    assert by_name["plate1 w2"].colormap.name == "magenta"


def test_a_new_frame_updates_its_layer_in_place_and_keeps_the_contrast() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    first = np.full((8, 8), 100, np.uint16)
    first[0, 0] = 1000
    show(live, stream_item(first, "camera/live.tif"))
    layer = viewer.layers["camera/live.tif"]
    assert layer.contrast_limits == [100, 1000]
    layer.contrast_limits = (0, 500)  # the user's choice

    second = np.full((8, 8), 30000, np.uint16)
    show(live, stream_item(second, "camera/live.tif"))
    assert viewer.layers["camera/live.tif"] is layer
    assert len(viewer.layers) == 1
    np.testing.assert_array_equal(layer.data[...], second)
    np.testing.assert_array_equal(layer._slice.image.raw, second)  # what the canvas is given
    assert layer.contrast_limits == [0, 500]


def test_a_new_frame_of_a_shown_plane_leaves_the_layers_description_alone() -> None:
    """Only a frame that changes what the stacked axes hold re-describes the layer (each
    ``metadata`` assignment is an event that napari's layer list repaints for)."""
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    show(live, stream_item(np.full((4, 4), 1, np.uint16), "p/A01_s1_w1.tif"))
    layer = viewer.layers["p w1"]
    described: list[object] = []
    layer.events.metadata.connect(described.append)
    for value in (2, 3):
        show(live, stream_item(np.full((4, 4), value, np.uint16), "p/A01_s1_w1.tif"))
    assert described == []
    np.testing.assert_array_equal(layer._slice.image.raw, 3)  # the new pixels are shown all the same
    show(live, stream_item(np.full((4, 4), 4, np.uint16), "p/A01_s2_w1.tif"))  # a new site
    assert len(described) == 1
    assert layer.metadata["polystore"]["arrived"] == {"A01": [0, 1]}
    assert layer.extent.data[1].tolist() == [0, 1, 3, 3]  # well, site, y, x


def test_a_new_well_or_axis_grows_every_layer_of_its_series() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    a01, b02, z = (np.full((4, 4), v, np.uint8) for v in (1, 2, 3))
    show(live, stream_item(a01, "p/A01_s1_w1.tif"))
    layer = viewer.layers["p w1"]
    assert layer.data.shape == (1, 1, 4, 4)
    show(live, stream_item(b02, "p/B02_s1_w1.tif"))
    assert layer.data.shape == (2, 1, 4, 4)
    show(live, stream_item(z, "p/A01_s1_w1_z3.tif"))  # a z component appears
    assert layer.data.shape == (2, 1, 2, 4, 4)
    assert tuple(layer.axis_labels) == ("well", "site", "z", "y", "x")
    np.testing.assert_array_equal(layer.data[0, 0, 0], a01)  # "no z" sits before z=2
    np.testing.assert_array_equal(layer.data[0, 0, 1], z)
    np.testing.assert_array_equal(layer.data[1, 0, 1], 0)  # never received: zeros


def test_a_file_name_pattern_and_a_channel_axis() -> None:
    viewer = ViewerModel()
    # sites counted from 1 (the default), channels from 0 (said by the group's name)
    parser = ComponentParser(r"(?P<well>[A-P]\d\d)_f(?P<site>\d+)d(?P<channel0>\d)", channel_mode="axis")
    live = LiveLayers(viewer, parser)
    for channel in (0, 1, 2):
        for site in (1, 2):
            array = np.full((5, 6), 10 * channel + site, np.uint16)
            show(live, stream_item(array, f"run7/C05_f{site}d{channel}.png"))
    (layer,) = viewer.layers
    assert layer.name == "run7"
    assert tuple(layer.axis_labels) == ("well", "site", "channel", "y", "x")
    assert layer.data.shape == (1, 2, 3, 5, 6)
    assert layer.data[0, 1, 2, 0, 0] == 22
    with pytest.raises(Exception, match="unterminated"):
        ComponentParser(r"(?P<well>")


def test_labels_shapes_points_and_roi_sets_arrive_as_their_layers() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    image = np.ones((20, 30), np.uint16)
    labels = np.zeros((20, 30), np.uint16)
    labels[2:5, 3:9] = 7
    triangle = np.array([[1.0, 1.0], [10.0, 1.0], [10.0, 12.0]])
    points = np.array([[3.0, 4.0], [5.0, 6.0]])
    rois = [
        ImagejRoi(roitype=ROI_TYPE.RECT, left=2, top=3, right=12, bottom=8, name="box"),
        ImagejRoi.frompoints(np.array([[1.0, 2.0], [5.0, 9.0]]), name="dots"),
    ]
    rois[1].roitype = ROI_TYPE.POINT
    payload = np.frombuffer(roi_zip_bytes(rois), dtype=np.uint8)
    show(
        live,
        stream_item(image, "p/A01_s1_w1.tif"),
        stream_item(image, "p/B01_s1_w1.tif"),
        stream_item(labels, "p/A01_s1_w1.tif", kind="labels"),
        stream_item(triangle, "p/B01_s1.tif", kind="shapes"),
        stream_item(points, "p/A01_s1.tif", kind="points"),
        stream_item(payload, "p/A01_s1_w2.roi.zip", kind="roi_set"),
    )
    kinds = {layer.name: type(layer) for layer in viewer.layers}
    assert kinds == {"p w1": Image, "p w1 labels": Labels, "p shapes": Shapes, "p points": Points}
    np.testing.assert_array_equal(viewer.layers["p w1 labels"].data[0, 0], labels)
    shapes = viewer.layers["p shapes"]
    # each shape sits on its well's slider position (B01 is well 1, A01 well 0; one site)
    found = {(t, tuple(map(tuple, d))) for t, d in zip(shapes.shape_type, shapes.data, strict=True)}
    assert ("polygon", tuple((1.0, 0.0, y, x) for y, x in triangle)) in found
    assert ("rectangle", ((0.0, 0.0, 3.0, 2.0), (0.0, 0.0, 3.0, 12.0), (0.0, 0.0, 8.0, 12.0),
                          (0.0, 0.0, 8.0, 2.0))) in found
    assert len(found) == 2
    np.testing.assert_array_equal(
        viewer.layers["p points"].data, [[0, 0, 3, 4], [0, 0, 5, 6]]
    )


def test_a_deleted_live_overlay_comes_back_and_the_rest_keeps_updating() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    image = np.ones((20, 30), np.uint16)
    triangle = np.array([[1.0, 1.0], [10.0, 1.0], [10.0, 12.0]])
    show(live, stream_item(image, "p/A01_s1_w1.tif"), stream_item(triangle, "p/A01_s1.tif", kind="shapes"))
    viewer.layers.remove("p shapes")  # the user deletes it while the stream goes on
    # images with a new axis (z): every layer of the series grows, the deleted one is made again
    for z in (1, 2):
        assert show(live, stream_item(image * (5 + z), "p/A01_s1_w1.tif", z=z)) == 1
    assert {layer.name for layer in viewer.layers} == {"p w1", "p shapes"}
    assert viewer.layers["p w1"].data.shape[-3:] == (3, 20, 30)
    np.testing.assert_array_equal(viewer.layers["p w1"].data[0, 0, 2], image * 7)
    assert viewer.layers["p shapes"].ndim == 5  # well, site, z, y, x


def test_plane_stack_indexes_like_numpy() -> None:
    series = Series("s")
    rng = np.random.default_rng(0)
    for well in ("B2", "A1", "A10"):
        for t in (3, 1):
            series.add((("well", well), ("t", t)))
    stack = PlaneStack(series, np.zeros((3, 4), np.int32))
    reference = np.zeros((*series.shape, 3, 4), np.int32)
    for i, well_value in enumerate(series.values["well"]):
        for j, t_value in enumerate(series.values["t"]):
            plane = rng.integers(0, 100, (3, 4), dtype=np.int32)
            stack.put((("t", t_value), ("well", well_value)), plane)
            reference[i, j] = plane
    assert series.values == {"well": ["A1", "A10", "B2"], "t": [1, 3]}
    keys: list[Any] = [(1, 0), (slice(None), 1), 2, (slice(1, 3), slice(None), slice(0, 2)), (Ellipsis, 1),
                       (0, Ellipsis), (slice(None), slice(None), 1, 2)]
    for key in keys:
        np.testing.assert_array_equal(stack[key], reference[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(stack), reference)


def test_saving_a_live_stack_writes_the_planes_it_had_when_asked(tmp_path: Path) -> None:
    """"Save to…" takes a snapshot on the GUI thread (no pixels stacked there) and the worker
    stacks it: planes that arrive meanwhile, or grow the series, are not in the file."""
    series = Series("s")
    stack = PlaneStack(series, np.zeros((3, 4), np.uint16))
    for t in (1, 2):
        series.add((("t", t),))
        stack.put((("t", t),), np.full((3, 4), t, np.uint16))
    layer = Image(stack, name="live")
    data, options = _writer.layer_payload(layer, str(tmp_path / "live.npy"))
    assert isinstance(data, PlaneStack) and data is not stack
    series.add((("t", 3),))  # the stream goes on before the worker writes
    stack.put((("t", 3),), np.full((3, 4), 3, np.uint16))
    stack.put((("t", 1),), np.full((3, 4), 9, np.uint16))  # a newer frame of a saved plane
    _writer.save_payload(FileManager(), data, options, str(tmp_path / "live.npy"), "disk")
    saved = np.load(tmp_path / "live.npy")
    np.testing.assert_array_equal(saved, np.stack([np.full((3, 4), t, np.uint16) for t in (1, 2)]))
    assert np.asarray(stack).shape == (3, 3, 4)  # the live stack itself went on


def test_the_coalescer_keeps_the_newest_frame_per_plane_across_threads() -> None:
    coalescer = Coalescer()

    def pipeline(well: str) -> None:
        for value in range(50):
            coalescer.put(stream_item(np.full((2, 2), value, np.uint8), f"p/{well}_s1_w1.tif"))

    threads = [threading.Thread(target=pipeline, args=(well,)) for well in WELLS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = coalescer.take()
    assert sorted(item.path for _, item in taken) == [f"p/{w}_s1_w1.tif" for w in WELLS]
    assert all(item.array[0, 0] == 49 for _, item in taken)
    assert coalescer.replaced == 3 * 49
    assert coalescer.take() == []


class _NapariTestBackend(StreamingBackend):
    """Segments named pstest_napari_{pid}_{n}: this test's own in /dev/shm."""

    SHM_PREFIX = "pstest_napari_"


def test_a_zero_copy_coalescer_copies_only_the_frames_it_hands_out_and_holds_no_slot() -> None:
    """Frames of one plane faster than the GUI takes them stay views of the sender's slots,
    each going back uncopied when a newer one replaces it; what ``take`` hands out is a copy
    (the slot is free again); planes of a plate are copied as they arrive. A 2-slot ring that
    blocks never waits on the GUI."""
    port = free_ports(2)
    coalescer = Coalescer(borrowed=True)
    receiver = StreamReceiver(port, bind=True, shm_prefixes=(_NapariTestBackend.SHM_PREFIX,), zero_copy=True)
    receiver.start(coalescer.put)
    sender = _NapariTestBackend(port=port, bind=False, transport="shm", shm_slots=2, send_timeout=5)
    try:
        frames = [np.full((64, 64), value, np.uint16) for value in range(20)]
        for frame in frames:  # nothing is taken: a view per slot held would stop this at the third
            sender.save(frame, "camera/live.tif", wait_for_ack=True)
        deadline = time.monotonic() + 10
        while coalescer.replaced < 19 and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = coalescer.peek("camera/live.tif")
        assert waiting is not None and not waiting.flags.owndata  # still in the sender's slot
        np.testing.assert_array_equal(waiting, frames[-1])
        del waiting
        planes = plate_planes((64, 64))
        for (well, site, channel), plane in planes.items():  # one frame per plane: copied on arrival
            sender.save(plane, f"plate1/{well}_s{site}_w{channel}.tif", wait_for_ack=True)
        deadline = time.monotonic() + 10
        while len(coalescer) < 1 + len(planes) and time.monotonic() < deadline:
            time.sleep(0.01)
        taken = {item.path: item.array for _placement, item in coalescer.take()}
        assert len(taken) == 1 + len(planes) and coalescer.replaced == 19
        assert all(array.flags.owndata for array in taken.values())
        np.testing.assert_array_equal(taken.pop("camera/live.tif"), frames[-1])
        for (well, site, channel), plane in planes.items():
            np.testing.assert_array_equal(taken[f"plate1/{well}_s{site}_w{channel}.tif"], plane)
        # every slot is free again: a ring of two takes two more frames at once
        sender.save(frames[0], "camera/live.tif", timeout=2)
        sender.save(frames[1], "camera/other.tif", timeout=2)
        assert sender.reclaimed == 0  # no slot was held past send_timeout (then taken back unreleased)
    finally:
        sender.close()
        receiver.stop()


# -- reader and writer ---------------------------------------------------------------------------


def test_the_reader_opens_an_ome_zarr_plate_as_a_tiled_overview(tmp_path: Path) -> None:
    planes = plate_planes((16, 20))
    backend = ZarrBackend(tmp_path)
    for (well, site, channel), plane in planes.items():
        if (well, site, channel) != ("B01", 2, 2):  # a field still missing its second channel
            backend.save(plane, f"plate.zarr/{well}_s{site}_w{channel}.tif")

    reader = _reader.get_reader(str(tmp_path / "plate.zarr"))
    assert reader is not None
    (layer_data,) = reader(str(tmp_path / "plate.zarr"))
    data, options, layer_type = layer_data
    assert layer_type == "image" and options["channel_axis"] == 0
    assert options["name"] == ["w1", "w2"]
    assert options["axis_labels"] == ("y", "x")
    # one level (the plate has no pyramid) of a mosaic: rows A, B x columns 01, 02; each well
    # a 1 x 2 grid of its two fields (sites side by side)
    assert type(data).__module__.startswith("dask")  # lazy
    assert data.shape == (2, 2 * 16, 2 * 2 * 20)
    described = options["metadata"]["polystore"]
    assert described["arrived"] == {well: [0, 1] for well in WELLS}
    assert described["overview"]["grid"] == {"A01": [0, 0], "A02": [0, 1], "B01": [1, 0]}
    assert described["overview"]["tile"] == [16, 40]
    mosaic = np.asarray(data)
    for (well, site, channel), plane in planes.items():
        row, column = described["overview"]["grid"][well]
        tile = mosaic[channel - 1, row * 16 : (row + 1) * 16,
                      column * 40 + (site - 1) * 20 : column * 40 + site * 20]
        expected = 0 if (well, site, channel) == ("B01", 2, 2) else plane
        np.testing.assert_array_equal(tile, expected, err_msg=f"{well} s{site} w{channel}")
    assert not mosaic[:, 16:, 40:].any()  # B02 was never imaged

    viewer = ViewerModel()
    layers = viewer.add_image(data, **options)
    assert [layer.name for layer in layers] == ["w1", "w2"]


def test_the_reader_opens_a_well_as_its_fields_in_a_grid(tmp_path: Path) -> None:
    planes = plate_planes((16, 20))
    backend = ZarrBackend(tmp_path)
    for (well, site, channel), plane in planes.items():
        backend.save(plane, f"plate.zarr/{well}_s{site}_w{channel}.tif")
    (layer_data,) = _reader.read(str(tmp_path / "plate.zarr" / "B" / "01"))
    data, options, layer_type = layer_data
    # one layer per channel (not one per field and channel, as members of a group were)
    assert layer_type == "image" and options["channel_axis"] == 0
    assert options["name"] == ["B01 w1", "B01 w2"]  # beside the plate's own w1, w2
    assert data.shape == (2, 16, 2 * 20)  # the well's two fields side by side
    mosaic = np.asarray(data)
    for site in (1, 2):
        for channel in (1, 2):
            np.testing.assert_array_equal(mosaic[channel - 1, :, (site - 1) * 20 : site * 20],
                                          planes["B01", site, channel])


def test_the_reader_opens_a_pyramid_as_a_lazy_multiscale_layer(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 4000, size=(2, 64, 48), dtype=np.uint16)
    ZarrBackend(tmp_path).save(data, "cells.zarr", levels=3, channel_names=["DAPI", "GFP"])
    ((levels, options, _),) = _reader.read(str(tmp_path / "cells.zarr"))
    assert options["multiscale"] and options["channel_axis"] == 0
    assert [tuple(level.shape) for level in levels] == [(2, 64, 48), (2, 32, 24), (2, 16, 12)]
    assert options["name"] == ["DAPI", "GFP"]
    np.testing.assert_array_equal(np.asarray(levels[0]), data)


def test_written_layers_read_back_equal(tmp_path: Path) -> None:
    viewer = ViewerModel()
    image = viewer.add_image(np.arange(6 * 7, dtype=np.float32).reshape(6, 7), name="img")
    labels = viewer.add_labels(np.eye(9, dtype=np.int32) * 3, name="lab")
    shapes = viewer.add_shapes(
        [np.array([[2, 3], [2, 13], [9, 13], [9, 3]]), np.array([[1, 1], [4, 8], [9, 2]]),
         np.array([[1.5, 2.0], [7.0, 3.25]]), np.array([[0, 0], [3, 3], [5, 1]])],
        shape_type=["rectangle", "polygon", "line", "path"],
    )
    manager = FileManager()
    for layer, path in [(image, "a/img.tif"), (image, "img.zarr"), (labels, "lab.npy"),
                        (labels, "lab.zarr"), (shapes, "rois.roi.zip")]:
        target = str(tmp_path / path)
        backend = _writer.backend_for(target)
        _writer.save_layer(manager, layer, target, backend)
        if isinstance(layer, Shapes):
            ((data, options, kind),) = _reader.read(target)
            assert kind == "shapes"
            assert options["shape_type"] == ["rectangle", "polygon", "line", "path"]
            for written, read in zip(layer.data, data, strict=True):
                np.testing.assert_allclose(read, written)
        else:
            np.testing.assert_array_equal(manager.load(target, backend), layer.data)
    # npe2's writer entry points write the same
    _writer.write_labels(str(tmp_path / "w.tif"), labels.data, {})
    np.testing.assert_array_equal(manager.load(str(tmp_path / "w.tif"), "disk"), labels.data)
    assert _reader.get_reader(str(tmp_path / "notes.txt")) is None


def test_importing_the_package_and_its_backend_loads_neither_qt_nor_napari() -> None:
    import subprocess
    import sys

    code = (
        "import sys, polystore_napari, polystore_napari.backend\n"
        "from polystore.filemanager import FileManager\n"
        "FileManager().get_backend('napari')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy', 'magicgui'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_store_browser_opens_a_pyramid_from_an_s3_url(qtbot: Any, s3_bucket: str) -> None:
    pytest.importorskip("s3fs")
    from polystore_napari.browser_widget import StoreBrowserWidget

    url = f"s3://{s3_bucket}/cells.zarr"
    pyramid = np.random.default_rng(9).integers(0, 3000, size=(64, 64), dtype=np.uint16)
    ZarrBackend().save(pyramid, url, levels=2)
    viewer = ViewerModel()  # the widget needs a QApplication (qtbot's), not an OpenGL window
    browser = StoreBrowserWidget(viewer, FileManager())
    qtbot.addWidget(browser)
    item = browser.add_place("zarr", url)
    assert item is not None, browser.status.value
    (layer,) = browser.open_item(item)
    assert layer.multiscale and [tuple(d.shape) for d in layer.data] == [(64, 64), (32, 32)]
    np.testing.assert_array_equal(np.asarray(layer.data[0]), pyramid)


def test_a_double_click_reads_in_a_worker_and_adds_layers_on_the_gui_thread(
    qtbot: Any, tmp_path: Path
) -> None:
    from polystore_napari.browser_widget import StoreBrowserWidget

    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    manager = FileManager()
    manager.save(image, str(tmp_path / "cells.tif"), backend="disk")
    manager.save({"not": "an image"}, str(tmp_path / "notes.json"), backend="disk")
    viewer = ViewerModel()
    browser = StoreBrowserWidget(viewer, manager)
    qtbot.addWidget(browser)
    browser.add_place("disk", str(tmp_path))
    read_on: list[int] = []
    read = browser.layer_data

    def reading(node: Any) -> Any:  # where the reading happens, then the widget's own read
        read_on.append(threading.get_ident())
        return read(node)

    browser.layer_data = reading  # type: ignore[method-assign]
    cells = browser.find_item(str(tmp_path), "cells.tif")
    assert cells is not None
    browser.tree.itemDoubleClicked.emit(cells, 0)  # what a double click sends
    qtbot.waitUntil(lambda: len(viewer.layers) == 1 and not browser.openings, timeout=30_000)
    assert read_on and read_on[0] != threading.get_ident()  # read off the GUI thread
    np.testing.assert_array_equal(viewer.layers[0].data, image)
    assert "Opened" in browser.status.value

    notes = browser.find_item(str(tmp_path), "notes.json")
    assert notes is not None
    browser.tree.itemDoubleClicked.emit(notes, 0)
    qtbot.waitUntil(lambda: not browser.openings, timeout=30_000)
    assert len(viewer.layers) == 1  # nothing added
    assert "Cannot open" in browser.status.value and "notes.json" in browser.status.value


def test_ellipses_stay_ovals_and_shapes_keep_their_c_z_t(tmp_path: Path) -> None:
    from roifile import roiread

    viewer = ViewerModel()
    # an ellipse whose box is off the pixel grid (as drawn with a mouse)
    ellipse = np.array([[0, 1, 2.4, 3.3], [0, 1, 2.4, 12.6], [0, 1, 9.7, 12.6], [0, 1, 9.7, 3.3]])
    tilted = np.array([[5.0, 10.0], [10.0, 15.0], [15.0, 10.0], [10.0, 5.0]])  # rotated 45 degrees
    tilted = np.hstack([np.tile([2, 0], (4, 1)), tilted])
    polygon = np.array([[1, 0, 1, 1], [1, 0, 4, 8], [1, 0, 9, 2]], dtype=float)
    shapes = viewer.add_shapes([ellipse, tilted, polygon], shape_type=["ellipse", "ellipse", "polygon"],
                               axis_labels=("t", "z", "y", "x"))
    target = tmp_path / "cells.roi.zip"
    _writer.save_layer(FileManager(), shapes, str(target), "disk")
    rois = roiread(target)
    assert isinstance(rois, list)
    oval, outline, triangle = rois
    assert oval.roitype == ROI_TYPE.OVAL  # not the polygon of its bounding box
    assert (oval.top, oval.left, oval.bottom, oval.right) == (2, 3, 10, 13)
    assert (oval.t_position, oval.z_position) == (1, 2)
    points = np.asarray(outline.coordinates())[:, ::-1]  # y, x
    assert outline.roitype == ROI_TYPE.POLYGON and len(points) == ELLIPSE_VERTICES
    # the circle inscribed in that square (side 5*sqrt(2)) around (10, 10): every vertex on it
    np.testing.assert_allclose(np.hypot(*(points - 10).T), 5 / np.sqrt(2), rtol=1e-3)
    assert (outline.t_position, outline.z_position) == (3, 1)
    assert (triangle.t_position, triangle.z_position, triangle.c_position) == (2, 1, 0)


# -- review fixes: series, labels, well order, ROIs' planes ---------------------------------------
def test_a_plate_without_a_plate_folder_is_one_series() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    for value, well in enumerate(("A01", "B02"), start=1):
        for channel in (1, 2):
            plane = np.full((4, 4), 10 * value + channel, np.uint16)
            show(live, stream_item(plane, f"{well}/s1_c{channel}.tif"))
    # one layer per channel, named as the files write them; wells on one slider (not a layer each)
    assert [layer.name for layer in viewer.layers] == ["c1", "c2"]
    assert viewer.layers["c2"].metadata["polystore"]["components"]["well"] == ["A01", "B02"]
    assert int(viewer.layers["c2"].data[1, 0][0, 0]) == 22
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    for t, z in ((1, 1), (1, 2), (2, 1)):
        plane = np.full((4, 4), 10 * t + z, np.uint16)
        show(live, stream_item(plane, f"TimePoint_{t}/ZStep_{z}/A01_s1_w1.tif"))
    (layer,) = viewer.layers
    assert layer.name == "w1" and tuple(layer.axis_labels) == ("well", "site", "t", "z", "y", "x")
    assert int(layer.data[0, 0, 1, 0][0, 0]) == 21


def test_slider_labels_count_as_the_names_do() -> None:
    from polystore.plates import register_convention, unregister_convention
    from polystore_napari.layers import slider_labels

    viewer = ViewerModel()
    live = LiveLayers(viewer, ComponentParser(r"well-(?P<well>[A-Z]\d+)-site-(?P<site>\d+)"))
    show(live, stream_item(np.ones((4, 4), np.uint16), "x/well-C07-site-3.png"))
    assert slider_labels(viewer)[:2] == ("well C07", "site 3")  # type: ignore[index]
    # a convention only the pipeline's process knows: its header says how it counts
    register_convention("lab-only", r"(?P<well>[A-Z]\d\d)_f(?P<site0>\d+)_ch(?P<channel0>\d+)")
    try:
        item = stream_item(np.ones((4, 4), np.uint16), "A01_f0_ch1.tif")
    finally:
        unregister_convention("lab-only")
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    show(live, item)
    (layer,) = viewer.layers
    assert layer.name == "c1" and layer.metadata["polystore"]["texts"]["site"] == ["0"]


def test_wells_of_a_1536_well_plate_slide_in_plate_order() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    for well in ("AA01", "B01", "Z48", "A01", "AF02"):
        show(live, stream_item(np.ones((4, 4), np.uint16), f"p/{well}_s1_w1.tif"))
    wells = viewer.layers[0].metadata["polystore"]["components"]["well"]
    assert wells == ["A01", "B01", "Z48", "AA01", "AF02"]


def test_incucyte_channels_are_layers_and_time_stamps_a_t_slider() -> None:
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    for hours in (8, 0, 4):
        for value, channel in enumerate(("green", "phase"), start=1):
            show(live, stream_item(np.full((4, 4), 10 * hours + value, np.uint16),
                                   f"VID1_{channel}_B2_1_00d{hours:02d}h00m.tif"))
    assert [layer.name for layer in viewer.layers] == ["VID1 green", "VID1 phase"]
    described = viewer.layers["VID1 phase"].metadata["polystore"]
    assert described["components"]["t"] == ["00d00h00m", "00d04h00m", "00d08h00m"]
    assert int(viewer.layers["VID1 phase"].data[0, 0, 2][0, 0]) == 82


def test_roi_sets_keep_their_plane_and_named_axes_map(tmp_path: Path) -> None:
    from polystore_napari.rois import shapes_from_layer

    triangle = np.array([[2, 10, 10], [2, 20, 10], [2, 20, 20]], float)  # on t=2
    target = tmp_path / "r.roi.zip"
    _writer.write_shapes(str(target), [triangle], {"shape_type": ["polygon"], "axis_labels": ("t", "y", "x")})
    ((data, options, kind),) = _reader.read_rois(str(target))
    assert kind == "shapes" and options["axis_labels"] == ("t", "y", "x")
    np.testing.assert_array_equal(data[0], triangle)  # its plane, not (y, x) alone
    viewer = ViewerModel()
    viewer.add_shapes(data, **options)  # what napari's reader hook does with it
    assert viewer.layers[0].ndim == 3
    # a live plate layer: well and site are no plane of an image; t is
    vertices = np.array([[1, 0, 2, 10, 10], [1, 0, 2, 20, 10], [1, 0, 2, 20, 20]], float)
    (shape,) = shapes_from_layer([vertices], ["polygon"], axis_labels=("well", "site", "t", "y", "x"))
    assert dict(shape.position) == {"t": 2}
    (shape,) = shapes_from_layer([vertices[:, 2:]], ["polygon"], axis_labels=("-3", "-2", "-1"))
    assert dict(shape.position) == {"plane": 2}  # one unnamed axis: ImageJ's stack position
    (shape,) = shapes_from_layer([vertices[:, 1:]], ["polygon"], axis_labels=("site", "-3", "-2", "-1"))
    assert dict(shape.position) == {"plane": 2}  # a named axis is not taken for the plane


def test_the_documented_way_to_stack_numbered_frames() -> None:
    from polystore.plates import PlateNameError

    with pytest.raises(PlateNameError, match="named group 'well'"):
        ComponentParser(r"frame_(?P<t1>\d+)")  # a pattern needs a well
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    for t in (1, 2, 3):
        show(live, stream_item(np.full((4, 4), t, np.uint16), f"cam/A01_t{t:04d}.tif"))
    (layer,) = viewer.layers
    assert tuple(layer.axis_labels) == ("well", "site", "t", "y", "x") and layer.data.shape[2] == 3


def test_the_file_reader_loads_no_live_stream_module() -> None:
    import subprocess
    import sys

    code = ("import sys, polystore_napari.display, polystore_napari._reader\n"
            "loaded = [m for m in ('polystore_napari.layers', 'polystore_napari.handoff', "
            "'polystore.streaming.receiver') if m in sys.modules]\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_bool_labels_become_a_labels_layer() -> None:
    """napari's add_labels takes a bool array (it views it as uint8), not a live stack of bool
    planes: "'PlaneStack' object has no attribute 'view'", and the mask was never shown."""
    viewer = ViewerModel()
    live = LiveLayers(viewer)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    mask.flags.writeable = False  # as a zero-copy receiver hands it over
    assert show(live, stream_item(mask, "plate1/A01_s1_w1.tif", kind="labels")) == 1
    (layer,) = viewer.layers
    assert isinstance(layer, Labels)
    np.testing.assert_array_equal(np.asarray(layer.data)[0, 0], mask.astype(np.uint8))
    mask2 = ~mask
    show(live, stream_item(mask2, "plate1/A01_s1_w1.tif", kind="labels"))  # a new frame of that plane
    np.testing.assert_array_equal(np.asarray(layer.data)[0, 0], mask2.astype(np.uint8))
