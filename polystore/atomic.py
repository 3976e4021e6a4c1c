"""Atomic file writes and a cross-platform lock for read-modify-write.

A write goes to a temporary file in the target's own folder (same filesystem, so the final
``os.replace`` is an atomic rename), is flushed and fsync'ed, and only then renamed over the
target. A reader therefore sees the old complete file or the new complete file, never a torn
one, whatever happens to the writer. Temporary files are hidden (dot-prefixed), carry the
writer's pid, and are left out of every listing; :func:`sweep_stale_temp_files` removes the
ones whose writer died.

Renames alone make concurrent *writes* safe (last writer wins). Read-modify-write needs a
lock: :func:`file_lock` (filelock, a separate lock file that is never unlinked, so a process
waiting on it can never end up holding a lock on a deleted inode).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from polystore.exceptions import (
    CorruptDataError,
    InvalidOptionError,
    NotADirectoryStorageError,
    UnsupportedDataError,
    from_os_error,
)
from polystore.lazy import optional_import

TEMP_SUFFIX = ".polystore-tmp"
LOCK_SUFFIX = ".polystore-lock"
LOCKS_FOLDER_SUFFIX = ".polystore-locks"
"""A hidden folder of lock files beside a store (``.plate.zarr.polystore-locks``)."""
_WRITE_MODES = {"w", "wt", "wb", "w+", "wb+", "w+b"}


def is_internal_name(name: str) -> bool:
    """Whether a file name is one of ours (temp or lock file, lock folder) that listings must hide."""
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, LOCK_SUFFIX, LOCKS_FOLDER_SUFFIX))


_TEMP_STEM_CHARS = 40
"""How much of the target's name a temp name keeps: enough to recognise it, short enough that
a target name of 255 bytes (the usual limit) still has a temp name that fits (at most 40
characters of 4 UTF-8 bytes, plus about 40 of pid, random and suffix)."""


def temp_name_for(name: str) -> str:
    """A fresh hidden temporary name for a file to be renamed to ``name``, named after this process."""
    return f".{name[:_TEMP_STEM_CHARS]}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temporary path beside ``target``."""
    return target.with_name(temp_name_for(target.name))


_LOCK_NAME_LIMIT = 200
"""Target names longer than this get a hashed lock name (the suffix would not fit in 255 bytes)."""


