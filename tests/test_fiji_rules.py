"""The Fiji bridge's pure-Python rules (no JVM): dtype table, axes, and how items become windows."""

from __future__ import annotations

import numpy as np
import pytest

from polystore.exceptions import UnsupportedDataError, ViewerError
from polystore.streaming.protocol import path_metadata
from polystore_fiji.control import array_of_request
from polystore_fiji.convert import (
    DTYPE_RULES,
    check_axes,
    default_axes,
    display_range,
    dtype_rule,
    from_tzcyx,
    squeezed_axes,
    stored_hyperstack,
    to_tzcyx,
)
from polystore_fiji.hyperstack import item_axes, item_planes
from polystore_fiji.placement import PlaneKey, WindowPlacer


@pytest.mark.parametrize("dtype", sorted(DTYPE_RULES, key=str), ids=str)
def test_every_rule_stores_an_imagej_pixel_type_and_undoes_itself(dtype: np.dtype) -> None:
    rule = DTYPE_RULES[dtype]
    assert rule.stored in (np.uint8, np.uint16, np.float32)
    values = np.array([0, 1, 100], dtype=dtype) if dtype != np.bool_ else np.array([False, True, True])
    stored = rule.to_stored(values) if rule.to_stored else values
    assert stored.dtype == rule.stored
    restored = rule.from_stored(stored) if rule.from_stored else stored
    np.testing.assert_array_equal(restored.astype(dtype), values)


def test_the_stated_rules_for_non_native_dtypes() -> None:
    assert dtype_rule(np.int16).signed16
    shift = DTYPE_RULES[np.dtype(np.int16)].to_stored
    assert shift is not None
    np.testing.assert_array_equal(shift(np.array([-32768, -1, 0, 32767], np.int16)), [0, 32767, 32768, 65535])
    mask = DTYPE_RULES[np.dtype(np.bool_)].to_stored
    assert mask is not None
    np.testing.assert_array_equal(mask(np.array([True, False])), [255, 0])
    assert dtype_rule(">u2").stored == np.uint16  # big-endian input: same rule
    with pytest.raises(UnsupportedDataError, match="ImageJ cannot hold complex64 pixels; supported dtypes"):
        dtype_rule(np.complex64)


def test_axes_default_to_trailing_tzcyx_and_are_checked() -> None:
    assert [default_axes(n) for n in (2, 3, 4, 5)] == ["YX", "CYX", "ZCYX", "TZCYX"]
    assert check_axes("zyx", 3) == "ZYX"
    with pytest.raises(UnsupportedDataError, match="2 to 5 dimensions"):
        default_axes(6)
    with pytest.raises(UnsupportedDataError, match="no Y and X"):
        check_axes("TZC", 3)
    with pytest.raises(UnsupportedDataError, match="a repeated letter"):
        check_axes("ZZYX", 4)


def test_to_and_from_tzcyx_are_inverse() -> None:
    array = np.arange(3 * 4 * 5 * 6).reshape(3, 4, 5, 6)
    full = to_tzcyx(array, "CZYX")
    assert full.shape == (1, 4, 3, 5, 6)
    np.testing.assert_array_equal(full[0, 2, 1], array[1, 2])
    np.testing.assert_array_equal(from_tzcyx(full, "CZYX"), array)
    assert squeezed_axes({"T": 1, "Z": 4, "C": 3, "Y": 5, "X": 6}) == "ZCYX"
    with pytest.raises(UnsupportedDataError, match="has 4 Z planes"):
        from_tzcyx(full, "CYX")


def test_stored_hyperstack_applies_the_rule() -> None:
    stored, rule = stored_hyperstack(np.array([[-1, 2]], dtype=np.int8))
    assert stored.dtype == np.float32 and stored.shape == (1, 1, 1, 1, 2) and not rule.native


def test_display_range_ignores_non_finite_values() -> None:
    assert display_range(np.array([[np.nan, 2.0, np.inf, 5.0]], np.float32)) == (2.0, 5.0)
    assert display_range(np.full((2, 2), 7, np.uint16)) == (7.0, 8.0)


