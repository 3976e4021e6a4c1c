"""Local files, the format chosen by extension, every write atomic."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as stat_module
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from polystore.arrays import convert
from polystore.atomic import atomic_write, commit_temp, is_internal_name, temp_path_for
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.exceptions import (
    DirectoryNotEmptyError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    PathEscapeError,
    StorageFileNotFoundError,
    UnsupportedFormatError,
)
from polystore.formats import format_for
from polystore.paths import join_given, matches, normalize_extensions


class DiskBackend(StorageBackend):
    """Files on the local filesystem.

    ``root`` confines the backend to a folder: relative paths are taken inside it, and a
    path that resolves outside it (``..``, an absolute path elsewhere, a symlink pointing
    out) raises :class:`PathEscapeError`. Without ``root`` paths are used as given.
    ``durable`` fsyncs each write before it is renamed into place.
    """

    _backend_type = "disk"
    parallel_io = True

    def __init__(self, root: PathLike | None = None, *, durable: bool = True) -> None:
        self.root = Path(os.path.realpath(root)) if root is not None else None
        self.durable = durable

    # -- paths -------------------------------------------------------------------------
    def resolve(self, path: PathLike) -> Path:
        """The filesystem path for ``path``, checked against ``root``."""
        candidate = path if isinstance(path, Path) else Path(path)  # a Path is immutable: reuse it
        if self.root is None:
            return candidate
        real = Path(os.path.realpath(self.root / candidate))
        if real != self.root and self.root not in real.parents:
            raise PathEscapeError(
                f"'{path}' resolves to '{real}', outside this backend's root '{self.root}'. "
                "Use a path inside the root (relative paths are taken from it)."
            )
        return real

    def _existing(self, path: PathLike) -> Path:
        target = self.resolve(path)
        if not target.exists():
            raise StorageFileNotFoundError(str(path), "disk")
        return target

    # -- read ----------------------------------------------------------------------------
    def load(
        self,
        file_path: PathLike,
        *,
        format: str | None = None,
        framework: str | None = None,
        **options: Any,
    ) -> Any:
        # docstring inherited
        target = self.resolve(file_path)
        try:
            fmt = format_for(target, format)
        except UnsupportedFormatError:
            if target.is_dir():  # a folder or a missing path has no format: say what is wrong
                raise IsADirectoryStorageError(
                    f"'{file_path}' is a directory; load a file inside it (see list_files)."
                ) from None
            if not target.exists():
                raise StorageFileNotFoundError(str(file_path), "disk") from None
            raise
        try:
            data = fmt.load(target, **options)
        except FileNotFoundError as error:
            raise StorageFileNotFoundError(str(file_path), "disk") from error
        except IsADirectoryError as error:
            raise IsADirectoryStorageError(
                f"'{file_path}' is a directory; load a file inside it (see list_files)."
            ) from error
        return convert(data, framework)

    def _walk(self, directory: Path, recursive: bool) -> Iterator[os.DirEntry[str]]:
        with os.scandir(directory) as entries:
            for entry in entries:
                if is_internal_name(entry.name):
                    continue
                if entry.is_dir():
                    if recursive:
                        yield from self._walk(Path(entry.path), recursive)
                elif entry.is_file():
                    yield entry

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        # docstring inherited
        base = self._existing(directory)
        if not base.is_dir():
            raise NotADirectoryStorageError(f"'{directory}' is a file, not a directory.")
        wanted = normalize_extensions(extensions)
        found = [
            join_given(directory, Path(os.path.relpath(entry.path, base)).as_posix())
            for entry in self._walk(base, recursive)
            if matches(entry.name, pattern, wanted)
        ]
        return sorted(found)

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        target = self._existing(path)
        if not target.is_dir():
            raise NotADirectoryStorageError(f"'{path}' is a file, not a directory.")
        return sorted(name for name in os.listdir(target) if not is_internal_name(name))

    def exists(self, path: PathLike) -> bool:
        return self.resolve(path).exists()

    def is_file(self, path: PathLike) -> bool:
        return self.resolve(path).is_file()

    def is_dir(self, path: PathLike) -> bool:
        return self.resolve(path).is_dir()

    def stat(self, path: PathLike) -> FileStat:
        # docstring inherited
        info = self._existing(path).stat()
        if stat_module.S_ISDIR(info.st_mode):
            return FileStat(str(path), "directory", None, info.st_mtime)
        return FileStat(str(path), "file", info.st_size, info.st_mtime)

    # -- write ---------------------------------------------------------------------------
    def save(self, data: Any, file_path: PathLike, *, format: str | None = None, **options: Any) -> None:
        """Write ``data`` in the format of the file's extension (or ``format``), atomically.

        ``options`` go to the format (see ``polystore formats``), e.g. ``imagej=True,
        axes='TZCYX'`` for TIFF or ``compress=True`` for ``.npz``.
        """
        target = self.resolve(file_path)
        if target.is_dir():
            raise IsADirectoryStorageError(
                f"Cannot save to '{file_path}': it is a directory. Choose a file name inside it."
            )
        fmt = format_for(target, format)
        try:
            with atomic_write(target, "wb", durable=self.durable) as handle:
                fmt.save(data, handle, **options)
        except (FileExistsError, NotADirectoryError) as error:
            if target.parent.is_dir():
                raise
            raise NotADirectoryStorageError(
                f"Cannot save to '{file_path}': a file is in the way ({error.filename})."
            ) from error

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        target = self.resolve(directory)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except FileExistsError as error:
            raise NotADirectoryStorageError(
                f"Cannot create directory '{directory}': a file is in the way ({error.filename})."
            ) from error
        return os.fspath(directory)

    def _refuse_root(self, path: Path, operation: str) -> None:
        if self.root is not None and path == self.root:
            raise PathEscapeError(f"Refusing to {operation} the backend's root '{self.root}'.")

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        target = self._existing(path)
        self._refuse_root(target, "delete")
        if target.is_dir() and not target.is_symlink():
            try:
                target.rmdir()
            except OSError as error:
                raise DirectoryNotEmptyError(
                    f"Directory '{path}' is not empty; use delete_all to remove it with its contents."
                ) from error
        else:
            target.unlink()

    def delete_all(self, path: PathLike) -> None:
        # docstring inherited
        target = self._existing(path)
        self._refuse_root(target, "delete")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy a file (atomically) or a directory tree, bytes for bytes."""
        src = self._existing(source)
        dst = self.resolve(destination)
        if src.is_dir():
            shutil.copytree(
                src, dst, dirs_exist_ok=True, copy_function=self._copy_file,
                ignore=lambda _dir, names: [n for n in names if is_internal_name(n)],
            )
        else:
            self._copy_file(src, dst)

    def _copy_file(self, src: PathLike, dst: PathLike) -> None:
        target = Path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path_for(target)
        try:
            shutil.copyfile(src, temp)  # uses the kernel's copy (sendfile) where it can
            commit_temp(temp, target, durable=self.durable)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Rename (atomic within a filesystem); copy and delete across filesystems."""
        src = self._existing(source)
        self._refuse_root(src, "move")
        dst = self.resolve(destination)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except OSError:  # another filesystem, or a non-empty directory in the way
            self.copy(source, destination)
            self.delete_all(source)
