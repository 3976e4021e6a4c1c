"""polystore: one API to save, load and look at arrays wherever they live.

Backends (disk, memory, and addons) register themselves; :class:`FileManager` reaches all
of them by name. Optional parts (zarr, streaming, frameworks) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from polystore.arrays import convert, framework_of, to_numpy
from polystore.atomic import atomic_update_json, atomic_write, atomic_write_json, file_lock
from polystore.backends import DiskBackend, MemoryBackend
from polystore.base import DataSink, DataSource, FileStat, ReadOnlyBackend, StorageBackend
from polystore.exceptions import (
    BackendNotFoundError,
    BackendRegistrationError,
    BatchError,
    CastRangeError,
    ChunkingError,
    CorruptDataError,
    DirectoryNotEmptyError,
    FormatRegistrationError,
    IncompleteBackendError,
    InvalidOptionError,
    InvalidPathError,
    IsADirectoryStorageError,
    LimitExceededError,
    LockTimeoutError,
    MissingDependencyError,
    NotADirectoryStorageError,
    PathEscapeError,
    PathTypeError,
    PolystoreError,
    ReadOnlyBackendError,
    SelectionError,
    StorageExistsError,
    StorageFileNotFoundError,
    StorageIOError,
    StoragePermissionError,
    SymlinkLoopError,
    UnsupportedDataError,
    UnsupportedFormatError,
    UnviewableDataError,
    ViewerError,
    ViewerUnavailableError,
)
from polystore.filemanager import FileManager
from polystore.formats import Format, register_format
from polystore.registry import BackendRegistry

__version__ = "0.1.0"

# Names of later parts, imported when first asked for so that `import polystore` stays light.
_LAZY: dict[str, str] = {
    "ZarrBackend": "polystore.backends.zarr",
    "ZarrConfig": "polystore.backends.zarr.config",
    "ZarrCompressor": "polystore.backends.zarr.config",
    "ZarrChunkStrategy": "polystore.backends.zarr.config",
    "repair_plate": "polystore.backends.zarr.repair",
    "RepairReport": "polystore.backends.zarr.repair",
    "StreamingBackend": "polystore.streaming.backend",
    "ViewerStreamingBackend": "polystore.streaming.viewer",
    "parse_components": "polystore.plates",
    "register_convention": "polystore.plates",
    # polystore.convert converts arrays between frameworks; this one converts plates and images
    "convert_to_zarr": "polystore.distributed",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # the module __getattr__ protocol: hasattr() needs an AttributeError
        raise AttributeError(f"module 'polystore' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BackendNotFoundError",
    "BackendRegistrationError",
    "BackendRegistry",
    "BatchError",
    "CastRangeError",
    "ChunkingError",
    "CorruptDataError",
    "DataSink",
    "DataSource",
    "DirectoryNotEmptyError",
    "DiskBackend",
    "FileManager",
    "FileStat",
    "Format",
    "FormatRegistrationError",
    "IncompleteBackendError",
    "InvalidOptionError",
    "InvalidPathError",
    "IsADirectoryStorageError",
    "LimitExceededError",
    "LockTimeoutError",
    "MemoryBackend",
    "MissingDependencyError",
    "NotADirectoryStorageError",
    "PathEscapeError",
    "PathTypeError",
    "PolystoreError",
    "ReadOnlyBackend",
    "ReadOnlyBackendError",
    "SelectionError",
    "StorageBackend",
    "StorageExistsError",
    "StorageFileNotFoundError",
    "StorageIOError",
    "StoragePermissionError",
    "SymlinkLoopError",
    "UnsupportedDataError",
    "UnsupportedFormatError",
    "UnviewableDataError",
    "ViewerError",
    "ViewerUnavailableError",
    "atomic_update_json",
    "atomic_write",
    "atomic_write_json",
    "convert",
    "file_lock",
    "framework_of",
    "register_format",
    "repair_plate",
    "to_numpy",
]
