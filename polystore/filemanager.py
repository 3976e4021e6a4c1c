"""FileManager: one API over every backend, and copies between them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from polystore.arrays import convert
from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend
from polystore.base import DataSource, FileStat, PathLike, StorageBackend
from polystore.exceptions import InvalidOptionError, ReadOnlyBackendError
from polystore.registry import BackendRegistry

CROSS_BACKEND_CHUNK = 64
"""Files loaded into memory at once when a directory is copied between backends."""


class FileManager:
    """Save, load and manage data on any registered backend, chosen per call.

    Every method takes ``backend`` by keyword or as its positional argument after the
    path(s); ``default_backend`` is used when a call gives none.

    Parameters
    ----------
    registry
        A :class:`~polystore.registry.BackendRegistry`, or a plain mapping of names to backend
        instances used on top of every registered class and installed addon. ``None``: a
        fresh registry.
    default_backend
        The backend of calls that name none (``None``: every call must name one).

    Examples
    --------
    >>> import numpy as np
    >>> from polystore import FileManager
    >>> fm = FileManager(default_backend="memory")
    >>> fm.save(np.arange(3), "/a.npy")
    >>> fm.load("/a.npy")
    array([0, 1, 2])
    """

    def __init__(
        self,
        registry: BackendRegistry | Mapping[str, Any] | None = None,
        *,
        default_backend: str | None = None,
    ) -> None:
        if isinstance(registry, BackendRegistry):
            self.registry = registry
        else:
            self.registry = BackendRegistry(registry)
        self.default_backend = default_backend

    def get_backend(self, backend: str | None) -> DataSource:
        """The backend instance registered as ``backend``.

        Parameters
        ----------
        backend
            A registered backend name (``"disk"``, ``"memory"``, ``"zarr"``, an addon's), or
            ``None`` for the manager's ``default_backend``.

        Returns
        -------
        DataSource
            The instance, created on first use and reused after.

        Raises
        ------
        BackendNotFoundError
            No backend of that name is registered or installed (the message lists those that are).
        ValueError
            ``backend`` is ``None`` and the manager has no ``default_backend``.
        """
        name = backend if backend is not None else self.default_backend
        if name is None:
            raise InvalidOptionError(
                "No backend given: pass backend='disk' (or 'memory', ...), or create the "
                "FileManager with default_backend=...."
            )
        return self.registry[name]

    def _writable(self, backend: str | None) -> StorageBackend:
        instance = self.get_backend(backend)
        if not isinstance(instance, StorageBackend):
            raise ReadOnlyBackendError(
                f"Backend {instance.backend_label} is read-only; write to a writable backend instead."
            )
        return instance

    # -- data ------------------------------------------------------------------------------
    def save(
        self, data: Any, path: PathLike, backend: str | tuple[str, ...] | None = None, **kwargs: Any
    ) -> None:
        """Save ``data`` at ``path``.

        Parameters
        ----------
        data
            An array of any supported framework, or what the destination's format holds (a dict
            for ``.json``, a DataFrame for ``.csv``, ROIs for ``.roi.zip``...).
        path
            Where to write; on disk the extension chooses the format.
        backend
            The backend's name (or the manager's ``default_backend``), or a tuple of names: one
            call, several places (``("zarr", "napari")``): storage first, then live viewers with
            ``policy="latest"``, so that a viewer that falls behind shows the newest frame and
            never slows the storage side (docs/streaming.md).
        **kwargs
            Options of the backend and format (``imagej=True, axes="CYX"`` for TIFF,
            ``chunks=`` for zarr; ``polystore formats`` lists them).

        Raises
        ------
        UnsupportedFormatError
            The extension names no format this backend writes.
        UnsupportedDataError
            The format cannot hold ``data``.
        ReadOnlyBackendError
            The backend does not write.
        """
        if isinstance(backend, tuple):
            targets = sorted((self.get_backend(name) for name in backend),
                             key=lambda target: getattr(target, "is_live_view", False))
            # each option goes where it belongs: a stream's own (kind=, wait_for_ack=...) to the
            # streams only, the rest to storage (a stream ignores a format's options)
            stream_only = frozenset().union(*(getattr(t, "STREAM_ONLY_OPTIONS", ()) for t in targets))
            for target in targets:  # storage first: a viewer never delays it, nor loses it a frame
                if getattr(target, "is_live_view", False):
                    options = {**kwargs, "policy": "latest"}
                else:
                    options = {key: value for key, value in kwargs.items() if key not in stream_only}
                target.save(data, path, **options)  # type: ignore[attr-defined]
            return
        self.get_backend(backend).save(data, path, **kwargs)  # type: ignore[attr-defined]

    def load(
        self, path: PathLike, backend: str | None = None, *, framework: str | None = None, **kwargs: Any
    ) -> Any:
        """Load ``path``.

        Parameters
        ----------
        path
            What to read.
        backend
            The backend's name (or the manager's ``default_backend``).
        framework
            ``"numpy"``, ``"torch"``, ``"jax"``, ``"tensorflow"`` or ``"cupy"``: arrays come back
            as that framework's (without a copy where DLPack allows); ``None``: as stored.
        **kwargs
            Options of the backend and format (``mmap_mode="r"`` for ``.npy``, ``level=`` for
            a zarr pyramid).

        Returns
        -------
        Any
            The array or object stored at ``path``.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path`` (also a ``FileNotFoundError``).
        CorruptDataError
            The file is damaged or not in the format its extension says.
        """
        return convert(self.get_backend(backend).load(path, **kwargs), framework)

    def save_batch(
        self,
        data_list: Sequence[Any],
        paths: Sequence[PathLike],
        backend: str | None = None,
        client: Any = None,
        **kwargs: Any,
    ) -> None:
        """Save many items, in parallel on I/O-bound backends.

        Parameters
        ----------
        data_list
            The items, one per path.
        paths
            Where each goes (the zarr backend assembles plate planes named
            ``plate.zarr/A01_s1_w2.tif`` into field images).
        backend
            The backend's name (or the manager's ``default_backend``).
        client
            A dask.distributed ``Client``: a zarr plate's fields are written on its cluster,
            one task per field (``polystore.distributed.save_batch``; zarr backend only).
        **kwargs
            Options of the backend and format; ``progress=True`` shows a bar.

        Raises
        ------
        BatchError
            Some items failed; it lists each failure and its path.
        """
        target = self.get_backend(backend)
        if client is not None:  # imported only when asked for: it needs dask
            from polystore.distributed.batch import save_batch

            save_batch(target, data_list, paths, client=client, **kwargs)
            return
        target.save_batch(data_list, paths, **kwargs)  # type: ignore[attr-defined]

    def load_batch(
        self,
        paths: Sequence[PathLike],
        backend: str | None = None,
        *,
        framework: str | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Load many paths, in order, in parallel on I/O-bound backends.

        Parameters
        ----------
        paths
            What to read.
        backend
            The backend's name (or the manager's ``default_backend``).
        framework
            As in :meth:`load`.
        **kwargs
            Options of the backend and format.

        Returns
        -------
        list
            One item per path, in the order given.

        Raises
        ------
        BatchError
            Some paths failed; it lists each failure and its path.
        """
        loaded = self.get_backend(backend).load_batch(paths, **kwargs)
        return [convert(item, framework) for item in loaded]

    # -- namespace -------------------------------------------------------------------------
    def list_files(
        self,
        directory: PathLike,
        backend: str | None = None,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Files in ``directory``, sorted.

        Parameters
        ----------
        directory
            The folder (or zarr group, or prefix) to list.
        backend
            The backend's name (or the manager's ``default_backend``).
        pattern
            A glob on file names (``"*_w2*"``).
        extensions
            Keep only these extensions (``[".tif", ".npy"]``).
        recursive
            Also every file below sub-folders.

        Returns
        -------
        list of str
            The files' paths, as they would be passed to :meth:`load`.

        Raises
        ------
        StorageFileNotFoundError
            ``directory`` does not exist.
        """
        return self.get_backend(backend).list_files(
            directory, pattern=pattern, extensions=extensions, recursive=recursive, **kwargs
        )

    def list_dir(self, path: PathLike, backend: str | None = None) -> list[str]:
        """Names of the entries directly inside ``path``, sorted (files and folders).

        Raises
        ------
        StorageFileNotFoundError
            ``path`` does not exist.
        NotADirectoryStorageError
            ``path`` is a file.
        """
        return self.get_backend(backend).list_dir(path)

    def exists(self, path: PathLike, backend: str | None = None) -> bool:
        """Whether a file or folder is at ``path``."""
        return self.get_backend(backend).exists(path)

    def is_file(self, path: PathLike, backend: str | None = None) -> bool:
        """Whether ``path`` is a file (a zarr array or image counts as one)."""
        return self.get_backend(backend).is_file(path)

    def is_dir(self, path: PathLike, backend: str | None = None) -> bool:
        """Whether ``path`` is a folder (a zarr group that is not an image counts as one)."""
        return self.get_backend(backend).is_dir(path)

    def stat(self, path: PathLike, backend: str | None = None) -> FileStat:
        """What is at ``path``: file or directory, size, modification time.

        Returns
        -------
        FileStat
            The same fields with the same meaning on every backend.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path``.
        """
        return self.get_backend(backend).stat(path)

    def delete(self, path: PathLike, backend: str | None = None) -> None:
        """Remove a file or an empty directory.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path``.
        DirectoryNotEmptyError
            ``path`` is a folder with something in it (:meth:`delete_all` removes it).
        ReadOnlyBackendError
            The backend does not write.
        """
        self._writable(backend).delete(path)

    def delete_all(self, path: PathLike, backend: str | None = None) -> None:
        """Remove a file, or a directory with everything below it.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``path``.
        ReadOnlyBackendError
            The backend does not write.
        """
        self._writable(backend).delete_all(path)

    def ensure_directory(self, directory: PathLike, backend: str | None = None) -> str:
        """Create ``directory`` and its parents where missing.

        Returns
        -------
        str
            The directory's path as the backend names it.
        """
        return self._writable(backend).ensure_directory(directory)

    # -- between places --------------------------------------------------------------------
    def copy(
        self,
        source: PathLike,
        destination: PathLike,
        backend: str | None = None,
        *,
        dest_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Copy a file or directory tree, within ``backend`` or from it to ``dest_backend``.

        Across backends, each file is loaded from the source and saved to the destination
        (so memory -> disk materialises objects in the format of the destination's
        extension). Between two disk backends the bytes are copied instead (each file
        atomically, as the disk backend writes), so the copy is identical to its source, unless
        save options are given. Between two memory backends the objects are copied, so the two
        stores are independent, as within one.

        Parameters
        ----------
        source, destination
            The paths, each in its own backend.
        backend
            The source's backend (or the manager's ``default_backend``).
        dest_backend
            The destination's backend; ``None``: the source's.
        **kwargs
            Options for the destination's ``save``.

        Raises
        ------
        StorageFileNotFoundError
            Nothing is at ``source``.
        ReadOnlyBackendError
            The destination's backend does not write.
        """
        self._copy(source, destination, backend, dest_backend, kwargs, independent=True)

    def _copy(
        self,
        source: PathLike,
        destination: PathLike,
        backend: str | None,
        dest_backend: str | None,
        kwargs: dict[str, Any],
        *,
        independent: bool,
    ) -> None:
        """:meth:`copy`; ``independent``: a memory store gets its own objects (a move, which
        drops the source's, need not copy them)."""
        source_backend = self.get_backend(backend)
        target_name = dest_backend if dest_backend is not None else backend
        target = self._writable(target_name)
        if target is source_backend:
            target.copy(source, destination, **kwargs)
            return
        if isinstance(source_backend, DiskBackend) and isinstance(target, DiskBackend) and not kwargs:
            # decoding and encoding again would lose what a format's loader does not carry
            target.copy_from(source_backend, source, destination)
            return
        if independent and isinstance(source_backend, MemoryBackend) and isinstance(target, MemoryBackend):
            kwargs = {"copy": True, **kwargs}  # a local store hands out the very objects it holds
        if not source_backend.is_dir(source):
            target.save(source_backend.load(source), destination, **kwargs)
            return
        if getattr(target, "supports_directories", True):  # a stream has no folders to make
            target.ensure_directory(destination)
        files = source_backend.list_files(source, recursive=True)
        prefix = os.fspath(source).rstrip("/")
        prefix = "" if prefix in ("", ".") else prefix
        for start in range(0, len(files), CROSS_BACKEND_CHUNK):
            chunk = files[start : start + CROSS_BACKEND_CHUNK]
            data = source_backend.load_batch(chunk)
            destinations = [
                f"{os.fspath(destination).rstrip('/')}/{path[len(prefix):].lstrip('/')}"
                for path in chunk
            ]
            target.save_batch(data, destinations, **kwargs)

    def move(
        self,
        source: PathLike,
        destination: PathLike,
        backend: str | None = None,
        *,
        dest_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Move a file or directory tree, within ``backend`` or to ``dest_backend``.

        Parameters and errors as in :meth:`copy`; across backends the source is removed once
        everything is copied.
        """
        source_backend = self._writable(backend)
        target_name = dest_backend if dest_backend is not None else backend
        if self.get_backend(target_name) is source_backend:
            source_backend.move(source, destination, **kwargs)
            return
        self._copy(source, destination, backend, target_name, kwargs, independent=False)
        source_backend.delete_all(source)
