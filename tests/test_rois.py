"""ROI sets <-> shapes (arrays of vertices): polystore.rois, the one place they are converted."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("roifile")
from roifile import ROI_TYPE, ImagejRoi

from polystore.exceptions import PolystoreError, UnsupportedDataError
from polystore.rois import (
    ELLIPSE_VERTICES,
    Shape,
    read_roi_set,
    roi_set_bytes,
    rois_from_shapes,
    shapes_from_array,
    shapes_from_rois,
    shapes_of_item,
    split_points,
)


def test_every_kind_survives_a_trip_through_imagej_bytes() -> None:
    shapes = [
        Shape(np.array([[3.0, 2.0], [3, 12], [8, 12], [8, 2]]), "rectangle", "box", {"channel": 1}),
        Shape(np.array([[0.0, 0.0], [0, 10], [6, 10], [6, 0]]), "ellipse", "oval", {"z": 2, "t": 0}),
        Shape(np.array([[1.0, 1.0], [4, 8], [9, 2]]), "polygon", "triangle", {"plane": 4}),
        Shape(np.array([[1.0, 1.0], [4, 8], [9, 2]]), "path", "open"),
        Shape(np.array([[1.5, 2.5], [7.5, 9.5]]), "line", "cut"),
        Shape(np.array([[5.0, 6.0], [7, 8]]), "points", "dots"),
    ]
    back = read_roi_set(roi_set_bytes(shapes))
    assert back == shapes
    rois = rois_from_shapes(shapes)
    assert [r.roitype for r in rois] == [ROI_TYPE.RECT, ROI_TYPE.OVAL, ROI_TYPE.POLYGON, ROI_TYPE.POLYLINE,
                                         ROI_TYPE.LINE, ROI_TYPE.POINT]
    # ImageJ's positions count from 1 (0: every plane); ours from 0
    assert (rois[0].c_position, rois[1].z_position, rois[1].t_position, rois[2].position) == (2, 3, 1, 5)
    assert rois[3].c_position == rois[3].z_position == rois[3].t_position == 0


def test_rotated_boxes_keep_their_outline_and_names_default_as_roimanager_does() -> None:
    diamond = np.array([[5.0, 10.0], [10.0, 15.0], [15.0, 10.0], [10.0, 5.0]])  # a square turned 45 degrees
    ellipse, rectangle = rois_from_shapes([Shape(diamond, "ellipse"), Shape(diamond, "rectangle")])
    assert ellipse.roitype == ROI_TYPE.POLYGON and len(ellipse.coordinates()) == ELLIPSE_VERTICES
    points = ellipse.coordinates()[:, ::-1]
    np.testing.assert_allclose(np.hypot(*(points - 10).T), 5 / np.sqrt(2), rtol=1e-3)
    assert rectangle.roitype == ROI_TYPE.POLYGON
    np.testing.assert_allclose(rectangle.coordinates()[:, ::-1], diamond)
    assert (ellipse.name, rectangle.name) == ("0001", "0002")


def test_roifile_rois_and_composites() -> None:
    single = ImagejRoi(roitype=ROI_TYPE.RECT, left=2, top=3, right=12, bottom=8, name="one")
    assert read_roi_set(single.tobytes()) == [
        Shape(np.array([[3.0, 2.0], [3, 12], [8, 12], [8, 2]]), "rectangle", "one")]
    freehand = ImagejRoi.frompoints([[0, 0], [5, 0], [5, 5]])
    freehand.roitype = ROI_TYPE.FREEHAND
    (outline,) = shapes_from_rois([freehand])
    assert outline.kind == "polygon" and outline.vertices.tolist() == [[0, 0], [0, 5], [5, 5]]


def test_arrays_of_vertices_from_a_stream() -> None:
    one = shapes_from_array(np.array([[1, 2], [3, 4], [5, 0]]), "shapes", "path")
    assert [s.kind for s in one] == ["path"] and one[0].vertices.shape == (3, 2)
    many = shapes_from_array(np.zeros((4, 3, 3)), "shapes")  # 4 shapes of 3 vertices, a leading axis
    assert len(many) == 4 and all(s.vertices.shape == (3, 2) for s in many)
    (points,) = shapes_of_item("points", np.array([[1.0, 2.0, 3.0]]), {})
    assert points.kind == "points" and points.vertices.tolist() == [[2.0, 3.0]]
    outlines, dots = split_points([*one, points])
    assert outlines == one and dots.tolist() == [[2.0, 3.0]]
    payload = np.frombuffer(roi_set_bytes(one), dtype=np.uint8)
    assert shapes_of_item("roi_set", payload) == [Shape(one[0].vertices, "path", "0001")]


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Shape(np.zeros((3, 3)), "polygon"),
        lambda: Shape(np.zeros((3, 2)), "blob"),  # type: ignore[arg-type]
        lambda: Shape(np.zeros((3, 2)), "polygon", position={"channel": -1}),
        lambda: Shape(np.zeros((3, 2)), "polygon", position={"well": 1}),
        lambda: shapes_from_array(np.zeros(5), "shapes"),
        lambda: shapes_from_array(np.zeros((3, 2)), "shapes", "hexagon"),
        lambda: read_roi_set(b"not a zip"),
        # a bare ValueError from roifile; NaN vertices were written as -2147483648
        lambda: roi_set_bytes([Shape(np.zeros((0, 2)), "polygon", "empty")]),
        lambda: rois_from_shapes([Shape(np.array([[np.nan, 2.0], [3.0, 4.0], [5.0, 5.0]]), "polygon")]),
    ],
)
def test_bad_shapes_are_refused_with_our_error(bad) -> None:
    with pytest.raises(UnsupportedDataError) as caught:
        bad()
    assert isinstance(caught.value, PolystoreError)
