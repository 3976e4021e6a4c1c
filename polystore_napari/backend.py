"""NapariStreamingBackend: ``fm.save(img, path, backend="napari")`` shows ``img`` in napari.

Imported by pipelines, so it imports neither Qt nor napari: the viewer end lives in the
plugin's widgets (:mod:`polystore_napari.receiver_widget`) and in ``python -m polystore_napari``.
"""

from __future__ import annotations

from typing import ClassVar

from polystore.streaming.viewer import IMAGE_EXTENSIONS, ROI_EXTENSIONS, ViewerStreamingBackend


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
