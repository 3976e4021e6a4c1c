"""The napari plugin for real: a napari window under Xvfb (pytest-xvfb), pipelines in other processes.

Each viewer test costs a few seconds (about two of them napari's start-up), so each one
checks a whole user path: the menu opens a listening receiver; a pipeline streams a plate
and the window shows it; the store browser opens and writes back; a pipeline launches a
viewer when none listens and the next one reuses it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("zmq")
pytest.importorskip("zarr")

from napari.layers import Image, Shapes

from polystore.backends.zarr import ZarrBackend
from polystore.filemanager import FileManager
from polystore.streaming.viewer.control import request
from polystore_napari.browser_widget import StoreBrowserWidget
from polystore_napari.receiver_widget import StreamReceiverWidget

pytestmark = pytest.mark.napari

REPO = Path(__file__).resolve().parents[1]
WELLS = ("A01", "A02", "B01")
SITES = (1, 2)
CHANNELS = (1, 2)
SHAPE = (64, 96)


def free_port() -> int:
    """A port with the next two free as well (data, acknowledgements, control)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port > 65000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b, socket.socket() as c:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
                c.bind(("127.0.0.1", port + 2))
            return port
        except OSError:
            continue
    raise RuntimeError("no three consecutive free ports")


def plane(index: int) -> np.ndarray:
    """The pixels of the index-th image of the plate (the pipeline computes the same)."""
    ramp = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint32).reshape(SHAPE)
    return ((ramp * (index + 1) + 1000 * index) % 60000).astype(np.uint16)


