"""Image files a conversion reads: which files are images (a table of readers by extension,
and by content for files without one), their shape and dtype from the header alone, and
their pixels.

A reader is data: an extension (or the bytes a file starts with) -> how to read its header
and its pixels. The header is read on the client while planning (no pixels); the pixels in
the task that writes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polystore.exceptions import CorruptDataError, PolystoreError
from polystore.lazy import optional_import


class ImageReadError(CorruptDataError):
    """An image file could not be read (damaged, or not the format its name says)."""


@dataclass(frozen=True)
class Header:
    """What a file holds, without its pixels."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _tiff_header(path: str) -> Header:
    tifffile = optional_import("tifffile", extra="tiff", purpose="Converting TIFF files")
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        return Header(tuple(int(n) for n in series.shape), np.dtype(series.dtype))


def _tiff_read(path: str) -> np.ndarray:
    tifffile = optional_import("tifffile", extra="tiff", purpose="Converting TIFF files")
    return np.asarray(tifffile.imread(path))


def _npy_header(path: str) -> Header:
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    return Header(tuple(int(n) for n in mapped.shape), np.dtype(mapped.dtype))


def _npy_read(path: str) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False))


@dataclass(frozen=True)
class Reader:
    name: str
    header: Callable[[str], Header]
    read: Callable[[str], np.ndarray]
    extensions: tuple[str, ...]
    magic: tuple[bytes, ...]
    """What a file of this format starts with (for files whose name has no known extension)."""


READERS: tuple[Reader, ...] = (
    Reader("tiff", _tiff_header, _tiff_read, (".tif", ".tiff"),
           (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),  # classic and BigTIFF, either byte order
    Reader("npy", _npy_header, _npy_read, (".npy",), (b"\x93NUMPY",)),
)
"""The image formats a conversion reads, tried by extension, then by the file's first bytes."""


def reader_for(path: str) -> Reader | None:
    """The reader of ``path``: by its extension, else by its first bytes; None if no reader."""
    suffix = Path(path).suffix.lower()
    for reader in READERS:
        if suffix in reader.extensions:
            return reader
    try:
        with open(path, "rb") as handle:
            start = handle.read(8)
    except OSError:
        return None
    for reader in READERS:
        if any(start.startswith(magic) for magic in reader.magic):
            return reader
    return None


def read_header(path: str) -> Header:
    reader = reader_for(path)
    if reader is None:
        raise ImageReadError(f"'{path}' is not an image file this converter reads ({known_formats()}).")
    try:
        return reader.header(path)
    except PolystoreError:
        raise
    except Exception as error:
        raise ImageReadError(f"'{path}' could not be read as {reader.name}: {error}") from error


def read_image(path: str) -> np.ndarray:
    """The pixels of ``path`` (an error naming the file if they cannot be read)."""
    reader = reader_for(path)
    if reader is None:
        raise ImageReadError(f"'{path}' is not an image file this converter reads ({known_formats()}).")
    try:
        return reader.read(path)
    except PolystoreError:
        raise
    except Exception as error:
        raise ImageReadError(f"'{path}' could not be read as {reader.name}: {error}") from error


def known_formats() -> str:
    return ", ".join(e for reader in READERS for e in reader.extensions)


def walk_files(folder: str) -> Iterator[str]:
    """Every file under ``folder``, recursively, as a path relative to it, in sorted order
    (hidden files and folders left out)."""
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(current, name).relative_to(folder).as_posix()


@dataclass(frozen=True)
class SourceFile:
    """A file to convert: its path, and what identifies this version of it (size, mtime)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def stat(cls, path: str) -> SourceFile:
        info = os.stat(path)
        return cls(path, info.st_size, info.st_mtime_ns)
