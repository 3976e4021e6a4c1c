"""Whole y-x planes read and written straight as their chunks, for arrays stored one plane per
chunk (the layout ``ZarrConfig`` writes by default: every plate field, every image level) in a
local store.

Written by hand, for this one layout, because it is the I/O a plate is made of (a field, or a
plane of it) and zarr's path costs more than the codec there. A plane's chunk is read as a
file and decoded by numcodecs (zarr's own codec library) into the array returned, or encoded
by numcodecs and put whole (a staging file renamed over the chunk, ``LocalKeys.put``). The
planes of one call go to a pool of one thread per core, a plane per task: numcodecs releases
the GIL while it compresses, so a field's planes are coded on every core. Blosc's own threads
do not do that here: zarr turns them off at import (``numcodecs.blosc.use_threads = False``,
they are not thread-safe), and zarrs coded a field's three chunks on one core.

Anything else (a selection inside planes, shards, filters, other codecs or byte orders, object
stores, where zarrs fetches chunks concurrently) goes through zarr: :func:`plane_chunks` says
whether an array qualifies. A chunk that cannot be decoded, or decodes to the wrong size, is
a ``CorruptDataError`` naming it, as zarr's path reports one.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from polystore.backends.zarr.location import KeyStore, join_key, zarr_module
from polystore.exceptions import CorruptDataError
from polystore.lazy import optional_import

Decode = Callable[[bytes, np.ndarray], None]
"""Decode a chunk's bytes into a plane (a C-contiguous view of the result), or raise."""
Encode = Callable[[np.ndarray], bytes]
"""Encode a C-contiguous plane into a chunk's bytes."""
Item = TypeVar("Item")


def _blosc(raw: bytes, plane: np.ndarray) -> None:
    # numcodecs' Blosc fills a larger destination without a word when the chunk holds less,
    # and decodes a chunk cut short from past its end: the chunk's header is checked first
    # (bytes 4-8: the decoded size; 12-16: the chunk's own size)
    if len(raw) < 16 or struct.unpack_from("<I", raw, 4)[0] != plane.nbytes:
        raise CorruptDataError(f"a blosc chunk of another size than a plane ({plane.nbytes} bytes)")
    if struct.unpack_from("<I", raw, 12)[0] != len(raw):
        raise CorruptDataError(f"a blosc chunk of {len(raw)} bytes whose header says "
                               f"{struct.unpack_from('<I', raw, 12)[0]}: cut short or damaged")
    _numcodecs().Blosc().decode(raw, out=plane)


def _whole(codec_name: str) -> Decode:
    """Decoding by a codec that does not check the size it fills: decoded whole, then checked."""
    def decode(raw: bytes, plane: np.ndarray) -> None:
        decoded = getattr(_numcodecs(), codec_name)().decode(raw) if codec_name else raw
        if len(decoded) != plane.nbytes:
            raise CorruptDataError(f"{len(decoded)} bytes decoded, a plane is {plane.nbytes}")
        plane.reshape(-1).view(np.uint8)[:] = np.frombuffer(decoded, np.uint8)
    return decode


_DECODERS: dict[str, Decode] = {
    # the compressor of the array's metadata (Zarr v3 codec name, or numcodecs' codec_id)
    "blosc": _blosc,
    "zstd": _whole("Zstd"),
    "gzip": _whole("GZip"),
    "": _whole(""),  # no compressor
}

_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
# numcodecs codecs equal to Zarr v3's (zarr-python encodes through these very classes), made
# from the codec's configuration in the array's metadata; None: not one this module encodes
_V3_ENCODERS: dict[str, Callable[[dict[str, Any], np.dtype[Any]], Any]] = {
    "blosc": lambda c, dtype: _numcodecs().Blosc(
        cname=c["cname"], clevel=c["clevel"], shuffle=_SHUFFLES[c["shuffle"]], blocksize=c["blocksize"]
    ) if c.get("typesize") in (None, dtype.itemsize) else None,  # numcodecs takes the plane's itemsize
    "zstd": lambda c, _: _numcodecs().Zstd(level=c["level"], checksum=c.get("checksum", False)),
    "gzip": lambda c, _: _numcodecs().GZip(level=c["level"]),
}


