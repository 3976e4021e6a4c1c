"""Objects held in a dict, with directories, behaving like the disk backend.

Keys are normalised ``/a/b`` paths; directories are entries holding a :class:`_Directory`
marker, and every directory's parents exist (so a save checks one parent, not the whole
chain). Objects are stored as given, in their own framework: a torch tensor comes back as
that same tensor, a CuPy array stays on its GPU.

Several processes share one store through a ``multiprocessing.Manager``'s dict *and* lock
(:meth:`MemoryBackend.shared`): every change to the tree (a save that may create parents, a
delete, a copy) holds the lock, so no process ever sees a file whose folder is gone, whatever
the others do meanwhile. A single read is one request to the Manager and needs no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping
from contextlib import AbstractContextManager
from multiprocessing.managers import BaseProxy, SyncManager
from typing import Any

from polystore.arrays import convert, copy_array
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.exceptions import (
    DirectoryNotEmptyError,
    InvalidOptionError,
    InvalidPathError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    StorageFileNotFoundError,
)
from polystore.paths import (
    given_path,
    join_given,
    matches,
    names_directory,
    normalize_extensions,
    refuse_directory_path,
    virtual_path,
)


class _Directory:
    """Marks a directory entry (a class, so it survives pickling into a Manager dict)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_Directory, ())


_DIRECTORY = _Directory()


def _is_proxy(obj: object) -> bool:
    """Whether ``obj`` lives in a Manager's process (and so is shared with other processes)."""
    return isinstance(obj, BaseProxy)


def _parent(key: str) -> str:
    return key.rsplit("/", 1)[0] or "/"


def _size_of(value: Any) -> int | None:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    return None


