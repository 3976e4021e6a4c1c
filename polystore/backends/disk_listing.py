"""Walking a folder of a :class:`~polystore.backends.disk.DiskBackend`: listing it (recursively
or not) and removing it.

The walk keeps its own stack (a tree 1,100 folders deep is no RecursionError) and opens a
folder only when its turn comes, by its parent's descriptor (``O_NOFOLLOW | O_DIRECTORY``),
closing the parent once the last of its folders is open: the descriptors held are those of
folders with subfolders still to walk, not one per level (a chain of 1,100 holds one). Each
folder, by (device, inode), is walked once per listing, however many links lead to it, so
folders that each hold two links to the next cost their number, not two to its power.

A link is listed where it leads to a file or folder inside the root (as the path of the link,
which loads); one that leads outside, nowhere, or round in a circle is left out, and so is a
folder that is gone or was swapped for a link meanwhile. A folder that cannot be read (no
permission, too many open files) is an error naming it, never silently left out.

:func:`remove_tree` is ``shutil.rmtree`` by descriptors with the same kind of stack (the
standard library's recurses, and stops at 1,000 levels); it holds a descriptor for each
folder above the one it empties.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_module
from dataclasses import dataclass

from polystore.atomic import is_internal_name
from polystore.backends.disk_paths import FOLDER_FLAGS, Entry, Tree
from polystore.exceptions import (
    NotADirectoryStorageError,
    PolystoreError,
    StoragePermissionError,
    from_os_error,
)
from polystore.paths import join_given

_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
"""A folder removed, or swapped for a file or a link, between its listing and its opening."""


@dataclass
class _Open:
    """An open folder whose subfolders are still to be opened; closed after the last."""

    fd: int
    pending: int = 0

    def release(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            os.close(self.fd)


@dataclass
class _Next:
    """A folder to walk: ``name`` in ``parent``, or reached through the link at ``relative``."""

    parent: _Open
    name: str
    relative: str
    through_link: bool


def open_folder(entry: Entry) -> int:
    """A descriptor of the folder ``entry`` names (``list_dir``, listings, copies)."""
    if entry.name is None:
        return os.dup(entry.dir_fd)
    try:
        return os.open(entry.name, FOLDER_FLAGS, dir_fd=entry.dir_fd)
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            raise NotADirectoryStorageError(f"'{entry.shown}' is a file, not a directory.") from error
        raise from_os_error(error, entry.shown, "open") from error


def listing(tree: Tree, folder: int, base: str, recursive: bool) -> list[tuple[str, bool]]:
    """(path below ``base``, is a directory) of what is in the open ``folder`` (closed here)."""
    found: list[tuple[str, bool]] = []
    walked = {_identity(folder)}
    stack: list[_Next] = []
    try:
        _scan(tree, _Open(folder, 1), base, "", recursive, found, stack)
        while stack:
            step = stack.pop()
            child = _open_next(tree, step, base)
            if child is None:
                continue
            identity = _identity(child)
            if identity in walked:  # reached again through a link: walked once
                os.close(child)
                continue
            walked.add(identity)
            _scan(tree, _Open(child, 1), base, step.relative + "/", recursive, found, stack)
    finally:
        for step in stack:
            step.parent.release()
    return found


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _scan(
    tree: Tree, folder: _Open, base: str, prefix: str, recursive: bool,
    found: list[tuple[str, bool]], stack: list[_Next],
) -> None:
    """List ``folder`` into ``found`` and put its subfolders on ``stack``; ``folder`` is
    released once (its own hold), and then by each subfolder when that is opened."""
    try:
        try:
            with os.scandir(folder.fd) as scan:
                items = sorted(scan, key=lambda item: item.name, reverse=True)  # popped in name order
        except OSError as error:
            shown = join_given(base, prefix.rstrip("/")) if prefix else base
            raise from_os_error(error, shown, "list") from error
        below: list[_Next] = []
        for item in items:
            if is_internal_name(item.name):
                continue
            relative = prefix + item.name
            if item.is_symlink():
                is_dir = _through_link(tree, join_given(base, relative))
                if is_dir is None:
                    continue
                through_link = True
            elif item.is_dir(follow_symlinks=False):
                is_dir, through_link = True, False
            elif item.is_file(follow_symlinks=False):
                is_dir = through_link = False
            else:
                continue  # a FIFO, socket or device: not a file polystore reads
            found.append((relative, is_dir))
            if is_dir and recursive:
                below.append(_Next(folder, item.name, relative, through_link))
        folder.pending += len(below)
        stack.extend(below)
    finally:
        folder.release()


def _through_link(tree: Tree, text: str) -> bool | None:
    """Whether the link ``text`` leads to a folder (True) or a file (False) inside the root;
    ``None`` where it leads outside, nowhere, or round in a circle."""
    try:
        with tree.entry(text, follow=True) as entry:
            mode = entry.lstat().st_mode
    except StoragePermissionError:
        raise
    except (PolystoreError, OSError):  # outside the root, dangling, a loop
        return None
    if stat_module.S_ISREG(mode):
        return False
    return True if stat_module.S_ISDIR(mode) else None


def _open_next(tree: Tree, step: _Next, base: str) -> int | None:
    """The next folder's descriptor, or ``None`` if it is gone or was swapped meanwhile."""
    shown = join_given(base, step.relative)
    try:
        if step.through_link:  # walked again from the root: where the link leads now
            try:
                with tree.entry(shown, follow=True) as entry:
                    return open_folder(entry)
            except StoragePermissionError:
                raise
            except PolystoreError:  # outside the root or gone now: as if never listed
                return None
        try:
            return os.open(step.name, FOLDER_FLAGS, dir_fd=step.parent.fd)
        except OSError as error:
            if error.errno in _GONE:
                return None
            raise from_os_error(error, shown, "list") from error
    finally:
        step.parent.release()


@dataclass
class _Removal:
    """A folder to empty and remove: ``name`` in ``parent``; ``emptied`` once its files are."""

    parent: _Open
    name: str
    emptied: bool = False


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove the folder ``name`` in ``dir_fd`` with everything in it, never through a link
    (a link inside is removed as a link; one planted meanwhile is not followed)."""
    stack = [_Removal(_Open(os.dup(dir_fd), 1), name)]
    try:
        while stack:
            step = stack[-1]
            if step.emptied:  # its folders are gone too: remove it
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile: as wanted
                    os.rmdir(step.name, dir_fd=step.parent.fd)
                stack.pop()
                step.parent.release()
                continue
            step.emptied = True
            try:
                fd = os.open(step.name, FOLDER_FLAGS, dir_fd=step.parent.fd)
            except FileNotFoundError:
                continue
            here = _Open(fd, 1)
            try:
                with os.scandir(fd) as scan:
                    for item in scan:
                        if item.is_dir(follow_symlinks=False):
                            here.pending += 1
                            stack.append(_Removal(here, item.name))
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(item.name, dir_fd=fd)
            finally:
                here.release()
    finally:  # after an error: what is still held (the top folder's copy among it)
        for step in stack:
            step.parent.release()

