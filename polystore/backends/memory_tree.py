"""The tree of a memory store: entries, and every operation on them whole under one lock.

A :class:`Tree` is what :class:`~polystore.backends.memory.MemoryBackend` calls, once per
operation, wherever the tree lives: in this process, in a manager's server process (through
:class:`TreeProxy`, registered on :class:`MemoryManager`), or over a Manager's dict and lock.
Changes go in an order that keeps the tree whole at every step (folders before what goes in
them, contents before their folder), so a read, a lock-free snapshot, never sees a file whose
folder is gone. Refusals are :class:`TreeRefusal` ``(code, key)``: plain, so they pickle back
from a server; the backend words them for the paths its caller gave.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, MutableMapping
from multiprocessing.managers import BaseProxy, SyncManager
from typing import Any, Protocol

from polystore.arrays import copy_array


class DirectoryMarker:
    """Marks a directory entry (a class, so it survives pickling into a Manager dict)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (DirectoryMarker, ())


_DIRECTORY = DirectoryMarker()


def is_proxy(obj: object) -> bool:
    """Whether ``obj`` lives in a Manager's process (and so is shared with other processes)."""
    return isinstance(obj, BaseProxy)


def _parent(key: str) -> str:
    return key.rpartition("/")[0] or "/"


def _depth_first(keys: Iterable[str]) -> list[str]:
    """``keys`` with every entry before its folder: the order that deletes a tree whole."""
    return sorted(keys, key=lambda k: k.count("/"), reverse=True)


def _size_of(value: Any) -> int | None:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    return None


class TreeLock(Protocol):
    """The lock a memory store's changes hold (``MemoryBackend(lock=...)``): ``threading.RLock()``
    in one process, a Manager's ``RLock()`` across processes."""

    def acquire(self) -> Any: ...

    def release(self) -> Any: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> Any: ...


class TreeRefusal(Exception):  # noqa: N818 - internal: the backend raises ours instead
    """Why a tree operation was refused: ``(code, key)``."""

    @property
    def code(self) -> str:
        return str(self.args[0])

    @property
    def key(self) -> str:
        return str(self.args[1])


