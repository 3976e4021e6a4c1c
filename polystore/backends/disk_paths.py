"""Where a :class:`~polystore.backends.disk.DiskBackend` path leads: a name inside an open folder.

Every disk operation acts on an :class:`Entry`, a folder's descriptor and a name in it, and
names the folder by that descriptor (``os.open(name, dir_fd=...)``, ``os.replace(...,
src_dir_fd=...)``), never by a path again. Two ways to reach it:

- :class:`ConfinedTree` (``DiskBackend(root=...)``) walks the path from the root's descriptor
  one name at a time, opening each folder with ``O_NOFOLLOW | O_DIRECTORY``: what the kernel's
  ``openat2(RESOLVE_BENEATH)`` does, which Python does not expose. A name that is a symbolic
  link is read and its target walked the same way (an absolute target from the root, a
  relative one from the link's folder); a link that leads out of the root raises
  :class:`PathEscapeError`, links that lead to each other :class:`SymlinkLoopError`. Because
  each step opens what is there *now* relative to a folder already checked, a folder swapped
  for a link while an operation runs cannot redirect it: the descriptors in hand still name
  folders inside the root.
- :class:`OpenTree` (no root) takes paths as the operating system does, but for ``..``, which
  every backend takes lexically (``a/x/../b`` is ``a/b`` whether or not ``a/x`` exists).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_module
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from polystore.exceptions import (
    NotADirectoryStorageError,
    PolystoreError,
    StorageFileNotFoundError,
    SymlinkLoopError,
    from_os_error,
)
from polystore.paths import escape_error, names_directory

MAX_LINKS = 40
"""Symbolic links followed while resolving one path before giving up (Linux's MAXSYMLINKS)."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
"""How a folder on a confined path is opened: never through a link (links are read and walked)."""


@dataclass
class Entry:
    """``name`` inside the open folder ``dir_fd``; ``name is None`` means that folder itself.

    Owns ``dir_fd``: use it as a context manager (or call :meth:`close`).
    """

    dir_fd: int
    name: str | None
    shown: str
    """The path as the caller gave it, for messages."""
    must_be_dir: bool = False
    """The path ended in '/': only a directory fits it."""

    def close(self) -> None:
        os.close(self.dir_fd)

    def __enter__(self) -> Entry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def lstat(self) -> os.stat_result:
        """The entry itself (a link is not followed; the tree followed it already where asked)."""
        if self.name is None:
            return os.fstat(self.dir_fd)
        return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)


