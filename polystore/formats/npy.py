"""NumPy's own formats: ``.npy`` (one array) and ``.npz`` (named arrays). Never pickled.

Headers are read and checked before any data: a file whose header claims more bytes than
follow it is damaged or forged (NumPy would allocate what the header says first), an
archive member's claims are held to what the archive declares, and what compressed members
declare is held to :mod:`polystore.formats.limits`.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import IO, Any, Literal

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import CorruptDataError, UnsupportedDataError
from polystore.formats import Format, limits


def _nameable(array: np.ndarray, fmt: str) -> np.ndarray:
    """``array``, if the .npy header can name its dtype (ml_dtypes' cannot: they read back as bytes)."""
    descr = np.lib.format.dtype_to_descr(array.dtype)
    if np.lib.format.descr_to_dtype(descr) != array.dtype:
        raise UnsupportedDataError(
            f"{fmt} cannot name the dtype {array.dtype} in its header (not one of NumPy's own: "
            f"ml_dtypes' bfloat16, float8 and int4 types are not): it would load as raw bytes "
            f"({np.lib.format.descr_to_dtype(descr)}). Convert it first (a.astype(np.float32) "
            "keeps bfloat16 exactly), or save a torch tensor of it as .pt."
        )
    return array


def _save_npy(data: Any, handle: IO[bytes]) -> None:
    np.save(handle, _nameable(as_plain_array(data, ".npy"), ".npy"), allow_pickle=False)


def read_header(handle: IO[bytes], shown: str) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, Fortran order, dtype, bytes of data the header announces) of a .npy stream."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError as error:
        raise CorruptDataError(
            f"'{shown}' is not a NumPy .npy file: it does not start with NumPy's magic bytes "
            "(\\x93NUMPY). It is damaged, or another kind of file with a .npy name."
        ) from error
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # 3.0 is 2.0 in UTF-8 (field names outside Latin-1), read only by NumPy's private reader
        from numpy.lib._format_impl import _read_array_header  # type: ignore[attr-defined]

        shape, fortran, dtype = _read_array_header(handle, version)
    if dtype.hasobject:
        raise UnsupportedDataError(
            f"'{shown}' holds Python objects (dtype {dtype}), stored pickled; polystore never "
            "unpickles (it runs code from the file). If you trust the file, use "
            "np.load(path, allow_pickle=True) yourself."
        )
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _check_announced(
    shown: str, shape: tuple[int, ...], dtype: np.dtype[Any], announced: int, present: int
) -> None:
    if announced > present:
        raise CorruptDataError(
            f"'{shown}' announces a {shape} {dtype} array ({announced:,} bytes), but only "
            f"{max(present, 0):,} bytes of data follow: the file is cut short or forged."
        )


def _load_npy(handle: IO[bytes], *, mmap_mode: Literal["r", "c"] | None = None) -> np.ndarray:
    shown = str(getattr(handle, "name", ".npy"))
    shape, fortran, dtype, announced = read_header(handle, shown)
    offset = handle.tell()
    _check_announced(shown, shape, dtype, announced, os.fstat(handle.fileno()).st_size - offset)
    if mmap_mode is not None and announced:
        if mmap_mode not in ("r", "c"):
            raise UnsupportedDataError(
                f"mmap_mode={mmap_mode!r} would write the file in place, past atomic writes "
                "(a reader could see it half changed). Map it with 'c' (copy-on-write) and "
                "save the result, or 'r' to read."
            )
        order: Literal["C", "F"] = "F" if fortran else "C"
        return np.memmap(handle, dtype=dtype, mode=mmap_mode, offset=offset, shape=shape, order=order)
    # the data follows the header just read: read it here rather than parse the header twice
    array = np.fromfile(handle, dtype=dtype, count=math.prod(shape))
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _save_npz(data: Any, handle: IO[bytes], *, compress: bool = False) -> None:
    if isinstance(data, dict):
        bad = [k for k in data if not isinstance(k, str)]
        if bad:
            raise UnsupportedDataError(
                f".npz names its arrays with strings; got keys {bad[:3]!r}. Use str keys "
                "(a number would come back as its string)."
            )
        cut = [k for k in data if "\0" in k]
        if cut:  # zip ends a member's name at NUL when reading: the array would be lost
            raise UnsupportedDataError(
                f".npz cannot keep keys with a NUL character; got {cut[:3]!r}. Remove it from the keys."
            )
        if list(data) == ["arr_0"]:
            raise UnsupportedDataError(
                ".npz gives a lone array named 'arr_0' back as that array, not as a dict "
                "(that is how one array is stored). Name it otherwise, or save the array itself."
            )
        arrays = {k: _nameable(as_plain_array(v, ".npz"), ".npz") for k, v in data.items()}
    else:
        arrays = {"arr_0": _nameable(as_plain_array(data, ".npz"), ".npz")}
    # np.savez's own loop: its keyword arguments would take the names 'file' and 'allow_pickle'
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(handle, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _load_npz(
    handle: IO[bytes], *, max_decompressed_bytes: int | None = None
) -> dict[str, np.ndarray] | np.ndarray:
    shown = str(getattr(handle, "name", ".npz"))
    limit = limits.NPZ_DECOMPRESSED_BYTES if max_decompressed_bytes is None else max_decompressed_bytes
    with zipfile.ZipFile(handle) as archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
        limits.checked_zip_members(archive, handle, f"'{shown}'", members, limit, "NPZ_DECOMPRESSED_BYTES")
        arrays: dict[str, np.ndarray] = {}
        for info in members:
            with archive.open(info) as member:
                shape, _, dtype, announced = read_header(member, f"{shown}:{info.filename}")
                _check_announced(f"{shown}:{info.filename}", shape, dtype, announced,
                                 info.file_size - member.tell())
                member.seek(0)
                arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
    if list(arrays) == ["arr_0"]:  # saved from a single array: give the array back
        return arrays["arr_0"]
    return arrays


FORMATS = [
    Format(
        "npy", (".npy",), _save_npy, _load_npy,
        description="NumPy array file",
        accepts="arrays of any framework and every NumPy dtype but object",
        options={"mmap_mode": "load: memory-map instead of reading ('r', or 'c' for copy-on-write)"},
    ),
    Format(
        "npz", (".npz",), _save_npz, _load_npz,
        description="NumPy archive of named arrays",
        accepts="a dict of arrays with str keys, or one array (loaded back as that array)",
        options={
            "compress": "save: deflate-compress the archive",
            "max_decompressed_bytes": "load: raise the decompression limit (default 1 GiB)",
        },
    ),
]
