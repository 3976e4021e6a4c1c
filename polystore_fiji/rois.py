"""ROIs between ImageJ and Python (tables: :mod:`polystore_fiji.tables`).

ROIs travel as ImageJ's own ``.roi.zip`` (one ``.roi`` per entry, written by
``ij.io.RoiEncoder`` and read by ``ij.io.RoiDecoder``): the same bytes Fiji's RoiManager
saves, which PyPI's ``roifile`` reads and writes, positions (c, z, t) included.

Everything here runs in the JVM's process; the RoiManager is touched on the event thread
(:func:`polystore_fiji.jvm.on_edt`). A headless JVM has no RoiManager: :class:`RoiStore`
keeps the ROIs in a list instead.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore_fiji.jvm import is_headless, java_class, on_edt

ROI_ENTRY_SUFFIX = ".roi"


def encode_roi(roi: Any) -> bytes:
    """One ROI as ``.roi`` bytes (ImageJ's RoiEncoder)."""
    encoded = java_class("ij.io.RoiEncoder").saveAsByteArray(roi)
    return np.array(encoded, dtype=np.int8).tobytes()


def decode_roi(data: bytes, name: str = "roi") -> Any:
    """An ImageJ Roi from ``.roi`` bytes (ImageJ's RoiDecoder)."""
    import jpype

    java_bytes = jpype.JArray(jpype.JByte)(np.frombuffer(data, dtype=np.int8))
    roi = java_class("ij.io.RoiDecoder")(java_bytes, name).getRoi()
    if roi is None:
        raise UnsupportedDataError(f"'{name}' is not an ImageJ ROI ImageJ can read")
    return roi


def _entry_names(rois: Sequence[Any]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for number, roi in enumerate(rois, start=1):
        base = str(roi.getName() or "") or f"{number:04d}"
        base = base.removesuffix(ROI_ENTRY_SUFFIX).replace("/", "_")
        name, copy = base, 1
        while name in seen:  # RoiManager allows equal names; zip entries must differ
            copy += 1
            name = f"{base}-{copy}"
        seen.add(name)
        names.append(name + ROI_ENTRY_SUFFIX)
    return names


def rois_to_zip(rois: Iterable[Any]) -> bytes:
    """A ``.roi.zip`` archive (RoiManager's format) of ImageJ Rois."""
    roi_list = list(rois)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, roi in zip(_entry_names(roi_list), roi_list, strict=True):
            archive.writestr(name, encode_roi(roi))
    return buffer.getvalue()


def rois_from_zip(payload: bytes | bytearray | memoryview) -> list[Any]:
    """The ImageJ Rois in a ``.roi.zip`` archive, in archive order (names without ``.roi``)."""
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(payload))) as archive:
            return [
                decode_roi(archive.read(name), name.removesuffix(ROI_ENTRY_SUFFIX))
                for name in archive.namelist() if name.endswith(ROI_ENTRY_SUFFIX)
            ]
    except zipfile.BadZipFile as error:
        raise UnsupportedDataError(f"not a .roi.zip archive: {error}") from None


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

    def add(self, rois: Iterable[Any], imp: Any = None) -> int:
        """Add ``rois`` (their c/z/t positions kept); attach them to ``imp`` when given."""
        roi_list = list(rois)
        if is_headless():
            self.headless_rois.extend(roi_list)
            return len(roi_list)

        def add_all() -> int:
            manager = java_class("ij.plugin.frame.RoiManager").getRoiManager()
            for roi in roi_list:
                if imp is not None:
                    roi.setImage(imp)
                manager.add(roi, -1)  # add(Roi, int) keeps the ROI's own position
            return len(roi_list)

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