def test_plate_items_group_into_one_window_per_well() -> None:
    placer = WindowPlacer()
    meta = path_metadata("plate1/B03_s2_w3_z4_t5.tif")
    placement = placer.place("plate1/B03_s2_w3_z4_t5.tif", meta)
    assert placement.title == "plate1/B03"
    assert placement.origin == PlaneKey.of(channel=2, z=3, field=1, t=4)  # 0-based: s2 is field 1
    assert placer.title("B03_s1_w1.tif", path_metadata("B03_s1_w1.tif")) == "B03"
    assert placer.title("results/blurred.ome.tif", {}) == "results/blurred"
    # a header without plate keys: the path is read as the sender would have
    assert placer.title("plate1/B03_s2_w3.tif", {}) == "plate1/B03"
    planes, dtype, signed16 = item_planes(np.zeros((8, 9), np.uint16), meta, placement.origin)
    assert [key for key, _ in planes] == [PlaneKey.of(channel=2, z=3, field=1, t=4)]
    assert dtype == np.uint16 and not signed16


def test_a_convention_or_pattern_given_to_the_bridge_reads_the_paths() -> None:
    from polystore.plates import PlateNameError

    phenix = WindowPlacer("opera-phenix").place("P2/r02c11f03p01-ch2sk1fk1fl1.tiff", {})
    assert (phenix.title, phenix.origin) == ("P2/B11", PlaneKey.of(channel=1, z=0, field=2, t=0))
    own = WindowPlacer(r"(?P<plate>\w+)/(?P<well>[A-Z]\d\d)-field(?P<site>\d)")
    placement = own.place("exp/C05-field2.tif", {"well": "A01"})  # the path, not the header
    assert (placement.title, placement.origin) == ("exp/C05", PlaneKey.of(field=1))
    with pytest.raises(PlateNameError):
        WindowPlacer("no-such-instrument")
    with pytest.raises(PlateNameError):
        WindowPlacer(r"(?P<well>")


def test_indices_given_as_names_take_their_places_by_name() -> None:
    """Incucyte names its channels (phase, green) and time points (a time stamp), no numbers:
    one window per well; channels in the convention's order, time points in time order."""
    placer = WindowPlacer()
    paths = [f"VID1_{channel}_B2_1_00d{hour}h00m.tif"
             for channel in ("green", "phase") for hour in ("12", "04")]
    origins = {path: placer.place(path, path_metadata(path)).origin for path in paths}
    assert {placer.title(path, path_metadata(path)) for path in paths} == {"VID1/B02"}
    order = sorted(paths, key=lambda path: (origins[path].channel, origins[path].frame))
    assert order == [
        "VID1_phase_B2_1_00d04h00m.tif", "VID1_phase_B2_1_00d12h00m.tif",
        "VID1_green_B2_1_00d04h00m.tif", "VID1_green_B2_1_00d12h00m.tif",
    ]
    # a part that is no index (a pattern's stain) keeps its frames apart along T
    stained = WindowPlacer(r"(?P<well>[A-Z]\d\d)-(?P<stain>[a-z]+)")
    assert stained.place("B02-dapi.tif", {}).origin != stained.place("B02-gfp.tif", {}).origin


def test_a_multi_plane_item_is_placed_from_its_own_position() -> None:
    stack = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # ZCYX
    placement = WindowPlacer().place("x.tif", {"well": "A01", "channel": 1, "site": 2})
    planes, _, _ = item_planes(stack, {}, placement.origin)
    keys = [key for key, _ in planes]
    assert keys[:3] == [PlaneKey.of(1, 0, 2), PlaneKey.of(2, 0, 2), PlaneKey.of(3, 0, 2)]
    assert keys[-1] == PlaneKey.of(3, 1, 2)
    np.testing.assert_array_equal(planes[-1][1], stack[1, 2])
    assert item_axes(np.zeros((10, 12, 3), np.uint8), {}) == "YXC"  # an RGB picture: its samples are channels
    assert item_axes(np.zeros((3, 10, 12), np.uint8), {}) is None


def test_names_with_digits_that_are_no_numbers_sort_as_text() -> None:
    """``"²"`` is a digit to ``str.isdigit`` but no number to ``int()``: a name holding one sorts
    as text, after the numbers, instead of failing the item."""
    from polystore.plates import natural_key

    assert natural_key("w1²") == ((1, 0, "w"), (0, 1, ""), (1, 0, "²"))
    pattern = WindowPlacer(r"(?P<well>[A-Z]\d\d)_(?P<channel_name>[^_.]+)")  # channels named, not numbered
    squared, plain = (pattern.place(f"B02_{name}.tif", {}).origin for name in ("1²", "12"))
    assert sorted([plain.channel, squared.channel]) == [squared.channel, plain.channel]  # 1 before 12
    row_as_list = WindowPlacer().place("odd/row.tif", {"row": [1], "column": 2})
    assert row_as_list.title == "odd/row"  # a header that is no plate position: the path places it


