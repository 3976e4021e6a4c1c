"""NapariStreamingBackend on the pipeline's side: what it refuses before anything is sent.

No napari here: the backend imports neither Qt nor napari, and a refusal happens before the
viewer is asked for. What napari itself does with such arrays (``add_image`` raising, the
viewer logging "could not show ...") is why they are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("zmq")

from net_helpers import free_port_block

from polystore import FileManager, UnviewableDataError
from polystore.exceptions import PathTypeError
from polystore_napari import NapariStreamingBackend


@pytest.mark.parametrize(("array", "kind", "why"), [
    (np.ones((8, 8), np.complex64), "image", "complex64"),
    (np.array(5, np.uint16), "image", "at least 2 dimensions"),
    (np.arange(10, dtype=np.uint16), "image", "at least 2 dimensions"),
    (np.zeros((0, 64), np.uint8), "image", "none of length 0"),
    (np.ones((8, 8), np.float32), "labels", "float32"),
], ids=["complex", "0-d", "1-d", "empty-axis", "float-labels"])
def test_an_array_napari_cannot_show_is_refused_before_it_is_sent(
    array: np.ndarray, kind: str, why: str
) -> None:
    """These were sent, acknowledged and never shown: the viewer logged "could not show ..."
    (for a complex image with an empty reason) and the pipeline never knew."""
    port = free_port_block(3)
    backend = NapariStreamingBackend(port=port, probe_timeout=0.2)
    fm = FileManager({"napari": backend})
    try:
        with pytest.raises(UnviewableDataError, match=why) as error:
            fm.save(array, "run/x.tif", backend="napari", kind=kind)
        assert isinstance(error.value, TypeError | ValueError)
        shape: Any = array.shape
        with pytest.raises(UnviewableDataError, match=why):
            backend.frame(shape, array.dtype, "run/x.tif", kind=kind)
        assert backend.sent == 0
    finally:
        backend.close(0)


def test_a_path_that_is_not_text_is_our_error_on_a_viewer_backend() -> None:
    """A viewer backend filters paths by extension before anything else: a path of another type
    was a bare TypeError from ``os.fspath`` there, not the PathTypeError a plain stream gives."""
    backend = NapariStreamingBackend(port=free_port_block(3), probe_timeout=0.2)
    try:
        for path in (5, b"run/a.tif", None):
            with pytest.raises(PathTypeError, match="path must be"):
                backend.save(np.ones((4, 4)), path)
            with pytest.raises(PathTypeError, match="path must be"):
                backend.save_batch([np.ones((4, 4))], [path])
        assert backend.sent == 0
    finally:
        backend.close(0)
