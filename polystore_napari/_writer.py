"""napari writers: image and labels layers to polystore's formats, shapes and points to ``.roi.zip``.

The same conversion serves the store browser's "Save to…": :func:`layer_payload` turns a layer
into what ``FileManager.save`` takes, and :func:`save_layer` writes it to any backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.exceptions import UnsupportedDataError

if TYPE_CHECKING:
    from napari.layers import Layer

    from polystore.filemanager import FileManager

from polystore.streaming.payloads import ROI_SET_SUFFIXES as ROI_SUFFIXES

OME_AXES = "tczyx"
AXIS_NAMES = {"t": "t", "time": "t", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}


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


def shapes_to_rois(
    data: Sequence[np.ndarray], shape_types: Sequence[str], names: Sequence[str] | None = None
) -> list[Any]:
    """napari shapes (vertices y/x in the last two columns) as roifile ImageJ ROIs.

    Leading coordinates (a plane of an n-D layer) go into the ROI's ``position`` (1-based,
    ImageJ's stack position) when there is exactly one leading axis.
    """
    from roifile import ROI_TYPE, ImagejRoi

    rois = []
    for index, (vertices, shape_type) in enumerate(zip(data, shape_types, strict=True)):
        vertices = np.asarray(vertices, dtype=float)
        yx = vertices[:, -2:]
        xy = yx[:, ::-1]
        name = names[index] if names is not None else f"{index + 1:04d}"
        if shape_type in ("rectangle", "ellipse") and _axis_aligned_integer_box(yx):
            top, left = yx.min(axis=0)
            bottom, right = yx.max(axis=0)
            roi = ImagejRoi(
                roitype=ROI_TYPE.RECT if shape_type == "rectangle" else ROI_TYPE.OVAL,
                top=int(top), left=int(left), bottom=int(bottom), right=int(right), name=name,
            )
        elif shape_type == "line":
            roi = ImagejRoi.frompoints(xy, name=name)
            roi.roitype = ROI_TYPE.LINE
            (roi.x1, roi.y1), (roi.x2, roi.y2) = xy[0], xy[-1]
        else:
            roi = ImagejRoi.frompoints(xy, name=name)
            roi.roitype = ROI_TYPE.POLYLINE if shape_type == "path" else ROI_TYPE.POLYGON
        if vertices.shape[1] == 3:
            roi.position = round(vertices[0, 0]) + 1
        rois.append(roi)
    return rois


def points_to_roi(points: np.ndarray, name: str = "points") -> Any:
    """napari points (y/x in the last two columns) as one ImageJ multi-point ROI."""
    from roifile import ROI_TYPE, ImagejRoi

    roi = ImagejRoi.frompoints(np.asarray(points, dtype=float)[:, -2:][:, ::-1], name=name)
    roi.roitype = ROI_TYPE.POINT
    return roi


def _axis_aligned_integer_box(yx: np.ndarray) -> bool:
    if len(yx) != 4 or not np.allclose(yx, np.round(yx)):
        return False
    ys, xs = set(np.round(yx[:, 0]).tolist()), set(np.round(yx[:, 1]).tolist())
    return len(ys) == 2 and len(xs) == 2


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
            rois = [points_to_roi(np.asarray(layer.data), name=layer.name)]
        else:
            rois = shapes_to_rois(layer.data, layer.shape_type)
        return rois, {}
    if kind not in ("image", "labels"):
        raise UnsupportedDataError(f"polystore writes image, labels, shapes and points layers, not {kind}.")
    if lowered.endswith(ROI_SUFFIXES):
        raise UnsupportedDataError(f"'{path}' is an ROI file; an {kind} layer goes to .tif, .npy or .zarr.")
    data = layer.data[0] if layer.multiscale else layer.data
    if not isinstance(data, np.ndarray) and not type(data).__module__.startswith("dask"):
        data = np.asarray(data)  # a live PlaneStack, or any other array-like: its pixels
    options: dict[str, Any] = {}
    if backend_for(path) == "zarr":
        axes = ome_axes(layer.axis_labels)
        if axes is not None and 2 <= len(axes) <= 5:
            options["axes"] = axes
        if kind == "labels":
            options["labels"] = True
    return data, options


def save_layer(manager: FileManager, layer: Layer, path: str, backend: str) -> None:
    """Write ``layer`` to ``path`` on ``backend`` through ``manager``."""
    data, options = layer_payload(layer, path)
    manager.save(data, path, backend=backend, **backend_options(options, backend))


def backend_options(options: dict[str, Any], backend: str) -> dict[str, Any]:
    """The options :func:`layer_payload` chose that ``backend`` takes (zarr's axes and labels)."""
    return options if backend == "zarr" else {}


# -- npe2 writer contributions -------------------------------------------------------------------


def _write(path: str, data: Any, options: dict[str, Any]) -> list[str]:
    from polystore.filemanager import FileManager

    backend = backend_for(path)
    if backend != "zarr":
        options = {}
    FileManager().save(data, path, backend=backend, **options)
    return [path]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an image layer's data to ``path`` (.tif, .ome.tif, .npy, or inside a .zarr store)."""
    axes = ome_axes(meta.get("axis_labels") or ())
    return _write(path, data, {"axes": axes} if axes is not None and 2 <= len(axes) <= 5 else {})


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer's data to ``path`` (in a .zarr store: a labels image, picked not averaged)."""
    return _write(path, data, {"labels": True})


def write_shapes(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a shapes layer as an ImageJ ROI set (``.roi.zip``)."""
    return _write(path, shapes_to_rois(data, meta.get("shape_type") or ["polygon"] * len(data)), {})


def write_points(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a points layer as one ImageJ multi-point ROI in a ``.roi.zip``."""
    return _write(path, [points_to_roi(np.asarray(data), name=str(meta.get("name") or "points"))], {})
