"""Doubts a review of the zarr backend raised about killed and failed writes, each shown on real
files (and real processes where a kill matters), then fixed: leftovers read back as data, an
image's levels of another tool's naming kept by a save replacing it, a pyramid whose levels
disagree with nothing saying so, a well listing a field ``repair`` left out, a field whose
creation failed left behind, an error of a sibling folder's file taken for the store's.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")


from polystore.backends.zarr import ZarrBackend
from polystore.exceptions import PolystoreError

FORMATS = pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])


def _failing_source(error: OSError) -> Any:
    """A dask array whose computation raises ``error`` (a source file that cannot be read)."""
    import dask.array as da
    from dask.delayed import delayed

    def read() -> np.ndarray:
        raise error

    return da.from_delayed(delayed(read)(), shape=(8, 8), dtype=np.uint16)  # type: ignore[no-untyped-call]


# -- an OS error of a file beside the store -------------------------------------------------------
def test_a_source_error_in_a_sibling_folder_named_like_the_store_is_not_the_stores(tmp_path: Path) -> None:
    """``s.zarr2`` begins with ``s.zarr`` but is not inside it: its file's permission error is
    the source's, not "Cannot save 's.zarr/image'" (a prefix test of the paths said it was)."""
    sibling = tmp_path / "s.zarr2" / "source.tif"
    source = _failing_source(PermissionError(errno.EACCES, "Permission denied", str(sibling)))
    with pytest.raises(PermissionError, match=r"s\.zarr2/source\.tif") as raised:
        ZarrBackend(root=tmp_path).save(source, "s.zarr/image")
    assert not isinstance(raised.value, PolystoreError), raised.value
    inside = tmp_path / "s.zarr" / "image" / "0" / "c"  # a file of the store: the store's error
    source = _failing_source(PermissionError(errno.EACCES, "Permission denied", str(inside)))
    with pytest.raises(PolystoreError, match=r"Cannot save 's\.zarr/image'"):
        ZarrBackend(root=tmp_path).save(source, "s.zarr/image")
