"""napari reader: zarr stores (OME-Zarr plates and pyramids, plain arrays), polystore's disk formats.

Everything from a zarr store is lazy (dask): a pyramid opens as a multiscale layer, a plate as
one layer per channel with ``well`` and ``site`` sliders, the same layout the stream receiver
builds from a plate streamed image by image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from polystore.ome import ngff
from polystore.streaming.payloads import ROI_SET_SUFFIXES as ROI_SUFFIXES

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

ARRAY_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".npy")

MAX_GROUP_MEMBERS = 16
"""A plain zarr group opens its first few images/arrays; open the others from the store browser."""


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader for ``path`` (one path or several), or None when polystore does not read it."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or any(_kind(p) is None for p in paths):
        return None
    return read


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
    """("plate" | "image" | "array" | "group", the node's attributes) for ``path`` in a zarr store."""
    node = backend.node(path)
    attributes = dict(node.attrs)
    if hasattr(node, "shape") and hasattr(node, "chunks"):
        return "array", attributes
    section = ngff.ngff_section(attributes)
    if section.get("plate"):
        return "plate", attributes
    if section.get("multiscales"):
        return "image", attributes
    return "group", attributes


def read_zarr(backend: Any, path: str) -> list[LayerData]:
    """Layer data for a zarr node: a plate, a multiscale image, an array, or a group's members."""
    kind, attributes = node_attributes(backend, path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if kind == "plate":
        return read_plate(backend, path, attributes)
    if kind == "image":
        return [image_layer(backend, path, attributes, name)]
    if kind == "array":
        return [(backend.load(path, lazy=True), {"name": name}, "image")]
    layers: list[LayerData] = []
    for member in backend.list_files(path, recursive=True)[:MAX_GROUP_MEMBERS]:
        layers += read_zarr(backend, member)
    return layers


def _omero_channels(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    omero = ngff.ngff_section(attributes).get("omero") or attributes.get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, dict) else None
    return [c for c in channels if isinstance(c, dict)] if isinstance(channels, list) else []


def _colormap(color: Any, fallback: str) -> Any:
    """A napari colormap from black to an OMERO channel colour (``"00FF00"``)."""
    if not isinstance(color, str) or len(color) != 6:
        return fallback
    try:
        rgb = [int(color[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    except ValueError:
        return fallback
    from napari.utils.colormaps import Colormap

    return Colormap([[0, 0, 0, 1], [*rgb, 1]], name=f"#{color.lower()}")


def _scale(attributes: dict[str, Any]) -> list[float] | None:
    multiscales = ngff.ngff_section(attributes).get("multiscales") or [{}]
    datasets = multiscales[0].get("datasets") or [{}]
    for transform in datasets[0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            return [float(s) for s in transform["scale"]]
    return None


def _channel_options(attributes: dict[str, Any], count: int, prefix: str = "") -> dict[str, Any]:
    from polystore_napari.layers import CHANNEL_COLORMAPS

    channels = _omero_channels(attributes)
    names: list[str] = []
    colormaps: list[Any] = []
    limits: list[tuple[float, float] | None] = []
    for index in range(count):
        info = channels[index] if index < len(channels) else {}
        label = str(info.get("label") or f"w{index + 1}")
        names.append(f"{prefix}{label}")
        colormaps.append(_colormap(info.get("color"), CHANNEL_COLORMAPS[index % len(CHANNEL_COLORMAPS)]))
        window = info.get("window") or {}
        start, end = (window.get("start"), window.get("end")) if isinstance(window, dict) else (None, None)
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end > start:
            limits.append((float(start), float(end)))
        else:
            limits.append(None)
    options: dict[str, Any] = {"name": names, "colormap": colormaps, "blending": "additive"}
    if all(limit is not None for limit in limits):
        options["contrast_limits"] = limits
    return options


def image_layer(backend: Any, path: str, attributes: dict[str, Any], name: str) -> LayerData:
    """A multiscale OME-Zarr image, lazily: one dask array per level (channels split into layers)."""
    count = len(ngff.multiscale_paths(attributes))
    levels = [backend.load(path, level=level, lazy=True) for level in range(count)]
    axes = ngff.multiscale_axes(attributes) or "yx"[-levels[0].ndim :]
    options: dict[str, Any] = {"multiscale": len(levels) > 1}
    scale = _scale(attributes)
    labels = [a for a in axes]
    if "c" in axes:
        channel_axis = axes.index("c")
        options["channel_axis"] = channel_axis
        options.update(_channel_options(attributes, levels[0].shape[channel_axis]))
        del labels[channel_axis]
        if scale is not None:
            del scale[channel_axis]
    else:
        options["name"] = name
    options["axis_labels"] = tuple(labels)
    if scale is not None:
        options["scale"] = scale
    return (levels if len(levels) > 1 else levels[0], options, "image")


def read_plate(backend: Any, path: str, attributes: dict[str, Any]) -> list[LayerData]:
    """An OME-Zarr plate as one lazy layer per channel: (well, site, [t], [z], y, x)."""
    from polystore.lazy import optional_import

    da: Any = optional_import("dask.array", extra="zarr", purpose="Opening a plate in napari")

    plate = ngff.ngff_section(attributes)["plate"]
    wells = [str(w["path"]) for w in plate.get("wells", [])]
    fields: dict[tuple[str, int], Any] = {}
    field_attributes: dict[str, Any] | None = None
    site_count = 0
    for well in wells:
        for site in range(int(plate.get("field_count") or 0) or 64):
            field_path = f"{path}/{well}/{site}"
            if not backend.is_file(field_path):
                break
            fields[well, site] = backend.load(field_path, lazy=True)
            site_count = max(site_count, site + 1)
            if field_attributes is None:
                field_attributes = node_attributes(backend, field_path)[1]
    if not fields or field_attributes is None:
        return []
    axes = ngff.multiscale_axes(field_attributes) or "cyx"[-next(iter(fields.values())).ndim :]
    ndim = max(a.ndim for a in fields.values())
    full = tuple(max(a.shape[i] for a in fields.values() if a.ndim == ndim) for i in range(ndim))
    dtype = next(iter(fields.values())).dtype

    def padded(array: Any) -> Any:
        # fields fill as channels arrive: pad the ones still missing some with zeros
        if tuple(array.shape) == full:
            return array
        return da.pad(array, [(0, f - s) for f, s in zip(full, array.shape, strict=True)])

    zeros = da.zeros(full, dtype=dtype, chunks=next(iter(fields.values())).chunksize)
    rows = [
        da.stack([padded(fields[well, site]) if (well, site) in fields else zeros
                  for site in range(site_count)])
        for well in wells
    ]
    stack = da.stack(rows)
    well_names = [w.replace("/", "") for w in wells]
    labels = ["well", "site", *axes]
    options: dict[str, Any] = {
        "metadata": {"polystore": {"series": path.rsplit("/", 1)[-1],
                                   "components": {"well": well_names, "site": list(range(site_count))}}},
    }
    if "c" in axes:
        channel_axis = 2 + axes.index("c")
        options["channel_axis"] = channel_axis
        options.update(_channel_options(field_attributes, full[axes.index("c")]))
        del labels[channel_axis]
    else:
        options["name"] = path.rsplit("/", 1)[-1]
    options["axis_labels"] = tuple(labels)
    return [(stack, options, "image")]
