"""Errors raised by polystore.

Every error inherits :class:`PolystoreError` *and* the builtin that matches its meaning
(the pattern zarr-python uses), so ``except FileNotFoundError`` keeps working for code
that knows nothing about polystore, and ``except PolystoreError`` catches all of ours.
Each message says what was wrong and what to do about it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class PolystoreError(Exception):
    """Root of every error polystore raises on purpose."""


class StorageFileNotFoundError(PolystoreError, FileNotFoundError):
    """A path that was expected to exist does not."""

    def __init__(self, path: str, backend: str | None = None, detail: str | None = None) -> None:
        where = f" in backend '{backend}'" if backend else ""
        # (errno, strerror, filename): str() is "[Errno 2] No such file or directory in
        # backend 'disk': 'a.npy'", and errno/filename are set as on the builtin's. ``detail``
        # replaces the strerror where more can be said (what was looked for, what to do).
        super().__init__(errno.ENOENT, detail or f"No such file or directory{where}", path)
        self.backend = backend
        self.detail = detail

    def __reduce__(
        self,
    ) -> tuple[type[StorageFileNotFoundError], tuple[str, str | None, str | None]]:
        # OSError would pickle (errno, strerror, filename), which this __init__ does not take;
        # errors cross process boundaries (process pools, Manager-backed memory stores).
        return (type(self), (self.filename, self.backend, self.detail))


class StorageExistsError(PolystoreError, FileExistsError):
    """Something is already at the path and the call was told not to replace it."""


class NotADirectoryStorageError(PolystoreError, NotADirectoryError):
    """A directory operation was given a file."""


class IsADirectoryStorageError(PolystoreError, IsADirectoryError):
    """A file operation was given a directory."""


class DirectoryNotEmptyError(PolystoreError, OSError):
    """``delete`` was asked to remove a directory that still has entries."""


class BackendNotFoundError(PolystoreError, KeyError):
    """A backend name that no registry entry, registered class or entry point provides."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known_list = ", ".join(sorted(known)) or "(none)"
        super().__init__(
            f"Unknown backend '{name}'. Known backends: {known_list}. "
            "Register one with registry.register(name, instance), define a StorageBackend "
            "subclass with _backend_type = '<name>', or install an addon that provides it "
            "through the 'polystore.backends' entry-point group."
        )
        self.name = name
        self._known = sorted(known)

    def __reduce__(self) -> tuple[type[BackendNotFoundError], tuple[str, list[str]]]:
        return (type(self), (self.name, self._known))  # errors cross process boundaries

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class BackendRegistrationError(PolystoreError, TypeError):
    """Two different classes (or a class and an instance) claim the same backend name."""


class IncompleteBackendError(PolystoreError, NotImplementedError):
    """A backend class left out a method of the storage contract and that method was used."""


class ReadOnlyBackendError(PolystoreError, PermissionError):
    """A write was attempted on a read-only backend."""


class PathEscapeError(PolystoreError, PermissionError):
    """A path resolves outside the root a backend is confined to."""


class StoragePermissionError(PolystoreError, PermissionError):
    """The operating system refused access to a path (its permissions, not a root's bounds)."""


class InvalidPathError(PolystoreError, ValueError):
    """A path that no backend can take: a NUL character, a name too long, a file path ending in '/'."""


class PathTypeError(InvalidPathError, TypeError):
    """Something other than a ``str`` or ``os.PathLike`` of ``str`` was given as a path."""


class SymlinkLoopError(PolystoreError, OSError):
    """Symbolic links that lead to each other (or too many in a row) were met resolving a path."""


class StorageIOError(PolystoreError, OSError):
    """The operating system failed an operation for a reason of its own (disk full, I/O error)."""


class LimitExceededError(PolystoreError, ValueError):
    """Reading would take more memory than a stated limit allows (a decompression bomb, a forged
    size); the message names the limit and how to raise it."""


class UnsupportedFormatError(PolystoreError, ValueError):
    """No registered format handles a path's extension."""


class FormatRegistrationError(PolystoreError, ValueError):
    """A format claims extensions that another format handles (pass ``replace=True``)."""


class InvalidOptionError(PolystoreError, TypeError, ValueError):
    """An option that is not taken: an unknown keyword (as Python's TypeError) or an unknown
    value, such as a framework name (as ValueError); both builtins catch it."""


class UnsupportedDataError(PolystoreError, TypeError):
    """The data given cannot be stored in the requested format."""


class ChunkingError(InvalidOptionError):
    """Chunks or shards that do not fit the arrays written: sizes below 1, the wrong number of
    axes, shards that are not whole chunks, or write units larger than a task may hold."""


class SelectionError(InvalidOptionError, IndexError):
    """``load(..., selection=...)`` was given an index outside the array, or no index at all.

    An :class:`InvalidOptionError`, as the TIFF format's out-of-range ``key=``/``series=`` are,
    and an ``IndexError``, as NumPy's and zarr's are, so code written against either keeps
    catching it."""


