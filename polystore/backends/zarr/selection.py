"""A ``selection`` given to ``load`` that selects nothing in the array: our error saying the
array's shape and what was asked, in place of zarr's or dask's IndexError (zarr's names one
dimension's length, not which axis or the whole shape)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from polystore.base import PathLike
from polystore.exceptions import SelectionError


@contextlib.contextmanager
def checked_selection(path: PathLike, shape: tuple[int, ...], selection: Any) -> Iterator[None]:
    """Indexing ``path`` (an array of ``shape``, as the user sees it) by ``selection``: an
    IndexError (zarr's BoundsCheckError, dask's) or a KeyError (dask's, for a string) becomes a
    :class:`SelectionError` naming both."""
    try:
        yield
    except (IndexError, KeyError) as error:
        if isinstance(error, SelectionError):
            raise
        reason = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SelectionError(
            f"selection={selection!r} does not index '{path}', an array of shape {tuple(shape)}: "
            f"{reason}. Pass integers from -n to n-1 or slices, at most one per axis "
            "(np.s_[0, 5:10])."
        ) from error
