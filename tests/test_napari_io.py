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
from ngff_helpers import ome_section

from polystore.backends.disk import DiskBackend
from polystore.backends.zarr import ZarrBackend
from polystore.filemanager import FileManager
from polystore_napari import _writer

# napari's libraries stay out of the main test process (see addopts in pyproject.toml)
pytestmark = pytest.mark.napari

PLUGIN = "polystore"


def save_layer(viewer: Any, layer: Any, path: Path) -> list[str]:
    viewer.layers.selection = {layer}
    return list(viewer.layers.save(str(path), selected=True, plugin=PLUGIN))


def save_with_browser(layer: Any, path: Path, **zarr_config: Any) -> None:
    """The store browser's "Save to…" (``layer_payload``), with the zarr backend's settings
    (``zarr_format=2``: NGFF 0.4, ``ngff_version="0.6"``) as ``FileManager.save`` takes them."""
    data, options = _writer.layer_payload(layer, str(path))
    _writer.save_payload(FileManager(), data, {**options, **zarr_config}, str(path), "zarr")


def validate_image(path: Path) -> None:
    """Check the image's metadata (levels included) with ome-zarr-models for its NGFF version."""
    import warnings

    group = zarr.open_group(path, mode="r")
    version = ome_section(group).get("version") or ome_section(group)["multiscales"][0]["version"]
    module = {"0.4": "v04", "0.5": "v05", "0.6": "v06"}[version]
    models = pytest.importorskip(f"ome_zarr_models.{module}")
    with warnings.catch_warnings():  # ome-zarr-models reads the released 0.6 as its draft
        warnings.filterwarnings("ignore", message="Version number is '0.6'")
        models.Image.from_zarr(group)


NGFF_VERSIONS = [pytest.param({}, id="ngff-0.5"), pytest.param({"zarr_format": 2}, id="ngff-0.4"),
                 pytest.param({"ngff_version": "0.6"}, id="ngff-0.6")]


@pytest.mark.parametrize("zarr_config", NGFF_VERSIONS)
def test_a_layer_reopens_where_it_was_placed(
    make_napari_viewer: Any, tmp_path: Path, zarr_config: dict[str, Any]
) -> None:
    viewer = make_napari_viewer()
    image = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48)
    placed = viewer.add_image(image, scale=(0.5, 0.25), translate=(10, 20), name="placed")
    pyramid = viewer.add_image([image, image[::2, ::2], image[::4, ::4]], multiscale=True,
                               scale=(0.5, 0.25), translate=(10, 20), name="pyramid")
    for layer in (placed, pyramid):
        path = tmp_path / f"{layer.name}.zarr"
        save_with_browser(layer, path, **zarr_config)
        validate_image(path)
        (reopened,) = viewer.open(str(path), plugin=PLUGIN)
        # napari places a multiscale layer by its full resolution's translate, not a coarser
        # level's (shifted by half a pixel: each of its pixels is the mean of finer ones)
        np.testing.assert_allclose(reopened.translate, [10, 20])
        np.testing.assert_allclose(reopened.scale, [0.5, 0.25])
        full = reopened.data[0] if reopened.multiscale else reopened.data
        np.testing.assert_array_equal(np.asarray(full), image)
    if not zarr_config:  # napari's own File > Save (the npe2 writer) does the same
        assert save_layer(viewer, placed, tmp_path / "saved.zarr")
        (reopened,) = viewer.open(str(tmp_path / "saved.zarr"), plugin=PLUGIN)
        np.testing.assert_allclose(reopened.translate, [10, 20])
        np.testing.assert_allclose(reopened.scale, [0.5, 0.25])


def test_an_rgb_layer_reopens_as_one_rgb_layer(make_napari_viewer: Any, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    frames = rng.integers(0, 256, size=(2, 24, 32, 4), dtype=np.uint8)  # RGBA over time
    flat = viewer.add_image(picture, rgb=True, scale=(0.5, 0.25), translate=(1, 2), name="flat")
    movie = viewer.add_image(frames, rgb=True, scale=(3.0, 0.5, 0.25), axis_labels=("t", "y", "x"),
                             name="movie")
    volume = rng.integers(0, 4096, size=(3, 24, 32, 3), dtype=np.uint16)  # no axis labels: z
    stack = viewer.add_image(volume, rgb=True, contrast_limits=(0, 4095), name="stack")
    cases = ((flat, picture, "cyx"), (movie, frames, "tcyx"), (stack, volume, "czyx"))
    for layer, data, axes in cases:
        path = tmp_path / f"{layer.name}.zarr"
        assert save_layer(viewer, layer, path)
        validate_image(path)
        # other OME-Zarr readers see the colours as channels, each in its colour
        section = ome_section(zarr.open_group(path, mode="r"))
        assert [a["name"] for a in section["multiscales"][0]["axes"]] == list(axes)
        channels = section["omero"]["channels"]
        assert [(c["label"], c["color"]) for c in channels] == [
            ("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF"), ("A", "FFFFFF")][: data.shape[-1]]
        np.testing.assert_array_equal(ZarrBackend().load(str(path)), np.moveaxis(data, -1, axes.index("c")))

        (reopened,) = viewer.open(str(path), plugin=PLUGIN)
        assert reopened.rgb and reopened.name == path.name
        assert tuple(reopened.axis_labels) == tuple(axes.replace("c", ""))
        assert type(reopened.data).__module__.startswith("dask")  # lazily: not loaded to transpose
        np.testing.assert_array_equal(np.asarray(reopened.data), data)
        np.testing.assert_allclose(reopened.scale, layer.scale)
        np.testing.assert_allclose(reopened.translate, layer.translate)

    # the store browser's "Save to…" writes one so too; a TIFF keeps the colours last
    save_with_browser(flat, tmp_path / "browser.zarr")
    (again,) = viewer.open(str(tmp_path / "browser.zarr"), plugin=PLUGIN)
    assert again.rgb
    np.testing.assert_array_equal(np.asarray(again.data), picture)
    assert save_layer(viewer, flat, tmp_path / "flat.tif")
    np.testing.assert_array_equal(DiskBackend().load(str(tmp_path / "flat.tif")), picture)


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
