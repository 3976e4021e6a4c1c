"""Live layers in a real napari viewer (under Xvfb, started by pytest-xvfb): stream items as the
receiver hands them over, applied on the GUI thread as the receiver widget's timer does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image

from polystore.streaming.protocol import StreamItem, make_header
from polystore_napari.layers import LiveLayers

# napari's libraries stay out of the main test process (see addopts in pyproject.toml)
pytestmark = pytest.mark.napari


def stream_item(array: np.ndarray, path: str, kind: str = "image", **metadata: Any) -> StreamItem:
    """An item as the receiver hands it over: the header the sender builds, and the array."""
    return StreamItem(array, make_header(array, path, kind=kind, metadata=metadata))


def show(live: LiveLayers, *items: StreamItem) -> int:
    return live.apply([(live.parser.place(item), item) for item in items])


def test_rgb_frames_become_rgb_layers_and_a_plate_of_them_grows(make_napari_viewer: Any) -> None:
    viewer = make_napari_viewer()
    live = LiveLayers(viewer)
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, size=(8, 9, 3), dtype=np.uint8) for _ in range(3)]
    # fm.save(frame, "camera/colour.tif", backend="napari", metadata={"rgb": True})
    assert show(live, stream_item(frames[0], "camera/colour.tif", rgb=True)) == 1
    camera = viewer.layers["camera/colour.tif"]
    assert isinstance(camera, Image) and camera.rgb
    assert tuple(camera.axis_labels) == ("y", "x")
    # a plate of colour images: well and site sliders, the colours stay the last axis
    assert show(live, stream_item(frames[1], "plate/A01_s1_w1.tif", rgb=True)) == 1
    assert show(live, stream_item(frames[2], "plate/B02_s1_w1.tif", rgb=True)) == 1  # grows
    plate = viewer.layers["plate w1"]
    assert plate.rgb and plate.data.shape == (2, 1, 8, 9, 3)
    assert tuple(plate.axis_labels) == ("well", "site", "y", "x")
    np.testing.assert_array_equal(plate.data[1, 0], frames[2])


def test_an_item_napari_refuses_is_counted_and_said_in_the_receiver(make_napari_viewer: Any) -> None:
    from polystore_napari.receiver_widget import StreamReceiverWidget

    viewer = make_napari_viewer()
    widget = StreamReceiverWidget(viewer, autostart=False)
    try:
        # another sender than polystore's napari backend (which refuses these before sending)
        widget.coalescer.put(stream_item(np.zeros((4, 4), np.float32), "masks/a.tif", kind="labels"))
        widget.coalescer.put(stream_item(np.ones((4, 4), np.uint16), "camera/b.tif"))
        assert widget.show_pending() == 1  # the other item is shown all the same
        widget.update_status()
        assert "1 not shown (masks/a.tif: " in widget.counters_label.value
        assert "integer" in widget.counters_label.value  # napari's reason
    finally:
        widget.deleteLater()


def test_a_new_shape_replaces_its_layer_in_place_and_a_refused_one_keeps_the_old(
    make_napari_viewer: Any,
) -> None:
    viewer = make_napari_viewer()
    live = LiveLayers(viewer)
    show(live, stream_item(np.ones((4, 4), np.uint16), "masks/b.tif", kind="labels"))
    show(live, stream_item(np.zeros((6, 6), np.uint8), "camera/a.tif"))
    assert [layer.name for layer in viewer.layers] == ["masks/b.tif labels", "camera/a.tif"]
    # another shape on the same path: a new layer, where the old one was, under its name
    bigger = np.full((8, 8), 7, np.uint8)
    assert show(live, stream_item(bigger, "masks/b.tif", kind="labels")) == 1
    assert [layer.name for layer in viewer.layers] == ["masks/b.tif labels", "camera/a.tif"]
    np.testing.assert_array_equal(np.asarray(viewer.layers["masks/b.tif labels"].data), bigger)
    # a replacement napari refuses (float labels, from another sender than polystore's):
    # counted, and the layer shown so far stays
    assert show(live, stream_item(np.zeros((5, 5), np.float32), "masks/b.tif", kind="labels")) == 0
    assert live.failed == 1
    assert [layer.name for layer in viewer.layers] == ["masks/b.tif labels", "camera/a.tif"]
    np.testing.assert_array_equal(np.asarray(viewer.layers["masks/b.tif labels"].data), bigger)
