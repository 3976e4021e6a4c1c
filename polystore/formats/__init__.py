"""File formats as data: extension -> how to save, how to load.

A :class:`Format` names its extensions and two functions: ``save(data, handle, **options)``
writes to an open binary file (the disk backend hands it the temporary file of an atomic
write), ``load(handle, **options)`` reads from an open, seekable binary file (the disk
backend opened it inside its root, so a loader never opens a path itself; ``handle.name`` is
the path as the caller gave it, for messages). Adding a format is one :func:`register_format`
call; nothing else changes.

A format either gives back exactly what it accepted (values, dtype, shape) or refuses it at
save time with :class:`UnsupportedDataError`, naming the format, the problem and what to
use instead. Errors from inside a format's libraries reach the caller as ours: what a save
could not write as :class:`UnsupportedDataError`, what a load could not read as
:class:`CorruptDataError`, both with the library's error chained.

Extensions match the end of the file name, case-insensitively, longest first, so compound
extensions (``.roi.zip``, ``.ome.tif``) win over their last part.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO, Any, Literal

from polystore.exceptions import (
    CorruptDataError,
    FormatRegistrationError,
    InvalidOptionError,
    PolystoreError,
    UnsupportedDataError,
    UnsupportedFormatError,
    from_os_error,
)


@dataclass(frozen=True)
class Format:
    """One file format: its name, extensions, and the functions that write and read it.

    Examples
    --------
    >>> from polystore import Format, register_format
    >>> def save(data, handle, **options): handle.write(data.encode())
    >>> def load(handle, **options): return handle.read().decode()
    >>> register_format(Format("shout", (".shout",), save, load, description="upper-case text"))
    """

    name: str
    extensions: tuple[str, ...]
    save: Callable[..., None]
    """``save(data, handle, **options)``: write ``data`` to the open binary ``handle``."""
    load: Callable[..., Any]
    """``load(handle, **options)``: read the open binary file ``handle``."""
    description: str = ""
    accepts: str = ""
    """What data it stores, for messages and docs (e.g. "arrays of any framework")."""
    options: dict[str, str] = field(default_factory=dict)
    """Keyword options of save/load, with one line each, for docs and ``polystore formats``."""


_by_extension: dict[str, Format] = {}
_lock = threading.Lock()


def register_format(fmt: Format, *, replace: bool = False) -> None:
    """Make ``fmt`` handle its extensions on disk (and wherever formats are chosen by extension).

    Parameters
    ----------
    fmt
        The format.
    replace
        Take over extensions another format (a built-in one too) already handles.

    Raises
    ------
    ValueError
        An extension is taken and ``replace`` is false (the message names the formats).
    """
    normalized = tuple(_normalize(ext) for ext in fmt.extensions)
    with _lock:
        taken = {ext: _by_extension[ext].name for ext in normalized if ext in _by_extension}
        if taken and not replace:
            clashes = ", ".join(f"{ext} ({name})" for ext, name in taken.items())
            raise FormatRegistrationError(
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


@functools.lru_cache(maxsize=256)
def _option_names(function: Callable[..., Any], skip: int) -> frozenset[str] | None:
    """The keyword options ``function`` takes after its ``skip`` leading arguments (``None``: any)."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def _check_options(
    fmt: Format, function: Callable[..., Any], skip: int, options: dict[str, Any], verb: str
) -> None:
    if not options:
        return
    known = _option_names(function, skip)
    if known is None:
        return
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidOptionError(
            f"The {fmt.name} format does not take {', '.join(map(repr, unknown))} when it "
            f"{verb}s; it takes: {', '.join(sorted(known)) or 'no options'} "
            "(see `polystore formats`)."
        )


def check_options(fmt: Format, verb: Literal["save", "load"], options: dict[str, Any]) -> None:
    """Refuse keyword options that ``fmt``'s save or load does not take, before any I/O."""
    if verb == "save":
        _check_options(fmt, fmt.save, 2, options, verb)
    else:
        _check_options(fmt, fmt.load, 1, options, verb)


def write_with(fmt: Format, data: Any, handle: IO[bytes], shown: str, options: dict[str, Any]) -> None:
    """``fmt.save`` with the rule on errors: what it cannot write is an UnsupportedDataError
    (options are the caller's to check first, with :func:`check_options`)."""
    try:
        fmt.save(data, handle, **options)
    except PolystoreError:
        raise
    except OSError as error:  # the disk, not the data
        raise from_os_error(error, shown, "save") from error
    except Exception as error:
        raise UnsupportedDataError(
            f"The {fmt.name} format ({fmt.description}) could not write '{shown}': "
            f"{type(error).__name__}: {error}. It takes {fmt.accepts}; .npy keeps any numeric "
            "array exactly."
        ) from error


def read_with(fmt: Format, handle: IO[bytes], shown: str, options: dict[str, Any]) -> Any:
    """``fmt.load`` with the rule on errors: what it cannot read is a CorruptDataError
    (options are the caller's to check first, with :func:`check_options`)."""
    try:
        return fmt.load(handle, **options)
    except PolystoreError:
        raise
    except MemoryError:
        raise
    except OSError as error:
        raise from_os_error(error, shown, "read") from error
    except Exception as error:
        raise CorruptDataError(
            f"Cannot read '{shown}' as {fmt.name} ({fmt.description}): "
            f"{type(error).__name__}: {error}. The file is damaged, cut short, or not a "
            f"{fmt.name} file; pass format='<extension>' if its extension is wrong."
        ) from error


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
