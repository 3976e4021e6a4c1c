"""The storage contract (polystore.testing) run against every built-in backend and a custom one."""

from __future__ import annotations

import errno
import fnmatch
import io
import multiprocessing
import os
import pickle
import posixpath
import sys
from collections.abc import Iterable, Iterator
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if "polystore.testing" not in sys.modules:  # detailed assertion messages from the suite
    pytest.register_assert_rewrite("polystore.testing")

from polystore import DiskBackend, MemoryBackend, StorageBackend
from polystore.backends.memory_tree import MemoryManager
from polystore.base import PathLike
from polystore.exceptions import InvalidPathError, NotADirectoryStorageError
from polystore.testing import BackendContractTests


class DictBytesBackend(StorageBackend):
    """What a user might write: arrays kept as the bytes of ``np.save`` in a plain dict.

    It implements only the primitives; ``save_batch``, ``load_batch``, ``copy``, ``move``,
    ``delete_all`` and ``stat`` come from :class:`StorageBackend`.
    """

    _backend_type = "contract_dict_backend"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.directories: set[str] = {"/"}

    @staticmethod
    def _key(path: PathLike) -> str:
        return posixpath.normpath("/" + os.fspath(path).lstrip("/"))

    def _require_directory(self, key: str, path: PathLike) -> None:
        if key in self.files:
            raise NotADirectoryError(f"'{path}' is a file, not a directory")
        if key not in self.directories:
            raise FileNotFoundError(f"No such directory: '{path}'")

    def _children(self, key: str) -> list[str]:
        prefix = key.rstrip("/") + "/"
        return [k for k in [*self.files, *self.directories] if k.startswith(prefix) and k != key]

    def save(self, data: Any, file_path: PathLike, **kwargs: Any) -> None:
        key = self._key(file_path)
        if key in self.directories:
            raise IsADirectoryError(f"Cannot save to '{file_path}': it is a directory")
        self.ensure_directory(posixpath.dirname(key))
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(data), allow_pickle=False)
        self.files[key] = buffer.getvalue()

    def load(self, file_path: PathLike, **kwargs: Any) -> Any:
        key = self._key(file_path)
        if key in self.directories:
            raise IsADirectoryError(f"'{file_path}' is a directory")
        if key not in self.files:
            raise FileNotFoundError(f"No such file: '{file_path}'")
        return np.load(io.BytesIO(self.files[key]), allow_pickle=False)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        key = self._key(directory)
        self._require_directory(key, directory)
        prefix = key.rstrip("/") + "/"
        wanted = tuple(e.lower() for e in extensions) if extensions is not None else None
        given = os.fspath(directory).rstrip("/")
        found = []
        for path in self.files:
            relative = path[len(prefix):]
            name = posixpath.basename(path)
            if (
                path.startswith(prefix)
                and (recursive or "/" not in relative)
                and (pattern is None or fnmatch.fnmatchcase(name, pattern))
                and (wanted is None or name.lower().endswith(wanted))
            ):
                found.append(f"{given}/{relative}" if given else relative)
        return sorted(found)

    def list_dir(self, path: PathLike) -> list[str]:
        key = self._key(path)
        self._require_directory(key, path)
        start = len(key.rstrip("/")) + 1
        return sorted(k[start:] for k in self._children(key) if "/" not in k[start:])

    def exists(self, path: PathLike) -> bool:
        key = self._key(path)
        return key in self.files or key in self.directories

    def is_file(self, path: PathLike) -> bool:
        return self._key(path) in self.files

    def is_dir(self, path: PathLike) -> bool:
        return self._key(path) in self.directories

    def delete(self, path: PathLike) -> None:
        key = self._key(path)
        if key in self.files:
            del self.files[key]
        elif key in self.directories and key != "/":
            if self._children(key):
                raise OSError(errno.ENOTEMPTY, "Directory not empty", os.fspath(path))
            self.directories.remove(key)
        else:
            raise FileNotFoundError(f"No such file or directory: '{path}'")

    def ensure_directory(self, directory: PathLike) -> str:
        key = self._key(directory)
        chain = []
        while key not in self.directories:
            if key in self.files:
                raise NotADirectoryError(f"Cannot create '{directory}': '{key}' is a file")
            chain.append(key)
            key = posixpath.dirname(key)
        self.directories.update(chain)
        return os.fspath(directory)