class MemoryBackend(StorageBackend):
    """An in-memory store with the disk backend's semantics.

    ``shared_dict`` and ``lock``: a dict and a re-entrant lock that several processes share
    (a ``multiprocessing.Manager``'s ``dict()`` and ``RLock()``; :meth:`shared` makes both).
    A Manager dict without its lock is refused: the processes could not keep the tree whole.
    """

    _backend_type = "memory"

    def __init__(
        self,
        shared_dict: MutableMapping[str, Any] | None = None,
        *,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        if lock is None and _is_proxy(shared_dict):
            raise InvalidOptionError(
                "A dict shared through a multiprocessing Manager needs a lock shared the same "
                "way, or processes can leave files under a deleted folder: pass "
                "lock=manager.RLock(), or use MemoryBackend.shared(manager)."
            )
        self._store: MutableMapping[str, Any] = shared_dict if shared_dict is not None else {}
        self._lock: AbstractContextManager[Any] = lock if lock is not None else threading.RLock()

    @classmethod
    def shared(cls, manager: SyncManager) -> MemoryBackend:
        """A store that processes share: ``manager``'s dict and lock (pass the backend itself, or
        both, to the other processes; it pickles with them)."""
        return cls(manager.dict(), lock=manager.RLock())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not _is_proxy(self._lock):  # a thread lock guards this process only
            state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_lock"] is None:
            state["_lock"] = threading.RLock()
        self.__dict__.update(state)

    # -- helpers -------------------------------------------------------------------------
    def _get(self, key: str, path: PathLike) -> Any:
        try:
            return self._store[key]
        except KeyError:
            if key == "/":
                return _DIRECTORY
            raise StorageFileNotFoundError(str(path), "memory") from None

    def _is_dir_value(self, key: str) -> bool:
        return key == "/" or isinstance(self._store.get(key), _Directory)

    def _make_dirs(self, key: str, path: PathLike) -> None:
        """Create directory ``key`` and any missing parents."""
        missing: list[str] = []
        current = key
        while current != "/":
            value = self._store.get(current)
            if isinstance(value, _Directory):
                break
            if value is not None or current in self._store:
                raise NotADirectoryStorageError(
                    f"Cannot use '{path}': '{current}' is a file, not a directory."
                )
            missing.append(current)
            current = _parent(current)
        for directory in reversed(missing):
            self._store[directory] = _DIRECTORY

    def _keys_under(self, key: str) -> list[str]:
        prefix = "/" if key == "/" else key + "/"
        return [k for k in list(self._store.keys()) if k.startswith(prefix)]

    # -- read ----------------------------------------------------------------------------
    def load(self, file_path: PathLike, *, framework: str | None = None, **kwargs: Any) -> Any:
        # docstring inherited
        value = self._get(virtual_path(file_path), file_path)
        if isinstance(value, _Directory):
            raise IsADirectoryStorageError(
                f"'{file_path}' is a directory; load a file inside it (see list_files)."
            )
        if names_directory(given_path(file_path)):
            raise NotADirectoryStorageError(f"'{file_path}' ends with '/', but it is a file.")
        return convert(value, framework)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        # docstring inherited
        key = virtual_path(directory)
        if not isinstance(self._get(key, directory), _Directory):
            raise NotADirectoryStorageError(f"'{directory}' is a file, not a directory.")
        wanted = normalize_extensions(extensions)
        start = 1 if key == "/" else len(key) + 1
        found = []
        for full_key, value in list(self._store.items()):
            relative = full_key[start:]
            if (
                full_key.startswith(key if key == "/" else key + "/")
                and not isinstance(value, _Directory)
                and (recursive or "/" not in relative)
                and matches(relative.rsplit("/", 1)[-1], pattern, wanted)
            ):
                found.append(join_given(directory, relative))
        return sorted(found)

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        key = virtual_path(path)
        if not isinstance(self._get(key, path), _Directory):
            raise NotADirectoryStorageError(f"'{path}' is a file, not a directory.")
        start = 1 if key == "/" else len(key) + 1
        return sorted({k[start:] for k in self._keys_under(key) if "/" not in k[start:]})

    def exists(self, path: PathLike) -> bool:
        key = virtual_path(path)
        if names_directory(given_path(path)):
            return self._is_dir_value(key)
        return key == "/" or key in self._store

    def is_file(self, path: PathLike) -> bool:
        key = virtual_path(path)
        return key in self._store and not self._is_dir_value(key) and not names_directory(given_path(path))

    def is_dir(self, path: PathLike) -> bool:
        return self._is_dir_value(virtual_path(path))

    def stat(self, path: PathLike) -> FileStat:
        # docstring inherited
        value = self._get(virtual_path(path), path)
        if isinstance(value, _Directory):
            return FileStat(str(path), "directory")
        return FileStat(str(path), "file", _size_of(value))

    # -- write ---------------------------------------------------------------------------
    def save(self, data: Any, file_path: PathLike, *, copy: bool = False, **kwargs: Any) -> None:
        """Store ``data`` at ``file_path`` (parents created, an existing file replaced).

        The object itself is stored, not a copy: pass ``copy=True`` to store an independent
        copy if you will keep mutating ``data`` afterwards.
        """
        key = virtual_path(file_path)
        refuse_directory_path(given_path(file_path))
        with self._lock:
            if self._is_dir_value(key):
                raise IsADirectoryStorageError(
                    f"Cannot save to '{file_path}': it is a directory. Choose a file name inside it."
                )
            parent = _parent(key)
            if not self._is_dir_value(parent):
                self._make_dirs(parent, file_path)
            self._store[key] = copy_array(data) if copy else data

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        with self._lock:
            self._make_dirs(virtual_path(directory), directory)
        return str(directory)

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        key = virtual_path(path)
        with self._lock:
            value = self._get(key, path)
            if key == "/":
                raise InvalidPathError("Refusing to delete the memory backend's root '/'.")
            if isinstance(value, _Directory) and self._keys_under(key):
                raise DirectoryNotEmptyError(
                    f"Directory '{path}' is not empty; use delete_all to remove it with its contents."
                )
            del self._store[key]

    def delete_all(self, path: PathLike) -> None:
        # docstring inherited
        key = virtual_path(path)
        with self._lock:
            self._get(key, path)
            for sub_key in self._keys_under(key):
                self._store.pop(sub_key, None)
            if key != "/":
                del self._store[key]

    def _transfer(self, source: PathLike, destination: PathLike, *, keep_source: bool) -> None:
        src, dst = virtual_path(source), virtual_path(destination)
        with self._lock:
            value = self._get(src, source)
            if dst == src or dst.startswith(src + "/"):
                raise InvalidPathError(f"Cannot copy or move '{source}' into itself ('{destination}').")
            if not isinstance(value, _Directory) and self._is_dir_value(dst):
                raise IsADirectoryStorageError(
                    f"Cannot put file '{source}' at '{destination}': that is a directory."
                )
            moved = {src: value} | {k: self._store[k] for k in self._keys_under(src)}
            self._make_dirs(_parent(dst), destination)
            for key, item in moved.items():
                new_key = dst + key[len(src):]
                stored = item if not keep_source or isinstance(item, _Directory) else copy_array(item)
                self._store[new_key] = stored
            if not keep_source:
                for key in moved:
                    self._store.pop(key, None)

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy a file or directory; array data is copied, so the two are independent."""
        self._transfer(source, destination, keep_source=True)

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Move a file or directory without copying its data."""
        self._transfer(source, destination, keep_source=False)

    def clear(self) -> None:
        """Remove everything."""
        with self._lock:
            self._store.clear()
