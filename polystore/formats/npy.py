"""NumPy's own formats: ``.npy`` (one array) and ``.npz`` (named arrays). Never pickled."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from polystore.arrays import as_plain_array
from polystore.formats import Format


def _save_npy(data: Any, handle: IO[bytes]) -> None:
    np.save(handle, as_plain_array(data, ".npy"), allow_pickle=False)


def _load_npy(path: Path, *, mmap_mode: Literal["r", "r+", "c"] | None = None) -> np.ndarray:
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)  # type: ignore[no-any-return]


def _save_npz(data: Any, handle: IO[bytes], *, compress: bool = False) -> None:
    if isinstance(data, dict):
        arrays = {str(k): as_plain_array(v, ".npz") for k, v in data.items()}
    else:
        arrays = {"arr_0": as_plain_array(data, ".npz")}
    if compress:
        np.savez_compressed(handle, allow_pickle=False, **arrays)
    else:
        np.savez(handle, allow_pickle=False, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        arrays: dict[str, np.ndarray] = {name: archive[name] for name in archive.files}
    if list(arrays) == ["arr_0"]:  # saved from a single array: give the array back
        return arrays["arr_0"]
    return arrays


FORMATS = [
    Format(
        "npy", (".npy",), _save_npy, _load_npy,
        description="NumPy array file",
        accepts="arrays of any framework",
        options={"mmap_mode": "load: memory-map instead of reading ('r', 'r+', 'c')"},
    ),
    Format(
        "npz", (".npz",), _save_npz, _load_npz,
        description="NumPy archive of named arrays",
        accepts="a dict of arrays, or one array (loaded back as that array)",
        options={"compress": "save: deflate-compress the archive"},
    ),
]
