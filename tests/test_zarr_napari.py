"""napari opens what ZarrBackend writes: a real viewer (under Xvfb, started by pytest-xvfb)
reading OME-Zarr through the napari-ome-zarr reader plugin, for NGFF 0.5 (Zarr v3, the
default) and NGFF 0.4 (``zarr_format=2``).

napari-ome-zarr (0.10) splits a channel axis into one layer per channel, names the layers
after the OMERO channel labels (prefixed with the image's name when it has one), and shows a
plate as one mosaic: the first field of every well, placed by the plate's rows and columns,
with zeros where a well is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr_models")
pytest.importorskip("dask.array")

from napari.layers import Image

from polystore.backends.zarr import ZarrBackend

# Run apart from the rest (`pytest -m napari`, as `make pytest` does): napari's OpenGL and
# TensorFlow cannot share a process here (see addopts in pyproject.toml).
pytestmark = pytest.mark.napari

PLUGIN = "napari-ome-zarr"
FORMATS = [pytest.param(3, id="ngff-0.5"), pytest.param(2, id="ngff-0.4")]


def open_in_napari(viewer: Any, path: Path) -> list[Image]:
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert all(isinstance(layer, Image) for layer in layers), [type(layer) for layer in layers]
    assert list(viewer.layers) == layers
    return list(layers)


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_multiscale_image_opens_as_one_layer_per_channel(
    make_napari_viewer: Any, tmp_path: Path, zarr_format: int
) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 4000, size=(2, 64, 48), dtype=np.uint16)
    backend = ZarrBackend(tmp_path, zarr_format=zarr_format)
    backend.save(data, "cells.zarr", levels=3, channel_names=["DAPI", "GFP"], scale=(1.0, 0.5, 0.25))

    viewer = make_napari_viewer()
    layers = open_in_napari(viewer, tmp_path / "cells.zarr")

    assert [layer.name for layer in layers] == ["DAPI", "GFP"]
    expected_shapes = [(64, 48), (32, 24), (16, 12)]
    for channel, layer in enumerate(layers):
        assert layer.multiscale
        assert [tuple(level.shape) for level in layer.data] == expected_shapes
        np.testing.assert_array_equal(np.asarray(layer.data[0]), data[channel])
        # the coarser levels napari shows are the ones the backend wrote
        for level in (1, 2):
            np.testing.assert_array_equal(
                np.asarray(layer.data[level]), backend.load("cells.zarr", level=level)[channel]
            )
        # per-axis metadata: the channel axis is gone, y/x keep their names, size and unit
        assert tuple(layer.axis_labels) == ("y", "x")
        np.testing.assert_allclose(layer.scale, [0.5, 0.25])
        assert [str(unit) for unit in layer.units] == ["micrometer", "micrometer"]
    # the default colours (green, magenta) travel through the OMERO metadata
    np.testing.assert_allclose(layers[0].colormap.colors[-1][:3], [0, 1, 0])
    np.testing.assert_allclose(layers[1].colormap.colors[-1][:3], [1, 0, 1])
    assert viewer.dims.ndim == 2


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_plate_from_pipeline_file_names_opens_as_a_mosaic(
    make_napari_viewer: Any, tmp_path: Path, zarr_format: int
) -> None:
    # a 2x2 plate with well B01 never imaged; two channels (w1, w2) per well, one field each
    rng = np.random.default_rng(11)
    wells = {"A01": (0, 0), "A02": (0, 1), "B02": (1, 1)}
    planes = {
        (well, channel): rng.integers(1, 60000, size=(16, 20), dtype=np.uint16)
        for well in wells
        for channel in (1, 2)
    }
    backend = ZarrBackend(tmp_path, zarr_format=zarr_format)
    for (well, channel), plane in planes.items():
        backend.save(plane, f"plate.zarr/{well}_s1_w{channel}.tif")

    viewer = make_napari_viewer()
    layers = open_in_napari(viewer, tmp_path / "plate.zarr")

    # one layer per channel, named after the first field image ("0") and its channel labels
    assert [layer.name for layer in layers] == ["0: w1", "0: w2"]
    for channel, layer in enumerate(layers, start=1):
        mosaic = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        assert mosaic.shape == (2 * 16, 2 * 20)
        for well, (row, column) in wells.items():
            tile = mosaic[row * 16 : (row + 1) * 16, column * 20 : (column + 1) * 20]
            np.testing.assert_array_equal(tile, planes[well, channel], err_msg=f"{well} w{channel}")
        assert not mosaic[16:, :20].any(), "well B01 was never written: its tile should be empty"
