"""The reader and writer contributions as napari runs them: a real viewer (under Xvfb, started by
pytest-xvfb) opening paths with ``viewer.open(..., plugin="polystore")`` and saving layers with
``viewer.layers.save(..., plugin="polystore")``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("zarr")

import zarr
from napari.layers import Image, Labels

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


def ome_attributes(group: Any) -> dict[str, Any]:
    """The OME section of a group's attributes, to edit (0.5 nests it under "ome")."""
    attributes = dict(group.attrs)
    section: dict[str, Any] = attributes.get("ome", attributes)
    return section


def put_ome(group: Any, section: dict[str, Any], zarr_format: int) -> None:
    group.attrs.put({"ome": section} if zarr_format == 3 else section)


@pytest.mark.parametrize("zarr_format", [pytest.param(3, id="ngff-0.5"), pytest.param(2, id="ngff-0.4")])
def test_an_image_opens_with_its_labels_and_its_translation(
    make_napari_viewer: Any, tmp_path: Path, zarr_format: Literal[2, 3]
) -> None:
    backend = ZarrBackend(tmp_path, zarr_format=zarr_format)
    image = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    backend.save(image, "cells.zarr", axes="cyx", levels=2, scale=(1.0, 0.5, 0.25))
    cells = np.zeros((32, 32), dtype=np.uint32)
    cells[4:12, 6:20] = 70000  # beyond uint16: the dtype must survive
    backend.save(cells, "nuclei.zarr", levels=2, labels=True, scale=(0.5, 0.25))
    # as OME-NGFF (ome-zarr-py, napari-ome-zarr) has them: a "labels" group inside the image
    # listing label images marked "image-label"; the image placed by a translation after its scale
    store = tmp_path / "cells.zarr"
    shutil.copytree(tmp_path / "nuclei.zarr", store / "labels" / "nuclei")
    root = zarr.open_group(store, mode="r+")
    section = ome_attributes(root)
    datasets = section["multiscales"][0]["datasets"]
    for dataset in datasets:
        dataset["coordinateTransformations"].append({"type": "translation", "translation": [0.0, 10.0, 20.0]})
    put_ome(root, section, zarr_format)
    labels_group = zarr.open_group(store / "labels", mode="a", zarr_format=zarr_format)
    put_ome(labels_group, {**({"version": "0.5"} if zarr_format == 3 else {}), "labels": ["nuclei"]},
            zarr_format)
    nuclei = zarr.open_group(store / "labels" / "nuclei", mode="r+")
    put_ome(nuclei, {**ome_attributes(nuclei), "image-label": {"colors": []}}, zarr_format)

    viewer = make_napari_viewer()
    layers = viewer.open(str(store), plugin=PLUGIN)
    assert [type(layer) for layer in layers] == [Image, Image, Labels]
    for layer in layers[:2]:
        np.testing.assert_allclose(layer.scale, [0.5, 0.25])
        np.testing.assert_allclose(layer.translate, [10.0, 20.0])
    label_layer = layers[2]
    assert label_layer.name == "nuclei" and label_layer.multiscale
    assert label_layer.data[0].dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(label_layer.data[0]), cells)
    np.testing.assert_allclose(label_layer.scale, [0.5, 0.25])
    # the label image on its own is a labels layer too
    (alone,) = viewer.open(str(store / "labels" / "nuclei"), plugin=PLUGIN)
    assert isinstance(alone, Labels)


def test_labels_the_zarr_backend_saved_open_as_labels(make_napari_viewer: Any, tmp_path: Path) -> None:
    cells = np.zeros((16, 16), np.uint32)
    cells[2:6, 3:9] = 70000
    ZarrBackend(tmp_path).save(cells, "cells.zarr", labels=True)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "cells.zarr"), plugin=PLUGIN)
    assert isinstance(layer, Labels)
    np.testing.assert_array_equal(np.asarray(layer.data), cells)


def test_a_folder_named_zarr_that_holds_no_zarr_is_left_to_other_readers(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "scan.zarr"  # a folder of TIFFs someone named so, then an empty one
    folder.mkdir()
    DiskBackend().save(np.zeros((8, 8), np.uint8), str(folder / "a.tif"))
    viewer = make_napari_viewer()
    for path in (folder, tmp_path / "empty.zarr"):
        path.mkdir(exist_ok=True)
        # napari's words when a reader's get_reader returns None (other readers are tried):
        # not an error raised from reading
        with pytest.raises(ValueError, match="refused the file"):
            viewer.open(str(path), plugin=PLUGIN)
