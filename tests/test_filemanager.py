"""FileManager copy and move between backends (memory <-> disk), files and directory trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polystore import DiskBackend, FileManager, MemoryBackend, PathEscapeError


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def disk(tmp_path: Path) -> DiskBackend:
    return DiskBackend(root=tmp_path)


@pytest.fixture
def fm(memory: MemoryBackend, disk: DiskBackend) -> FileManager:
    return FileManager({"memory": memory, "disk": disk})


def _plate() -> dict[str, object]:
    """Relative path -> data of a small plate: arrays in nested folders and a JSON document."""
    return {
        "A01.npy": np.arange(12, dtype=np.uint16).reshape(3, 4),
        "A02.npy": np.linspace(0, 1, 6, dtype=np.float32),
        "sub/B01.npy": np.full((2, 2), 7, dtype=np.int64),
        "sub/deep/C01.npy": np.eye(3, dtype=np.float64),
        "metadata.json": {"wells": ["A01", "A02"], "channels": 2},
    }


def _assert_same(actual: object, expected: object) -> None:
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray)
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected


def _fill(fm: FileManager, backend: str, root: str) -> dict[str, object]:
    plate = _plate()
    for relative, data in plate.items():
        fm.save(data, f"{root}/{relative}", backend=backend)
    return plate


# -- memory -> disk ----------------------------------------------------------------------------
def test_copy_file_memory_to_disk_writes_a_real_file(fm: FileManager, tmp_path: Path) -> None:
    array = np.arange(20, dtype=np.int32).reshape(4, 5)
    fm.save(array, "/results/a.npy", backend="memory")
    fm.copy("/results/a.npy", "out/a.npy", "memory", dest_backend="disk")

    on_disk = np.load(tmp_path / "out" / "a.npy")  # materialised in the .npy format
    _assert_same(on_disk, array)
    _assert_same(fm.load("out/a.npy", backend="disk"), array)
    _assert_same(fm.load("/results/a.npy", backend="memory"), array)  # copy keeps the source


def test_copy_tree_memory_to_disk(fm: FileManager, tmp_path: Path) -> None:
    plate = _fill(fm, "memory", "/plate")
    fm.copy("/plate", "exported/plate", backend="memory", dest_backend="disk")

    assert fm.list_files("exported/plate", backend="disk", recursive=True) == sorted(
        f"exported/plate/{relative}" for relative in plate
    )
    for relative, data in plate.items():
        _assert_same(fm.load(f"exported/plate/{relative}", backend="disk"), data)
        _assert_same(fm.load(f"/plate/{relative}", backend="memory"), data)
    assert json.loads((tmp_path / "exported/plate/metadata.json").read_text()) == plate["metadata.json"]
    assert (tmp_path / "exported/plate/sub/deep/C01.npy").is_file()


def test_copied_data_is_independent_of_the_source(fm: FileManager, memory: MemoryBackend) -> None:
    original = np.zeros((2, 3), dtype=np.float32)
    fm.save(original.copy(), "/a.npy", backend="memory")
    fm.copy("/a.npy", "a.npy", "memory", dest_backend="disk")

    in_memory = memory.load("/a.npy")
    in_memory += 5  # mutate the stored object in place
    _assert_same(fm.load("a.npy", backend="disk"), original)


def test_move_file_memory_to_disk_removes_the_source(fm: FileManager) -> None:
    array = np.arange(6, dtype=np.uint8)
    fm.save(array, "/in/x.npy", backend="memory")
    fm.move("/in/x.npy", "moved/x.npy", "memory", dest_backend="disk")

    assert not fm.exists("/in/x.npy", backend="memory")
    assert fm.is_dir("/in", backend="memory")  # only the file moved
    _assert_same(fm.load("moved/x.npy", backend="disk"), array)


def test_move_tree_memory_to_disk_removes_the_source_tree(fm: FileManager, tmp_path: Path) -> None:
    plate = _fill(fm, "memory", "/plate")
    fm.save(np.ones(2), "/other/keep.npy", backend="memory")
    fm.move("/plate", "plate", backend="memory", dest_backend="disk")

    assert not fm.exists("/plate", backend="memory")
    assert fm.list_dir("/", backend="memory") == ["other"]
    for relative, data in plate.items():
        _assert_same(fm.load(f"plate/{relative}", backend="disk"), data)
    on_disk = [p.relative_to(tmp_path / "plate").as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(on_disk) == sorted(plate)


# -- disk -> memory ----------------------------------------------------------------------------
def test_copy_file_disk_to_memory(fm: FileManager, disk: DiskBackend) -> None:
    array = np.arange(9, dtype=np.float64).reshape(3, 3)
    disk.save(array, "src/a.npy")
    fm.copy("src/a.npy", "/cache/a.npy", "disk", dest_backend="memory")

    _assert_same(fm.load("/cache/a.npy", backend="memory"), array)
    assert fm.is_dir("/cache", backend="memory")
    _assert_same(fm.load("src/a.npy", backend="disk"), array)


def test_copy_tree_disk_to_memory(fm: FileManager) -> None:
    plate = _fill(fm, "disk", "plate")
    fm.copy("plate", "/loaded", backend="disk", dest_backend="memory")

    assert fm.list_files("/loaded", backend="memory", recursive=True) == sorted(
        f"/loaded/{relative}" for relative in plate
    )
    assert fm.list_dir("/loaded", backend="memory") == ["A01.npy", "A02.npy", "metadata.json", "sub"]
    for relative, data in plate.items():
        _assert_same(fm.load(f"/loaded/{relative}", backend="memory"), data)
        _assert_same(fm.load(f"plate/{relative}", backend="disk"), data)


def test_move_tree_disk_to_memory_removes_the_directory(fm: FileManager, tmp_path: Path) -> None:
    plate = _fill(fm, "disk", "plate")
    fm.move("plate", "/plate", backend="disk", dest_backend="memory")

    assert not (tmp_path / "plate").exists()
    assert not fm.exists("plate", backend="disk")
    for relative, data in plate.items():
        _assert_same(fm.load(f"/plate/{relative}", backend="memory"), data)


def test_move_file_disk_to_memory(fm: FileManager, tmp_path: Path) -> None:
    array = np.arange(4, dtype=np.int16)
    fm.save(array, "a.npy", backend="disk")
    fm.move("a.npy", "/a.npy", "disk", dest_backend="memory")

    assert not (tmp_path / "a.npy").exists()
    _assert_same(fm.load("/a.npy", backend="memory"), array)


# -- edges -------------------------------------------------------------------------------------
def test_copy_whole_memory_store_from_its_root(fm: FileManager) -> None:
    plate = _fill(fm, "memory", "/")
    fm.copy("/", "snapshot", backend="memory", dest_backend="disk")
    for relative, data in plate.items():
        _assert_same(fm.load(f"snapshot/{relative}", backend="disk"), data)


def test_copy_missing_source_across_backends_raises(fm: FileManager, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fm.copy("/absent.npy", "absent.npy", "memory", dest_backend="disk")
    assert not (tmp_path / "absent.npy").exists()


def test_move_missing_source_across_backends_raises(fm: FileManager) -> None:
    with pytest.raises(FileNotFoundError):
        fm.move("absent", "/absent", "disk", dest_backend="memory")
    assert not fm.exists("/absent", backend="memory")


def test_copy_and_move_within_one_backend(fm: FileManager) -> None:
    plate = _fill(fm, "memory", "/plate")
    fm.copy("/plate", "/copy", backend="memory")
    fm.move("/copy", "/moved", backend="memory", dest_backend="memory")

    assert not fm.exists("/copy", backend="memory")
    for relative, data in plate.items():
        _assert_same(fm.load(f"/moved/{relative}", backend="memory"), data)
        _assert_same(fm.load(f"/plate/{relative}", backend="memory"), data)


# -- disk -> disk, memory -> memory (two stores of one kind) ------------------------------------
def _tiff_a_load_and_save_would_change(path: Path) -> bytes:
    """A compressed TIFF with a description and a private tag: bytes a decode and encode change."""
    import tifffile

    tifffile.imwrite(
        path, np.arange(64, dtype=np.uint16).reshape(8, 8), description="made by a microscope",
        compression="zlib", extratags=[(65000, "s", 0, "acquisition settings", True)],
    )
    return path.read_bytes()


def test_copy_between_two_disk_backends_copies_the_bytes(tmp_path: Path) -> None:
    # the file was loaded and saved again: tags, description and compression were lost
    (tmp_path / "a").mkdir()
    original = _tiff_a_load_and_save_would_change(tmp_path / "a" / "x.tif")
    (tmp_path / "a" / "plate" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "plate" / "sub" / "y.tif").write_bytes(original)
    fm = FileManager({"a": DiskBackend(root=tmp_path / "a"), "b": DiskBackend(root=tmp_path / "b")})

    fm.copy("x.tif", "out/x.tif", "a", dest_backend="b")
    fm.copy("plate", "plate", "a", dest_backend="b")
    fm.copy("x.tif", "same.tif", "a")  # within one backend, as before

    assert (tmp_path / "b" / "out" / "x.tif").read_bytes() == original
    assert (tmp_path / "b" / "plate" / "sub" / "y.tif").read_bytes() == original
    assert (tmp_path / "a" / "same.tif").read_bytes() == original
    fm.move("out/x.tif", "moved.tif", "b", dest_backend="a")
    assert (tmp_path / "a" / "moved.tif").read_bytes() == original
    assert not (tmp_path / "b" / "out" / "x.tif").exists()


def test_copy_between_two_disk_backends_stays_in_each_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "secret.npy").write_bytes(b"secret")
    (tmp_path / "a" / "leak.npy").symlink_to(tmp_path / "secret.npy")
    fm = FileManager({"a": DiskBackend(root=tmp_path / "a"), "b": DiskBackend(root=tmp_path / "b")})
    with pytest.raises(PathEscapeError):
        fm.copy("leak.npy", "leak.npy", "a", dest_backend="b")
    with pytest.raises(PathEscapeError):
        fm.copy("leak.npy", "../escaped.npy", "a", dest_backend="b")
    assert not (tmp_path / "b" / "leak.npy").exists() and not (tmp_path / "escaped.npy").exists()


def test_copy_between_two_memory_backends_makes_independent_objects() -> None:
    # the copy was the source's very array: changing one changed the other
    fm = FileManager({"m1": MemoryBackend(), "m2": MemoryBackend()})
    array, nested = np.zeros(3), np.ones(2)
    fm.save(array, "/a.npy", "m1")
    fm.save(nested, "/tree/b.npy", "m1")
    fm.copy("/a.npy", "/a.npy", "m1", dest_backend="m2")
    fm.copy("/tree", "/tree", "m1", dest_backend="m2")
    array[:] = 5
    nested[:] = 5
    _assert_same(fm.load("/a.npy", "m2"), np.zeros(3))
    _assert_same(fm.load("/tree/b.npy", "m2"), np.ones(2))
    fm.move("/a.npy", "/moved.npy", "m1", dest_backend="m2")  # a move hands the object over
    assert fm.load("/moved.npy", "m2") is array and not fm.exists("/a.npy", "m1")
