"""FijiStreamingBackend: ``fm.save(img, path, backend="fiji")`` shows ``img`` in Fiji (or ImageJ).

Imported by pipelines, so it imports neither JPype nor scyjava: the viewer end is the bridge
process (``python -m polystore_fiji``, :mod:`polystore_fiji.bridge`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from polystore.streaming import Frame
from polystore.streaming.payloads import TABLE_SUFFIXES
from polystore.streaming.protocol import checked_dtype
from polystore.streaming.viewer import IMAGE_EXTENSIONS, ROI_EXTENSIONS, ViewerStreamingBackend


class FijiStreamingBackend(ViewerStreamingBackend):
    """Streams images, ROI sets and tables to the Fiji bridge (hyperstacks, RoiManager, ResultsTables).

    The bridge listens on ``127.0.0.1:5571`` by default; ``launch=True`` (or
    ``POLYSTORE_FIJI_LAUNCH=1``) starts ``python -m polystore_fiji`` when none answers.
    """

    _backend_type = "fiji"
    VIEWER_TYPE: ClassVar[str] = "fiji"
    SHM_PREFIX: ClassVar[str] = "polystore_fiji_"
    DEFAULT_PORT: ClassVar[int] = 5571
    LAUNCH_MODULE: ClassVar[str | None] = "polystore_fiji"
    SUPPORTED_EXTENSIONS: ClassVar[frozenset[str]] = (
        IMAGE_EXTENSIONS | ROI_EXTENSIONS | frozenset(TABLE_SUFFIXES)
    )
    """Images, ROI sets, and tables (``.csv``: a DataFrame or a numeric array) as ResultsTables."""
    DEFAULT_SHM_SLOTS: ClassVar[int] = 8
    """The bridge's converting threads pause 15-45 ms now and then (a new window on ImageJ's
    event thread, the JVM's collector); four slots of 2048x2048 frames are taken in about
    20 ms and the pipeline waited, eight absorb the pause (5.4-5.5 against 5.8-6.8 ms a frame
    in fiji_stream's setup; 64 MiB of shared memory at that size)."""

    def _stream_data(self, data: Any, path: Any, **kwargs: Any) -> None:
        """Send one item; a table that ImageJ's ResultsTable cannot hold as it is is refused here,
        before anything is sent (:func:`polystore_fiji.tables.check_results_table`)."""
        if kwargs.get("kind", "table") == "table" and (
            os.fspath(path).lower().endswith(TABLE_SUFFIXES) or type(data).__name__ == "DataFrame"
        ):
            from polystore_fiji.tables import check_results_table

            check_results_table(data, kwargs.get("metadata") or {})
        elif kwargs.get("kind", "image") == "image" and isinstance(data, np.ndarray):
            _check_image(data, kwargs.get("metadata") or {})
        super()._stream_data(data, path, **kwargs)

    def frame(self, shape: tuple[int, ...] | int, dtype: Any, path: Any, **options: Any) -> Frame:
        """:meth:`~polystore.streaming.backend.StreamingBackend.frame`, refusing an image ImageJ cannot
        hold (as ``save`` does)."""
        dims = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        if options.get("kind", "image") == "image" and min(dims, default=0) >= 0:
            # an array of that shape and dtype that takes no memory: what the bridge will look at
            shaped = np.broadcast_to(np.zeros((), checked_dtype(dtype)), dims)
            _check_image(shaped, options.get("metadata") or {})
        return super().frame(shape, dtype, path, **options)


def _check_image(array: np.ndarray, metadata: Mapping[str, Any]) -> None:
    """Refuse, before it is sent, an image the bridge would refuse (in its own log only: the
    pipeline never knew): a dtype ImageJ cannot hold, or axes it cannot place."""
    from polystore_fiji.convert import check_axes, dtype_rule  # pure Python: no JVM
    from polystore_fiji.hyperstack import item_axes

    dtype_rule(array.dtype)
    check_axes(item_axes(array, metadata), array.ndim)
