"""What several commands share: where a path lives (its backend, inferred from the path when not
given), the FileManager they act through, progress bars, and dependency errors as one line."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from polystore.exceptions import InvalidPathError, PolystoreError
from polystore.filemanager import FileManager
from polystore.registry import BackendRegistry

T = TypeVar("T")

BACKEND_BY_PATH: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^s3://"), "zarr"),  # object storage is reached through the zarr backend
    (re.compile(r"(^|/)[^/]+\.zarr(/|$)"), "zarr"),  # a path through a .zarr folder is in a zarr store
)
"""Path -> backend when none is given: the first pattern found in the path wins, else disk.
``convert`` and ``cp`` both infer from here, so ``x.tif -> plate.zarr/A01_s1_w1.tif`` writes
into the zarr plate, never a TIFF into a folder named ``plate.zarr``."""

DEFAULT_BACKEND = "disk"

PROCESS_LOCAL_BACKENDS = frozenset({"memory"})
"""Backends whose data lives in one process: a command starts with them empty."""


def infer_backend(path: str, given: str | None = None) -> str:
    """``given``, else the backend the path names (``s3://``, a ``.zarr`` component), else disk."""
    if given:
        return given
    for pattern, backend in BACKEND_BY_PATH:
        if pattern.search(path):
            return backend
    return DEFAULT_BACKEND


@dataclass(frozen=True)
class Place:
    """A path and the backend it is read from or written to."""

    path: str
    backend: str

    def __str__(self) -> str:
        return self.path if self.backend == infer_backend(self.path) else f"{self.path} ({self.backend})"


def place(path: str, given: str | None = None) -> Place:
    """Where ``path`` lives; a process-local backend is refused with what to use instead."""
    backend = infer_backend(path, given)
    if backend in PROCESS_LOCAL_BACKENDS:
        raise InvalidPathError(
            f"The '{backend}' backend holds data inside one Python process, so a command starts "
            "with it empty; use it from Python (FileManager), or give disk, zarr or an s3:// URL."
        )
    return Place(path, backend)


def file_manager() -> FileManager:
    return FileManager(BackendRegistry())


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backend", default=None,
                        help="backend name (default: zarr for s3:// and .zarr paths, else disk)")


def add_transfer_options(parser: argparse.ArgumentParser) -> None:
    """``--from`` and ``--to``: the backends of a command's source and destination."""
    parser.add_argument("--from", dest="source_backend", default=None, metavar="BACKEND",
                        help="backend of the source (default: inferred from its path)")
    parser.add_argument("--to", dest="dest_backend", default=None, metavar="BACKEND",
                        help="backend of the destination (default: inferred from its path)")


def progress(items: Iterable[T], *, total: int | None = None, what: str = "files") -> Iterator[T]:
    """``items``, with a progress bar on stderr when it is a terminal (tqdm, if installed)."""
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety: without tqdm the work is the same
        yield from items
        return
    # disable=None: no bar when stderr is not a terminal (pipes, logs, tests)
    yield from tqdm(items, total=total, unit=f" {what}", disable=None, file=sys.stderr, leave=False)


# Errors raised by dependencies (not PolystoreErrors) that users meet often, by class name
# anywhere in the error's class hierarchy or its chain of causes: what to do about each.
DEPENDENCY_HINTS: dict[str, str] = {
    "NoCredentialsError": "no S3 credentials were found: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible server), or AWS_PROFILE",
    "PartialCredentialsError": "the S3 credentials are incomplete: set both AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY",
    "EndpointConnectionError": "the S3 endpoint cannot be reached: check AWS_ENDPOINT_URL and the network",
    "ClientError": "the object store refused the request: check the bucket name and your credentials",
    "TiffFileError": "the file is not a readable TIFF (damaged, or another format under a .tif name)",
    "JSONDecodeError": "the file is not valid JSON (damaged, or another format under a .json name)",
    "BadZipFile": "the file is not a readable zip archive (.npz, .roi.zip): damaged or another format",
    "UnpicklingError": "the file holds pickled objects, which polystore never loads",
}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def one_line(error: BaseException) -> str:
    """``error`` as one line that says what was wrong and, where known, what to do."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, PolystoreError):
        return message
    for cause in _chain(error):
        for cls in type(cause).__mro__:
            hint = DEPENDENCY_HINTS.get(cls.__name__)
            if hint:
                detail = " ".join(str(cause).split())
                return f"{hint} ({detail})" if detail else hint
    if isinstance(error, OSError):
        return message
    return f"{type(error).__name__}: {message} (run again with --debug for the traceback)"

