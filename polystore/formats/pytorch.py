"""PyTorch's ``.pt`` / ``.pth``: tensors and state dicts, always loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from polystore.arrays import convert, framework_of
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format
from polystore.lazy import optional_import


def _torch() -> Any:
    return optional_import("torch", extra="torch", purpose="Reading and writing .pt files")


def _save_pt(data: Any, handle: IO[bytes]) -> None:
    if framework_of(data) not in (None, "torch"):
        data = convert(data, "torch")  # shares memory with a NumPy array where it can
    _torch().save(data, handle)


def _load_pt(path: Path, *, map_location: Any = None, weights_only: bool = True) -> Any:
    if not weights_only:
        raise UnsupportedDataError(
            "polystore loads .pt files with weights_only=True only: unpickling arbitrary "
            "objects runs code from the file. Store tensors, dicts and lists of tensors; if "
            "you trust this file and need more, call torch.load yourself."
        )
    return _torch().load(path, map_location=map_location, weights_only=True)


FORMATS = [
    Format(
        "torch", (".pt", ".pth"), _save_pt, _load_pt,
        description="PyTorch tensor or state dict (torch.save)",
        accepts="tensors (arrays of other frameworks are converted), dicts/lists of tensors",
        options={"map_location": "load: device to place tensors on, e.g. 'cpu'"},
    ),
]