def readlink_at(dir_fd: int, name: str) -> str | None:
    """The target of the link ``name`` in ``dir_fd``, or ``None`` if ``name`` is no link (or absent)."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return None
        raise


class ConfinedTree:
    """Paths resolved beneath ``root``; see the module's docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.given_root = os.path.abspath(root)
        self.root = os.path.realpath(root)

    def open_root(self, create: bool = False) -> int:
        """The root's descriptor; ``create``: make the root first if it does not exist yet
        (a backend may be given a root that its first write creates, as before confinement)."""
        try:
            if create and not os.path.isdir(self.root):
                os.makedirs(self.root, exist_ok=True)
            return os.open(self.root, FOLDER_FLAGS)
        except OSError as error:
            raise from_os_error(error, self.root, "open the backend's root") from error

    def _below_root(self, absolute: str) -> str | None:
        """``absolute`` relative to the root (by its real or its given path), or ``None`` if outside."""
        normalized = posixpath.normpath(absolute)
        for root in (self.root, self.given_root):
            if normalized == root or normalized.startswith(root.rstrip("/") + "/"):
                return normalized[len(root):]
        return None

    def _relative_parts(self, text: str) -> list[str]:
        """The path's names below the root; ``..`` taken lexically, as every backend takes it."""
        if os.path.isabs(text):
            inside = self._below_root(text)
            if inside is None:
                raise escape_error(text, self.root)
            text = inside
        normalized = posixpath.normpath(text.lstrip("/")) if text.strip("/") else "."
        if normalized == ".." or normalized.startswith("../"):
            raise escape_error(text, self.root, " (it climbs above it with '..')")
        return [] if normalized == "." else normalized.split("/")

    def entry(self, text: str, *, follow: bool, make_parents: bool = False) -> Entry:
        """Resolve ``text`` beneath the root.

        ``follow``: a link in the last place is followed (for reading and writing through
        it); otherwise the entry is the link itself (delete and move act on links, not on
        what they point to). Links before the last place are always followed, inside the
        root. ``make_parents`` creates missing folders on the way.
        """
        pending = deque(self._relative_parts(text))
        stack = [self.open_root(create=make_parents)]  # descriptors from the root down
        walked: list[str] = []  # their names, for messages
        links = 0
        try:
            while pending:
                part = pending.popleft()
                if part in ("", "."):
                    continue
                if part == "..":  # only from a link's target: the given path has none left
                    if len(stack) == 1:
                        raise escape_error(text, self.root, " (a symbolic link on it climbs out with '..')")
                    os.close(stack.pop())
                    walked.pop()
                    continue
                folder = stack[-1]
                if not pending:
                    target = readlink_at(folder, part) if follow else None
                    if target is None:
                        entry = Entry(stack.pop(), part, text, names_directory(text))
                        return _checked(entry)
                else:
                    try:
                        stack.append(os.open(part, FOLDER_FLAGS, dir_fd=folder))
                        walked.append(part)
                        continue
                    except FileNotFoundError:
                        if not make_parents:
                            raise StorageFileNotFoundError(text, "disk") from None
                        _make_folder(folder, part, text)
                        pending.appendleft(part)
                        continue
                    except OSError as error:  # a file, or a link (ENOTDIR or ELOOP by platform)
                        target = readlink_at(folder, part)
                        if target is None:
                            if error.errno in (errno.ENOTDIR, errno.ELOOP):
                                raise NotADirectoryStorageError(
                                    f"Cannot use '{text}': '{'/'.join([*walked, part])}' is a file, "
                                    "not a directory."
                                ) from error
                            raise from_os_error(error, text, "open") from error
                links += 1
                if links > MAX_LINKS:
                    raise SymlinkLoopError(
                        errno.ELOOP,
                        f"Cannot resolve '{text}': more than {MAX_LINKS} symbolic links in a row "
                        "(links that lead to each other); fix or remove them.",
                    )
                link = "/".join([*walked, part])
                if target.startswith("/"):
                    inside = self._below_root(target)
                    if inside is None:
                        how = f" through the symbolic link '{link}' -> '{target}'"
                        raise escape_error(text, self.root, how)
                    while len(stack) > 1:
                        os.close(stack.pop())
                    walked.clear()
                    target = inside
                pending.extendleft(reversed(target.split("/")))
            entry = Entry(stack.pop(), None, text, names_directory(text))  # the root itself
            return entry
        except PolystoreError:
            raise
        except OSError as error:  # a name too long, a folder without permission, ...
            raise from_os_error(error, text, "open") from error
        finally:
            for fd in stack:
                os.close(fd)


class OpenTree:
    """Paths taken as the operating system takes them: no root, links followed anywhere."""

    root: str | None = None

    def entry(self, text: str, *, follow: bool, make_parents: bool = False) -> Entry:
        # docstring: ConfinedTree.entry. '..' is taken lexically here too, as on every backend
        stripped = posixpath.normpath(text) if text else "."
        head, tail = os.path.split(stripped)
        if tail in ("", ".", ".."):
            return Entry(_open_folder(stripped, text), None, text, names_directory(text))
        if follow and os.path.islink(stripped):  # write and read through it: where it leads
            head, tail = os.path.split(os.path.realpath(stripped))
        if make_parents and head:
            try:
                os.makedirs(head, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as error:
                raise NotADirectoryStorageError(
                    f"Cannot use '{text}': a file is in the way ({error.filename})."
                ) from error
        entry = Entry(_open_folder(head or ".", text), tail, text, names_directory(text))
        return _checked(entry)


def _open_folder(path: str, shown: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as error:
        raise from_os_error(error, shown, "open") from error


def _make_folder(folder: int, name: str, shown: str) -> None:
    try:
        os.mkdir(name, 0o777, dir_fd=folder)
    except FileExistsError:  # made meanwhile by another writer, or a link: the walk decides
        pass
    except OSError as error:
        raise from_os_error(error, shown, "create a folder on") from error


def _checked(entry: Entry) -> Entry:
    """``entry``, closed and refused if its path ends in '/' and it is a file."""
    if entry.must_be_dir and entry.name is not None:
        try:
            info = entry.lstat()
        except FileNotFoundError:
            return entry  # nothing there: the operation says what it makes of that
        except OSError as error:
            entry.close()
            raise from_os_error(error, entry.shown, "open") from error
        if not stat_module.S_ISDIR(info.st_mode):
            entry.close()
            raise NotADirectoryStorageError(
                f"'{entry.shown}' ends with '/', but '{entry.name}' is not a directory."
            )
    return entry


Tree = ConfinedTree | OpenTree
