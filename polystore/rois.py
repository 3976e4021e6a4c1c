"""ROIs as arrays of vertices, and ImageJ ROI sets: the one place they are converted.

A :class:`Shape` is what every viewer draws: vertices as an (N, 2) array of (y, x), a kind
(``polygon``, ``path`` for an open polyline, ``line``, ``rectangle``, ``ellipse``, ``points``),
a name, and the plane it belongs to (0-based ``channel``/``z``/``t``, as everywhere in
polystore, or ImageJ's plain stack ``plane``). Rectangles and ellipses are their four box
corners (napari's way, which also holds rotated ones).

* ImageJ ROIs (roifile's ``ImagejRoi``, the same bytes Fiji's RoiManager saves):
  :func:`shapes_from_rois` / :func:`rois_from_shapes`, and for ``.roi.zip`` bytes
  :func:`read_roi_set` / :func:`roi_set_bytes`.
* Stream items (kinds ``roi_set``, ``shapes``, ``points``): :func:`shapes_of_item`.

napari and Fiji adapt Shapes to their own objects (layers, ``ij.gui.Roi``); nothing about
ROIs is decided there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore.lazy import optional_import

ShapeKind = Literal["polygon", "path", "line", "rectangle", "ellipse", "points"]
SHAPE_KINDS: frozenset[str] = frozenset({"polygon", "path", "line", "rectangle", "ellipse", "points"})
POSITION_KEYS = ("channel", "z", "t", "plane")
"""A shape's plane: 0-based channel, z, t (ImageJ's c/z/t positions), or ``plane`` (ImageJ's
plain stack position, for a stack that says nothing of its axes)."""
ELLIPSE_VERTICES = 72
"""A rotated ellipse, which ImageJ cannot store as an oval, becomes a polygon of this many points."""

_IMAGEJ_POSITION = {"channel": "c_position", "z": "z_position", "t": "t_position", "plane": "position"}
_OUTLINE_KINDS = {"polygon": "POLYGON", "path": "POLYLINE", "line": "LINE", "rectangle": "POLYGON",
                  "ellipse": "POLYGON"}
"""Shape kind -> ImageJ ROI type when kept as its vertices (rotated boxes too)."""
_OPEN_IMAGEJ_TYPES = ("POLYLINE", "FREELINE", "ANGLE")


@dataclass(frozen=True, eq=False)
class Shape:
    """One ROI as vertices: ``(N, 2)`` float (y, x), a kind, a name and its plane."""

    vertices: np.ndarray
    kind: ShapeKind = "polygon"
    name: str = ""
    position: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """0-based ``channel``, ``z``, ``t``, or ``plane``; absent keys: every plane."""

    def __post_init__(self) -> None:
        vertices = np.asarray(self.vertices, dtype=float)
        if vertices.ndim != 2 or vertices.shape[1] != 2:
            raise UnsupportedDataError(
                f"a shape's vertices are an (N, 2) array of (y, x), got {vertices.shape}"
            )
        if self.kind not in SHAPE_KINDS:
            raise UnsupportedDataError(f"shape kind {self.kind!r}: one of {', '.join(sorted(SHAPE_KINDS))}")
        unknown = set(self.position) - set(POSITION_KEYS)
        if unknown or any(not isinstance(v, int) or v < 0 for v in self.position.values()):
            raise UnsupportedDataError(
                f"a shape's position is 0-based {'/'.join(POSITION_KEYS)}, got {dict(self.position)}"
            )
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "position", MappingProxyType(dict(self.position)))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Shape) and self.kind == other.kind and self.name == other.name
                and dict(self.position) == dict(other.position)
                and self.vertices.shape == other.vertices.shape
                and bool(np.allclose(self.vertices, other.vertices)))

    __hash__ = None  # type: ignore[assignment]  # vertices are an array


def _roifile() -> Any:
    return optional_import("roifile", extra="roi", purpose="Converting ImageJ ROIs")


# -- ImageJ ROIs -> shapes ------------------------------------------------------------------------


def shapes_from_rois(rois: Iterable[Any]) -> list[Shape]:
    """roifile ImageJ ROIs as shapes: rectangles and ovals as their box, lines, points, and
    every other ROI as its outline (a composite ROI: one shape per part)."""
    roi_type = _roifile().ROI_TYPE
    shapes: list[Shape] = []
    for roi in rois:
        name, position = str(getattr(roi, "name", "") or ""), _position_of(roi)
        kind = roi.roitype
        if kind in (roi_type.RECT, roi_type.OVAL) and not roi.subpixelrect:
            top, left, bottom, right = float(roi.top), float(roi.left), float(roi.bottom), float(roi.right)
            corners = np.array([[top, left], [top, right], [bottom, right], [bottom, left]])
            shapes.append(Shape(corners, "rectangle" if kind == roi_type.RECT else "ellipse", name, position))
        elif kind == roi_type.LINE:
            ends = np.array([[roi.y1, roi.x1], [roi.y2, roi.x2]], dtype=float)
            shapes.append(Shape(ends, "line", name, position))
        elif kind == roi_type.POINT:
            points = np.asarray(roi.coordinates(), dtype=float)[:, ::-1]
            shapes.append(Shape(points, "points", name, position))
        else:
            xy = roi.coordinates()
            parts = xy if isinstance(xy, list) else [xy]
            outline: ShapeKind = "path" if kind.name in _OPEN_IMAGEJ_TYPES else "polygon"
            shapes += [Shape(np.asarray(part, dtype=float)[:, ::-1], outline, name, position)
                       for part in parts if part is not None and len(part)]
    return shapes


def _position_of(roi: Any) -> dict[str, int]:
    # ImageJ counts positions from 1; 0 means "every plane"
    return {key: int(value) - 1 for key, attribute in _IMAGEJ_POSITION.items()
            if (value := getattr(roi, attribute, 0) or 0) > 0}


# -- shapes -> ImageJ ROIs ------------------------------------------------------------------------


def rois_from_shapes(shapes: Iterable[Shape]) -> list[Any]:
    """Shapes as roifile ImageJ ROIs (names default to 0001, 0002, ... as RoiManager's).

    Rectangles and ellipses along the axes stay rectangles and ovals (ImageJ keeps their
    integer bounds: a corner off the pixel grid moves by at most half a pixel); rotated ones,
    lines, paths and polygons keep their vertices (a rotated ellipse as a polygon of
    :data:`ELLIPSE_VERTICES` points); ``points`` become one multi-point ROI.
    """
    rois = []
    for number, shape in enumerate(shapes, start=1):
        roi = _roi_of(shape, shape.name or f"{number:04d}")
        for key, value in shape.position.items():
            setattr(roi, _IMAGEJ_POSITION[key], value + 1)
        rois.append(roi)
    return rois


def _roi_of(shape: Shape, name: str) -> Any:
    roifile = _roifile()
    yx, kind = shape.vertices, shape.kind
    if not len(yx) or not np.isfinite(yx).all():  # roifile raises a bare ValueError, or casts NaN
        raise UnsupportedDataError(
            f"shape {name!r} has {'no vertices' if not len(yx) else 'vertices that are not finite'}: "
            "an ImageJ ROI needs at least one, each a finite (y, x); drop or fix that shape."
        )
    if kind in ("rectangle", "ellipse") and _axis_aligned_box(yx):
        (top, left), (bottom, right) = np.round(yx.min(axis=0)), np.round(yx.max(axis=0))
        box_type = roifile.ROI_TYPE.RECT if kind == "rectangle" else roifile.ROI_TYPE.OVAL
        return roifile.ImagejRoi(roitype=box_type, top=int(top), left=int(left), bottom=int(bottom),
                                 right=int(right), name=name)
    if kind == "ellipse":
        yx = _ellipse_outline(yx)
    roi = roifile.ImagejRoi.frompoints(yx[:, ::-1], name=name)
    roi_type = "POINT" if kind == "points" else _OUTLINE_KINDS[kind]
    roi.roitype = getattr(roifile.ROI_TYPE, roi_type)
    if kind == "line":
        (roi.x1, roi.y1), (roi.x2, roi.y2) = yx[0, ::-1], yx[-1, ::-1]
    return roi


def _axis_aligned_box(yx: np.ndarray) -> bool:
    """Four corners whose sides run along y and x (unrotated rectangles and ellipses)."""
    if len(yx) != 4:
        return False
    ys, xs = np.unique(np.round(yx[:, 0], 6)), np.unique(np.round(yx[:, 1], 6))
    return len(ys) == 2 and len(xs) == 2


def _ellipse_outline(yx: np.ndarray) -> np.ndarray:
    """An ellipse given by the 4 corners of its (rotated) box, as a polygon."""
    if len(yx) != 4:
        return yx
    center = yx.mean(axis=0)
    half_a, half_b = (yx[1] - yx[0]) / 2, (yx[3] - yx[0]) / 2  # half-axes along the box's sides
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
    return np.asarray(center + np.cos(angles) * half_a + np.sin(angles) * half_b)


# -- .roi.zip bytes -----------------------------------------------------------------------------------


def read_roi_set(payload: bytes | bytearray | memoryview | np.ndarray) -> list[Shape]:
    """The shapes in a ``.roi.zip`` archive (or one ``.roi``), with the format's size limits."""
    from polystore.formats.roi import rois_from_zip_bytes

    raw = payload.tobytes() if isinstance(payload, np.ndarray) else bytes(payload)
    if raw[:4] == b"Iout":  # a single .roi file
        return shapes_from_rois([_roifile().ImagejRoi.frombytes(raw)])
    return shapes_from_rois(rois_from_zip_bytes(raw))


def roi_set_bytes(shapes: Iterable[Shape]) -> bytes:
    """A ``.roi.zip`` archive (what Fiji's RoiManager opens) holding ``shapes``."""
    from polystore.formats.roi import roi_zip_bytes

    return roi_zip_bytes(rois_from_shapes(shapes))


# -- stream items ----------------------------------------------------------------------------------


def shapes_from_array(array: np.ndarray, kind: str, shape_type: str = "polygon") -> list[Shape]:
    """Vertices sent as an array (stream kinds ``shapes`` and ``points``) as shapes.

    ``points``: an (N, D) array, one multi-point shape of its last two columns. ``shapes``:
    (N, D) is one shape, (M, N, D) M shapes, of ``shape_type``; only the last two columns
    (y, x) are taken.
    """
    vertices = np.asarray(array, dtype=float)
    if vertices.ndim not in (2, 3) or vertices.shape[-1] < 2:
        raise UnsupportedDataError(
            f"{kind} are sent as (N, 2) arrays of (y, x) vertices (or (M, N, 2) for M shapes), "
            f"got shape {vertices.shape}"
        )
    if kind == "points":
        return [Shape(vertices.reshape(-1, vertices.shape[-1])[:, -2:], "points")]
    if shape_type not in SHAPE_KINDS:
        raise UnsupportedDataError(f"shape_type {shape_type!r}: one of {', '.join(sorted(SHAPE_KINDS))}")
    kind_: Any = shape_type
    blocks = vertices if vertices.ndim == 3 else vertices[None]
    return [Shape(block[:, -2:], kind_) for block in blocks]


def shapes_of_item(kind: str, array: np.ndarray, metadata: Mapping[str, Any] | None = None) -> list[Shape]:
    """What a stream item of kind ``roi_set``, ``shapes`` or ``points`` holds, as shapes."""
    if kind == "roi_set":
        return read_roi_set(array)
    shape_type = str((metadata or {}).get("shape_type", "polygon"))
    return shapes_from_array(array, kind, shape_type)


def split_points(shapes: Sequence[Shape]) -> tuple[list[Shape], np.ndarray]:
    """Outlines apart from points (viewers draw them in different layers): the outlines, and
    every point as one (N, 2) array."""
    outlines = [s for s in shapes if s.kind != "points"]
    points = [s.vertices for s in shapes if s.kind == "points"]
    return outlines, (np.concatenate(points) if points else np.zeros((0, 2)))