PIPELINE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from roifile import ROI_TYPE, ImagejRoi
    from polystore.filemanager import FileManager

    SHAPE = {shape}
    def plane(index):
        ramp = np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint32).reshape(SHAPE)
        return ((ramp * (index + 1) + 1000 * index) % 60000).astype(np.uint16)

    fm = FileManager()
    index = 0
    for well in {wells}:
        for site in {sites}:
            for channel in {channels}:
                fm.save(plane(index), f"plate1/{{well}}_s{{site}}_w{{channel}}.tif", backend="napari")
                index += 1
    triangle = np.array([[5.0, 5.0], [40.0, 5.0], [40.0, 60.0]])
    fm.save(triangle, "plate1/A02_s1.tif", backend="napari", kind="shapes")
    box = ImagejRoi(roitype=ROI_TYPE.RECT, left=10, top=20, right=30, bottom=50, name="cell")
    fm.save([box], "plate1/B01_s2.roi.zip", backend="napari")
    # what the viewer shows under a path comes back through the control channel
    shown = fm.load("plate1/A01_s1_w2.tif", backend="napari")
    backend = fm.get_backend("napari")
    print(json.dumps({{"equal": bool(np.array_equal(shown, plane(1))), "viewer": backend.viewer}}))
    backend.close()
    """
).format(shape=SHAPE, wells=WELLS, sites=SITES, channels=CHANNELS)


def run_python(code: str, port: int, **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "POLYSTORE_NAPARI_PORT": str(port), **env}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_menu_command_opens_a_listening_receiver(make_napari_viewer: Any, monkeypatch: Any) -> None:
    from napari._app_model import get_app_model
    from npe2 import PluginManager

    port = free_port()
    monkeypatch.setenv("POLYSTORE_NAPARI_PORT", str(port))
    viewer = make_napari_viewer()
    # napari found the plugin through its entry point when the viewer started
    manifest = PluginManager.instance().get_manifest("polystore")
    widgets = {w.display_name for w in manifest.contributions.widgets or []}
    assert widgets == {"Stream receiver", "Store browser", "Plate map"}

    app = get_app_model()
    acquire = app.menus.get_menu("napari/file/acquire")
    commands = [item.command for item in acquire if hasattr(item, "command")]
    (command,) = [c for c in commands if str(c.title).startswith("Open polystore stream")]
    app.commands.execute_command(command.id).result()

    widget = viewer.window.dock_widgets["Stream receiver (polystore)"]
    assert isinstance(widget, StreamReceiverWidget)
    assert widget.listening, widget.error
    assert widget.address == f"127.0.0.1:{port}"
    assert widget.state_label.value.startswith(f"listening on 127.0.0.1:{port}")
    # it answers the probe a pipeline sends before streaming
    assert request("127.0.0.1", port + 2, "ping").header["viewer"] == "napari"
    # a second receiver on the same address says why it cannot listen, in the widget
    other = StreamReceiverWidget(viewer, port=port)
    assert not other.listening
    assert "in use" in other.state_label.value and "another port" in other.state_label.value
    other.deleteLater()


def test_a_plate_streamed_from_another_process_becomes_layers(make_napari_viewer: Any, qtbot: Any) -> None:
    port = free_port()
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("polystore", "Stream receiver")
    assert isinstance(widget, StreamReceiverWidget)
    widget.port_edit.value = port
    assert widget.start(), widget.error

    pipeline = run_python(PIPELINE, port)
    expected_images = len(WELLS) * len(SITES) * len(CHANNELS)
    qtbot.waitUntil(lambda: widget.live.displayed >= expected_images + 2 or pipeline.poll() not in (None, 0),
                    timeout=60_000)
    out, err = pipeline.communicate(timeout=60)
    assert pipeline.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["equal"] and report["viewer"]["viewer"] == "napari"

    assert [layer.name for layer in viewer.layers] == ["plate1 w1", "plate1 w2", "plate1 shapes"]
    assert tuple(viewer.dims.axis_labels) == ("well A01", "site 1", "y", "x")  # what the sliders show
    index = 0
    for w, _well in enumerate(WELLS):
        for s, _site in enumerate(SITES):
            for channel in CHANNELS:
                layer = viewer.layers[f"plate1 w{channel}"]
                assert isinstance(layer, Image)
                assert layer.data.shape == (len(WELLS), len(SITES), *SHAPE)
                np.testing.assert_array_equal(layer.data[w, s], plane(index))
                index += 1
    shapes = viewer.layers["plate1 shapes"]
    assert isinstance(shapes, Shapes)
    assert sorted(shapes.shape_type) == ["polygon", "rectangle"]
    drawn = {t: np.asarray(d) for t, d in zip(shapes.shape_type, shapes.data, strict=True)}
    np.testing.assert_allclose(drawn["polygon"], [[1, 0, 5, 5], [1, 0, 40, 5], [1, 0, 40, 60]])  # A02 s1
    np.testing.assert_allclose(drawn["rectangle"][:, :2], [[2, 1]] * 4)  # B01 s2
    assert widget.received >= expected_images + 2
    widget.update_status()
    assert f"{widget.received} received" in widget.counters_label.value

    # the canvas shows it: the RGB channels (alpha is 255 everywhere) are not blank
    viewer.dims.current_step = (1, 0, *viewer.dims.current_step[2:])
    screenshot = viewer.screenshot(canvas_only=True)
    rgb = screenshot[..., :3]
    assert rgb.max() > 0 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 16
    widget.stop()
    assert not widget.listening


def test_the_store_browser_opens_and_writes_back(make_napari_viewer: Any, qtbot: Any, tmp_path: Path) -> None:
    manager = FileManager()
    in_memory = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    manager.save(in_memory, "/experiment/raw.npy", backend="memory")
    on_disk = (np.arange(20 * 25) % 251).astype(np.uint8).reshape(20, 25)
    manager.save(on_disk, str(tmp_path / "images" / "cells.tif"), backend="disk")
    plate = ZarrBackend(tmp_path)
    for index, (well, channel) in enumerate([("A01", 1), ("A01", 2), ("B02", 1), ("B02", 2)]):
        plate.save(plane(index), f"plate.zarr/{well}_s1_w{channel}.tif")
    pyramid = np.random.default_rng(5).integers(0, 3000, size=(128, 128), dtype=np.uint16)
    plate.save(pyramid, "pyramid.zarr", levels=3)

    viewer = make_napari_viewer()
    _, browser = viewer.window.add_plugin_dock_widget("polystore", "Store browser")
    assert isinstance(browser, StoreBrowserWidget)
    browser.manager = manager  # the pipeline's FileManager: its memory store
    assert browser.add_place("disk", str(tmp_path)) is not None
    assert browser.add_place("zarr", str(tmp_path / "plate.zarr")) is not None
    top = [browser.tree.topLevelItem(i).text(0) for i in range(browser.tree.topLevelItemCount())]
    assert top == ["/", str(tmp_path), str(tmp_path / "plate.zarr")]

    # memory: a folder, expanded on demand, then the array
    raw = browser.find_item("/", "experiment", "raw.npy")
    assert raw is not None
    (layer,) = browser.open_item(raw)
    np.testing.assert_array_equal(layer.data, in_memory)
    # disk: the folder lists the tif and the zarr stores (browsed as zarr)
    folder = browser.find_item(str(tmp_path))
    assert folder is not None
    folder.setExpanded(True)  # as a click does: listed in a worker, the GUI stays responsive
    qtbot.waitUntil(lambda: browser.node(folder).loaded, timeout=30_000)
    assert not browser.listings  # the worker is done and let go
    children = {folder.child(i).text(0): folder.child(i).text(1) for i in range(folder.childCount())}
    assert children == {"images": "", "plate.zarr": "zarr", "pyramid.zarr": "zarr"}
    (cells,) = browser.open_item(browser.find_item(str(tmp_path), "images", "cells.tif"))
    np.testing.assert_array_equal(cells.data, on_disk)
    # zarr: a pyramid opens as a lazy multiscale layer, a plate as a tiled overview per channel
    (multiscale,) = browser.open_item(browser.find_item(str(tmp_path), "pyramid.zarr"))
    assert multiscale.multiscale
    assert [tuple(d.shape) for d in multiscale.data] == [(128, 128), (64, 64), (32, 32)]
    np.testing.assert_array_equal(np.asarray(multiscale.data[0]), pyramid)
    channels = browser.open_item(browser.find_item(str(tmp_path / "plate.zarr")))
    assert [c.name for c in channels] == ["w1", "w2"]
    overview = np.asarray(channels[1].data)  # rows A, B x columns 01, 02: B02 is the last tile
    np.testing.assert_array_equal(overview[SHAPE[0] :, SHAPE[1] :], plane(3))  # B02, site 0, w2
    zarr_item = browser.find_item(str(tmp_path / "plate.zarr"))
    assert zarr_item is not None
    zarr_item.setExpanded(True)
    qtbot.waitUntil(lambda: browser.node(zarr_item).loaded, timeout=30_000)
    assert [zarr_item.child(i).text(0) for i in range(zarr_item.childCount())] == ["A", "B"]
    # napari's File > Open finds the same through the plugin's reader
    opened = viewer.open(str(tmp_path / "plate.zarr"), plugin="polystore")
    assert [layer.name for layer in opened] == ["w1 [1]", "w2 [1]"]

    # Save to…: through the FileManager, to three backends; each reads back equal
    for backend, path in [("memory", "/results/cells.npy"), ("disk", str(tmp_path / "out" / "cells.tif")),
                          ("zarr", str(tmp_path / "out.zarr"))]:
        viewer.layers.selection.active = cells
        assert browser.save_selected(backend, path) is not None
        # the widget forgets its worker when the save has finished (a fast one may finish
        # before a signal spy could connect)
        qtbot.waitUntil(lambda: browser.worker is None, timeout=30_000)
        assert browser.status.value.startswith("Saved 'cells.tif'"), browser.status.value
        np.testing.assert_array_equal(manager.load(path, backend), on_disk)
    # a mistake is reported in the widget, not raised
    viewer.layers.selection.active = cells
    assert browser.save_selected("disk", str(tmp_path / "cells.roi.zip")) is None
    assert "Could not save 'cells.tif'" in browser.status.value and "ROI file" in browser.status.value
    assert browser.add_place("disk", str(tmp_path / "missing")) is None
    assert browser.status.value.startswith("Nothing at")
    # a save that fails in its worker (a file where a folder should be): the reason in the widget
    (tmp_path / "blocker").write_text("a file")
    assert browser.save_selected("disk", str(tmp_path / "blocker" / "cells.tif")) is not None
    qtbot.waitUntil(lambda: browser.worker is None, timeout=30_000)
    assert browser.status.value.startswith("Could not save 'cells.tif'"), browser.status.value
    assert "a file is in the way" in browser.status.value
    assert browser.save_button.enabled  # ready for the next try


LAUNCHING_PIPELINE = textwrap.dedent(
    """
    import json, time
    import numpy as np
    from polystore_napari.backend import NapariStreamingBackend

    backend = NapariStreamingBackend(launch=True, launch_timeout=90)
    frame = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    backend.save(frame, "live/frame.tif")
    shown = backend.load("live/frame.tif")
    deadline = time.monotonic() + 10  # layers are made at the viewer's next display tick
    while not (layers := backend.request("layers").header["layers"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"launched": backend.launched is not None, "pid": backend.viewer["pid"],
                      "equal": bool(np.array_equal(shown, frame)), "layers": [l["name"] for l in layers]}))
    backend.close()
    """
)


def test_a_pipeline_launches_a_viewer_once_and_the_next_one_reuses_it() -> None:
    port = free_port()
    results = []
    try:
        for _ in range(2):
            pipeline = run_python(LAUNCHING_PIPELINE, port)
            out, err = pipeline.communicate(timeout=150)
            assert pipeline.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for result in results:
            if result.get("launched"):
                os.kill(result["pid"], signal.SIGTERM)
    first, second = results
    assert first["launched"] and not second["launched"]
    assert first["pid"] == second["pid"]
    assert first["equal"] and second["equal"]
    assert first["layers"] == ["live/frame.tif"]


def test_closing_the_receiver_panel_frees_its_port_for_the_next_one(
    make_napari_viewer: Any, qtbot: Any
) -> None:
    port = free_port()
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("polystore", "Stream receiver")
    assert isinstance(widget, StreamReceiverWidget)
    widget.port_edit.value = port
    assert widget.start(), widget.error
    # the panel's close button: napari takes the widget out of its dock
    dock.title.close_button.click()
    assert "Stream receiver (polystore)" not in viewer.window.dock_widgets
    assert not widget.listening
    # File > Acquire > Open polystore stream again: it listens on the same port
    _, again = viewer.window.add_plugin_dock_widget("polystore", "Stream receiver")
    assert isinstance(again, StreamReceiverWidget)
    again.port_edit.value = port
    assert again.start(), again.error
    assert request("127.0.0.1", port + 2, "ping").header["viewer"] == "napari"
    again.stop()
