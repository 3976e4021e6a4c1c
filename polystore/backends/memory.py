"""Objects held in a dict, with directories, behaving like the disk backend.

Keys are normalised ``/a/b`` paths; directories are entries holding a :class:`DirectoryMarker`
marker, and every directory's parents exist. Objects are stored as given, in their own
framework: a torch tensor comes back as that same tensor, a CuPy array stays on its GPU.

The tree and every operation on it are a :class:`Tree`; a backend makes one call to it per
operation. Changes hold the tree's lock and go in an order that keeps the tree whole at
every step (folders before what goes in them, contents before their folder), so a read, a
lock-free snapshot, never sees a file whose folder is gone. A tree lives in one of three
places:

- this process (``MemoryBackend()``): a dict and a thread lock;
- a manager's server process (``MemoryBackend.shared()``): each operation is one call that
  runs whole in the server, under the server's own lock. A process killed in the middle of
  a call cannot leave it half done or a lock held: the server finishes the call whatever
  becomes of the caller;
- every process that shares a Manager's dict and lock (``MemoryBackend(shared_dict=...,
  lock=...)``, the older form): each step is a request to the Manager. A process killed
  mid-change leaves a whole but partly changed tree, *and the Manager's lock held*: the
  Manager never releases a lock whose holder died, so every later change waits forever. Use
  ``shared()`` where a process may be killed.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, MutableMapping
from multiprocessing.managers import SyncManager
from multiprocessing.reduction import ForkingPickler
from typing import Any

from polystore.arrays import convert, copy_array
from polystore.backends.memory_tree import (
    DirectoryMarker,
    MemoryManager,
    Tree,
    TreeLock,
    TreeProxy,
    TreeRefusal,
    is_proxy,
)
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.exceptions import (
    DirectoryNotEmptyError,
    InvalidOptionError,
    InvalidPathError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    PolystoreError,
    StorageFileNotFoundError,
    StorageIOError,
    UnsupportedDataError,
)
from polystore.paths import (
    given_path,
    join_given,
    matches,
    normalize_extensions,
    parse_virtual,
    refuse_directory_path,
    virtual_path,
)


class MemoryBackend(StorageBackend):
    """An in-memory store with the disk backend's semantics.

    ``MemoryBackend()`` holds its objects in this process. :meth:`shared` makes a store that
    several processes share, held by a manager's server process, which stays whole even when
    one of them is killed mid-operation. ``shared_dict`` and ``lock`` (a
    ``multiprocessing.Manager``'s ``dict()`` and ``RLock()``) share a store the older way:
    whole while every process lives, but a process killed while changing it leaves the lock
    held and the others waiting forever. A Manager dict without its lock is refused.
    """

    _backend_type = "memory"

    def __init__(
        self,
        shared_dict: MutableMapping[str, Any] | None = None,
        *,
        lock: TreeLock | None = None,
    ) -> None:
        if lock is None and is_proxy(shared_dict):
            raise InvalidOptionError(
                "A dict shared through a multiprocessing Manager needs a lock shared the same "
                "way, or processes can leave files under a deleted folder: pass "
                "lock=manager.RLock(), or use MemoryBackend.shared(manager), which also "
                "survives a process killed mid-operation."
            )
        self._tree: Tree | TreeProxy = Tree(shared_dict, lock)
        self._manager: SyncManager | None = None

    @classmethod
    def shared(cls, manager: SyncManager | None = None) -> MemoryBackend:
        """A store that processes share, held by a manager's server process: pass the backend to
        the other processes (it pickles as a handle on the store).

        ``manager``: a started :class:`MemoryManager` to hold it (``MemoryManager(ctx=...)``
        chooses how its process starts); by default the backend starts its own with the default
        start method, as ``multiprocessing.Manager()`` does, living as long as this backend.
        """
        owned = None
        if manager is None:  # the default start method, as multiprocessing.Manager() uses
            owned = manager = MemoryManager()
            manager.start()
        make = getattr(manager, "PolystoreTree", None)
        if make is None:
            raise InvalidOptionError(
                f"{type(manager).__name__} cannot hold a polystore memory store (its server "
                "knows only its own types): call MemoryBackend.shared() with no manager, or "
                "pass a started polystore.backends.memory.MemoryManager()."
            )
        backend = cls()
        backend._tree = make()
        backend._manager = owned
        return backend

    def __getstate__(self) -> dict[str, Any]:
        return {"_tree": self._tree, "_manager": None}  # a manager stays with its owner

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _paths(self) -> list[tuple[str, bool]]:
        """Every (key, is a directory) in the store."""
        return self._tree.paths()

    # -- read ----------------------------------------------------------------------------
    def load(self, file_path: PathLike, *, framework: str | None = None, **kwargs: Any) -> Any:
        # docstring inherited
        key, names_dir = parse_virtual(file_path)
        try:
            value = self._tree.get(key)
        except TreeRefusal as refusal:
            raise _error(refusal, file_path) from None
        if isinstance(value, DirectoryMarker):
            raise IsADirectoryStorageError(
                f"'{file_path}' is a directory; load a file inside it (see list_files)."
            )
        if names_dir:
            raise NotADirectoryStorageError(f"'{file_path}' ends with '/', but it is a file.")
        return value if framework is None else convert(value, framework)

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
        wanted = normalize_extensions(extensions)
        try:
            found = self._tree.list_files(key, recursive)
        except TreeRefusal as refusal:
            raise _error(refusal, directory) from None
        return sorted(
            join_given(directory, relative)
            for relative in found
            if matches(relative.rsplit("/", 1)[-1], pattern, wanted)
        )

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        try:
            return self._tree.list_dir(virtual_path(path))
        except TreeRefusal as refusal:
            raise _error(refusal, path) from None

    def exists(self, path: PathLike) -> bool:
        key, names_dir = parse_virtual(path)
        kind = self._tree.kind(key)
        return kind == "dir" if names_dir else kind is not None

    def is_file(self, path: PathLike) -> bool:
        key, names_dir = parse_virtual(path)
        return self._tree.kind(key) == "file" and not names_dir

    def is_dir(self, path: PathLike) -> bool:
        return self._tree.kind(virtual_path(path)) == "dir"

    def stat(self, path: PathLike) -> FileStat:
        # docstring inherited
        try:
            is_dir, size = self._tree.stat(virtual_path(path))
        except TreeRefusal as refusal:
            raise _error(refusal, path) from None
        return FileStat(str(path), "directory") if is_dir else FileStat(str(path), "file", size)

    # -- write ---------------------------------------------------------------------------
    def save(self, data: Any, file_path: PathLike, *, copy: bool = False, **kwargs: Any) -> None:
        """Store ``data`` at ``file_path`` (parents created, an existing file replaced).

        The object itself is stored, not a copy: pass ``copy=True`` to store an independent
        copy if you will keep mutating ``data`` afterwards.
        """
        key, names_dir = parse_virtual(file_path)
        if names_dir:
            refuse_directory_path(given_path(file_path))
        try:
            self._tree.save(key, copy_array(data) if copy else data)
        except TreeRefusal as refusal:
            raise _error(refusal, file_path) from None
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            # these are what pickling raises, but the store's other steps raise them too:
            # only a value that does not pickle is the caller's data's fault
            if isinstance(error, PolystoreError) or not self._is_shared():
                raise  # ours already, or a local store (it pickles nothing): not ours to explain
            if _pickles(data):
                raise StorageIOError(
                    f"Cannot save {type(data).__name__} at '{file_path}' in a store shared by "
                    f"processes: {type(error).__name__}: {error}. The value pickles, so this is not "
                    "a pickling failure: check what is already at that path and the manager "
                    "process holding the store."
                ) from error
            raise UnsupportedDataError(
                f"Cannot save {type(data).__name__} at '{file_path}': a store shared by processes "
                f"holds what pickle can send to its process, and this does not pickle "
                f"({type(error).__name__}: {error}). Save arrays, numbers, strings, or containers "
                "of them."
            ) from error

    def _is_shared(self) -> bool:
        """Whether the store lives in a manager's process (what is saved there is pickled)."""
        return is_proxy(self._tree) or is_proxy(getattr(self._tree, "_store", None))

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        try:
            self._tree.make_dirs(virtual_path(directory))
        except TreeRefusal as refusal:
            raise _error(refusal, directory) from None
        return str(directory)

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        try:
            self._tree.delete(virtual_path(path))
        except TreeRefusal as refusal:
            raise _error(refusal, path) from None

    def delete_all(self, path: PathLike) -> None:
        # docstring inherited
        try:
            self._tree.delete_all(virtual_path(path))
        except TreeRefusal as refusal:
            raise _error(refusal, path) from None

    def _transfer(self, source: PathLike, destination: PathLike, *, keep_source: bool) -> None:
        if parse_virtual(destination).names_directory and self.is_file(source):
            action = "copy" if keep_source else "move"
            refuse_directory_path(given_path(destination), f"{action} file '{source}' to")
        try:
            self._tree.transfer(virtual_path(source), virtual_path(destination), keep_source)
        except TreeRefusal as refusal:
            raise _error(refusal, source, destination) from None

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy a file or directory; array data is copied, so the two are independent."""
        self._transfer(source, destination, keep_source=True)

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Move a file or directory without copying its data."""
        self._transfer(source, destination, keep_source=False)

    def clear(self) -> None:
        """Remove everything."""
        self._tree.clear()


def _pickles(value: Any) -> bool:
    """Whether ``value`` pickles as a manager's connection sends it (asked only once a save failed)."""
    try:
        ForkingPickler.dumps(value)
    except Exception:  # whatever pickling raises, the value cannot go to the store's process
        return False
    return True


def _error(
    refusal: TreeRefusal, path: PathLike, destination: PathLike | None = None
) -> PolystoreError:
    """The error a user sees for a tree's refusal, worded with the paths they gave."""
    key = refusal.key
    code = refusal.code
    if code == "missing":
        return StorageFileNotFoundError(str(path), "memory")
    if code == "is_dir":
        return IsADirectoryStorageError(
            f"Cannot save to '{path}': it is a directory. Choose a file name inside it."
        )
    if code == "not_dir":
        if virtual_path(path) == key:
            return NotADirectoryStorageError(f"'{path}' is a file, not a directory.")
        return NotADirectoryStorageError(
            f"Cannot use '{destination or path}': '{key}' is a file, not a directory."
        )
    if code == "not_empty":
        return DirectoryNotEmptyError(
            f"Directory '{path}' is not empty; use delete_all to remove it with its contents."
        )
    if code == "root":
        return InvalidPathError("Refusing to delete the memory backend's root '/'.")
    if code == "into_itself":
        where = "the root '/' holds every destination" if key == "/" else "the destination is inside it"
        return InvalidPathError(
            f"Cannot copy or move '{path}' into itself ('{destination}'): {where}. Copy what is "
            "inside it instead."
        )
    if code == "file_onto_dir":
        return IsADirectoryStorageError(
            f"Cannot put file '{path}' at '{destination}': '{key}' is a directory."
        )
    if code == "dir_onto_file":
        return NotADirectoryStorageError(
            f"Cannot copy or move folder '{path}' to '{destination}': the file '{key}' is in the "
            "way (nothing was changed). Delete it first, or choose another destination."
        )
    raise AssertionError(f"unknown refusal {code}")  # unreachable: a new Refusal without its wording here
