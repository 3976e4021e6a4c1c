"""The storage contract: DataSink, DataSource, StorageBackend, ReadOnlyBackend.

A backend implements a few primitives (``save``, ``load``, ``list_files``, ``list_dir``,
``exists``, ``is_file``, ``is_dir``, ``delete``, ``ensure_directory``); the base classes
build the rest on top of them once (``save_batch``, ``load_batch``, ``copy``, ``move``,
``delete_all``, ``stat``), and a backend overrides those only where it can do better.

Methods are not ``abc.abstractmethod``: the documented examples define backends with only
``save`` and ``load`` and use them straight away. A primitive that was left out raises
:class:`IncompleteBackendError` when it is first called, naming the class, the method and
every other primitive still missing.

A subclass that sets ``_backend_type = "name"`` in its own body is registered under that
name when the class is created (see :mod:`polystore.registry`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from polystore.exceptions import IncompleteBackendError, ReadOnlyBackendError
from polystore.paths import given_path, refuse_into_itself

PathLike = str | os.PathLike[str]
"""Anything polystore accepts as a path: ``str`` or ``pathlib.Path``."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _primitive(method: _F) -> _F:
    """Mark a base-class method as a primitive that concrete backends must provide."""
    method.__polystore_primitive__ = True  # type: ignore[attr-defined]
    return method


def missing_primitives(cls: type) -> list[str]:
    """Names of the contract primitives ``cls`` still inherits as placeholders."""
    return sorted(
        name
        for name in dir(cls)
        if getattr(getattr(cls, name, None), "__polystore_primitive__", False)
    )


@dataclass(frozen=True)
class FileStat:
    """What ``stat`` reports, with the same meaning on every backend."""

    path: str
    kind: Literal["file", "directory"]
    size: int | None = None
    """Bytes on disk for files; ``nbytes`` (or best estimate) for objects held in memory."""
    mtime: float | None = None
    """Seconds since the epoch of the last modification, where the backend knows it."""

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def is_dir(self) -> bool:
        return self.kind == "directory"