def _numcodecs() -> Any:
    return optional_import("numcodecs", extra="zarr", purpose="Reading and writing zarr chunks")


_POOL: list[tuple[int, int, ThreadPoolExecutor]] = []  # (pid, threads, pool)
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not run here, and the pool's lock may
    have been held by one of the parent's other threads at the fork (it would never be
    released): both are made anew."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOL.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> tuple[int, ThreadPoolExecutor]:
    """(threads, the plane pool): as many threads as zarr may use for chunks (a dask worker's
    own thread count, set by polystore's worker plugin, so that workers sharing a machine do
    not each take every core), else one per core; made once per process (again in a forked
    child: ``_forget_pool``; the pid check covers a fork by other means)."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0][0] != os.getpid():
            threads = int(zarr_module().config.get("threading.max_workers", None) or os.cpu_count() or 1)
            pool = ThreadPoolExecutor(threads, thread_name_prefix="polystore-planes")
            _POOL[:] = [(os.getpid(), threads, pool)]
        return _POOL[0][1], _POOL[0][2]


def _each(work: Callable[[Item], None], items: Iterable[Item],
          meanwhile: Callable[[], None] | None = None) -> None:
    """``work`` on every item, on the plane pool, and on the calling thread where the thread
    setting allows more than one.

    The calling thread first runs ``meanwhile`` (I/O, while the pool works), then, unless the
    setting is one thread (a one-thread dask worker: its thread only waits), takes the items no
    pool thread has started (a field's third plane, with two pool threads) instead of waiting
    idle for them. Returns once every item is done, a failed one's error (or ``meanwhile``'s)
    raised then: a caller cleaning up after it must not race the others' writes.
    """
    items = list(items)
    if len(items) <= 1 and meanwhile is None:
        for item in items:
            work(item)
        return
    threads, pool = _pool()
    futures = [pool.submit(work, item) for item in items]
    errors: list[BaseException] = []
    if meanwhile is not None:
        try:
            meanwhile()
        except BaseException as error:  # raised below, after the pool's tasks are done
            errors.append(error)
    for future, item in zip(reversed(futures), reversed(items), strict=True):
        if errors:  # ``meanwhile`` failed: what no pool thread started is not coded at all
            future.cancel()
        elif threads > 1 and future.cancel():  # not started by the pool: done here
            try:
                work(item)
            except BaseException as error:
                errors.append(error)
    for future in futures:
        if not future.cancelled() and (failure := future.exception()) is not None:
            errors.append(failure)
    if errors:
        raise errors[0]


def _is_fill(plane: np.ndarray, fill_value: Any) -> bool:
    """Whether every value of ``plane`` is the fill value (such a chunk is not stored)."""
    first = plane.flat[0]  # a plane of data is told apart by its first value, without a pass over it
    if plane.dtype.kind in "fc" and np.isnan(fill_value):
        return bool(np.isnan(first)) and bool(np.isnan(plane).all())
    if first != fill_value:
        return False
    if not np.any(fill_value):
        return not plane.any()  # no temporary array, unlike ==
    return bool((plane == fill_value).all())


@dataclass(frozen=True)
class PlaneChunks:
    """How the planes of one array are read and written: its codec, its fill value."""

    decode: Decode
    encode: Encode | None  # None: read only (a codec configuration not mapped here)
    dtype: np.dtype[Any]
    fill_value: Any
    write_empty: bool  # whether a plane of the fill value alone is stored (zarr's write_empty_chunks)

    @staticmethod
    def _planes(array: Any, index: tuple[int, ...]) -> Iterator[tuple[int, str]]:
        """(position among the planes under ``index``, chunk key) of each plane."""
        shape = tuple(int(s) for s in array.shape)
        ranges = [range(i, i + 1) for i in index] + [range(n) for n in shape[len(index):-2]]
        metadata = array.metadata
        for position, coords in enumerate(itertools.product(*ranges)):
            yield position, join_key(array.store_path.path, metadata.encode_chunk_key((*coords, 0, 0)))

    def read(self, array: Any, keys: KeyStore, index: tuple[int, ...], where: str) -> np.ndarray:
        """The planes of ``array`` under ``index`` (leading indices; () for the whole array)."""
        shape = tuple(int(s) for s in array.shape)
        out = np.empty(shape[len(index):], self.dtype)
        flat = out.reshape(-1, *shape[-2:])

        def read_plane(entry: tuple[int, str]) -> None:
            position, key = entry
            raw = keys.get(key)
            if raw is None:  # never written: the fill value, as zarr reads it
                flat[position] = self.fill_value
                return
            try:
                self.decode(raw, flat[position])
            except Exception as error:  # what the codecs raise for bytes they cannot decode
                raise CorruptDataError(
                    f"'{where}': chunk '{key}' cannot be decoded ({error}): it is damaged, or another "
                    "tool was stopped while writing it in place (polystore writes chunks whole). Run "
                    "`polystore repair` on the store (the chunk is removed and reads as 0), or save "
                    "the data again."
                ) from error

        _each(read_plane, self._planes(array, index))
        return out

    def write(self, array: Any, keys: KeyStore, index: tuple[int, ...], data: np.ndarray,
              meanwhile: Callable[[], None] | None = None) -> None:
        """Write ``data`` (the planes of ``array`` under ``index``, in their shape) chunk by
        chunk, each whole; a plane of the fill value alone is removed, as zarr writes it.

        ``meanwhile``: run on the calling thread while the planes are encoded, and before any
        chunk is written (e.g. the array's documents, and clearing what was at its path): a
        new image's metadata I/O overlaps the codec. If it raises, no chunk is written.
        """
        encode = self.encode
        assert encode is not None, "plane_chunks(..., write=True) gives an encoder"
        shape = tuple(int(s) for s in array.shape)
        flat = np.ascontiguousarray(data, self.dtype).reshape(-1, *shape[-2:])
        ready = threading.Event()
        failed: list[bool] = []
        if meanwhile is None:
            ready.set()

        def write_plane(entry: tuple[int, str]) -> None:
            position, key = entry
            plane = flat[position]
            raw = None if not self.write_empty and _is_fill(plane, self.fill_value) else encode(plane)
            ready.wait()  # set by the calling thread before it takes any plane itself
            if failed:
                return
            if raw is None:
                keys.delete(key)
            else:
                keys.put(key, raw)

        def prepare() -> None:
            try:
                if meanwhile is not None:
                    meanwhile()
            except BaseException:
                failed.append(True)
                raise
            finally:
                ready.set()

        _each(write_plane, self._planes(array, index), prepare if meanwhile is not None else None)


def _encoder(compressor: Any, name: str, zarr_format: int, dtype: np.dtype[Any]) -> Encode | None:
    if not name:
        return lambda plane: plane.tobytes()
    codec = compressor if zarr_format == 2 else None  # Zarr v2's compressor is a numcodecs codec
    if codec is None:
        make = _V3_ENCODERS.get(name)
        codec = make(compressor.to_dict().get("configuration", {}), dtype) if make else None
    if codec is None:
        return None
    return lambda plane: bytes(codec.encode(plane))


def plane_chunks(array: Any, index: tuple[int, ...], *, write: bool = False) -> PlaneChunks | None:
    """How to read (or, with ``write``, write) ``array[index]`` plane by plane, or None where
    zarr must (see the module)."""
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
    encode = _encoder(compressors[0] if compressors else None, name, metadata.zarr_format, dtype) \
        if write else None
    if write and encode is None:
        return None
    write_empty = bool(array.async_array.config.write_empty_chunks)
    return PlaneChunks(decode, encode, dtype, metadata.fill_value, write_empty)