class CastRangeError(UnsupportedDataError, ValueError):
    """``cast=True`` was asked to cast values the target dtype cannot hold (they would wrap
    around, or become another value); a ValueError too, as the values are at fault."""


class CorruptDataError(PolystoreError, ValueError):
    """Stored data or metadata is there but cannot be read (damaged, or partly written)."""


class UnviewableDataError(UnsupportedDataError, ValueError):
    """A viewer was handed data it cannot show (neither an image nor ROIs); a ValueError too, as
    it was before it became one of ours."""


class LockTimeoutError(PolystoreError, TimeoutError):
    """A lock another writer holds was not released in the time allowed."""


_OS_ERRORS: dict[int, type[PolystoreError]] = {
    errno.ENOENT: StorageFileNotFoundError,
    errno.EEXIST: StorageExistsError,
    errno.ENOTDIR: NotADirectoryStorageError,
    errno.EISDIR: IsADirectoryStorageError,
    errno.ENOTEMPTY: DirectoryNotEmptyError,
    errno.EACCES: StoragePermissionError,
    errno.EPERM: StoragePermissionError,
    errno.ELOOP: SymlinkLoopError,
    errno.ENAMETOOLONG: InvalidPathError,
}
"""Which of our errors an ``OSError`` becomes, by errno (the rest: :class:`StorageIOError`)."""

_OS_ADVICE: dict[int, str] = {
    errno.ENOTDIR: "a file is in the way of a directory on that path",
    errno.EISDIR: "it is a directory; name a file inside it",
    errno.ENOTEMPTY: "the directory is not empty; use delete_all to remove it with its contents",
    errno.EACCES: "check the permissions of the path and its folders",
    errno.EPERM: "check the permissions of the path and its folders",
    errno.ELOOP: "symbolic links on the path lead to each other; fix or remove them",
    errno.ENAMETOOLONG: "a name is longer than the filesystem allows (255 bytes on most); "
    "use a shorter one",
    errno.EEXIST: "something is already there; remove it first, or choose another path",
    errno.ENOSPC: "the disk is full; free space and retry",
    errno.EFBIG: "the file would exceed the size this process or filesystem allows (ulimit -f, "
    "or the filesystem's largest file); raise the limit, or store it in smaller pieces",
    errno.EMFILE: "this process has too many files open (its limit: ulimit -n); close some, or "
    "raise the limit",
    errno.ENFILE: "the system has too many files open; close some and retry",
}


def from_os_error(error: OSError, path: str, operation: str, backend: str = "disk") -> PolystoreError:
    """Our error for an ``OSError`` met while doing ``operation`` on ``path`` (raise it ``from error``).

    Keeps ``errno`` so code written against the builtins still works (the path is in the
    message, not in ``filename``, which would print it twice).
    """
    if isinstance(error, PolystoreError):
        return error
    cls = _OS_ERRORS.get(error.errno or 0, StorageIOError)
    if cls is StorageFileNotFoundError:
        return StorageFileNotFoundError(path, backend)
    advice = _OS_ADVICE.get(error.errno or 0, "see the operating system's message")
    message = f"Cannot {operation} '{path}': {error.strerror or error}; {advice}."
    if issubclass(cls, OSError):
        return cls(error.errno, message)
    return cls(message)


class MissingDependencyError(PolystoreError, ImportError):
    """An optional dependency is needed for this operation and is not installed."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'polystore[{extra}]'",
            name=module,
        )
        self.extra = extra
        self._args = (module, extra, purpose)

    def __reduce__(self) -> tuple[type[MissingDependencyError], tuple[str, str, str]]:
        return (type(self), self._args)


class ViewerError(PolystoreError, RuntimeError):
    """A live viewer (napari, Fiji, ...) refused a request; the message is the viewer's reason."""


class ViewerUnavailableError(ViewerError, ConnectionError):
    """No viewer answered at the address, and none was (or could be) launched."""


@dataclass(frozen=True)
class BatchFailure:
    """One failed item of a batch operation."""

    index: int
    path: str
    error: BaseException

    def __str__(self) -> str:
        return f"[{self.index}] {self.path}: {type(self.error).__name__}: {self.error}"


class BatchError(PolystoreError):
    """Some items of a batch failed; the others completed.

    ``failures`` lists each failed item (index, path, exception). For ``load_batch`` the
    ``results`` list holds every item that did load, with ``None`` at the failed indices.
    """

    def __init__(
        self,
        operation: str,
        failures: Sequence[BatchFailure],
        total: int,
        results: list[object] | None = None,
    ) -> None:
        shown = "\n  ".join(str(f) for f in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(
            f"{operation}: {len(failures)} of {total} items failed:\n  {shown}{more}"
        )
        self.failures = list(failures)
        self.results = results
        self._args = (operation, self.failures, total, results)

    def __reduce__(self) -> tuple[type[BatchError], tuple[Any, ...]]:
        return (type(self), self._args)