def lock_path_for(target: Path) -> Path:
    name = target.name
    if len(name.encode("utf-8", "surrogateescape")) > _LOCK_NAME_LIMIT:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        name = f"{name[:_TEMP_STEM_CHARS]}.{digest}"
    return target.with_name(f".{name}{LOCK_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock tied to ``path`` (a lock file beside it).

    Parameters
    ----------
    path
        The file the lock protects (it need not exist).
    timeout
        Seconds to wait for the lock; -1 waits forever.

    Raises
    ------
    filelock.Timeout
        The lock was not acquired within ``timeout``.
    MissingDependencyError
        filelock is not installed (``pip install 'polystore[lock]'``).
    """
    filelock = optional_import("filelock", extra="lock", purpose="Locking files")
    target = Path(path)
    _make_folder_of(target)
    with filelock.FileLock(str(lock_path_for(target)), timeout=timeout):
        yield


def _make_folder_of(target: Path) -> None:
    """Make ``target``'s folder where it is missing; our error where that cannot be done."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # with exist_ok, only something other than a folder
        raise NotADirectoryStorageError(
            f"Cannot write '{target}': '{error.filename}' is a file, not a directory."
        ) from error
    except OSError as error:
        raise from_os_error(error, str(target), "write") from error


def _check_mode(mode: str) -> None:
    if mode not in _WRITE_MODES:
        raise InvalidOptionError(
            f"atomic_write mode must be one of {sorted(_WRITE_MODES)}, not {mode!r}: "
            "appending cannot be atomic; read the file, change it, and write it whole."
        )


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    durable: bool = True,
    lock: bool = False,
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` whole, or not at all.

    A context manager: write to the handle it yields; the file is renamed into place when the
    ``with`` body ends. If the body raises, the temporary file is removed and ``path`` is
    untouched.

    Parameters
    ----------
    path
        The file to write.
    mode
        ``"w"`` (text) or ``"wb"`` (binary).
    encoding, newline
        As for :func:`open`, in text mode.
    durable
        Fsync the data and the rename, so the file survives a power cut, not only a crash.
    lock
        Also hold :func:`file_lock` on ``path`` while writing.

    Yields
    ------
    IO
        The open temporary file.

    Raises
    ------
    ValueError
        ``mode`` is not a write mode.
    """
    _check_mode(mode)
    target = Path(path)
    _make_folder_of(target)
    guard = file_lock(target) if lock else contextlib.nullcontext()
    with guard, atomic_write_at(
        None, os.fspath(target), mode, encoding=encoding, newline=newline, durable=durable
    ) as handle:
        yield handle


@contextlib.contextmanager
def atomic_write_at(
    dir_fd: int | None,
    name: str,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    durable: bool = True,
    shown: str | None = None,
    permissions: int = 0o666,
) -> Iterator[IO[Any]]:
    """:func:`atomic_write` to ``name`` inside the open directory ``dir_fd``.

    Every step names the folder by its descriptor (``dir_fd=``), never by a path, so the
    write lands in the folder that was opened even if its path is changed meanwhile (a
    folder swapped for a symbolic link). With ``dir_fd=None``, ``name`` is an ordinary path.
    ``shown`` is the handle's ``name`` for libraries that print or inspect it. A file that
    replaces another keeps that one's permissions (a 0o600 file stays 0o600); a new one gets
    ``permissions`` less the umask, as ``open`` gives.
    """
    _check_mode(mode)
    folder, base = ("", name) if dir_fd is not None else os.path.split(name)
    temp = os.path.join(folder, temp_name_for(base))
    # O_EXCL creates a new file or fails (never writes through a link planted at the name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    kept = _mode_of(name, dir_fd)
    try:
        fd = os.open(temp, flags, permissions, dir_fd=dir_fd)
    except OSError as error:
        raise from_os_error(error, shown if shown is not None else name, "write") from error
    try:
        with open(fd, mode.replace("x", "w"), encoding=encoding, newline=newline) as handle:
            if kept is not None:  # before a byte is written: the new content is never more readable
                os.fchmod(fd, kept)
            _name_handle(handle, shown if shown is not None else name)
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        try:
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as error:  # named by the target, not by the temporary file
            raise from_os_error(error, shown if shown is not None else name, "write") from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    if durable:
        if dir_fd is not None:
            os.fsync(dir_fd)
        else:
            _fsync_directory(Path(folder or "."))


def _mode_of(name: str, dir_fd: int | None) -> int | None:
    """The permission bits of the regular file ``name`` (not set-user/group-ID), if there is one."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return stat.S_IMODE(info.st_mode) & 0o1777 if stat.S_ISREG(info.st_mode) else None


def _name_handle(handle: IO[Any], name: str) -> None:
    """Give a handle opened from a descriptor the file's name (its ``name`` is the int otherwise,
    which tifffile and others split as a path)."""
    raw = getattr(getattr(handle, "buffer", handle), "raw", None)
    if raw is not None:
        with contextlib.suppress(AttributeError):
            raw.name = name


def commit_temp(temp: Path, target: Path, *, durable: bool, synced: bool = False) -> None:
    """Rename a finished temporary file over ``target`` (fsync'ing it first unless ``synced``)."""
    if durable and not synced:
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(temp, target)
    if durable:
        _fsync_directory(target.parent)


def json_default(obj: Any) -> Any:
    """Let arrays and NumPy scalars go into JSON as lists and numbers."""
    from polystore.arrays import is_array, to_numpy

    if is_array(obj):
        return to_numpy(obj).tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise UnsupportedDataError(  # json.dumps' `default` protocol wants a TypeError: this is one
        f"Object of type {type(obj).__name__} cannot be written as JSON; convert it to "
        "dicts, lists, strings and numbers first, or save it in another format (.npy, .pt)."
    )


def atomic_write_json(
    data: Any,
    path: str | os.PathLike[str],
    *,
    indent: int | None = 2,
    lock: bool = False,
    durable: bool = True,
    **json_kwargs: Any,
) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    data
        JSON-compatible data; arrays become nested lists.
    path
        The file to write.
    indent
        As for :func:`json.dumps`.
    lock, durable
        As for :func:`atomic_write`.
    **json_kwargs
        Passed to :func:`json.dumps`.
    """
    try:
        text = json.dumps(data, indent=indent, default=json_default, **json_kwargs)
    except (TypeError, ValueError) as error:
        raise UnsupportedDataError(f"Cannot write this data as JSON to '{path}': {error}") from error
    with atomic_write(path, "w", encoding="utf-8", lock=lock, durable=durable) as handle:
        handle.write(text)


def atomic_update_json(
    path: str | os.PathLike[str],
    update: Callable[[Any], Any],
    *,
    default: Any = None,
    timeout: float = -1,
) -> Any:
    """Read-modify-write a JSON file under a lock, safe against other processes doing the same.

    Parameters
    ----------
    path
        The JSON file.
    update
        Receives the current content (``default`` when the file does not exist yet) and
        returns the new content.
    default
        The content of a file that does not exist yet.
    timeout
        Seconds to wait for the lock; -1 waits forever.

    Returns
    -------
    Any
        What was written.
    """
    target = Path(path)
    with file_lock(target, timeout=timeout):
        try:
            current = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            current = default
        except OSError as error:
            raise from_os_error(error, str(target), "read") from error
        except ValueError as error:  # invalid JSON or UTF-8: the file is left as it is
            raise CorruptDataError(
                f"Cannot update '{target}': it is not valid JSON ({type(error).__name__}: "
                f"{error}). Repair or remove the file, then retry."
            ) from error
        new = update(current)
        atomic_write_json(new, target)
    return new


def sweep_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in ``directory`` whose writing process no longer runs.

    Returns the removed paths. Files of live processes (writes in progress) are kept.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        raise from_os_error(error, os.fspath(directory), "sweep") from error
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        parts = entry.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)  # ['.name', pid, random]
        if len(parts) != 3:  # not a name temp_name_for made (e.g. '.polystore-tmp' alone)
            continue
        pid_text = parts[1]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


_MAX_PID = 2**31 - 1  # os.kill takes a C int: a larger number in a name is no process


def _process_alive(pid: int) -> bool:
    if not 0 < pid <= _MAX_PID:  # 0 would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
