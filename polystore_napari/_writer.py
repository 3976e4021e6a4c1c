"""napari writers: image and labels layers to polystore's formats, shapes and points to ``.roi.zip``.

The same conversion serves the store browser's "Save to…": :func:`layer_payload` turns a layer
into what ``FileManager.save`` takes, and :func:`save_layer` writes it to any backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore.ome import ngff
from polystore.rois import rois_from_shapes
from polystore.streaming.payloads import ROI_SET_SUFFIXES as ROI_SUFFIXES
from polystore_napari.layers import PlaneStack
from polystore_napari.rois import shape_from_points, shapes_from_layer

if TYPE_CHECKING:
    from napari.layers import Layer

    from polystore.filemanager import FileManager

OME_AXES = "tczyx"
AXIS_NAMES = {"t": "t", "time": "t", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}
RGB_PICTURE_AXES = {2: "yx", 3: "zyx", 4: "tzyx"}
"""An RGB layer's axes before its colours, where its labels name none."""
COLOUR_POSITION = "colour_position"
"""Not a backend option: where ``pixels`` moves an RGB layer's colour axis to (zarr writes)."""


def backend_for(path: str) -> str:
    """The backend a writer uses for ``path``: zarr for anything inside a ``.zarr`` store."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return "zarr" if any(part.lower().endswith(".zarr") for part in parts) else "disk"


def ome_axes(axis_labels: Sequence[str]) -> str | None:
    """The OME axes string for napari axis labels such as ('t', 'channel', 'y', 'x'), if they map."""
    letters = [AXIS_NAMES.get(str(label).lower()) for label in axis_labels]
    if any(letter is None for letter in letters):
        return None
    axes = "".join(letter for letter in letters if letter is not None)
    ordered = "".join(a for a in OME_AXES if a in axes)
    return axes if axes == ordered and len(set(axes)) == len(axes) else None


def layer_payload(layer: Layer, path: str) -> tuple[Any, dict[str, Any]]:
    """What ``FileManager.save`` takes for ``layer`` written to ``path``, and its keyword options."""
    from napari.layers import Image, Labels, Points, Shapes

    # isinstance, not type(): a plugin sees napari's layers through a proxy
    kinds = {Image: "image", Labels: "labels", Shapes: "shapes", Points: "points"}
    kind = next((name for cls, name in kinds.items() if isinstance(layer, cls)), type(layer).__name__)
    lowered = path.lower()
    if kind in ("shapes", "points"):
        if not lowered.endswith(ROI_SUFFIXES):
            raise UnsupportedDataError(
                f"A {kind} layer is written as ImageJ ROIs: give a path ending in .roi.zip (got '{path}')."
            )
        if kind == "points":
            shapes = [shape_from_points(np.asarray(layer.data), name=layer.name)]
        else:
            shapes = shapes_from_layer(layer.data, layer.shape_type, axis_labels=layer.axis_labels)
        return rois_from_shapes(shapes), {}
    if kind not in ("image", "labels"):
        raise UnsupportedDataError(f"polystore writes image, labels, shapes and points layers, not {kind}.")
    if lowered.endswith(ROI_SUFFIXES):
        raise UnsupportedDataError(f"'{path}' is an ROI file; an {kind} layer goes to .tif, .npy or .zarr.")
    data = layer.data[0] if layer.multiscale else layer.data
    if isinstance(data, PlaneStack):
        data = data.snapshot()  # its pixels are stacked by whoever writes (see pixels())
    elif not isinstance(data, np.ndarray) and not type(data).__module__.startswith("dask"):
        data = np.asarray(data)  # any other array-like: its pixels
    options: dict[str, Any] = {}
    if backend_for(path) == "zarr":
        options = zarr_options(layer.axis_labels, layer.scale, np.shape(data), labels=kind == "labels",
                               levels=len(layer.data) if layer.multiscale else None,
                               translate=layer.translate, rgb=kind == "image" and bool(layer.rgb))
    return data, options


def zarr_options(axis_labels: Sequence[str], scale: Sequence[float] | None, shape: Sequence[int], *,
                 labels: bool = False, levels: int | None = None, translate: Sequence[float] | None = None,
                 rgb: bool = False) -> dict[str, Any]:
    """What ``ZarrBackend.save`` is given for a layer of data ``shape``: its axes (where its
    labels name OME axes), its scale and translate (one per axis), ``labels`` and as many
    resolution levels as a multiscale layer has. An RGB(A) layer (``rgb``) is written as OME
    channels: see ``rgb_options``."""
    if rgb and (colour := rgb_options(axis_labels, scale, shape, levels, translate)) is not None:
        return colour
    ndim = len(shape)
    options: dict[str, Any] = {}
    axes = ome_axes(axis_labels)
    if axes is not None and 2 <= len(axes) <= 5 and len(axes) == ndim:
        options["axes"] = axes
    if scale is not None and len(scale) == ndim and 2 <= ndim <= 5:
        options["scale"] = [float(s) for s in scale]
    # napari's default, no translation, is left out: the metadata says only what was set
    if translate is not None and len(translate) == ndim and 2 <= ndim <= 5 and any(translate):
        options["translation"] = [float(t) for t in translate]
    if labels:
        options["labels"] = True
    if levels is not None and levels > 1:
        options["levels"] = levels
    return options


def rgb_options(axis_labels: Sequence[str], scale: Sequence[float] | None, shape: Sequence[int],
                levels: int | None, translate: Sequence[float] | None) -> dict[str, Any] | None:
    """An RGB(A) layer's (data ``(..., y, x, 3 or 4)``) options as OME channels: its colour
    axis moved to the c position (yx -> cyx, tyx -> tcyx, zyx -> czyx; ``pixels`` moves it),
    labelled and coloured as ``ngff.RGB_CHANNELS``, which the reader opens as one RGB layer.
    None where there is no room for a c axis (over 4 axes before the colours)."""
    labels = ome_axes(axis_labels) if len(axis_labels) == len(shape) - 1 else None
    picture = labels if labels is not None and "c" not in labels else RGB_PICTURE_AXES.get(len(shape) - 1)
    if picture is None or shape[-1] not in (3, 4):
        return None
    axes = "".join(a for a in OME_AXES if a in picture or a == "c")
    position = axes.index("c")

    def with_channel(values: Sequence[float] | None, channel: float) -> list[float] | None:
        return None if values is None else [*values[:position], channel, *values[position:]]

    moved = (*shape[:position], shape[-1], *shape[position:-1])
    options = zarr_options(tuple(axes), with_channel(scale, 1.0), moved, levels=levels,
                           translate=with_channel(translate, 0.0))
    count = shape[-1]
    options["channel_names"] = [label for label, _ in ngff.RGB_CHANNELS[:count]]
    options["colors"] = [color for _, color in ngff.RGB_CHANNELS[:count]]
    options[COLOUR_POSITION] = position
    return options


def pixels(data: Any, options: dict[str, Any] | None = None) -> Any:
    """``data`` from :func:`layer_payload` as ``FileManager.save`` takes it with ``options``
    (the zarr ones): a live stack's snapshot stacked into one array (call it in the thread that
    writes), an RGB layer's colours moved to their OME axis (lazily for dask data)."""
    stacked = np.asarray(data) if isinstance(data, PlaneStack) else data
    if options and COLOUR_POSITION in options:
        return np.moveaxis(stacked, -1, options[COLOUR_POSITION])
    return stacked


