"""Path rules shared by the backends: what a path may be, listing filters, virtual paths.

One rule for every backend: ``/`` separates names and every other character, backslash
included, belongs to a name (as on POSIX filesystems and in object stores); a path ending in
``/`` names a directory; ``..`` may not climb above the root; a path is a ``str`` (or an
``os.PathLike`` giving one) without NUL characters.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterable
from typing import NamedTuple

from polystore.exceptions import (
    InvalidPathError,
    IsADirectoryStorageError,
    PathEscapeError,
    PathTypeError,
)


def given_path(path: object) -> str:
    """``path`` as text, or an error saying what is wrong with it (every backend's first check)."""
    if type(path) is str:
        text = path
    else:
        try:
            text = os.fspath(path)  # type: ignore[call-overload]
        except TypeError:
            raise PathTypeError(
                f"A path must be a str or an os.PathLike such as pathlib.Path, not "
                f"{'None' if path is None else type(path).__name__}."
            ) from None
        if not isinstance(text, str):
            raise PathTypeError(
                f"A path must be text, not bytes ({path!r}); decode it with os.fsdecode(path)."
            )
    if "\0" in text:
        raise InvalidPathError(
            f"Path {text!r} contains a NUL character, which no filesystem or object store "
            "allows in a name; remove it."
        )
    return text


def names_directory(text: str) -> bool:
    """Whether a path ends in ``/`` after a name (``"a/"``), so that only a directory fits it."""
    return text.endswith("/") and text.strip("/") != ""


def refuse_directory_path(text: str, action: str = "save to") -> None:
    """Saving (copying, moving) a file to ``"x.npy/"`` is refused, not done at ``"x.npy"``."""
    if names_directory(text):
        raise IsADirectoryStorageError(
            f"Cannot {action} '{text}': a path ending in '/' names a directory. Drop the "
            "trailing '/' to name a file, or name one inside that directory."
        )


def refuse_into_itself(source: str, destination: str, source_key: str, destination_key: str) -> None:
    """Refuse to copy or move a folder to a place inside itself (it would copy its own copy).

    ``*_key``: the two paths normalised the same way, so that names are compared, not spellings
    (``..`` taken lexically, as every backend takes it).
    """
    if destination_key.startswith(source_key.rstrip("/") + "/"):
        raise InvalidPathError(
            f"Cannot copy or move '{source}' into itself ('{destination}'): the destination is "
            "inside it. Copy what is inside it instead, or choose a destination outside it."
        )


def escape_error(given: str, root: str, how: str = "") -> PathEscapeError:
    """The error for ``given`` leading outside ``root`` (``how``: through what, if not '..')."""
    return PathEscapeError(
        f"'{given}' leads outside this backend's root '{root}'{how}. Use a path inside the "
        "root (relative paths are taken from it)."
    )


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


class VirtualPath(NamedTuple):
    """A path in a backend's own namespace, checked and normalised."""

    key: str
    """The normalised ``/a/b`` form."""
    names_directory: bool
    """Whether the path as given ends in ``/`` after a name (see :func:`names_directory`)."""


def virtual_path(path: str | os.PathLike[str]) -> str:
    """Normalise a path in a backend's own namespace to ``/a/b`` form.

    ``a/b``, ``/a/b`` and ``a//b/./`` are the same entry; a path that climbs above the
    root with ``..`` raises :class:`PathEscapeError`.
    """
    return parse_virtual(path).key


def parse_virtual(path: str | os.PathLike[str]) -> VirtualPath:
    """:func:`virtual_path` and :func:`names_directory` of ``path`` in one step."""
    parsed = _parsed.get(path) if type(path) is str else None
    if parsed is not None:
        return parsed
    text = given_path(path)
    parsed = _parse_virtual(text)
    if len(_parsed) >= _PARSED_LIMIT:  # a bound, not an LRU: a refill costs one parse a path
        _parsed.clear()
    _parsed[text] = parsed
    return parsed


_parsed: dict[str, VirtualPath] = {}
"""Paths parsed before, by the text given: in-memory backends parse a path on every call, and a
pipeline uses the same paths over and over. Only a path that passed every check is kept (a dict,
not lru_cache: a hit is then one lookup, the NUL check included), so '..' or a NUL is refused
every time."""
_PARSED_LIMIT = 8192


def _parse_virtual(text: str) -> VirtualPath:
    relative = text.lstrip("/")
    normalized = posixpath.normpath(relative) if relative else "."
    if normalized == ".." or normalized.startswith("../"):
        raise escape_error(text, "/", " (it climbs above it with '..')")
    key = "/" if normalized == "." else "/" + normalized
    return VirtualPath(key, names_directory(text))


def join_given(directory: str | os.PathLike[str], relative: str) -> str:
    """``relative`` under ``directory`` as the caller wrote it (keeps their style of path)."""
    given = os.fspath(directory)
    return f"{given.rstrip('/')}/{relative}" if given not in ("", ".") else relative
