"""napari's side of ROIs: shapes and points layers <-> :class:`polystore.rois.Shape`.

Every conversion to and from ImageJ ROIs is :mod:`polystore.rois`'; here only how napari holds
shapes (vertices with the layer's leading coordinates, a shape type per shape) and which of a
layer's axes are a shape's channel, z and t (its axis labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from polystore.rois import Shape, shapes_from_rois, split_points

AXIS_POSITIONS = {"c": "channel", "channel": "channel", "z": "z", "t": "t", "time": "t"}
"""napari axis label -> the key of a shape's position it carries."""

LayerData = tuple[Any, dict[str, Any], str]


def shapes_from_layer(
    data: Sequence[np.ndarray], shape_types: Sequence[str], axis_labels: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[Shape]:
    """A shapes layer's shapes: y/x from the last two columns; the leading coordinates (the
    shape's plane in an n-D layer) become its channel/z/t where the axis labels say so
    (c/channel, z, t/time), else, for one unnamed leading axis, its stack ``plane``."""
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
    labels = list(axis_labels or [])[: len(leading)]
    keys = [AXIS_POSITIONS.get(str(label).lower()) for label in labels]
    if len(leading) and len(labels) == len(leading) and all(keys):
        return {str(key): round(float(value)) for key, value in zip(keys, leading, strict=True)}
    if len(leading) == 1:
        return {"plane": round(float(leading[0]))}
    return {}


def roi_layer_data(rois: Sequence[Any], name: str) -> list[LayerData]:
    """ImageJ ROIs as a Shapes layer, plus a Points layer when some are point ROIs."""
    outlines, points = split_points(shapes_from_rois(rois))
    layers: list[LayerData] = []
    if outlines or not len(points):
        layers.append((
            [shape.vertices for shape in outlines],
            {"name": name, "shape_type": [shape.kind for shape in outlines], "edge_color": "yellow",
             "face_color": "transparent"},
            "shapes",
        ))
    if len(points):
        layers.append((points, {"name": f"{name} points", "face_color": "yellow"}, "points"))
    return layers
