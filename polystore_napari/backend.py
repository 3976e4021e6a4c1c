"""NapariStreamingBackend: ``fm.save(img, path, backend="napari")`` shows ``img`` in napari.

Imported by pipelines, so it imports neither Qt nor napari: the viewer end lives in the
plugin's widgets (:mod:`polystore_napari.receiver_widget`) and in ``python -m polystore_napari``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from polystore.exceptions import UnviewableDataError
from polystore.streaming import Frame
from polystore.streaming.protocol import checked_dtype
from polystore.streaming.viewer import IMAGE_EXTENSIONS, ROI_EXTENSIONS, ViewerStreamingBackend

VIEWABLE_DTYPE_KINDS = {"image": "biuf", "labels": "biu"}
"""What napari's layers of each kind take: no complex images, integer labels."""


def check_viewable(shape: tuple[int, ...], dtype: np.dtype[Any], kind: str, path: str) -> None:
    """Refuse, before it is sent, an array napari would not show (the viewer only logged it, and
    the pipeline never knew): fewer than 2 dimensions, an empty axis, or a dtype the layer kind
    does not take."""
    kinds = VIEWABLE_DTYPE_KINDS.get(kind)
    if kinds is None:
        return
    if len(shape) < 2 or 0 in shape or dtype.kind not in kinds:
        raise UnviewableDataError(
            f"napari cannot show {path!r} as {kind}: shape {shape}, dtype {dtype}. A layer needs "
            f"at least 2 dimensions, none of length 0, and a dtype of kind {kinds!r} "
            "(send np.abs(x) of a complex array, labels as integers)."
        )


class NapariStreamingBackend(ViewerStreamingBackend):
    """Streams images, labels, shapes, points and ROI sets to a napari viewer.

    The viewer listens on ``127.0.0.1:5561`` by default (File > Open polystore stream, or
    ``python -m polystore_napari``); ``launch=True`` (or ``POLYSTORE_NAPARI_LAUNCH=1``) starts
    one when none answers. Everything else is :class:`~polystore.streaming.viewer.ViewerStreamingBackend`'s.
    """

    _backend_type = "napari"
    VIEWER_TYPE: ClassVar[str] = "napari"
    SHM_PREFIX: ClassVar[str] = "polystore_napari_"
    DEFAULT_PORT: ClassVar[int] = 5561
    LAUNCH_MODULE: ClassVar[str | None] = "polystore_napari"
    SUPPORTED_EXTENSIONS: ClassVar[frozenset[str]] = (
        IMAGE_EXTENSIONS | {".pt", ".pth", ".zarr"} | ROI_EXTENSIONS  # napari also shows tensors, zarr
    )

    def _stream_data(self, data: Any, path: Any, **kwargs: Any) -> None:
        """Send one item; a NumPy array napari would not show is refused here (:func:`check_viewable`)."""
        if isinstance(data, np.ndarray | np.generic):
            check_viewable(np.shape(data), data.dtype, kwargs.get("kind", "image"), str(path))
        super()._stream_data(data, path, **kwargs)

    def frame(self, shape: tuple[int, ...] | int, dtype: Any, path: Any, **options: Any) -> Frame:
        """:meth:`~polystore.streaming.backend.StreamingBackend.frame`, refusing a frame napari would not show
        (``check_viewable``)."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        check_viewable(dims, checked_dtype(dtype), options.get("kind", "image"), str(path))
        return super().frame(shape, dtype, path, **options)
