"""Local files, the format chosen by extension, every write atomic, a root that holds."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat as stat_module
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from polystore.arrays import convert
from polystore.atomic import atomic_write_at, is_internal_name
from polystore.backends.disk_listing import listing, open_folder, remove_tree
from polystore.backends.disk_paths import ConfinedTree, Entry, OpenTree, Tree
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.exceptions import (
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    PathEscapeError,
    StorageFileNotFoundError,
    SymlinkLoopError,
    UnsupportedFormatError,
    from_os_error,
)
from polystore.formats import check_options, format_for, read_with, write_with
from polystore.paths import (
    given_path,
    join_given,
    matches,
    normalize_extensions,
    refuse_directory_path,
    refuse_into_itself,
)

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
"""A file is opened without following a link (the tree resolved links already: one found now
was planted since) and without blocking (a FIFO would wait for a writer forever)."""
_ATTEMPTS = 3
"""Walks of a path whose last name keeps turning into a link under us, before giving up."""


class DiskBackend(StorageBackend):
    """Files on the local filesystem (POSIX: Linux, macOS).

    ``root`` confines the backend to a folder: relative paths are taken inside it, ``..``
    and absolute paths elsewhere raise :class:`~polystore.exceptions.PathEscapeError`, and a
    symbolic link inside the root is followed only while it leads to somewhere inside the
    root (otherwise :class:`~polystore.exceptions.PathEscapeError`); ``delete`` and ``move``
    act on a link itself, never on what it points to. Confinement holds while other
    processes change the tree: paths are walked through directory descriptors without
    following links (see ``polystore.backends.disk_paths``). Without ``root`` paths are used
    as given.

    Parameters
    ----------
    root
        The folder the backend is confined to (``None``: paths as given).
    durable
        Fsync each write before it is renamed into place (survives a power cut); ``False``
        is still atomic against a crash of the writer.
    """

    _backend_type = "disk"
    parallel_io = True

    def __init__(self, root: PathLike | None = None, *, durable: bool = True) -> None:
        self._tree: Tree = ConfinedTree(given_path(root)) if root is not None else OpenTree()
        self.root = Path(self._tree.root) if self._tree.root is not None else None
        self.durable = durable

    # -- paths -------------------------------------------------------------------------
    def _entry(self, text: str, *, follow: bool = True, make_parents: bool = False) -> Entry:
        return self._tree.entry(text, follow=follow, make_parents=make_parents)

    def _open_file(self, text: str) -> tuple[int, os.stat_result]:
        """A descriptor of the regular file at ``text`` (links followed as the tree allows)."""
        for _ in range(_ATTEMPTS):
            with self._entry(text) as entry:
                if entry.name is None:
                    raise _is_a_directory(text)
                try:
                    fd = os.open(entry.name, _READ_FLAGS, dir_fd=entry.dir_fd)
                except OSError as error:
                    if error.errno == errno.ELOOP:  # became a link after the walk: walk again
                        continue
                    raise from_os_error(error, text, "open") from error
            info = os.fstat(fd)
            if stat_module.S_ISREG(info.st_mode):
                return fd, info
            os.close(fd)
            if stat_module.S_ISDIR(info.st_mode):
                raise _is_a_directory(text)
            raise UnsupportedFormatError(
                f"'{text}' is not a regular file (a FIFO, socket or device); polystore reads files."
            )
        raise SymlinkLoopError(
            errno.ELOOP, f"'{text}' kept turning into a symbolic link while it was opened."
        )

    @staticmethod
    def _mode(entry: Entry) -> int:
        try:
            return entry.lstat().st_mode
        except OSError as error:
            raise from_os_error(error, entry.shown, "look at") from error

    def _refuse_root(self, entry: Entry, operation: str) -> None:
        if entry.name is None:
            where = f"the backend's root '{self.root}'" if self.root is not None else "a working folder"
            cls = PathEscapeError if self.root is not None else InvalidPathError
            raise cls(f"Refusing to {operation} '{entry.shown}': it is {where}. Name what is inside it.")

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
        text = given_path(file_path)
        try:
            fmt = format_for(text, format)
        except UnsupportedFormatError:
            if self.is_dir(text):  # a folder or a missing path has no format: say what is wrong
                raise _is_a_directory(text) from None
            if not self.exists(text):
                raise StorageFileNotFoundError(text, "disk") from None
            raise
        check_options(fmt, "load", options)
        fd, _ = self._open_file(text)
        with _reader(fd, text) as handle:
            data = read_with(fmt, handle, text, options)
        return convert(data, framework)

    def _listing(self, directory: PathLike, recursive: bool) -> list[tuple[str, bool]]:
        text = given_path(directory)
        with self._entry(text) as entry:
            folder = open_folder(entry)
        return listing(self._tree, folder, text, recursive)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        # docstring inherited
        wanted = normalize_extensions(extensions)
        return sorted(
            join_given(directory, relative)
            for relative, is_dir in self._listing(directory, recursive)
            if not is_dir and matches(relative.rsplit("/", 1)[-1], pattern, wanted)
        )

    def list_dir(self, path: PathLike) -> list[str]:
        """Names of the entries directly inside ``path``, sorted; symbolic links included, wherever
        they lead (so that one pointing out of the root can be seen and deleted)."""
        with self._entry(given_path(path)) as entry:
            folder = open_folder(entry)
        try:
            return sorted(name for name in os.listdir(folder) if not is_internal_name(name))
        finally:
            os.close(folder)

    def _mode_or_none(self, path: PathLike) -> int | None:
        try:
            with self._entry(given_path(path)) as entry:
                return entry.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, path: PathLike) -> bool:
        return self._mode_or_none(path) is not None

    def is_file(self, path: PathLike) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat_module.S_ISREG(mode)

    def is_dir(self, path: PathLike) -> bool:
        mode = self._mode_or_none(path)
        return mode is not None and stat_module.S_ISDIR(mode)

    def stat(self, path: PathLike) -> FileStat:
        # docstring inherited
        text = given_path(path)
        with self._entry(text) as entry:
            try:
                info = entry.lstat()
            except OSError as error:
                raise from_os_error(error, text, "look at") from error
        if stat_module.S_ISDIR(info.st_mode):
            return FileStat(text, "directory", None, info.st_mtime)
        return FileStat(text, "file", info.st_size, info.st_mtime)

    # -- write ---------------------------------------------------------------------------
    def save(self, data: Any, file_path: PathLike, *, format: str | None = None, **options: Any) -> None:
        """Write ``data`` in the format of the file's extension (or ``format``), atomically.

        ``options`` go to the format (see ``polystore formats``), e.g. ``imagej=True,
        axes='TZCYX'`` for TIFF or ``compress=True`` for ``.npz``.
        """
        text = given_path(file_path)
        refuse_directory_path(text)
        try:
            fmt = format_for(text, format)
        except UnsupportedFormatError:
            if self.is_dir(text):
                raise _cannot_save_on_folder(text) from None
            raise
        check_options(fmt, "save", options)
        with self._entry(text, make_parents=True) as entry:
            self._refuse_folder_target(entry)
            try:
                with self._write(entry, text) as out:
                    write_with(fmt, data, out, text, options)
            except OSError as error:
                raise from_os_error(error, text, "save") from error

    def _write(
        self, entry: Entry, shown: str, permissions: int = 0o666
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        return atomic_write_at(
            entry.dir_fd, entry.name or "", "wb", durable=self.durable, shown=shown, permissions=permissions
        )

    @classmethod
    def _refuse_folder_target(cls, entry: Entry) -> None:
        if entry.name is None:
            raise _cannot_save_on_folder(entry.shown)
        with contextlib.suppress(FileNotFoundError):
            if stat_module.S_ISDIR(entry.lstat().st_mode):
                raise _cannot_save_on_folder(entry.shown)

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        text = given_path(directory)
        with self._entry(text, make_parents=True) as entry:
            if entry.name is None:
                return text
            try:
                os.mkdir(entry.name, 0o777, dir_fd=entry.dir_fd)
            except FileExistsError:
                if not stat_module.S_ISDIR(self._mode(entry)):
                    raise NotADirectoryStorageError(
                        f"Cannot create directory '{text}': a file is in the way."
                    ) from None
            except OSError as error:
                raise from_os_error(error, text, "create directory") from error
        return text

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        with self._entry(given_path(path), follow=False) as entry:
            self._refuse_root(entry, "delete")
            assert entry.name is not None
            try:
                if stat_module.S_ISDIR(self._mode(entry)):
                    os.rmdir(entry.name, dir_fd=entry.dir_fd)
                else:
                    os.unlink(entry.name, dir_fd=entry.dir_fd)
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise DirectoryNotEmptyError(
                        f"Directory '{entry.shown}' is not empty; use delete_all to remove it "
                        "with its contents."
                    ) from error
                raise from_os_error(error, entry.shown, "delete") from error

    def delete_all(self, path: PathLike) -> None:
        # docstring inherited
        with self._entry(given_path(path), follow=False) as entry:
            self._refuse_root(entry, "delete")
            assert entry.name is not None
            try:
                if stat_module.S_ISDIR(self._mode(entry)):
                    remove_tree(entry.dir_fd, entry.name)
                else:
                    os.unlink(entry.name, dir_fd=entry.dir_fd)
            except OSError as error:
                raise from_os_error(error, entry.shown, "delete") from error

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy a file (atomically) or a directory tree, bytes for bytes.

        A tree is copied as :meth:`list_files` sees it: links inside the root are copied as
        what they lead to; links leading out of the root are left out.
        """
        self.copy_from(self, source, destination)

    def copy_from(self, origin: DiskBackend, source: PathLike, destination: PathLike) -> None:
        """Copy a file or tree from ``origin`` (another disk backend, or this one) to
        ``destination`` here, bytes for bytes, each file written atomically.

        ``source`` is read as ``origin`` confines its paths, ``destination`` written as this
        backend confines its own; nothing is decoded, so the copy is identical to its source
        (what a format's loader does not carry, such as TIFF tags, is kept). A folder copied to
        a place inside itself, by name or through symbolic links, is refused.
        """
        src, dst = given_path(source), given_path(destination)
        with origin._entry(src) as entry:
            is_dir = stat_module.S_ISDIR(origin._mode(entry))
        if not is_dir:
            self._copy_file(origin, src, dst)
            return
        # real paths: a destination reached through a link into the source is inside it too
        refuse_into_itself(src, dst, origin._real(src), self._real(dst))
        self.ensure_directory(dst)
        for relative, is_folder in origin._listing(src, recursive=True):
            if is_folder:
                self.ensure_directory(join_given(dst, relative))
            else:
                self._copy_file(origin, join_given(src, relative), join_given(dst, relative))

    def _real(self, text: str) -> str:
        """Where ``text`` is on the filesystem, links resolved, to compare places (it opens
        nothing: reads and writes still go through the confined tree). ``..`` is taken
        lexically first, as the tree takes it."""
        base = self._tree.root if self._tree.root is not None else os.getcwd()
        return os.path.realpath(os.path.normpath(os.path.join(base, text)))

    def _copy_file(self, origin: DiskBackend, src: str, dst: str) -> None:
        refuse_directory_path(dst, f"copy file '{src}' to")
        fd, info = origin._open_file(src)
        with open(fd, "rb") as source, self._entry(dst, make_parents=True) as entry:
            self._refuse_folder_target(entry)
            try:
                # a new copy is as private as its source (as cp makes it); a file replaced keeps its mode
                with self._write(entry, dst, stat_module.S_IMODE(info.st_mode) & 0o777) as out:
                    _copy_bytes(source, out, info.st_size)
            except OSError as error:
                raise from_os_error(error, dst, "copy to") from error

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Rename (atomic within a filesystem); copy and delete across filesystems or into an
        existing folder. A link is moved as a link."""
        src, dst = given_path(source), given_path(destination)
        with (
            self._entry(src, follow=False) as origin,
            self._entry(dst, follow=False, make_parents=True) as target,
        ):
            self._refuse_root(origin, "move")
            if not stat_module.S_ISDIR(self._mode(origin)):  # a missing source is named as such
                refuse_directory_path(dst, f"move file '{src}' to")
            if target.name is None:
                raise _cannot_save_on_folder(dst)
            assert origin.name is not None
            try:
                os.replace(origin.name, target.name, src_dir_fd=origin.dir_fd, dst_dir_fd=target.dir_fd)
                return
            except OSError as error:
                if error.errno == errno.EINVAL:
                    raise InvalidPathError(f"Cannot move '{src}' into itself ('{dst}').") from error
                if error.errno not in (errno.EXDEV, errno.ENOTEMPTY, errno.EEXIST):
                    raise from_os_error(error, dst, f"move '{src}' to") from error
        self.copy(src, dst)  # another filesystem, or a non-empty folder in the way: merge into it
        self.delete_all(src)


def _reader(fd: int, name: str) -> io.BufferedReader:
    """A buffered binary handle on ``fd`` that carries the file's name (libraries print it)."""
    raw = io.FileIO(fd, "rb", closefd=True)
    raw.name = name  # FileIO's name is writable; it is the int otherwise
    return io.BufferedReader(raw)


def _copy_bytes(source: IO[bytes], out: IO[bytes], size: int) -> None:
    """Copy through the kernel (sendfile) where it can; shutil's own fast path needs paths."""
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(out.fileno(), source.fileno(), offset, size - offset)
            if sent == 0:
                break
            offset += sent
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP) or offset:
            raise
    else:
        return
    shutil.copyfileobj(source, out)


def _is_a_directory(text: str) -> IsADirectoryStorageError:
    return IsADirectoryStorageError(f"'{text}' is a directory; load a file inside it (see list_files).")


def _cannot_save_on_folder(text: str) -> IsADirectoryStorageError:
    return IsADirectoryStorageError(
        f"Cannot save to '{text}': it is a directory. Choose a file name inside it."
    )


__all__ = ["DiskBackend"]
