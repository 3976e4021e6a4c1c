"""File formats as data: extension -> how to save, how to load.

A :class:`Format` names its extensions and two functions: ``save(data, handle, **options)``
writes to an open binary file (the disk backend hands it the temporary file of an atomic
write), ``load(path, **options)`` reads from a path (so libraries can memory-map or seek).
Adding a format is one :func:`register_format` call; nothing else changes.

Extensions match the end of the file name, case-insensitively, longest first, so compound
extensions (``.roi.zip``, ``.ome.tif``) win over their last part.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any

from polystore.exceptions import UnsupportedFormatError


@dataclass(frozen=True)
class Format:
    """One file format."""

    name: str
    extensions: tuple[str, ...]
    save: Callable[..., None]
    """``save(data, handle, **options)``: write ``data`` to the open binary ``handle``."""
    load: Callable[..., Any]
    """``load(path, **options)``: read the file at ``path``."""
    description: str = ""
    accepts: str = ""
    """What data it stores, for messages and docs (e.g. "arrays of any framework")."""
    options: dict[str, str] = field(default_factory=dict)
    """Keyword options of save/load, with one line each, for docs and ``polystore formats``."""


_by_extension: dict[str, Format] = {}
_lock = threading.Lock()


def register_format(fmt: Format, *, replace: bool = False) -> None:
    """Make ``fmt`` handle its extensions. ``replace=True`` overrides a built-in format."""
    normalized = tuple(_normalize(ext) for ext in fmt.extensions)
    with _lock:
        taken = {ext: _by_extension[ext].name for ext in normalized if ext in _by_extension}
        if taken and not replace:
            clashes = ", ".join(f"{ext} ({name})" for ext, name in taken.items())
            raise ValueError(
                f"Format '{fmt.name}' claims extensions already handled: {clashes}. "
                "Pass replace=True to override them."
            )
        for ext in normalized:
            _by_extension[ext] = fmt


def _normalize(extension: str) -> str:
    ext = extension.lower()
    return ext if ext.startswith(".") else f".{ext}"


def known_extensions() -> list[str]:
    return sorted(_by_extension)


def registered_formats() -> list[Format]:
    """Each registered format once, in registration order."""
    unique: dict[int, Format] = {}  # by identity: a Format holds a dict, so it cannot be hashed
    for fmt in _by_extension.values():
        unique.setdefault(id(fmt), fmt)
    return list(unique.values())


def _candidate_extensions(name: str) -> Iterable[str]:
    """'.roi.zip' then '.zip' for 'cells.roi.zip': every dotted tail, longest first."""
    lowered = name.lower()
    start = lowered.find(".", 1)  # a leading dot is a hidden file, not an extension
    while start != -1:
        yield lowered[start:]
        start = lowered.find(".", start + 1)


def format_for(path: str | Path, name: str | None = None) -> Format:
    """The format for ``path`` by its extension, or the one registered for extension ``name``."""
    if name is not None:
        fmt = _by_extension.get(_normalize(name))
        if fmt is None:
            fmt = next((f for f in _by_extension.values() if f.name == name), None)
        if fmt is not None:
            return fmt
        raise UnsupportedFormatError(
            f"Unknown format '{name}'. Known formats: "
            f"{', '.join(sorted({f.name for f in _by_extension.values()}))}."
        )
    # the name without building a new Path (3.11's pathlib re-parses a Path it is given)
    if isinstance(path, PurePath):
        file_name = path.name
    else:
        text = os.fspath(path)
        file_name = os.path.basename(text) or PurePath(text).name
    for ext in _candidate_extensions(file_name):
        fmt = _by_extension.get(ext)
        if fmt is not None:
            return fmt
    raise UnsupportedFormatError(
        f"No format handles '{file_name}'. Known extensions: {', '.join(known_extensions())}. "
        "Use one of them, pass format='<extension>' to choose one explicitly, or add a "
        "format with polystore.register_format(Format(...))."
    )


def text_handle(handle: IO[bytes]) -> Any:
    """A UTF-8 text view of a binary handle that does not close it when released."""
    import io

    wrapper = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    return _Detaching(wrapper)


class _Detaching:
    """Context manager over a TextIOWrapper that flushes and detaches instead of closing."""

    def __init__(self, wrapper: Any) -> None:
        self.wrapper = wrapper

    def __enter__(self) -> Any:
        return self.wrapper

    def __exit__(self, *exc: object) -> None:
        self.wrapper.flush()
        self.wrapper.detach()


def _register_builtins() -> None:
    from polystore.formats import csv_table, npy, pytorch, roi, text, tiff

    for module in (npy, tiff, pytorch, csv_table, text, roi):
        for fmt in module.FORMATS:
            register_format(fmt)


_register_builtins()

__all__ = ["Format", "format_for", "known_extensions", "register_format", "registered_formats"]