def test_a_window_refuses_more_positions_than_it_may_hold() -> None:
    """Every combination of the channels, z and frames named is a position: 41 items each naming
    a new one of each would make 41**3 = 68921 positions, over MAX_WINDOW_PLANES (no JVM: the
    check comes before anything is made)."""
    from polystore.exceptions import LimitExceededError
    from polystore_fiji.window import MAX_WINDOW_PLANES, HyperstackWindow, PreparedPlane

    window = HyperstackWindow("w", 1, 1, np.dtype(np.uint16), np.dtype(np.uint16), False, show=False)
    for index in range(40):
        window.put([PreparedPlane(PlaneKey.of(index, index, index), None, f"p{index}", None, index, (1, 1))])
    assert window.sizes == (40, 40, 40) and 40**3 <= MAX_WINDOW_PLANES < 41**3
    refused = f"to 41 channels x 41 z x 41 frames .*limit of {MAX_WINDOW_PLANES} positions"
    with pytest.raises(LimitExceededError, match=refused):
        window.put([PreparedPlane(PlaneKey.of(40, 40, 40), None, "p40", None, 40, (1, 1))])
    assert window.sizes == (40, 40, 40)  # nothing of the refused plane recorded


@pytest.mark.parametrize(("array", "metadata", "why"), [
    (np.ones((8, 8), np.complex64), {}, "ImageJ cannot hold complex64"),
    (np.arange(8, dtype=np.uint16), {}, "2 to 5 dimensions"),
    (np.ones((1,) * 6 + (4, 4), np.uint8)[0], {}, "2 to 5 dimensions"),
    (np.ones((8, 8), np.uint16), {"axes": "ZYX"}, "3 letters for an array of 2"),
], ids=["complex", "1-d", "6-d", "wrong-axes"])
def test_an_image_imagej_cannot_hold_is_refused_by_the_pipeline(
    array: np.ndarray, metadata: dict[str, str], why: str
) -> None:
    """The bridge refused these ("complex: refused"), but only in its own log and status: the
    pipeline's save() returned, the item was acknowledged, and no window ever came."""
    from net_helpers import free_port_block

    from polystore import FileManager
    from polystore_fiji import FijiStreamingBackend

    backend = FijiStreamingBackend(port=free_port_block(3), probe_timeout=0.2)
    fm = FileManager({"fiji": backend})
    try:
        with pytest.raises(UnsupportedDataError, match=why):
            fm.save(array, "run/x.tif", backend="fiji", metadata=metadata)
        with pytest.raises(UnsupportedDataError, match=why):
            backend.frame(array.shape, array.dtype, "run/x.tif", metadata=metadata)
        assert backend.sent == 0
    finally:
        backend.close(0)


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**40, 2**24], [2**16] * 4])
def test_a_put_image_whose_shape_wraps_int64_is_refused(shape: list[int]) -> None:
    # each size is within the limits, but NumPy's int64 product wraps to 0: an empty buffer
    # passed the size check and reshape failed with NumPy's bare ValueError
    assert int(np.prod(shape)) == 0
    with pytest.raises(ViewerError, match="is not a"):
        array_of_request({"shape": shape, "dtype": "uint8"}, [memoryview(b"")])


def test_a_put_image_request_is_checked_before_it_is_read() -> None:
    good = np.arange(12, dtype=np.uint16).reshape(3, 4)
    np.testing.assert_array_equal(
        array_of_request({"shape": [3, 4], "dtype": "<u2"}, [memoryview(good.tobytes())]), good
    )
    for params, match in [
        ({"shape": [3] * 33, "dtype": "u1"}, "at most 32 sizes"),
        ({"shape": [2**49, 1], "dtype": "u1"}, "at most 32 sizes of at most"),
        ({"shape": [3, 4], "dtype": "nonsense"}, "not a NumPy dtype"),
        ({"shape": [3, 4], "dtype": "O"}, "is not a"),
        ({"shape": [3, 5], "dtype": "<u2"}, "is not a"),
    ]:
        with pytest.raises(ViewerError, match=match):
            array_of_request(params, [memoryview(good.tobytes())])
