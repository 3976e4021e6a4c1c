"""Formats at their edges: what a format accepts it gives back, or it refuses it at save time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend
from polystore.exceptions import CorruptDataError, InvalidOptionError, UnsupportedDataError


@pytest.fixture
def disk(tmp_path: Path) -> DiskBackend:
    return DiskBackend(root=tmp_path, durable=False)


@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble])
@pytest.mark.parametrize("ext", [".tif", ".ome.tif"])
def test_tiff_refuses_extended_precision_at_save(disk: DiskBackend, dtype: type, ext: str) -> None:
    # TIFF has no sample format wider than 64-bit floats (128-bit complex): tifffile wrote
    # float128 anyway, and the file loaded as an empty float64 array
    widest = np.dtype(np.complex128 if dtype is np.clongdouble else np.float64)
    if np.dtype(dtype).itemsize <= widest.itemsize:
        pytest.skip("long double is double on this platform")
    with pytest.raises(UnsupportedDataError, match=r"\.npy") as refused:
        disk.save(np.arange(6).reshape(2, 3).astype(dtype), f"x{ext}")
    assert np.dtype(dtype).name in str(refused.value)
    assert not disk.exists(f"x{ext}")


def test_tiff_keeps_every_width_it_accepts(disk: DiskBackend) -> None:
    for dtype in ["bool", "int8", "uint64", "float16", "float32", "float64", "complex64", "complex128"]:
        array = np.arange(6).reshape(2, 3).astype(dtype)
        disk.save(array, f"{dtype}.tif")
        back = disk.load(f"{dtype}.tif")
        assert back.dtype == array.dtype and np.array_equal(back, array), dtype


@pytest.mark.parametrize("compress", [False, True])
def test_npz_of_no_arrays_loads_back_as_an_empty_dict(disk: DiskBackend, compress: bool) -> None:
    # an archive without members failed the overlap check's zip(strict=True) when loaded
    disk.save({}, "empty.npz", compress=compress)
    assert disk.load("empty.npz") == {}


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 3)])
def test_imagej_hyperstack_refuses_an_empty_array_at_save(disk: DiskBackend, shape: tuple[int, ...]) -> None:
    # a (0, 5) or (5, 0) hyperstack was written, and loaded as (0, 0)
    with pytest.raises(UnsupportedDataError, match=r"empty.*imagej=True"):
        disk.save(np.zeros(shape, np.uint8), "x.tif", imagej=True)
    assert not disk.exists("x.tif")


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"series": 5}, r"series=5 .*series: 1\)"),
        ({"series": -2}, r"series=-2 .*series: 1\)"),
        ({"level": 2}, r"level=2 .*levels: 1\)"),
        ({"key": 3}, r"key=3 .*pages: 3\)"),
        ({"key": slice(5, 9)}, r"key=slice\(5, 9, None\) .*pages: 3\)"),
    ],
)
def test_tiff_selection_out_of_range_is_an_option_error(
    disk: DiskBackend, options: dict[str, Any], said: str
) -> None:
    # an index past the file's series, levels or pages was reported as a damaged file
    disk.save(np.zeros((3, 4, 5), np.uint16), "x.tif", photometric="minisblack")
    assert disk.load("x.tif", key=2).shape == (4, 5)
    with pytest.raises(InvalidOptionError, match=said):
        disk.load("x.tif", **options)


def test_npz_refuses_a_key_with_a_nul_character(disk: DiskBackend) -> None:
    # zip cuts a member's name at NUL when reading: the array was dropped from the dict, silently
    with pytest.raises(UnsupportedDataError, match=r"NUL.*'a\\x00b'"):
        disk.save({"a\x00b": np.arange(3), "x": np.arange(2)}, "k.npz")
    assert not disk.exists("k.npz")


def test_roi_set_keeps_a_roi_whose_name_has_a_nul_character(disk: DiskBackend) -> None:
    # the ROI's name became its zip entry's name, which zip cuts at NUL when reading: the ROI was
    # dropped from the loaded set, silently
    roifile = pytest.importorskip("roifile")
    named = roifile.ImagejRoi.frompoints(np.array([[1, 2], [3, 4], [5, 6]]))
    named.name = "a\x00b"
    other = roifile.ImagejRoi.frompoints(np.array([[1, 2], [3, 4], [5, 7]]))
    other.name = "x"
    disk.save([named, other], "r.roi.zip")
    back = disk.load("r.roi.zip")
    assert [roi.name for roi in back] == ["a\x00b", "x"]
    assert np.array_equal(back[0].coordinates(), named.coordinates())


def test_a_pt_file_holding_other_objects_is_refused_as_such_not_as_damaged(
    disk: DiskBackend, tmp_path: Path
) -> None:
    # a checkpoint saved elsewhere with NumPy arrays in it was a CorruptDataError that called the
    # file damaged, after torch's own text saying it can still be loaded
    torch = pytest.importorskip("torch")
    torch.save({"w": np.arange(3)}, tmp_path / "other.pt")  # as another program would
    said = r"holds numpy\S+, which weights_only=True.*safe_globals"
    with pytest.raises(UnsupportedDataError, match=said) as refused:
        disk.load("other.pt")
    assert "damaged" not in str(refused.value)
    with torch.serialization.safe_globals([np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                                           type(np.dtype(np.int64))]):
        assert np.array_equal(disk.load("other.pt")["w"], np.arange(3))  # as the message says


def test_a_damaged_pickle_in_a_pt_file_is_still_named_damaged(disk: DiskBackend, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import pickle

    (tmp_path / "cut.pt").write_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])  # torch's legacy form, cut
    with pytest.raises(CorruptDataError, match="damaged"):
        disk.load("cut.pt")


def test_a_csv_of_numbers_with_a_byte_order_mark_loads_as_numbers(disk: DiskBackend, tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a BOM: the first line no longer read as numbers, so the
    # file loaded as a DataFrame whose header was the first row of data
    (tmp_path / "excel.csv").write_bytes("\ufeff1,2\r\n3,4\r\n".encode())
    back = disk.load("excel.csv")
    assert isinstance(back, np.ndarray) and back.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("ext", [".npy", ".npz"])
@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "int4"])
def test_npy_refuses_dtypes_its_header_cannot_name(disk: DiskBackend, ext: str, name: str) -> None:
    # ml_dtypes' types (JAX's bfloat16 among them) were written, and loaded as raw bytes (|V2)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    array = np.arange(3).astype(getattr(ml_dtypes, name))
    for data in (array, {"a": array, "b": np.arange(2)}) if ext == ".npz" else (array,):
        with pytest.raises(UnsupportedDataError, match=rf"{name}.*raw bytes.*astype"):
            disk.save(data, f"x{ext}")
        assert not disk.exists(f"x{ext}")


def test_npy_version_3_header_keeps_unicode_field_names(disk: DiskBackend, tmp_path: Path) -> None:
    # NumPy writes field names outside Latin-1 in a version 3.0 header (UTF-8); it was read as
    # version 2.0 (Latin-1), so the names came back garbled: '名前' as 'å\x90\x8då\x89\x8d'
    array = np.array([(1, 2.5)], dtype=[("名前", "<i4"), ("é", "<f8")])
    with pytest.warns(UserWarning, match="format 3.0"):
        np.save(tmp_path / "named.npy", array)
    assert (tmp_path / "named.npy").read_bytes()[6:8] == b"\x03\x00"
    for options in ({}, {"mmap_mode": "r"}):
        back = disk.load("named.npy", **options)
        assert back.dtype == array.dtype and back.dtype.names == ("名前", "é")
        assert back.tobytes() == array.tobytes()
