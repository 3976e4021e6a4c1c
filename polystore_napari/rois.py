"""napari's side of ROIs: shapes and points layers <-> :class:`polystore.rois.Shape`.

Every conversion to and from ImageJ ROIs is :mod:`polystore.rois`'; here only how napari holds
shapes (vertices with the layer's leading coordinates, a shape type per shape) and which of a
layer's axes are a shape's channel, z and t (its axis labels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from polystore.rois import Shape, shapes_from_rois

AXIS_POSITIONS = {"c": "channel", "channel": "channel", "z": "z", "t": "t", "time": "t", "plane": "plane"}
"""napari axis label -> the key of a shape's position it carries."""
LEADING_AXES = (("t", "t"), ("channel", "c"), ("z", "z"), ("plane", "plane"))
"""(position key, axis label) of the leading axes a layer of ROIs gets, in OME-NGFF's order
(ImageJ's plain stack position last)."""
_UNNAMED = re.compile(r"(?:axis )?-?\d+")
"""napari's labels for axes nobody named ("-3", "0", "axis -1")."""

LayerData = tuple[Any, dict[str, Any], str]


def shapes_from_layer(
    data: Sequence[np.ndarray], shape_types: Sequence[str], axis_labels: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[Shape]:
    """A shapes layer's shapes: y/x from the last two columns; the leading coordinates (the
    shape's plane in an n-D layer) become its channel/z/t where the axis labels say so
    (c/channel, z, t/time, plane); one leading axis nobody named is its stack ``plane``;
    other named axes (a plate's well, site) are no plane of an image and are left out."""
    shapes = []
    for index, (vertices, shape_type) in enumerate(zip(data, shape_types, strict=True)):
        array = np.asarray(vertices, dtype=float)
        name = names[index] if names is not None else ""
        shapes.append(Shape(array[:, -2:], shape_type, name, _position(array[0, :-2], axis_labels)))  # type: ignore[arg-type]
    return shapes


def shape_from_points(points: np.ndarray, name: str = "points") -> Shape:
    """A points layer's points (y/x in the last two columns) as one multi-point shape."""
    return Shape(np.asarray(points, dtype=float).reshape(-1, np.shape(points)[-1])[:, -2:], "points", name)


def _position(leading: np.ndarray, axis_labels: Sequence[str] | None) -> dict[str, int]:
    given = [str(label) for label in (axis_labels or [])][: len(leading)]
    labels: list[str | None] = [*given, *[None] * (len(leading) - len(given))]
    position: dict[str, int] = {}
    unnamed: list[float] = []
    for label, value in zip(labels, leading, strict=True):
        key = AXIS_POSITIONS.get(str(label).lower()) if label is not None else None
        if key is not None:
            position[key] = max(0, round(float(value)))
        elif label is None or _UNNAMED.fullmatch(str(label)):
            unnamed.append(float(value))
    if len(unnamed) == 1 and "plane" not in position:
        position["plane"] = max(0, round(unnamed[0]))
    return position


def roi_layer_data(rois: Sequence[Any], name: str) -> list[LayerData]:
    """ImageJ ROIs as a Shapes layer, plus a Points layer when some are point ROIs; a ROI's
    plane (its c/z/t or stack position) is its leading coordinates, the layer's axes labelled
    t, c, z or plane (a ROI on every plane sits at 0)."""
    shapes = shapes_from_rois(rois)
    keys = [key for key, _ in LEADING_AXES if any(key in shape.position for shape in shapes)]
    labels = (*(label for key, label in LEADING_AXES if key in keys), "y", "x")

    def placed(shape: Shape) -> np.ndarray:
        lead = [shape.position.get(key, 0) for key in keys]
        return np.hstack([np.broadcast_to(np.asarray(lead, float), (len(shape.vertices), len(keys))),
                          shape.vertices])

    outlines = [shape for shape in shapes if shape.kind != "points"]
    points = [placed(shape) for shape in shapes if shape.kind == "points"]
    layers: list[LayerData] = []
    if outlines or not points:
        layers.append((
            [placed(shape) for shape in outlines],
            {"name": name, "shape_type": [shape.kind for shape in outlines], "edge_color": "yellow",
             "face_color": "transparent", "axis_labels": labels, "ndim": len(labels)},
            "shapes",
        ))
    if points:
        layers.append((np.concatenate(points),
                       {"name": f"{name} points", "face_color": "yellow", "axis_labels": labels}, "points"))
    return layers