def _saved(data: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(what ``FileManager.save`` is given, its options): :func:`pixels`, and the options
    without the colour position, which is no backend's."""
    return pixels(data, options), {key: value for key, value in options.items() if key != COLOUR_POSITION}


def save_payload(manager: FileManager, data: Any, options: dict[str, Any], path: str, backend: str) -> None:
    """Write what :func:`layer_payload` gave to ``path`` on ``backend`` (any thread)."""
    array, taken = _saved(data, backend_options(options, backend))
    manager.save(array, path, backend=backend, **taken)


def save_layer(manager: FileManager, layer: Layer, path: str, backend: str) -> None:
    """Write ``layer`` to ``path`` on ``backend`` through ``manager``."""
    data, options = layer_payload(layer, path)
    save_payload(manager, data, options, path, backend)


def backend_options(options: dict[str, Any], backend: str) -> dict[str, Any]:
    """The options :func:`layer_payload` chose that ``backend`` takes (zarr's axes and labels)."""
    return options if backend == "zarr" else {}


# -- npe2 writer contributions -------------------------------------------------------------------


def _write(path: str, data: Any, options: dict[str, Any]) -> list[str]:
    from polystore.filemanager import FileManager

    backend = backend_for(path)
    if backend != "zarr":
        options = {}
    array, taken = _saved(data, options)
    FileManager().save(array, path, backend=backend, **taken)
    return [path]


def _write_layer(path: str, data: Any, meta: dict[str, Any], *, labels: bool) -> list[str]:
    """An image or labels layer's data (a multiscale layer's full resolution: its data as an
    array is its coarsest level) with its axes, scale, translate and levels in a .zarr store
    (an RGB layer's colours as OME channels)."""
    levels = len(data) if meta.get("multiscale") else None
    if levels is not None:
        data = data[0]
    options = zarr_options(meta.get("axis_labels") or (), meta.get("scale"), np.shape(data),
                           labels=labels, levels=levels, translate=meta.get("translate"),
                           rgb=not labels and bool(meta.get("rgb")))
    return _write(path, data, options)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an image layer's data to ``path`` (.tif, .ome.tif, .npy, or inside a .zarr store)."""
    return _write_layer(path, data, meta, labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer's data to ``path`` (in a .zarr store: a labels image, picked not averaged)."""
    return _write_layer(path, data, meta, labels=True)


def write_shapes(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a shapes layer as an ImageJ ROI set (``.roi.zip``)."""
    shape_types = meta.get("shape_type") or ["polygon"] * len(data)
    shapes = shapes_from_layer(data, shape_types, axis_labels=meta.get("axis_labels"))
    return _write(path, rois_from_shapes(shapes), {})


def write_points(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a points layer as one ImageJ multi-point ROI in a ``.roi.zip``."""
    points = shape_from_points(np.asarray(data), name=str(meta.get("name") or "points"))
    return _write(path, rois_from_shapes([points]), {})
