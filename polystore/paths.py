"""Path rules shared by the backends: listing filters and virtual (posix) paths."""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
from collections.abc import Iterable

from polystore.exceptions import PathEscapeError


def normalize_extensions(extensions: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """Lower-cased extensions with their leading dot, ready for ``str.endswith``."""
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def matches(name: str, pattern: str | None, extensions: tuple[str, ...] | None) -> bool:
    """Whether a file name passes ``list_files``' filters.

    ``extensions`` match the end of the name, so compound ones (``.roi.zip``) work;
    ``pattern`` is a case-sensitive shell glob on the name.
    """
    if extensions is not None and not name.lower().endswith(extensions):
        return False
    return pattern is None or fnmatch.fnmatchcase(name, pattern)


def virtual_path(path: str | os.PathLike[str]) -> str:
    """Normalise a path in a backend's own namespace to ``/a/b`` form.

    ``a/b``, ``/a/b`` and ``a//b/./`` are the same entry; a path that climbs above the
    root with ``..`` raises :class:`PathEscapeError`.
    """
    return _virtual_path(path if type(path) is str else os.fspath(path))


@functools.lru_cache(maxsize=8192)
def _virtual_path(text: str) -> str:
    # memoised: in-memory backends normalise a path on every call, and a pipeline uses the
    # same paths over and over (an error is never cached, so '..' raises every time)
    text = text.replace("\\", "/")
    relative = text.lstrip("/")
    normalized = posixpath.normpath(relative) if relative else "."
    if normalized == ".." or normalized.startswith("../"):
        raise PathEscapeError(f"'{text}' climbs above the backend's root with '..'.")
    return "/" if normalized == "." else "/" + normalized


def join_given(directory: str | os.PathLike[str], relative: str) -> str:
    """``relative`` under ``directory`` as the caller wrote it (keeps their style of path)."""
    given = os.fspath(directory)
    return f"{given.rstrip('/')}/{relative}" if given not in ("", ".") else relative
