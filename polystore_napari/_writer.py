"""napari writers: image and labels layers to polystore's formats, shapes and points to ``.roi.zip``.

The same conversion serves the store browser's "Save to…": :func:`layer_payload` turns a layer
into what ``FileManager.save`` takes, and :func:`save_layer` writes it to any backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore.streaming.payloads import ROI_SET_SUFFIXES as ROI_SUFFIXES
from polystore_napari.layers import PlaneStack

if TYPE_CHECKING:
    from napari.layers import Layer

    from polystore.filemanager import FileManager

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


POSITION_FIELDS = {
    "c": "c_position", "channel": "c_position", "z": "z_position", "t": "t_position", "time": "t_position",
}
"""napari axis label -> the ImageJ ROI field that keeps a shape's plane on that axis."""
ELLIPSE_VERTICES = 72
SHAPE_ROI_TYPES = {"line": "LINE", "path": "POLYLINE", "polygon": "POLYGON", "rectangle": "POLYGON",
                   "ellipse": "POLYGON"}
"""napari shape type -> roifile ROI_TYPE name for shapes kept as vertices (rotated boxes too)."""


def _box_roi(roi_type: Any, yx: np.ndarray, name: str) -> Any:
    from roifile import ImagejRoi

    # ImageJ keeps rectangles and ovals as integer bounds: a corner off the pixel grid moves
    # by at most half a pixel, and the shape stays what it was (an oval, not its box)
    (top, left), (bottom, right) = np.round(yx.min(axis=0)), np.round(yx.max(axis=0))
    return ImagejRoi(roitype=roi_type, top=int(top), left=int(left), bottom=int(bottom),
                     right=int(right), name=name)


def _ellipse_outline(yx: np.ndarray) -> np.ndarray:
    """A rotated ellipse (napari's 4 corners of its box) as a polygon of ELLIPSE_VERTICES points."""
    center = yx.mean(axis=0)
    half_a, half_b = (yx[1] - yx[0]) / 2, (yx[3] - yx[0]) / 2  # half-axes along the box's sides
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
    return np.asarray(center + np.cos(angles) * half_a + np.sin(angles) * half_b)


def _shape_roi(shape_type: str, yx: np.ndarray, name: str) -> Any:
    from roifile import ROI_TYPE, ImagejRoi

    aligned = _axis_aligned_box(yx)
    if shape_type == "rectangle" and aligned:
        return _box_roi(ROI_TYPE.RECT, yx, name)
    if shape_type == "ellipse" and aligned:
        return _box_roi(ROI_TYPE.OVAL, yx, name)
    if shape_type == "ellipse":
        yx = _ellipse_outline(yx)
    roi = ImagejRoi.frompoints(yx[:, ::-1], name=name)
    roi.roitype = getattr(ROI_TYPE, SHAPE_ROI_TYPES.get(shape_type, "POLYGON"))
    if shape_type == "line":
        (roi.x1, roi.y1), (roi.x2, roi.y2) = yx[0, ::-1], yx[-1, ::-1]
    return roi




def _set_position(roi: Any, leading: np.ndarray, axis_labels: Sequence[str] | None) -> None:
    """Put a shape's plane (its leading coordinates) into the ROI's c/z/t (1-based)."""
    labels = list(axis_labels or [])[: len(leading)]
    fields = [POSITION_FIELDS.get(str(label).lower()) for label in labels]
    if len(labels) == len(leading) and all(fields):
        for field_name, value in zip(fields, leading, strict=True):
            setattr(roi, str(field_name), round(float(value)) + 1)
    elif len(leading) == 1:  # one unnamed axis: ImageJ's plain stack position
        roi.position = round(float(leading[0])) + 1


def shapes_to_rois(
    data: Sequence[np.ndarray], shape_types: Sequence[str], names: Sequence[str] | None = None,
    axis_labels: Sequence[str] | None = None,
) -> list[Any]:
    """napari shapes (vertices y/x in the last two columns) as roifile ImageJ ROIs.

    Rectangles and ellipses along the axes stay rectangles and ovals; rotated ones, lines,
    paths and polygons are kept as their vertices (a rotated ellipse as a 72-point polygon).
    The leading coordinates (the shape's plane in an n-D layer) become the ROI's c/z/t
    positions where ``axis_labels`` name them (c/channel, z, t/time), else, for a single
    leading axis, its stack position.
    """
    rois = []
    for index, (vertices, shape_type) in enumerate(zip(data, shape_types, strict=True)):
        vertices = np.asarray(vertices, dtype=float)
        name = names[index] if names is not None else f"{index + 1:04d}"
        roi = _shape_roi(shape_type, vertices[:, -2:], name)
        if vertices.shape[1] > 2:
            _set_position(roi, vertices[0, :-2], axis_labels)
        rois.append(roi)
    return rois


def points_to_roi(points: np.ndarray, name: str = "points") -> Any:
    """napari points (y/x in the last two columns) as one ImageJ multi-point ROI."""
    from roifile import ROI_TYPE, ImagejRoi

    roi = ImagejRoi.frompoints(np.asarray(points, dtype=float)[:, -2:][:, ::-1], name=name)
    roi.roitype = ROI_TYPE.POINT
    return roi


def _axis_aligned_box(yx: np.ndarray) -> bool:
    """Four corners whose sides run along y and x (napari's rectangles and ellipses, unrotated)."""
    if len(yx) != 4:
        return False
    ys, xs = np.unique(np.round(yx[:, 0], 6)), np.unique(np.round(yx[:, 1], 6))
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
            rois = shapes_to_rois(layer.data, layer.shape_type, axis_labels=layer.axis_labels)
        return rois, {}
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
        axes = ome_axes(layer.axis_labels)
        if axes is not None and 2 <= len(axes) <= 5:
            options["axes"] = axes
        if kind == "labels":
            options["labels"] = True
    return data, options


def pixels(data: Any) -> Any:
    """``data`` from :func:`layer_payload` as ``FileManager.save`` takes it (a live stack's
    snapshot stacked into one array: call it in the thread that writes)."""
    return np.asarray(data) if isinstance(data, PlaneStack) else data


def save_payload(manager: FileManager, data: Any, options: dict[str, Any], path: str, backend: str) -> None:
    """Write what :func:`layer_payload` gave to ``path`` on ``backend`` (any thread)."""
    manager.save(pixels(data), path, backend=backend, **backend_options(options, backend))


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
    shape_types = meta.get("shape_type") or ["polygon"] * len(data)
    return _write(path, shapes_to_rois(data, shape_types, axis_labels=meta.get("axis_labels")), {})


def write_points(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a points layer as one ImageJ multi-point ROI in a ``.roi.zip``."""
    return _write(path, [points_to_roi(np.asarray(data), name=str(meta.get("name") or "points"))], {})
