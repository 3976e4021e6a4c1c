"""ROIs in ImageJ: the adaptation of polystore's ROIs to ``ij.gui.Roi`` (tables:
:mod:`polystore_fiji.tables`).

What a ROI is, and how ROI sets and vertex arrays convert, is :mod:`polystore.rois`' and
:mod:`polystore.formats.roi`'s (``.roi.zip`` archives with the format's size limits). Here only
the step into and out of ImageJ: a ROI crosses as its ``.roi`` bytes, the format ImageJ's
``RoiEncoder``/``RoiDecoder`` and PyPI's ``roifile`` share, so nothing of it is lost (names,
c/z/t positions, colours). Streamed ``shapes`` and ``points`` (vertex arrays) become ROIs
through :func:`polystore.rois.rois_from_shapes` first.

Everything here runs in the JVM's process; the RoiManager is touched on the event thread
(:func:`polystore_fiji.jvm.on_edt`). A headless JVM has no RoiManager: :class:`RoiStore`
keeps the ROIs in a list instead.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore.formats.roi import roi_zip_bytes, rois_from_zip_bytes
from polystore.rois import rois_from_shapes, shapes_of_item
from polystore_fiji.jvm import is_headless, java_class, on_edt


def java_roi(roi: Any) -> Any:
    """An ImageJ ``ij.gui.Roi`` from a ``roifile.ImagejRoi`` (ImageJ's RoiDecoder reads its bytes)."""
    import jpype

    name = str(getattr(roi, "name", "") or "roi")
    java_bytes = jpype.JArray(jpype.JByte)(np.frombuffer(roi.tobytes(), dtype=np.int8))
    decoded = java_class("ij.io.RoiDecoder")(java_bytes, name).getRoi()
    if decoded is None:
        raise UnsupportedDataError(f"ROI {name!r} is not one ImageJ can read")
    return decoded


def imagej_roi(roi: Any) -> Any:
    """A ``roifile.ImagejRoi`` from an ImageJ ``ij.gui.Roi`` (the bytes ImageJ's RoiEncoder writes)."""
    from polystore.lazy import optional_import

    roifile = optional_import("roifile", extra="roi", purpose="Reading ImageJ's ROIs")
    encoded = java_class("ij.io.RoiEncoder").saveAsByteArray(roi)
    return roifile.ImagejRoi.frombytes(np.array(encoded, dtype=np.int8).tobytes())


def java_rois_from_zip(payload: bytes | bytearray | memoryview) -> list[Any]:
    """The ImageJ Rois of a ``.roi.zip`` archive, in archive order."""
    return [java_roi(roi) for roi in rois_from_zip_bytes(payload)]


def _empty_zip() -> bytes:
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    return buffer.getvalue()


EMPTY_ROI_ZIP = _empty_zip()
"""A ``.roi.zip`` with no ROIs (what a RoiManager with none saves)."""


def zip_of_java_rois(rois: Iterable[Any]) -> bytes:
    """A ``.roi.zip`` archive (RoiManager's format) of ImageJ Rois."""
    converted = [imagej_roi(roi) for roi in rois]
    return roi_zip_bytes(converted) if converted else EMPTY_ROI_ZIP


def java_rois_of_item(kind: str, array: np.ndarray, metadata: Mapping[str, Any]) -> list[Any]:
    """The ImageJ Rois a stream item of kind ``roi_set``, ``shapes`` or ``points`` holds."""
    if kind == "roi_set":
        return java_rois_from_zip(np.ascontiguousarray(array).tobytes())
    return [java_roi(roi) for roi in rois_from_shapes(shapes_of_item(kind, array, metadata))]


def overlay_rois(imp: Any) -> list[Any]:
    """The ROIs on ``imp``'s overlay (an empty list without one)."""
    overlay = imp.getOverlay()
    return list(overlay.toArray()) if overlay is not None else []


@dataclass
class RoiStore:
    """Where ROIs sent from Python land and where "the RoiManager's ROIs" are read from.

    With a display: ImageJ's RoiManager (shown, as a user expects). Headless: a plain list.
    """

    headless_rois: list[Any] = field(default_factory=list)

    def add(self, rois: Iterable[Any], imp: Any = None) -> list[Any]:
        """Add ``rois`` (their c/z/t positions kept); attach them to ``imp`` when given. The ROI
        objects now held: the RoiManager keeps copies, and a ROI placed later (a streamed one
        whose plane moves as its window grows) must be the copy it shows."""
        roi_list = list(rois)
        if is_headless():
            self.headless_rois.extend(roi_list)
            return roi_list

        def add_all() -> list[Any]:
            manager = java_class("ij.plugin.frame.RoiManager").getRoiManager()
            held = []
            for roi in roi_list:
                if imp is not None:
                    roi.setImage(imp)
                manager.add(roi, -1)  # add(Roi, int) keeps the ROI's own position
                held.append(manager.getRoi(int(manager.getCount()) - 1))
            return held

        return on_edt(add_all)

    def rois(self) -> list[Any]:
        """Every ROI in the RoiManager (the headless list without a display)."""
        if is_headless():
            return list(self.headless_rois)

        def read() -> list[Any]:
            manager = java_class("ij.plugin.frame.RoiManager").getInstance()
            return list(manager.getRoisAsArray()) if manager is not None else []

        return on_edt(read)

    def clear(self) -> None:
        if is_headless():
            self.headless_rois.clear()
            return

        def reset() -> None:
            manager = java_class("ij.plugin.frame.RoiManager").getInstance()
            if manager is not None:
                manager.reset()

        on_edt(reset)
