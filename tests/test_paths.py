"""Paths and names: one rule for disk and memory (docs/backends.md, "Paths").

'/' separates names and every other character (backslash too) belongs to a name; a path ending
in '/' names a directory; a name up to the filesystem's 255 bytes works (the temporary name of
an atomic write stays short); NUL, bytes and None are refused with our error, for every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend, FileManager, MemoryBackend, PathEscapeError, PolystoreError
from polystore.atomic import atomic_update_json, atomic_write
from polystore.base import StorageBackend
from polystore.exceptions import (
    InvalidPathError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    PathTypeError,
)


@pytest.fixture(params=["disk-rooted", "disk-cwd", "memory"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StorageBackend]:
    if request.param == "disk-rooted":
        yield DiskBackend(root=tmp_path)
    elif request.param == "disk-cwd":
        monkeypatch.chdir(tmp_path)
        yield DiskBackend()
    else:
        yield MemoryBackend()


# -- a trailing slash names a directory ---------------------------------------------------------


def test_saving_a_file_at_a_path_ending_in_slash_is_refused(backend: StorageBackend) -> None:
    with pytest.raises(IsADirectoryStorageError, match=r"ending in '/' names a directory"):
        backend.save(np.arange(3), "x.npy/")
    assert not backend.exists("x.npy")


def test_a_file_named_with_a_trailing_slash_is_not_found_as_a_file(backend: StorageBackend) -> None:
    backend.save(np.arange(3), "x.npy")
    backend.ensure_directory("folder")
    assert not backend.exists("x.npy/") and not backend.is_file("x.npy/")
    assert backend.exists("folder/") and backend.is_dir("folder/")
    with pytest.raises(NotADirectoryStorageError):
        backend.load("x.npy/")
    assert backend.list_files("folder/") == []


@pytest.mark.parametrize("operation", ["copy", "move"])
@pytest.mark.parametrize("destination", ["new/", "existing/"])
def test_a_file_is_not_copied_or_moved_to_a_path_ending_in_slash(
    backend: StorageBackend, operation: str, destination: str
) -> None:
    # move (and the memory backend's copy) made a file named 'new' of 'new/', as a save is not
    backend.save(np.arange(3), "x.npy")
    backend.ensure_directory("existing")
    said = r"ending in '/' names a directory" if destination == "new/" else "directory"
    with pytest.raises(IsADirectoryStorageError, match=said):
        getattr(backend, operation)("x.npy", destination)
    assert backend.is_file("x.npy") and not backend.exists("new")
    assert backend.list_dir("existing") == []


# -- long names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [224, 240, 251, 255])
def test_names_up_to_255_bytes_save_load_and_list(backend: StorageBackend, length: int) -> None:
    name = "n" * (length - len(".npy")) + ".npy"
    backend.save(np.arange(3), f"d/{name}")
    np.testing.assert_array_equal(backend.load(f"d/{name}"), np.arange(3))
    assert backend.list_files("d") == [f"d/{name}"]
    backend.copy(f"d/{name}", f"e/{name}")
    assert backend.exists(f"e/{name}")


def test_a_name_of_255_bytes_in_multibyte_characters_works_on_disk(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    name = "é" * 125 + ".txt"  # 250 + 4 bytes in UTF-8
    disk.save("text", name)
    assert disk.load(name) == "text"


def test_a_name_over_255_bytes_is_our_error_on_disk(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    with pytest.raises(InvalidPathError, match="longer than the filesystem allows"):
        disk.save(np.arange(3), "n" * 256 + ".npy")
    assert os.listdir(tmp_path) == []


def test_locked_and_json_writes_take_long_names(tmp_path: Path) -> None:
    target = tmp_path / ("j" * 250 + ".json")
    atomic_update_json(target, lambda value: {"n": 1})
    with atomic_write(tmp_path / ("t" * 251 + ".txt"), lock=True) as handle:
        handle.write("x")
    assert (tmp_path / ("t" * 251 + ".txt")).read_text() == "x"


# -- what a path may be -------------------------------------------------------------------------
OPERATIONS: dict[str, Callable[[StorageBackend, Any], object]] = {
    "save": lambda b, p: b.save(np.zeros(2), p),
    "load": lambda b, p: b.load(p),
    "exists": lambda b, p: b.exists(p),
    "is_file": lambda b, p: b.is_file(p),
    "stat": lambda b, p: b.stat(p),
    "list_files": lambda b, p: b.list_files(p),
    "list_dir": lambda b, p: b.list_dir(p),
    "ensure_directory": lambda b, p: b.ensure_directory(p),
    "delete": lambda b, p: b.delete(p),
    "delete_all": lambda b, p: b.delete_all(p),
    "copy-from": lambda b, p: b.copy(p, "dst.npy"),
    "copy-to": lambda b, p: b.copy("src.npy", p),
    "move-to": lambda b, p: b.move("src.npy", p),
}
BAD_PATHS: dict[str, tuple[Any, type[Exception]]] = {
    "nul": ("a\0b.npy", ValueError),
    "bytes": (b"a.npy", TypeError),
    "none": (None, TypeError),
    "int": (3, TypeError),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("bad", list(BAD_PATHS))
def test_nul_bytes_and_none_paths_are_our_error(backend: StorageBackend, operation: str, bad: str) -> None:
    path, builtin = BAD_PATHS[bad]
    backend.save(np.zeros(2), "src.npy")
    with pytest.raises(InvalidPathError) as caught:
        OPERATIONS[operation](backend, path)
    assert isinstance(caught.value, builtin) and isinstance(caught.value, PolystoreError)
    if bad != "nul":
        assert isinstance(caught.value, PathTypeError)
    assert backend.list_files(".") in (["src.npy"], ["./src.npy"])


def test_file_manager_passes_the_same_errors(tmp_path: Path) -> None:
    fm = FileManager({"disk": DiskBackend(root=tmp_path), "memory": MemoryBackend()})
    for name in ("disk", "memory"):
        with pytest.raises(PathTypeError, match="not None"):
            fm.save(np.zeros(2), None, name)  # type: ignore[arg-type]


# -- one rule for backslash, '..', and doubled separators -----------------------------------------


def test_backslash_is_part_of_a_name_on_every_backend(backend: StorageBackend) -> None:
    backend.save(np.arange(2), "plate\\A01.npy")
    assert backend.list_files(".") in (["plate\\A01.npy"], ["./plate\\A01.npy"])
    assert not backend.exists("plate/A01.npy") and not backend.is_dir("plate")
    np.testing.assert_array_equal(backend.load("plate\\A01.npy"), np.arange(2))


def test_doubled_separators_and_dots_name_the_same_entry(backend: StorageBackend) -> None:
    backend.save(np.arange(2), "a//b/./c.npy")
    assert backend.is_file("a/b/c.npy") and backend.is_file("a/x/../b/c.npy")


@pytest.mark.parametrize("path", ["../x.npy", "a/../../x.npy"])
def test_climbing_out_with_dotdot_is_refused_on_rooted_backends(tmp_path: Path, path: str) -> None:
    for backend in (DiskBackend(root=tmp_path / "root"), MemoryBackend()):
        with pytest.raises(PathEscapeError, match="outside this backend's root"):
            backend.save(np.zeros(2), path)
    assert not (tmp_path / "x.npy").exists()


def test_a_root_that_does_not_exist_yet_is_made_by_the_first_write(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path / "later" / "root")
    assert not disk.exists("a.npy")
    with pytest.raises(FileNotFoundError):
        disk.load("a.npy")
    disk.save(np.arange(2), "a.npy")
    assert (tmp_path / "later" / "root" / "a.npy").is_file()



@pytest.mark.parametrize("path", ["../x.npy", "a\0b.npy", "x.npy/", "", "/"])
def test_a_refused_path_is_refused_every_time(tmp_path: Path, path: str) -> None:
    # the memory backend memoises parsed paths: a refusal must never be remembered as a key
    for backend in (DiskBackend(root=tmp_path / "root"), MemoryBackend()):
        backend.save(np.zeros(2), "x.npy")
        for _ in range(3):
            with pytest.raises(PolystoreError):
                backend.save(np.zeros(2), path)
        assert backend.list_files(".") == ["x.npy"]
