"""A contract test suite that any storage backend can be run against.

Subclass :class:`BackendContractTests` in a test file, give it a ``backend`` fixture that
returns a fresh, empty backend, and pytest runs every contract test on it::

    import pytest
    from polystore.testing import BackendContractTests

    class TestMyBackend(BackendContractTests):
        sample_extension = ".npy"  # the extension your backend stores arrays under

        @pytest.fixture
        def backend(self, tmp_path):
            return MyBackend(tmp_path)

pytest shows the values behind a failed ``assert`` only in modules it rewrites; for
detailed failure messages call ``pytest.register_assert_rewrite("polystore.testing")`` in
your ``conftest.py`` (before anything imports this module).

The tests use only the methods of the :class:`~polystore.base.StorageBackend` contract
(relative, ``/``-separated paths; arrays as the data), so a backend built on nothing but
the primitives passes as well as one that overrides the derived methods. Errors are checked
against the builtin exceptions (``FileNotFoundError``, ``NotADirectoryError``, ...), which
every polystore error also inherits.

This module imports pytest: import it from tests only.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from polystore.arrays import framework_of, to_numpy
from polystore.base import PathLike, StorageBackend
from polystore.exceptions import BatchError

__all__ = ["BackendContractTests"]


def _as_numpy(value: Any) -> np.ndarray:
    """``value`` (an array of any framework, or array-like) as a NumPy array."""
    return to_numpy(value) if framework_of(value) is not None else np.asarray(value)


def _normalized(path: PathLike) -> str:
    """A path without leading ``/`` or ``./``, for comparing listings across backends."""
    return posixpath.normpath(os.fspath(path).replace("\\", "/")).lstrip("/")


def _normalized_all(paths: Iterable[PathLike]) -> list[str]:
    return [_normalized(path) for path in paths]


class BackendContractTests:
    """The storage contract as pytest tests; subclass it and provide a ``backend`` fixture.

    ``backend`` must return a fresh, empty :class:`~polystore.base.StorageBackend` for each
    test. ``sample_extension`` is the file extension the tests save arrays under (the
    backend must round-trip a 2-D array of each of ``sample_dtypes`` through it).
    """

    sample_extension: ClassVar[str] = ".npy"
    sample_dtypes: ClassVar[tuple[str, ...]] = ("uint8", "uint16", "int32", "float32", "float64")

    # -- helpers ---------------------------------------------------------------------------
    def name(self, stem: str) -> str:
        """A file name with the sample extension: ``name("a")`` -> ``"a.npy"``."""
        return f"{stem}{self.sample_extension}"

    def make_array(self, seed: int, dtype: str = "uint16") -> np.ndarray:
        """A small 2-D array, different for each ``seed`` (values stay below 256)."""
        return (np.arange(12).reshape(3, 4) + 12 * (seed % 20)).astype(dtype)

    def put(self, backend: StorageBackend, path: PathLike, array: np.ndarray) -> np.ndarray:
        """Save a copy of ``array`` at ``path`` (so the caller's array stays a reference)."""
        backend.save(array.copy(), path)
        return array

    def assert_same_array(self, actual: Any, expected: np.ndarray) -> None:
        """Equal values, shape and dtype."""
        loaded = _as_numpy(actual)
        assert loaded.shape == expected.shape, f"shape {loaded.shape} != {expected.shape}"
        assert loaded.dtype == expected.dtype, f"dtype {loaded.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(loaded, expected)

    def assert_loads(self, backend: StorageBackend, path: PathLike, expected: np.ndarray) -> None:
        self.assert_same_array(backend.load(path), expected)

    def make_tree(self, backend: StorageBackend, root: str = "data") -> dict[str, np.ndarray]:
        """Files (saved out of name order) and an empty directory under ``root``.

        Returns relative file path -> the array saved there::

            root/b, root/a, root/c.mask        (files; ``.mask`` + sample extension)
            root/sub/d, root/sub/deep/e.mask
            root/empty/                         (an empty directory)
        """
        layout = {
            self.name("b"): 1,
            self.name("a"): 2,
            self.name("c.mask"): 3,
            f"sub/{self.name('d')}": 4,
            f"sub/deep/{self.name('e.mask')}": 5,
        }
        saved: dict[str, np.ndarray] = {}
        for relative, seed in layout.items():
            saved[relative] = self.put(backend, f"{root}/{relative}", self.make_array(seed))
        backend.ensure_directory(f"{root}/empty")
        return saved

    def mutate_and_save(self, backend: StorageBackend, path: PathLike) -> np.ndarray:
        """Load ``path``, change it in place where it can be, save it back; return the new value."""
        loaded = _as_numpy(backend.load(path))
        if loaded.flags.writeable:
            loaded += 1  # in place: must not reach any other path's data
            changed = loaded
        else:
            changed = loaded + 1
        expected = changed.copy()
        backend.save(changed, path)
        return expected

    # -- save / load -----------------------------------------------------------------------
    def test_save_load_round_trip_keeps_values_and_dtype(self, backend: StorageBackend) -> None:
        for seed, dtype in enumerate(self.sample_dtypes):
            path = f"round/{self.name(dtype)}"
            expected = self.put(backend, path, self.make_array(seed, dtype))
            self.assert_loads(backend, path, expected)

    def test_save_load_accepts_pathlib_paths(self, backend: StorageBackend) -> None:
        path = Path("paths") / self.name("p")
        expected = self.put(backend, path, self.make_array(7))
        self.assert_loads(backend, path, expected)
        self.assert_loads(backend, f"paths/{self.name('p')}", expected)
        assert backend.is_file(path)

    def test_save_overwrites_existing_file(self, backend: StorageBackend) -> None:
        path = f"over/{self.name('x')}"
        self.put(backend, path, np.zeros((2, 2), dtype="float32"))
        replacement = self.put(backend, path, self.make_array(3, "uint16"))
        self.assert_loads(backend, path, replacement)
        assert _normalized_all(backend.list_files("over")) == [path]

    def test_save_creates_missing_parent_directories(self, backend: StorageBackend) -> None:
        path = f"a/b/c/{self.name('x')}"
        expected = self.put(backend, path, self.make_array(1))
        for directory in ("a", "a/b", "a/b/c"):
            assert backend.is_dir(directory), directory
        assert backend.list_dir("a") == ["b"]
        assert backend.list_dir("a/b/c") == [self.name("x")]
        self.assert_loads(backend, path, expected)

    def test_load_missing_path_raises_file_not_found(self, backend: StorageBackend) -> None:
        self.put(backend, f"present/{self.name('here')}", self.make_array(0))
        with pytest.raises(FileNotFoundError):
            backend.load(f"present/{self.name('absent')}")
        with pytest.raises(FileNotFoundError):
            backend.load(f"nowhere/{self.name('absent')}")
        with pytest.raises(FileNotFoundError):
            backend.load("present/no-extension")

    def test_load_directory_raises_is_a_directory(self, backend: StorageBackend) -> None:
        backend.ensure_directory("folder")
        with pytest.raises(IsADirectoryError):
            backend.load("folder")

    def test_save_to_existing_directory_raises_is_a_directory(self, backend: StorageBackend) -> None:
        inside = self.put(backend, f"folder/{self.name('inside')}", self.make_array(2))
        with pytest.raises(IsADirectoryError):
            backend.save(self.make_array(3), "folder")
        assert backend.is_dir("folder")
        self.assert_loads(backend, f"folder/{self.name('inside')}", inside)

    def test_save_below_a_file_raises_not_a_directory(self, backend: StorageBackend) -> None:
        blocker = self.put(backend, self.name("blocker"), self.make_array(4))
        with pytest.raises(NotADirectoryError):
            backend.save(self.make_array(5), f"{self.name('blocker')}/{self.name('x')}")
        self.assert_loads(backend, self.name("blocker"), blocker)

    # -- batches ---------------------------------------------------------------------------
    def test_save_batch_and_load_batch_keep_order(self, backend: StorageBackend) -> None:
        paths = [f"batch/{self.name(stem)}" for stem in ("e", "b", "d", "a", "c")]
        paths.append(f"batch/nested/{self.name('f')}")
        arrays = [self.make_array(seed) for seed in range(len(paths))]
        backend.save_batch([array.copy() for array in arrays], paths)
        for path, array in zip(paths, arrays, strict=True):
            self.assert_loads(backend, path, array)
        loaded = backend.load_batch(paths)
        assert len(loaded) == len(paths)
        for item, array in zip(loaded, arrays, strict=True):
            self.assert_same_array(item, array)
        reversed_loaded = backend.load_batch(paths[::-1])
        for item, array in zip(reversed_loaded, arrays[::-1], strict=True):
            self.assert_same_array(item, array)
        assert backend.load_batch([]) == []

    def test_save_batch_rejects_mismatched_lengths(self, backend: StorageBackend) -> None:
        with pytest.raises(ValueError):
            backend.save_batch([self.make_array(0)], [self.name("one"), self.name("two")])

    def test_save_batch_failure_names_path_and_saves_the_others(self, backend: StorageBackend) -> None:
        backend.ensure_directory("blocked")
        good_first, good_last = self.make_array(1), self.make_array(2)
        paths = [self.name("first"), "blocked", self.name("last")]
        with pytest.raises(BatchError) as caught:
            backend.save_batch([good_first.copy(), self.make_array(9), good_last.copy()], paths)
        failures = caught.value.failures
        assert [(failure.index, _normalized(failure.path)) for failure in failures] == [(1, "blocked")]
        assert isinstance(failures[0].error, IsADirectoryError)
        assert "blocked" in str(caught.value)
        self.assert_loads(backend, self.name("first"), good_first)
        self.assert_loads(backend, self.name("last"), good_last)
        assert backend.is_dir("blocked")

    def test_load_batch_failure_names_path_and_loads_the_others(self, backend: StorageBackend) -> None:
        first = self.put(backend, self.name("first"), self.make_array(1))
        last = self.put(backend, self.name("last"), self.make_array(2))
        missing = self.name("missing")
        with pytest.raises(BatchError) as caught:
            backend.load_batch([self.name("first"), missing, self.name("last")])
        failures = caught.value.failures
        assert [(failure.index, _normalized(failure.path)) for failure in failures] == [(1, missing)]
        assert isinstance(failures[0].error, FileNotFoundError)
        assert missing in str(caught.value)
        results = caught.value.results
        assert results is not None and len(results) == 3
        assert results[1] is None
        self.assert_same_array(results[0], first)
        self.assert_same_array(results[2], last)

    # -- list_files ------------------------------------------------------------------------
    def test_list_files_non_recursive_lists_only_direct_files_sorted(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        found = backend.list_files("data")
        assert found == sorted(found)
        assert _normalized_all(found) == [
            f"data/{self.name('a')}",
            f"data/{self.name('b')}",
            f"data/{self.name('c.mask')}",
        ]

    def test_list_files_recursive_lists_nested_files_sorted(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend)
        found = backend.list_files("data", recursive=True)
        assert found == sorted(found)
        assert _normalized_all(found) == sorted(f"data/{relative}" for relative in saved)

    def test_list_files_returns_loadable_paths(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend)
        found = backend.list_files("data", recursive=True)
        assert len(found) == len(saved)
        for path in found:
            relative = _normalized(path)[len("data/"):]
            self.assert_loads(backend, path, saved[relative])
        nested = backend.list_files("data/sub")
        assert _normalized_all(nested) == [f"data/sub/{self.name('d')}"]
        self.assert_loads(backend, nested[0], saved[f"sub/{self.name('d')}"])

    def test_list_files_pattern_matches_file_names(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        assert _normalized_all(backend.list_files("data", pattern="[ab]*")) == [
            f"data/{self.name('a')}",
            f"data/{self.name('b')}",
        ]
        # matched against the name, not the path: "e*" finds data/sub/deep/e...
        assert _normalized_all(backend.list_files("data", pattern="e*", recursive=True)) == [
            f"data/sub/deep/{self.name('e.mask')}"
        ]
        assert backend.list_files("data", pattern="e*") == []
        assert backend.list_files("data", pattern="zzz*", recursive=True) == []

    def test_list_files_extensions_match_compound_extensions(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        compound = f".mask{self.sample_extension}"
        assert _normalized_all(backend.list_files("data", extensions=[compound])) == [
            f"data/{self.name('c.mask')}"
        ]
        assert _normalized_all(backend.list_files("data", extensions=[compound], recursive=True)) == [
            f"data/{self.name('c.mask')}",
            f"data/sub/deep/{self.name('e.mask')}",
        ]
        assert len(backend.list_files("data", extensions=[self.sample_extension], recursive=True)) == 5
        assert backend.list_files("data", extensions=[".no-such-extension"], recursive=True) == []
        both = backend.list_files("data", pattern="c*", extensions=[compound], recursive=True)
        assert _normalized_all(both) == [f"data/{self.name('c.mask')}"]

    def test_list_files_of_empty_directory_is_empty(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        assert backend.list_files("data/empty") == []
        assert backend.list_files("data/empty", recursive=True) == []

    def test_list_files_missing_directory_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.list_files("no-such-dir")
        with pytest.raises(FileNotFoundError):
            backend.list_files("no-such-dir", recursive=True)

    def test_list_files_on_a_file_raises_not_a_directory(self, backend: StorageBackend) -> None:
        self.put(backend, self.name("single"), self.make_array(0))
        with pytest.raises(NotADirectoryError):
            backend.list_files(self.name("single"))

    # -- list_dir --------------------------------------------------------------------------
    def test_list_dir_names_files_and_directories_sorted(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        names = backend.list_dir("data")
        assert names == sorted([self.name("a"), self.name("b"), self.name("c.mask"), "empty", "sub"])
        assert backend.list_dir("data/sub") == sorted([self.name("d"), "deep"])
        assert backend.list_dir("data/sub/deep") == [self.name("e.mask")]
        assert backend.list_dir("data/empty") == []

    def test_list_dir_missing_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.list_dir("no-such-dir")

    def test_list_dir_on_a_file_raises_not_a_directory(self, backend: StorageBackend) -> None:
        self.put(backend, self.name("single"), self.make_array(0))
        with pytest.raises(NotADirectoryError):
            backend.list_dir(self.name("single"))

    # -- exists / is_file / is_dir / stat ----------------------------------------------------
    def test_exists_is_file_is_dir(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        file_path = f"data/{self.name('a')}"
        assert (backend.exists(file_path), backend.is_file(file_path), backend.is_dir(file_path)) == (
            True,
            True,
            False,
        )
        for directory in ("data", "data/sub", "data/empty"):
            assert (backend.exists(directory), backend.is_file(directory), backend.is_dir(directory)) == (
                True,
                False,
                True,
            ), directory
        for missing in (f"data/{self.name('zz')}", "nowhere", f"{file_path}/below"):
            assert (backend.exists(missing), backend.is_file(missing), backend.is_dir(missing)) == (
                False,
                False,
                False,
            ), missing

    def test_stat_reports_kind_and_size(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        file_path = f"data/{self.name('a')}"
        info = backend.stat(file_path)
        assert info.kind == "file"
        assert info.is_file and not info.is_dir
        assert _normalized(info.path) == file_path
        assert info.size is None or info.size > 0
        assert info.mtime is None or info.mtime > 0
        directory = backend.stat("data/sub")
        assert directory.kind == "directory"
        assert directory.is_dir and not directory.is_file
        assert _normalized(directory.path) == "data/sub"

    def test_stat_missing_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.stat(self.name("absent"))

    # -- delete / delete_all -----------------------------------------------------------------
    def test_delete_file(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend)
        target = f"data/{self.name('a')}"
        backend.delete(target)
        assert not backend.exists(target)
        with pytest.raises(FileNotFoundError):
            backend.load(target)
        assert self.name("a") not in backend.list_dir("data")
        self.assert_loads(backend, f"data/{self.name('b')}", saved[self.name("b")])

    def test_delete_empty_directory(self, backend: StorageBackend) -> None:
        self.make_tree(backend)
        backend.delete("data/empty")
        assert not backend.exists("data/empty")
        assert "empty" not in backend.list_dir("data")

    def test_delete_non_empty_directory_raises_and_keeps_it(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend)
        with pytest.raises(OSError) as caught:
            backend.delete("data/sub")
        assert not isinstance(caught.value, FileNotFoundError)
        assert backend.is_dir("data/sub")
        self.assert_loads(backend, f"data/sub/{self.name('d')}", saved[f"sub/{self.name('d')}"])

    def test_delete_missing_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.delete(self.name("absent"))

    def test_delete_all_removes_tree_recursively(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend)
        other = self.put(backend, f"other/{self.name('keep')}", self.make_array(8))
        backend.delete_all("data/sub")
        for gone in ("data/sub", f"data/sub/{self.name('d')}", "data/sub/deep"):
            assert not backend.exists(gone), gone
        assert "sub" not in backend.list_dir("data")
        self.assert_loads(backend, f"data/{self.name('a')}", saved[self.name("a")])
        backend.delete_all("data")
        assert not backend.exists("data")
        self.assert_loads(backend, f"other/{self.name('keep')}", other)

    def test_delete_all_on_a_file_and_missing(self, backend: StorageBackend) -> None:
        self.put(backend, self.name("single"), self.make_array(0))
        backend.delete_all(self.name("single"))
        assert not backend.exists(self.name("single"))
        with pytest.raises(FileNotFoundError):
            backend.delete_all(self.name("single"))

    # -- ensure_directory --------------------------------------------------------------------
    def test_ensure_directory_nested_and_idempotent(self, backend: StorageBackend) -> None:
        result = backend.ensure_directory("x/y/z")
        assert isinstance(result, str)
        assert _normalized(result) == "x/y/z"
        for directory in ("x", "x/y", "x/y/z"):
            assert backend.is_dir(directory), directory
        assert backend.list_dir("x/y/z") == []
        inside = self.put(backend, f"x/y/z/{self.name('kept')}", self.make_array(6))
        again = backend.ensure_directory("x/y/z")
        assert isinstance(again, str)
        assert _normalized(again) == "x/y/z"
        assert backend.list_dir("x/y/z") == [self.name("kept")]
        self.assert_loads(backend, f"x/y/z/{self.name('kept')}", inside)

    def test_ensure_directory_accepts_pathlib_and_returns_str(self, backend: StorageBackend) -> None:
        result = backend.ensure_directory(Path("p") / "q")
        assert isinstance(result, str)
        assert _normalized(result) == "p/q"
        assert backend.is_dir("p/q")

    def test_ensure_directory_with_a_file_in_the_way_raises(self, backend: StorageBackend) -> None:
        blocker = self.put(backend, self.name("blocker"), self.make_array(3))
        with pytest.raises(NotADirectoryError):
            backend.ensure_directory(self.name("blocker"))
        with pytest.raises(NotADirectoryError):
            backend.ensure_directory(f"{self.name('blocker')}/below")
        assert backend.is_file(self.name("blocker"))
        self.assert_loads(backend, self.name("blocker"), blocker)

    # -- copy ------------------------------------------------------------------------------
    def test_copy_file_creates_parents_and_is_independent(self, backend: StorageBackend) -> None:
        source, destination = f"src/{self.name('a')}", f"dst/nested/{self.name('a')}"
        original = self.put(backend, source, self.make_array(1))
        backend.copy(source, destination)
        self.assert_loads(backend, source, original)
        self.assert_loads(backend, destination, original)
        assert backend.is_dir("dst/nested")

        changed = self.mutate_and_save(backend, destination)
        self.assert_loads(backend, destination, changed)
        self.assert_loads(backend, source, original)

        replacement = self.put(backend, destination, self.make_array(9))
        self.assert_loads(backend, source, original)
        self.assert_loads(backend, destination, replacement)

        changed_source = self.mutate_and_save(backend, source)
        self.assert_loads(backend, source, changed_source)
        self.assert_loads(backend, destination, replacement)

    def test_copy_replaces_existing_destination_file(self, backend: StorageBackend) -> None:
        original = self.put(backend, self.name("from"), self.make_array(1))
        self.put(backend, self.name("to"), np.zeros((5,), dtype="float64"))
        backend.copy(self.name("from"), self.name("to"))
        self.assert_loads(backend, self.name("to"), original)

    def test_copy_directory_tree_is_complete_and_independent(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend, "src")
        backend.copy("src", "dst")
        copied = backend.list_files("dst", recursive=True)
        assert _normalized_all(copied) == sorted(f"dst/{relative}" for relative in saved)
        for relative, array in saved.items():
            self.assert_loads(backend, f"dst/{relative}", array)
            self.assert_loads(backend, f"src/{relative}", array)
        assert backend.is_dir("dst/empty")
        assert backend.list_dir("dst") == backend.list_dir("src")

        first = self.name("a")
        changed = self.mutate_and_save(backend, f"dst/{first}")
        self.assert_loads(backend, f"dst/{first}", changed)
        self.assert_loads(backend, f"src/{first}", saved[first])

        nested = f"sub/{self.name('d')}"
        self.put(backend, f"dst/{nested}", self.make_array(17))
        self.assert_loads(backend, f"src/{nested}", saved[nested])

        backend.delete_all("dst")
        for relative, array in saved.items():
            self.assert_loads(backend, f"src/{relative}", array)

    def test_copy_missing_source_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.copy(self.name("absent"), self.name("copy"))
        assert not backend.exists(self.name("copy"))

    # -- move ------------------------------------------------------------------------------
    def test_move_file(self, backend: StorageBackend) -> None:
        original = self.put(backend, f"src/{self.name('a')}", self.make_array(1))
        backend.move(f"src/{self.name('a')}", f"dst/nested/{self.name('b')}")
        assert not backend.exists(f"src/{self.name('a')}")
        assert backend.list_dir("src") == []
        self.assert_loads(backend, f"dst/nested/{self.name('b')}", original)

    def test_move_file_replaces_existing_destination(self, backend: StorageBackend) -> None:
        original = self.put(backend, self.name("from"), self.make_array(1))
        self.put(backend, self.name("to"), np.zeros((5,), dtype="float64"))
        backend.move(self.name("from"), self.name("to"))
        assert not backend.exists(self.name("from"))
        self.assert_loads(backend, self.name("to"), original)

    def test_move_directory_tree(self, backend: StorageBackend) -> None:
        saved = self.make_tree(backend, "src")
        backend.move("src", "moved/here")
        assert not backend.exists("src")
        for relative in saved:
            assert not backend.exists(f"src/{relative}"), relative
        moved = backend.list_files("moved/here", recursive=True)
        assert _normalized_all(moved) == sorted(f"moved/here/{relative}" for relative in saved)
        for relative, array in saved.items():
            self.assert_loads(backend, f"moved/here/{relative}", array)
        assert backend.is_dir("moved/here/empty")

    def test_move_missing_source_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.move(self.name("absent"), self.name("moved"))
        assert not backend.exists(self.name("moved"))
