"""PyTorch's ``.pt`` / ``.pth``: tensors and state dicts, always loaded with ``weights_only=True``.

What goes in is checked against what ``weights_only=True`` can read back (tensors, numbers,
strings, bytes, ``None``, dtypes, devices, sizes, and dicts, lists, tuples and sets of those),
so a file that could not be loaded is refused when saved, not found out later. Arrays of other
frameworks anywhere in the structure become tensors (sharing memory where they can).
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from typing import IO, Any

import numpy as np

from polystore.arrays import convert, framework_of
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format, limits
from polystore.lazy import optional_import

_PLAIN = (str, bytes, int, float, complex, bool, type(None))
_CONTAINERS = (dict, collections.OrderedDict, list, tuple, set)


def _torch() -> Any:
    return optional_import("torch", extra="torch", purpose="Reading and writing .pt files")


def _loadable(data: Any, torch: Any, where: str) -> Any:
    """``data`` with arrays as tensors; an error naming the first thing weights_only cannot load
    (dict keys are held to the same rule: a key it cannot load fails the whole file)."""
    kind = type(data)
    if kind in (torch.Tensor, torch.nn.Parameter) or kind in _PLAIN:
        return data
    if kind in (torch.dtype, torch.device, torch.Size):
        return data
    if isinstance(data, np.generic):
        raise UnsupportedDataError(
            f".pt cannot give back the NumPy scalar {data!r} at {where or 'the top level'}: "
            "it would come back as a 0-d tensor. Store it as a Python number (x.item()), or "
            "as an array (np.asarray(x)), which comes back as a tensor."
        )
    if framework_of(data) is not None and hasattr(data, "shape"):
        try:
            return convert(data, "torch")  # shares memory with a NumPy array where it can
        except UnsupportedDataError as error:
            raise UnsupportedDataError(f".pt cannot store {where or 'the top level'}: {error}") from error
    if kind in (dict, collections.OrderedDict):
        return kind(
            (
                _loadable(key, torch, f"{where} key {key!r}".lstrip()),
                _loadable(value, torch, f"{where}[{key!r}]"),
            )
            for key, value in data.items()
        )
    if kind in (list, tuple, set):
        return kind(_loadable(value, torch, f"{where}[{index}]") for index, value in enumerate(data))
    raise UnsupportedDataError(
        f".pt files are loaded with weights_only=True (unpickling anything else runs code "
        f"from the file), which cannot read back {kind.__module__}.{kind.__qualname__} "
        f"at {where or 'the top level'}. Store tensors (or arrays), numbers, strings, and "
        "dicts, lists or tuples of them (as keys: str, int, float, bool, None, or tuples of "
        "them); save other objects as .json, or arrays as .npy/.npz."
    )


def _save_pt(data: Any, handle: IO[bytes]) -> None:
    torch = _torch()
    torch.save(_loadable(data, torch, ""), handle)


def _load_pt(
    handle: IO[bytes],
    *,
    map_location: Any = None,
    weights_only: bool = True,
    max_decompressed_bytes: int | None = None,
) -> Any:
    if not weights_only:
        raise UnsupportedDataError(
            "polystore loads .pt files with weights_only=True only: unpickling arbitrary "
            "objects runs code from the file. Store tensors, dicts and lists of tensors; if "
            "you trust this file and need more, call torch.load yourself."
        )
    if zipfile.is_zipfile(handle):  # torch.save's format since 1.6: a zip of records
        limit = limits.PT_DECOMPRESSED_BYTES if max_decompressed_bytes is None else max_decompressed_bytes
        with zipfile.ZipFile(handle) as archive:  # torch reads records as the directory declares
            shown = f"'{getattr(handle, 'name', '.pt')}'"
            records = archive.infolist()
            limits.checked_zip_members(archive, handle, shown, records, limit, "PT_DECOMPRESSED_BYTES")
    handle.seek(0)
    try:
        return _torch().load(handle, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is None:  # not a refusal: a damaged file, which read_with names as such
            raise
        raise UnsupportedDataError(
            f"'{getattr(handle, 'name', '.pt')}' holds {refused.group(1)}, which weights_only=True "
            "does not load; polystore loads .pt with weights_only=True only (unpickling other "
            "objects runs code from the file). If you trust the file, allow such types around the "
            "load (with torch.serialization.safe_globals([...]):), or call torch.load(path, "
            "weights_only=False) yourself."
        ) from error


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")
"""What torch's weights-only unpickler says when it refuses a type (as opposed to damaged data)."""


FORMATS = [
    Format(
        "torch", (".pt", ".pth"), _save_pt, _load_pt,
        description="PyTorch tensor or state dict (torch.save)",
        accepts="tensors (arrays of other frameworks become tensors), numbers, strings, and "
        "dicts/lists/tuples of them",
        options={
            "map_location": "load: device to place tensors on, e.g. 'cpu'",
            "max_decompressed_bytes": "load: raise the limit on what compressed records expand to "
            "(default 1 GiB; torch.save never compresses)",
        },
    ),
]
