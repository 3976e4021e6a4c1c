"""Whole y-x planes read straight from their chunks, for arrays stored one plane per chunk (the
layout ``ZarrConfig`` writes by default: every plate field, every image level) in a local store.

Written by hand, for this one layout, because it is the read a plate is made of (a field, or a
plane of it) and zarr's path costs more than the decoding there: measured per field of
3 x 1024 x 1024 uint16 (blosc-zstd 1 + shuffle), CPU time on this project's 2-core machine,
zarr-python with zarrs 9.1 ms (a hop to zarr's event-loop thread, its indexing, zarrs' glue,
threads handing the chunks over), tensorstore 8.4 ms, these reads 7.7 ms. A plane's chunk is
read as a file and decoded by numcodecs (zarr's own codec library) into the array returned:
Blosc uses its internal threads (as many as the cores, numcodecs' default) when called from
the main thread, so one field's planes are decoded on every core.

Anything else (a selection inside planes, shards, filters, other codecs or byte orders, object
stores, where zarrs fetches chunks concurrently) goes through zarr: :func:`plane_reader` says
whether an array qualifies. A chunk that cannot be decoded, or decodes to the wrong size, is
a ``CorruptDataError`` naming it, as zarr's path reports one.
"""

from __future__ import annotations

import itertools
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from polystore.backends.zarr.location import KeyStore, join_key
from polystore.exceptions import CorruptDataError
from polystore.lazy import optional_import

Decode = Callable[[bytes, np.ndarray], None]
"""Decode a chunk's bytes into a plane (a C-contiguous view of the result), or raise."""


def _blosc(raw: bytes, plane: np.ndarray) -> None:
    # numcodecs' Blosc fills a larger destination without a word when the chunk holds less:
    # the size is checked in the chunk's header first (bytes 4-8: the decoded size)
    if len(raw) < 16 or struct.unpack_from("<I", raw, 4)[0] != plane.nbytes:
        raise ValueError(f"a blosc chunk of another size than a plane ({plane.nbytes} bytes)")
    _numcodecs().Blosc().decode(raw, out=plane)


def _whole(codec_name: str) -> Decode:
    """Decoding by a codec that does not check the size it fills: decoded whole, then checked."""
    def decode(raw: bytes, plane: np.ndarray) -> None:
        decoded = getattr(_numcodecs(), codec_name)().decode(raw) if codec_name else raw
        if len(decoded) != plane.nbytes:
            raise ValueError(f"{len(decoded)} bytes decoded, a plane is {plane.nbytes}")
        plane.reshape(-1).view(np.uint8)[:] = np.frombuffer(decoded, np.uint8)
    return decode


_DECODERS: dict[str, Decode] = {
    # the compressor of the array's metadata (Zarr v3 codec name, or numcodecs' codec_id)
    "blosc": _blosc,
    "zstd": _whole("Zstd"),
    "gzip": _whole("GZip"),
    "": _whole(""),  # no compressor
}


def _numcodecs() -> Any:
    return optional_import("numcodecs", extra="zarr", purpose="Reading zarr chunks")


@dataclass(frozen=True)
class PlaneReader:
    """How the planes of one array are read: its chunk keys, its codec, its fill value."""

    decode: Decode
    dtype: np.dtype[Any]
    fill_value: Any

    def read(self, array: Any, keys: KeyStore, index: tuple[int, ...], where: str) -> np.ndarray:
        """The planes of ``array`` under ``index`` (leading indices; () for the whole array)."""
        shape = tuple(int(s) for s in array.shape)
        leading = shape[:-2]
        ranges = [range(i, i + 1) for i in index] + [range(n) for n in leading[len(index):]]
        out = np.empty(shape[len(index):], self.dtype)
        flat = out.reshape(-1, *shape[-2:])
        metadata = array.metadata
        for position, coords in enumerate(itertools.product(*ranges)):
            key = join_key(array.store_path.path, metadata.encode_chunk_key((*coords, 0, 0)))
            raw = keys.get(key)
            if raw is None:  # never written: the fill value, as zarr reads it
                flat[position] = self.fill_value
                continue
            try:
                self.decode(raw, flat[position])
            except Exception as error:  # what the codecs raise for bytes they cannot decode
                raise CorruptDataError(
                    f"'{where}': chunk '{key}' cannot be decoded ({error}): it is damaged, or another "
                    "tool was stopped while writing it in place (polystore writes chunks whole). Run "
                    "`polystore repair` on the store (the chunk is removed and reads as 0), or save "
                    "the data again."
                ) from error
        return out


def plane_reader(array: Any, index: tuple[int, ...]) -> PlaneReader | None:
    """How to read ``array[index]`` plane by plane, or None where zarr must (see the module)."""
    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)
    metadata = array.metadata
    if (len(shape) < 2 or 0 in shape or len(index) > len(shape) - 2
            or tuple(array.chunks) != (1,) * (len(shape) - 2) + shape[-2:]
            or getattr(array, "shards", None) is not None or tuple(array.filters)
            or dtype.kind not in "biufc" or not dtype.isnative
            or metadata.fill_value is None
            or not all(0 <= i < n for i, n in zip(index, shape, strict=False))):
        return None
    compressors = tuple(array.compressors)
    if len(compressors) > 1:
        return None
    if metadata.zarr_format == 3:
        serializer = getattr(array, "serializer", None)
        endian = getattr(getattr(serializer, "endian", None), "value", None)
        if type(serializer).__name__ != "BytesCodec" or endian not in (None, sys.byteorder):
            return None
        name = compressors[0].to_dict()["name"] if compressors else ""
    else:
        if getattr(metadata, "order", "C") != "C":
            return None
        name = compressors[0].codec_id if compressors else ""
    decode = _DECODERS.get(name)
    if decode is None:
        return None
    return PlaneReader(decode, dtype, metadata.fill_value)
