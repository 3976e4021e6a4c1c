"""napari reader: zarr stores (OME-Zarr plates and pyramids, plain arrays), polystore's disk formats.

Everything from a zarr store is lazy (dask): a pyramid opens as a multiscale layer, a plate as
a tiled overview (:mod:`polystore_napari.overview`): one multiscale layer per channel, low
resolution first, full resolution where one zooms in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from polystore.formats.roi import FORMATS as ROI_FORMATS
from polystore.ome import ngff
from polystore_napari.display import channel_options

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

ARRAY_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npy")
ROI_SUFFIXES = tuple(extension for fmt in ROI_FORMATS for extension in fmt.extensions)
"""ImageJ ROI sets and ROIs, as the format table names them (not the live stream's modules)."""

MAX_GROUP_MEMBERS = 16
"""A plain zarr group opens its first few images/arrays; open the others from the store browser."""


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader for ``path`` (one path or several), or None when polystore does not read it."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or any(_kind(p) is None or not _present(p) for p in paths):
        return None
    return read


def _present(path: str) -> bool:
    """Whether a local ``.zarr`` path is a zarr node (a folder named so that is not, an empty
    one, or none at all, is for other readers: napari tries them only when this returns None).
    Anything else, and a URL, is tried."""
    text = os.fspath(path)
    if _kind(text) != "zarr" or "://" in text:
        return True
    from polystore.backends.zarr.location import NODE_DOCUMENTS  # zarr's import: only for a .zarr path

    return any(os.path.isfile(os.path.join(text, document)) for document in NODE_DOCUMENTS)


def _kind(path: str) -> str | None:
    text = os.fspath(path).replace("\\", "/").rstrip("/").lower()
    if text.endswith(".zarr") or ".zarr/" in text:
        return "zarr"
    if text.endswith(ROI_SUFFIXES):
        return "roi"
    if text.endswith(ARRAY_SUFFIXES):
        return "array"
    return None


def read(path: str | Sequence[str]) -> list[LayerData]:
    """Layer data for each path (see the module docstring)."""
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for one in paths:
        kind = _kind(one)
        if kind == "zarr":
            from polystore.backends.zarr import ZarrBackend

            layers += read_zarr(ZarrBackend(), os.fspath(one).rstrip("/"))
        elif kind == "roi":
            layers += read_rois(one)
        elif kind == "array":
            from polystore.backends.disk import DiskBackend

            name = os.path.basename(os.fspath(one))
            layers.append((np.asarray(DiskBackend().load(one)), {"name": name}, "image"))
    return layers


def read_rois(path: str) -> list[LayerData]:
    """An ImageJ ROI set as a Shapes layer (and a Points layer for point ROIs)."""
    from polystore.backends.disk import DiskBackend
    from polystore_napari.rois import roi_layer_data

    loaded = DiskBackend().load(path)
    return roi_layer_data(loaded if isinstance(loaded, list) else [loaded],
                          os.path.basename(os.fspath(path).rstrip("/")))


# -- zarr ----------------------------------------------------------------------------------------


def node_attributes(backend: Any, path: str) -> tuple[str, dict[str, Any]]:
    """("plate" | "well" | "image" | "array" | "group", the node's attributes) for ``path`` in a
    zarr store."""
    node = backend.node(path)
    attributes = dict(node.attrs)
    if hasattr(node, "shape") and hasattr(node, "chunks"):
        return "array", attributes
    section = ngff.ngff_section(attributes)
    if section.get("plate"):
        return "plate", attributes
    if section.get("well"):
        return "well", attributes
    if section.get("multiscales"):
        return "image", attributes
    return "group", attributes


def read_zarr(backend: Any, path: str) -> list[LayerData]:
    """Layer data for a zarr node: a plate, a multiscale image, an array, or a group's members."""
    kind, attributes = node_attributes(backend, path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if kind == "plate":
        from polystore_napari.overview import read_plate_overview

        return read_plate_overview(backend, path, attributes)
    if kind == "well":
        from polystore_napari.overview import read_well_overview

        if fields := read_well_overview(backend, path):
            return fields
    if kind == "image":
        return [image_layer(backend, path, attributes, name), *label_layers(backend, path)]
    if kind == "array":
        return [(backend.load(path, lazy=True), {"name": name}, "image")]
    layers: list[LayerData] = []
    for member in backend.list_files(path, recursive=True)[:MAX_GROUP_MEMBERS]:
        layers += read_zarr(backend, member)
    return layers


def image_layer(backend: Any, path: str, attributes: dict[str, Any], name: str) -> LayerData:
    """A multiscale OME-Zarr image, lazily: one dask array per level (channels split into layers);
    an OME-NGFF label image (``image-label``) as a labels layer; an RGB(A) picture written as
    channels (``ngff.is_rgb``) as one RGB layer."""
    count = len(ngff.multiscale_paths(attributes))
    levels = [backend.load(path, level=level, lazy=True) for level in range(count)]
    axes = ngff.multiscale_axes(attributes) or "yx"[-levels[0].ndim :]
    options: dict[str, Any] = {"multiscale": len(levels) > 1}
    scale, translate = ngff.image_transform(attributes)
    labels = [a for a in axes]
    is_label = "image-label" in ngff.ngff_section(attributes)
    if "c" in axes and not is_label:
        channel_axis = axes.index("c")
        if ngff.is_rgb(attributes, levels[0].shape, levels[0].dtype):
            # one colour picture: its channels last, as napari has them (a lazy transpose)
            levels = [np.moveaxis(level, channel_axis, -1) for level in levels]
            options.update(rgb=True, name=name)
        else:
            options["channel_axis"] = channel_axis
            options.update(channel_options(attributes, levels[0].shape[channel_axis]))
        del labels[channel_axis]
        for per_axis in (scale, translate):
            if per_axis is not None:
                del per_axis[channel_axis]
    else:
        options["name"] = name
    options["axis_labels"] = tuple(labels)
    if scale is not None:
        options["scale"] = scale
    if translate is not None:
        options["translate"] = translate
    return (levels if len(levels) > 1 else levels[0], options, "labels" if is_label else "image")


def label_layers(backend: Any, path: str) -> list[LayerData]:
    """The label images of an OME-Zarr image (its ``labels`` group), as labels layers."""
    try:
        group = ngff.ngff_section(backend.attributes(f"{path}/labels"))
    except (FileNotFoundError, KeyError):
        return []
    names = group.get("labels")
    layers: list[LayerData] = []
    for label in names if isinstance(names, list) else []:
        label_path = f"{path}/labels/{label}"
        try:
            kind, attributes = node_attributes(backend, label_path)
        except (FileNotFoundError, KeyError):
            continue  # listed, not written (yet)
        if kind == "image":
            layers.append(image_layer(backend, label_path, attributes, str(label)))
    return layers
