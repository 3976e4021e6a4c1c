"""How an OS error met writing a store's files reaches the user: as polystore's error naming
the node and what to do, when the disk is at fault; untouched when it is not the store's."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from polystore.base import PathLike
from polystore.exceptions import NotADirectoryStorageError, PolystoreError, from_os_error


@contextlib.contextmanager
def os_errors(path: PathLike, store: str) -> Iterator[None]:
    """An OS error met writing ``path`` into ``store`` (a full disk, a file-size limit, a
    read-only or failing disk, the store's permissions, a file where the store's folder
    goes) as our error naming the path and what to do. Any other OSError passes as it is:
    one of the caller's own source (a dask array reading its files) is about that source, not
    about the store."""
    try:
        yield
    except OSError as error:
        if not isinstance(error, PolystoreError) and "://" not in store and os.path.isfile(store):
            # the store's folder cannot be made: obstore says only "File exists (os error 17)"
            raise NotADirectoryStorageError(
                f"'{store}' is a file, not a zarr store (a folder), so '{os.fspath(path)}' cannot be "
                "saved into it. Move that file away, or save to another store."
            ) from error
        filename = os.fspath(error.filename) if isinstance(error.filename, (str, os.PathLike)) else None
        if (not isinstance(error, PolystoreError) and error.errno == errno.EEXIST and filename is not None
                and inside(filename, store) and os.path.isfile(filename)):
            # a file of the user's in the store where a group's folder goes (a bare FileExistsError)
            raise NotADirectoryStorageError(
                f"'{filename}' is a file, not a group (a folder), so '{os.fspath(path)}' cannot be "
                "saved below it. Move that file away, or save to another name."
            ) from error
        in_store = filename is None or inside(filename, store)
        if isinstance(error, PolystoreError) or error.errno not in WRITE_ERRORS or not in_store:
            raise
        raise from_os_error(error, os.fspath(path), "save", "zarr") from error


def inside(filename: str, store: str) -> bool:
    """Whether ``filename`` is ``store`` or below it, by whole path components (``a.zarr2`` is
    not inside ``a.zarr``); a URL store holds no local file."""
    if "://" in store:
        return False
    store_path = os.path.abspath(store)
    try:
        return os.path.commonpath([os.path.abspath(filename), store_path]) == store_path
    except ValueError:  # on another drive (Windows)
        return False


WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
"""What writing a store's files can fail with for a reason of the disk's (not of the data's)."""
