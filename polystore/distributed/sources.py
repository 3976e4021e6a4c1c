"""Image files a conversion reads, through polystore's formats (:mod:`polystore.formats`: the
format by extension, and its checks: a TIFF without a page, a .npy whose header announces more
than the file holds): which files are images, their shape and dtype from the header alone,
a plane's pixels, and a large image as a lazy dask array read region by region.

The header is read on the client while planning (no pixels); the pixels in the task that
writes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from polystore.backends.zarr.location import NODE_DOCUMENTS
from polystore.exceptions import CorruptDataError, PolystoreError, UnsupportedFormatError, from_os_error
from polystore.formats import Format, format_for, read_with, registered_formats
from polystore.formats import tiff as tiff_format


@dataclass(frozen=True)
class Header:
    """What a file holds, without its pixels; ``axes``: OME-NGFF letters in the file's order
    where the file says what its axes are (an ImageJ hyperstack, an OME-TIFF, an RGB picture's
    samples as ``c``), else None; ``samples``: its channels are a pixel's colour samples;
    ``pixel_sizes`` (``{letter: (size, unit)}``) and ``channel_names`` where the file states them."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    axes: str | None = None
    samples: bool = False
    pixel_sizes: dict[str, tuple[float, str]] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()


def _npy_header(handle: IO[bytes]) -> Header:
    # the npy format's memory map: its header checked against the file's size, no data read
    mapped = read_with(format_for(handle.name, "npy"), handle, handle.name, {"mmap_mode": "r"})
    header = Header(tuple(int(n) for n in mapped.shape), np.dtype(mapped.dtype))
    del mapped
    return header


def _npy_region(handle: IO[bytes], selection: tuple[slice, ...]) -> np.ndarray:
    # the npy format's own memory map (its header checked against the file's size), dropped
    # once the region is copied out, so the pages read do not stay in this process
    mapped = read_with(format_for(handle.name, "npy"), handle, handle.name, {"mmap_mode": "r"})
    region = np.array(mapped[selection])
    del mapped
    return region


def _tiff_header(handle: IO[bytes]) -> Header:
    found = tiff_format.read_header(handle)
    return Header(found.shape, found.dtype, tiff_format.ome_axes(found.axes), "S" in found.axes.upper(),
                  found.pixel_sizes, found.channel_names)


@dataclass(frozen=True)
class ImageReader:
    """How a conversion reads one format beyond its ``load``: the header, and a region."""

    header: Callable[[IO[bytes]], Header]
    region: Callable[[IO[bytes], tuple[slice, ...]], np.ndarray]


READERS: dict[str, ImageReader] = {
    "tiff": ImageReader(_tiff_header, tiff_format.read_region),
    "ome-tiff": ImageReader(_tiff_header, tiff_format.read_region),
    "npy": ImageReader(_npy_header, _npy_region),
}
"""The formats (by their name in :mod:`polystore.formats`) a conversion reads images from."""


MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),  # classic TIFF, either byte order
    (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),  # BigTIFF
    (b"\x93NUMPY", "npy"),
)
"""What a file of a format starts with, for files named without a known extension (an NGFF
layout's ``B/03/0``)."""


def image_format(path: str) -> Format | None:
    """The format that reads ``path`` as an image: by its extension, else by its first bytes;
    None if none does."""
    try:
        fmt = format_for(path)
    except UnsupportedFormatError:
        try:
            with open(path, "rb") as handle:
                start = handle.read(8)
        except OSError:
            return None
        name = next((name for magic, name in MAGIC if start.startswith(magic)), None)
        return None if name is None else format_for(path, name)
    return fmt if fmt.name in READERS else None


def known_formats() -> str:
    """The extensions of the image files a conversion reads (for messages)."""
    return ", ".join(e for fmt in registered_formats() if fmt.name in READERS for e in fmt.extensions)


def _format(path: str) -> Format:
    fmt = image_format(path)
    if fmt is None:
        raise UnsupportedFormatError(
            f"'{path}' is not an image file this converter reads ({known_formats()}).")
    return fmt


def _reading(path: str, read: Callable[[IO[bytes]], Any]) -> Any:
    """``read(handle)`` on the open file, its errors ours and naming the file."""
    try:
        with open(path, "rb") as handle:
            return read(handle)
    except PolystoreError:
        raise
    except OSError as error:
        raise from_os_error(error, path, "read") from error
    except Exception as error:
        raise CorruptDataError(f"'{path}' could not be read as {_format(path).name}: "
                               f"{type(error).__name__}: {error}") from error


def read_header(path: str) -> Header:
    """The shape and dtype of the image in ``path`` (its header only)."""
    reader = READERS[_format(path).name]
    header: Header = _reading(path, reader.header)
    return header


def read_plane(path: str) -> np.ndarray:
    """The pixels of ``path``, whole, through its format's ``load``."""
    fmt = _format(path)
    array: np.ndarray = _reading(path, lambda handle: np.asarray(read_with(fmt, handle, path, {})))
    return array


@dataclass(frozen=True)
class FileImage:
    """An image file as an array-like that dask reads region by region (``dask.array.from_array``):
    each block opens the file and reads the pixels it covers, so that no process holds more
    than its blocks; pickled as its path, so workers read it where they run."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    size: int
    mtime_ns: int
    header: Header | None = None

    @classmethod
    def open(cls, path: str) -> FileImage:
        header = read_header(path)
        info = os.stat(path)
        return cls(path, header.shape, header.dtype, info.st_size, info.st_mtime_ns, header)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, selection: tuple[slice, ...]) -> np.ndarray:
        reader = READERS[_format(self.path).name]
        region: np.ndarray = _reading(self.path, lambda handle: reader.region(handle, selection))
        return region

    def __dask_tokenize__(self) -> tuple[str, int, int]:
        """The same file, unchanged, is the same source (what resume compares)."""
        return (self.path, self.size, self.mtime_ns)


def walk_files(folder: str, stores: list[str] | None = None) -> Iterator[str]:
    """Every file under ``folder``, recursively, as a path relative to it, in sorted order
    (hidden files and folders left out), but for the zarr stores in it: their keys are no
    image files (a plate converted into the source folder, read again), and there may be
    millions; each store's relative path is added to ``stores`` instead."""
    for current, folders, files in os.walk(folder):
        if current != folder and any(name in files for name in NODE_DOCUMENTS):
            folders.clear()
            if stores is not None:
                stores.append(Path(current).relative_to(folder).as_posix())
            continue
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