class TestDiskBackendInWorkingDirectory(BackendContractTests):
    @pytest.fixture
    def backend(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DiskBackend:
        monkeypatch.chdir(tmp_path)
        return DiskBackend()


class TestDiskBackendWithRoot(BackendContractTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(root=tmp_path)

    def test_files_land_inside_the_root(self, backend: DiskBackend, tmp_path: Path) -> None:
        backend.save(np.arange(3), "inside/x.npy")
        np.testing.assert_array_equal(np.load(tmp_path / "inside" / "x.npy"), np.arange(3))


class MemoryTreeRules:
    """What every placement of a memory store refuses, leaving the store as it was."""

    @pytest.mark.parametrize("operation", ["copy", "move"])
    def test_the_root_cannot_be_copied_or_moved_into_itself(
        self, backend: MemoryBackend, operation: str
    ) -> None:
        backend.save(np.arange(3), "a/x.npy")
        backend.save(np.arange(2), "b.npy")
        before = backend._paths()
        with pytest.raises(InvalidPathError, match="into itself"):
            getattr(backend, operation)("/", "backup")
        assert backend._paths() == before

    @pytest.mark.parametrize("operation", ["copy", "move"])
    def test_a_folder_is_not_put_over_a_file(self, backend: MemoryBackend, operation: str) -> None:
        backend.save(np.arange(3), "src/a.npy")
        backend.save(np.full(2, 9), "dst.npy")
        backend.save(np.arange(4), "deep/x/b.npy")
        backend.save(np.full(2, 9), "other/x")
        before = backend._paths()
        for source, destination in [("src", "dst.npy"), ("deep", "other")]:  # onto it, or inside
            with pytest.raises(NotADirectoryStorageError, match="in the way"):
                getattr(backend, operation)(source, destination)
            assert backend._paths() == before, "a refused copy or move changed the store"
        np.testing.assert_array_equal(backend.load("dst.npy"), np.full(2, 9))


class TestMemoryBackend(BackendContractTests, MemoryTreeRules):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


@pytest.fixture(scope="module")
def manager() -> Iterator[SyncManager]:
    # spawn: a fork while other threads are alive is unsafe (and warns on Python >= 3.12)
    with MemoryManager(ctx=multiprocessing.get_context("spawn")) as running:
        yield running


class TestMemoryBackendShared(BackendContractTests, MemoryTreeRules):
    """The store in a manager's server process, one call per operation."""

    @pytest.fixture
    def backend(self, manager: SyncManager) -> MemoryBackend:
        return MemoryBackend.shared(manager)

    def test_a_pickled_backend_is_the_same_store(self, backend: MemoryBackend) -> None:
        backend.save(np.arange(4), "/shared/a.npy")
        other = pickle.loads(pickle.dumps(backend))
        assert other.list_dir("/shared") == ["a.npy"]
        other.delete_all("/shared")
        assert not backend.exists("/shared")


class TestMemoryBackendWithSharedDict(BackendContractTests, MemoryTreeRules):
    """The older form: a Manager's dict and lock, the tree worked on from each process."""

    @pytest.fixture
    def backend(self, manager: SyncManager) -> MemoryBackend:
        return MemoryBackend(shared_dict=manager.dict(), lock=manager.RLock())

    def test_second_backend_on_the_same_dict_sees_the_data(self, manager: SyncManager) -> None:
        shared, lock = manager.dict(), manager.RLock()
        MemoryBackend(shared_dict=shared, lock=lock).save(np.arange(4), "/shared/a.npy")
        other = MemoryBackend(shared_dict=shared, lock=lock)
        assert other.list_dir("/shared") == ["a.npy"]
        np.testing.assert_array_equal(other.load("/shared/a.npy"), np.arange(4))


class TestCustomDictBackend(BackendContractTests):
    @pytest.fixture
    def backend(self) -> DictBytesBackend:
        return DictBytesBackend()

    def test_stores_bytes_not_objects(self, backend: DictBytesBackend) -> None:
        backend.save(np.arange(3, dtype="int16"), "a/b.npy")
        assert isinstance(backend.files["/a/b.npy"], bytes)
        assert backend.directories == {"/", "/a"}


def _tree_of(backend: StorageBackend) -> list[str]:
    return sorted(backend.list_files("", recursive=True)) + [
        f"{folder}/" for folder in ("d", "d/e", "d/sub") if backend.is_dir(folder)
    ]


@pytest.mark.parametrize("kind", ["disk-root", "disk-cwd", "memory", "custom"])
@pytest.mark.parametrize("operation", ["copy", "move"])
@pytest.mark.parametrize("destination", ["d/sub", "d/e/f", "./d/sub/../e/g", "d/sub/"])
def test_a_folder_is_not_copied_or_moved_into_itself(
    kind: str, operation: str, destination: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the disk backend made the copy with an extra empty folder (the destination, made before
    # the source was listed); StorageBackend's copy recursed until a bare RecursionError
    monkeypatch.chdir(tmp_path)
    makers: dict[str, Any] = {
        "disk-root": lambda: DiskBackend(root=tmp_path / "root"),
        "disk-cwd": DiskBackend,
        "memory": MemoryBackend,
        "custom": DictBytesBackend,
    }
    backend: StorageBackend = makers[kind]()
    backend.save(np.arange(3), "d/x.npy")
    backend.save(np.arange(2), "d/e/y.npy")
    before = _tree_of(backend)
    with pytest.raises(InvalidPathError, match="into itself"):
        getattr(backend, operation)("d", destination)
    assert _tree_of(backend) == before, "a refused copy or move changed the tree"
