"""The reader and writer contributions as napari runs them: a real viewer (under Xvfb, started by
pytest-xvfb) opening paths with ``viewer.open(..., plugin="polystore")`` and saving layers with
``viewer.layers.save(..., plugin="polystore")``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("zarr")

from polystore.backends.disk import DiskBackend
from polystore.backends.zarr import ZarrBackend

# napari's libraries stay out of the main test process (see addopts in pyproject.toml)
pytestmark = pytest.mark.napari

PLUGIN = "polystore"


def save_layer(viewer: Any, layer: Any, path: Path) -> list[str]:
    viewer.layers.selection = {layer}
    return list(viewer.layers.save(str(path), selected=True, plugin=PLUGIN))


def test_a_multiscale_layer_is_saved_at_full_resolution_with_its_scale(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    full = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    pyramid = viewer.add_image([full, full[::2, ::2], full[::4, ::4]], multiscale=True, name="pyramid",
                               scale=(0.5, 0.25))
    stack = viewer.add_image(np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8), name="stack",
                             scale=(2.0, 0.5, 0.25), axis_labels=("z", "y", "x"))

    # a multiscale layer's data as one array is its coarsest level: the file gets the finest
    assert save_layer(viewer, pyramid, tmp_path / "pyramid.tif")
    np.testing.assert_array_equal(DiskBackend().load(str(tmp_path / "pyramid.tif")), full)
    assert save_layer(viewer, pyramid, tmp_path / "pyramid.zarr")
    zarr = ZarrBackend()
    np.testing.assert_array_equal(zarr.load(str(tmp_path / "pyramid.zarr")), full)
    assert zarr.load(str(tmp_path / "pyramid.zarr"), level=2).shape == (16, 12)  # as many levels

    # the pixel sizes go into the store, and napari shows them when it opens it again
    assert save_layer(viewer, stack, tmp_path / "stack.zarr")
    (reopened,) = viewer.open(str(tmp_path / "stack.zarr"), plugin=PLUGIN)
    np.testing.assert_allclose(reopened.scale, [2.0, 0.5, 0.25])
    assert tuple(reopened.axis_labels) == ("z", "y", "x")
    (pyramid_again,) = viewer.open(str(tmp_path / "pyramid.zarr"), plugin=PLUGIN)
    assert pyramid_again.multiscale
    np.testing.assert_allclose(pyramid_again.scale, [0.5, 0.25])