class _BackendBase:
    """What every backend shares: registration, naming, the missing-method error."""

    _backend_type: ClassVar[str | None] = None
    supports_writes: ClassVar[bool] = True
    parallel_io: ClassVar[bool] = False
    """Whether batch operations should use a thread pool (I/O-bound backends)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("_backend_type")
        if isinstance(name, str) and name:
            from polystore.registry import register_backend_class

            register_backend_class(name, cls)

    @property
    def backend_label(self) -> str:
        """``'name' (ClassName)`` for messages."""
        name = type(self)._backend_type
        return f"'{name}' ({type(self).__name__})" if name else type(self).__name__

    def _missing(self, method: str) -> IncompleteBackendError:
        missing = missing_primitives(type(self))
        others = [m for m in missing if m != method]
        also = f" It also leaves out: {', '.join(others)}." if others else ""
        return IncompleteBackendError(
            f"Backend {self.backend_label} does not implement {method}(), which this "
            f"operation needs. Define {type(self).__name__}.{method}() to use it.{also}"
        )


class DataSource(_BackendBase):
    """Read side of the contract: a backend that can be read.

    Primitives to implement: :meth:`load`, :meth:`list_files`, :meth:`list_dir`, :meth:`exists`,
    :meth:`is_file`, :meth:`is_dir`. :meth:`load_batch` and :meth:`stat` are built on them.
    Set ``_backend_type = "name"`` in the class body to register it under that name.
    """

    @_primitive
    def load(self, file_path: PathLike, **kwargs: Any) -> Any:
        """Load the object stored at ``file_path``.

        Parameters
        ----------
        file_path
            What to read.
        **kwargs
            Options of the backend and format.

        Returns
        -------
        Any
            The stored array or object.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is stored at ``file_path``.
        IncompleteBackendError
            The backend does not implement it.
        """
        raise self._missing("load")

    def load_batch(
        self,
        file_paths: Sequence[PathLike],
        *,
        progress: bool = False,
        max_workers: int | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Load many paths, in order; in parallel where the backend is I/O-bound.

        Parameters
        ----------
        file_paths
            What to read.
        progress
            Show a progress bar (tqdm) on stderr.
        max_workers
            Threads of a parallel backend (``None``: the default pool size; 1: one at a time).
        **kwargs
            Options passed to every :meth:`load`.

        Returns
        -------
        list
            One item per path, in the order given.

        Raises
        ------
        BatchError
            Some loads failed: every failure is collected, each with its path and why.
        """
        from polystore.batch import run_batch

        return run_batch(
            "load_batch",
            lambda path: self.load(path, **kwargs),
            list(file_paths),
            parallel=self.parallel_io,
            max_workers=max_workers,
            progress=progress,
            path_of=str,
        )

    @_primitive
    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Paths of the files in ``directory``, sorted.

        Parameters
        ----------
        directory
            The folder to list.
        pattern
            A shell-style glob matched against the file name.
        extensions
            Keep names ending in one of them, compound ones (``.roi.zip``) included.
        recursive
            Also the files below sub-folders.

        Returns
        -------
        list of str
            Paths that :meth:`load` accepts.

        Raises
        ------
        StorageFileNotFoundError
            ``directory`` does not exist.
        """
        raise self._missing("list_files")

    @_primitive
    def list_dir(self, path: PathLike) -> list[str]:
        """Names of the entries (files and directories) directly inside ``path``, sorted."""
        raise self._missing("list_dir")

    @_primitive
    def exists(self, path: PathLike) -> bool:
        """Whether a file or directory is at ``path``."""
        raise self._missing("exists")

    @_primitive
    def is_file(self, path: PathLike) -> bool:
        """Whether ``path`` is a file (something :meth:`load` reads)."""
        raise self._missing("is_file")

    @_primitive
    def is_dir(self, path: PathLike) -> bool:
        """Whether ``path`` is a directory (something :meth:`list_dir` lists)."""
        raise self._missing("is_dir")

    def stat(self, path: PathLike) -> FileStat:
        """Kind, size and modification time of ``path`` (size and mtime where known).

        Returns
        -------
        FileStat
            The same fields, with the same meaning, on every backend.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path``.
        """
        from polystore.exceptions import StorageFileNotFoundError

        if self.is_file(path):
            return FileStat(str(path), "file")
        if self.is_dir(path):
            return FileStat(str(path), "directory")
        raise StorageFileNotFoundError(str(path), type(self)._backend_type)


class DataSink(_BackendBase):
    """Write side of the contract: a backend that can be written.

    The primitive to implement is :meth:`save`; :meth:`save_batch` is built on it.
    """

    @_primitive
    def save(self, data: Any, file_path: PathLike, **kwargs: Any) -> None:
        """Store ``data`` at ``file_path``, replacing what was there.

        Parameters
        ----------
        data
            The array or object to store.
        file_path
            Where to store it.
        **kwargs
            Options of the backend and format.

        Raises
        ------
        UnsupportedDataError
            The backend (or the path's format) cannot hold ``data``.
        IncompleteBackendError
            The backend does not implement it.
        """
        raise self._missing("save")

    def save_batch(
        self,
        data_list: Sequence[Any],
        file_paths: Sequence[PathLike],
        *,
        progress: bool = False,
        max_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Save ``data_list[i]`` at ``file_paths[i]``; in parallel where the backend is I/O-bound.

        Parameters
        ----------
        data_list, file_paths
            The items and their paths, one path per item.
        progress
            Show a progress bar (tqdm) on stderr.
        max_workers
            Threads of a parallel backend (``None``: the default pool size; 1: one at a time).
        **kwargs
            Options passed to every :meth:`save`.

        Raises
        ------
        ValueError
            ``data_list`` and ``file_paths`` differ in length.
        BatchError
            Some saves failed: every failure is collected, each with its path and why.
        """
        from polystore.batch import run_batch

        data_items = list(data_list)
        paths = list(file_paths)
        if len(data_items) != len(paths):
            from polystore.exceptions import InvalidOptionError

            raise InvalidOptionError(
                f"save_batch got {len(data_items)} data items but {len(paths)} paths; "
                "pass one path per item."
            )
        run_batch(
            "save_batch",
            lambda item: self.save(item[0], item[1], **kwargs),
            list(zip(data_items, paths, strict=True)),
            parallel=self.parallel_io,
            max_workers=max_workers,
            progress=progress,
            path_of=lambda item: str(item[1]),
        )


class StorageBackend(DataSink, DataSource):
    """A read-write backend: the full contract.

    Primitives to implement: those of :class:`DataSource` and :class:`DataSink`, and
    :meth:`delete` and :meth:`ensure_directory`. :meth:`delete_all`, :meth:`copy` and
    :meth:`move` are built on them; override them where the backend can do better (a rename,
    a server-side copy). ``tests/test_contract.py``'s suite checks a backend against all of it.
    """

    @_primitive
    def delete(self, path: PathLike) -> None:
        """Remove a file or an empty directory.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path``.
        DirectoryNotEmptyError
            ``path`` is a directory with something in it.
        """
        raise self._missing("delete")

    @_primitive
    def ensure_directory(self, directory: PathLike) -> str:
        """Create ``directory`` and its parents if needed.

        Returns
        -------
        str
            The directory, as a string.

        Raises
        ------
        NotADirectoryStorageError
            A file is in the way.
        """
        raise self._missing("ensure_directory")

    def delete_all(self, path: PathLike) -> None:
        """Remove ``path`` and, for a directory, everything below it."""
        if self.is_dir(path):
            for name in self.list_dir(path):
                self.delete_all(f"{os.fspath(path).rstrip('/')}/{name}")
        self.delete(path)

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy a file (or a directory tree) within this backend."""
        if self.is_dir(source):
            src, dst = given_path(source), given_path(destination)
            refuse_into_itself(src, dst, *(posixpath.normpath("/" + p.lstrip("/")) for p in (src, dst)))
            self.ensure_directory(destination)
            for name in self.list_dir(source):
                src = f"{os.fspath(source).rstrip('/')}/{name}"
                self.copy(src, f"{os.fspath(destination).rstrip('/')}/{name}", **kwargs)
            return
        self.save(self.load(source), destination, **kwargs)

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Move a file (or a directory tree) within this backend."""
        self.copy(source, destination, **kwargs)
        self.delete_all(source)


class ReadOnlyBackend(DataSource):
    """A backend that can be read but never written: every write raises a clear error."""

    supports_writes: ClassVar[bool] = False

    def _refuse(self, operation: str, path: object) -> ReadOnlyBackendError:
        return ReadOnlyBackendError(
            f"Backend {self.backend_label} is read-only: cannot {operation} '{path}'. "
            "Write to a writable backend instead (for example 'disk' or 'memory'), "
            "e.g. fm.copy(path, path, backend=<this one>, dest_backend='disk')."
        )

    def save(self, data: Any, file_path: PathLike, **kwargs: Any) -> None:
        raise self._refuse("save", file_path)

    def save_batch(self, data_list: Sequence[Any], file_paths: Sequence[PathLike], **kwargs: Any) -> None:
        raise self._refuse("save_batch", ", ".join(str(p) for p in list(file_paths)[:3]))

    def delete(self, path: PathLike) -> None:
        raise self._refuse("delete", path)

    def delete_all(self, path: PathLike) -> None:
        raise self._refuse("delete_all", path)

    def ensure_directory(self, directory: PathLike) -> str:
        raise self._refuse("create directory", directory)

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        raise self._refuse("copy into", destination)

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        raise self._refuse("move", source)