class Tree:
    """The entries of a memory store and every operation on them, each whole under one lock.

    Keys are normalised paths (``/a/b``). Reads take no lock: each is one snapshot of the dict,
    and changes keep the tree whole at every step.
    """

    def __init__(
        self,
        store: MutableMapping[str, Any] | None = None,
        lock: TreeLock | None = None,
    ) -> None:
        self._store: MutableMapping[str, Any] = store if store is not None else {}
        self._lock: TreeLock = lock if lock is not None else threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not is_proxy(self._lock):  # a thread lock guards this process only
            state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_lock"] is None:
            state["_lock"] = threading.RLock()
        self.__dict__.update(state)

    # -- reads ---------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """The value at ``key`` (the directory marker for a folder)."""
        try:
            return self._store[key]
        except KeyError:
            if key == "/":
                return _DIRECTORY
            raise TreeRefusal("missing", key) from None

    def kind(self, key: str) -> str | None:
        """``"dir"``, ``"file"``, or ``None`` where nothing is."""
        if key == "/":
            return "dir"
        value = self._store.get(key)
        if isinstance(value, DirectoryMarker):
            return "dir"
        return "file" if value is not None or key in self._store else None

    def stat(self, key: str) -> tuple[bool, int | None]:
        """(is a directory, size in bytes where known)."""
        value = self.get(key)
        return (True, None) if isinstance(value, DirectoryMarker) else (False, _size_of(value))

    def _snapshot(self, key: str) -> list[tuple[str, bool]]:
        """(key, is a directory) of every entry under the folder ``key``, at one instant."""
        if self.kind(key) != "dir":
            raise TreeRefusal("not_dir" if self.kind(key) == "file" else "missing", key)
        prefix = "/" if key == "/" else key + "/"
        return [
            (k, isinstance(v, DirectoryMarker)) for k, v in list(self._store.items()) if k.startswith(prefix)
        ]

    def list_files(self, key: str, recursive: bool) -> list[str]:
        """Files under the folder ``key``, relative to it."""
        start = 1 if key == "/" else len(key) + 1
        found = [k[start:] for k, is_dir in self._snapshot(key) if not is_dir]
        return found if recursive else [name for name in found if "/" not in name]

    def list_dir(self, key: str) -> list[str]:
        """Names directly inside the folder ``key``."""
        start = 1 if key == "/" else len(key) + 1
        return sorted({k[start:] for k, _ in self._snapshot(key) if "/" not in k[start:]})

    def paths(self) -> list[tuple[str, bool]]:
        """Every (key, is a directory), for checks and debugging."""
        return sorted((k, isinstance(v, DirectoryMarker)) for k, v in list(self._store.items()))

    # -- changes -------------------------------------------------------------------------
    def _make_dirs(self, key: str) -> None:
        """Make folder ``key`` and its missing parents, parents first."""
        missing: list[str] = []
        current = key
        while current != "/":
            value = self._store.get(current)
            if isinstance(value, DirectoryMarker):
                break
            if value is not None or current in self._store:
                raise TreeRefusal("not_dir", current)
            missing.append(current)
            current = _parent(current)
        for directory in reversed(missing):
            self._store[directory] = _DIRECTORY

    def _keys_under(self, key: str) -> list[str]:
        prefix = "/" if key == "/" else key + "/"
        return [k for k in list(self._store.keys()) if k.startswith(prefix)]

    def save(self, key: str, value: Any) -> None:
        """Put ``value`` at ``key``, its folders made first."""
        store, lock = self._store, self._lock
        # the per-call path: acquire/release cost half of what a with statement does, and
        # kind(key) == "dir" and _make_dirs(parent) are inlined for the common case, a file
        # saved into a folder that exists (the same lookups, fewer calls)
        lock.acquire()
        try:
            if key == "/" or isinstance(store.get(key), DirectoryMarker):
                raise TreeRefusal("is_dir", key)
            parent = key.rpartition("/")[0] or "/"
            if parent != "/" and not isinstance(store.get(parent), DirectoryMarker):
                self._make_dirs(parent)
            store[key] = value
        finally:
            lock.release()

    def make_dirs(self, key: str) -> None:
        with self._lock:
            self._make_dirs(key)

    def delete(self, key: str) -> None:
        """Remove a file or an empty folder."""
        with self._lock:
            value = self.get(key)
            if key == "/":
                raise TreeRefusal("root", key)
            if isinstance(value, DirectoryMarker) and self._keys_under(key):
                raise TreeRefusal("not_empty", key)
            del self._store[key]

    def delete_all(self, key: str) -> None:
        """Remove ``key`` and everything under it, every entry before its folder."""
        with self._lock:
            self.get(key)
            for sub_key in _depth_first(self._keys_under(key)):
                self._store.pop(sub_key, None)
            if key != "/":
                del self._store[key]

    def transfer(self, src: str, dst: str, keep_source: bool) -> None:
        """Copy (``keep_source``) or move ``src`` to ``dst``: a folder merges into a folder there;
        nothing changes if a file and a folder would meet."""
        with self._lock:
            value = self.get(src)
            if src == "/" or dst == src or dst.startswith(src + "/"):
                raise TreeRefusal("into_itself", src)
            moved = [(src, value)] + [(k, self._store[k]) for k in sorted(self._keys_under(src))]
            placed = [(dst + key[len(src):], item) for key, item in moved]
            for new_key, item in placed:
                there = self.kind(new_key)
                if there == "dir" and not isinstance(item, DirectoryMarker):
                    raise TreeRefusal("file_onto_dir", new_key)
                if there == "file" and isinstance(item, DirectoryMarker):
                    raise TreeRefusal("dir_onto_file", new_key)
            self._make_dirs(_parent(dst))
            for new_key, item in placed:  # sorted: every folder before what goes in it
                copied = item if not keep_source or isinstance(item, DirectoryMarker) else copy_array(item)
                self._store[new_key] = copied
            if not keep_source:
                for key in _depth_first(key for key, _ in moved):
                    self._store.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._store.clear()


class TreeProxy(BaseProxy):
    """A :class:`Tree` in a manager's server process; each method is one call to it."""

    _exposed_ = ("get", "kind", "stat", "list_files", "list_dir", "paths", "save", "make_dirs",
                 "delete", "delete_all", "transfer", "clear")

    def _call(self, method: str, *args: Any) -> Any:
        call: Any = self._callmethod  # typeshed has it return None; it returns the result
        return call(method, args)

    def get(self, key: str) -> Any:
        return self._call("get", key)

    def kind(self, key: str) -> str | None:
        return self._call("kind", key)  # type: ignore[no-any-return]

    def stat(self, key: str) -> tuple[bool, int | None]:
        return self._call("stat", key)  # type: ignore[no-any-return]

    def list_files(self, key: str, recursive: bool) -> list[str]:
        return self._call("list_files", key, recursive)  # type: ignore[no-any-return]

    def list_dir(self, key: str) -> list[str]:
        return self._call("list_dir", key)  # type: ignore[no-any-return]

    def paths(self) -> list[tuple[str, bool]]:
        return self._call("paths")  # type: ignore[no-any-return]

    def save(self, key: str, value: Any) -> None:
        self._call("save", key, value)

    def make_dirs(self, key: str) -> None:
        self._call("make_dirs", key)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def delete_all(self, key: str) -> None:
        self._call("delete_all", key)

    def transfer(self, src: str, dst: str, keep_source: bool) -> None:
        self._call("transfer", src, dst, keep_source)

    def clear(self) -> None:
        self._call("clear")


class MemoryManager(SyncManager):
    """A ``multiprocessing`` manager that can also hold memory stores (``MemoryBackend.shared``);
    everything a ``multiprocessing.Manager()`` holds besides."""


MemoryManager.register("PolystoreTree", Tree, TreeProxy)
