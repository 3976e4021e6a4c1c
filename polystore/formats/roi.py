"""ImageJ ROI sets (``.roi.zip``) and single ROIs (``.roi``) through roifile.

Fiji's RoiManager saves and opens these; the zip is written here with the standard library
so it goes into the atomic write's handle (roifile's own writer takes only a file name).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from typing import IO, Any

from polystore.exceptions import CorruptDataError, PolystoreError, UnsupportedDataError
from polystore.formats import Format, limits
from polystore.lazy import optional_import


def _roifile() -> Any:
    return optional_import("roifile", extra="roi", purpose="Reading and writing ImageJ ROIs")


def _as_roi_list(data: Any) -> list[Any]:
    roi_type = _roifile().ImagejRoi
    rois = [data] if isinstance(data, roi_type) else list(data) if isinstance(data, Iterable) else []
    if not rois or not all(isinstance(r, roi_type) for r in rois):
        raise UnsupportedDataError(
            "ROI files hold roifile.ImagejRoi objects (one, or a list of them); got "
            f"{type(data).__name__}. Build them with roifile.ImagejRoi.frompoints(...)."
        )
    return rois


def _unique_entry_names(rois: list[Any]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for index, roi in enumerate(rois, start=1):
        # zip ends an entry's name at NUL when reading (the ROI would be lost): leave NUL out
        # of the entry's name; the ROI keeps its own name inside its bytes
        base = (getattr(roi, "name", "") or "").replace("\0", "").removesuffix(".roi") or f"{index:04d}"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}-{n}"
        seen.add(name)
        names.append(f"{name}.roi")
    return names


def _save_roi_zip(data: Any, handle: IO[bytes]) -> None:
    if isinstance(data, (bytes, bytearray, memoryview)):  # an encoded .roi.zip payload
        payload = bytes(data)
        if not zipfile.is_zipfile(io.BytesIO(payload)):
            raise UnsupportedDataError("The bytes given for a .roi.zip are not a zip archive.")
        handle.write(payload)
        return
    rois = _as_roi_list(data)
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, roi in zip(_unique_entry_names(rois), rois, strict=True):
            archive.writestr(name, roi.tobytes())


def roi_zip_bytes(data: Any) -> bytes:
    """A ``.roi.zip`` archive's bytes for ``data`` (ImagejRoi objects, or already-encoded bytes)."""
    buffer = io.BytesIO()
    _save_roi_zip(data, buffer)
    return buffer.getvalue()


def _read_roi_zip(source: IO[bytes], shown: str, limit: int | None) -> list[Any]:
    """The ROIs of a ``.roi.zip``, in archive order, expanding no more than the limit allows."""
    roi_type = _roifile().ImagejRoi
    with zipfile.ZipFile(source) as archive:
        members = [info for info in archive.infolist() if info.filename.endswith(".roi")]
        limits.checked_zip_members(
            archive, source, shown, members,
            limits.ROI_ZIP_DECOMPRESSED_BYTES if limit is None else limit, "ROI_ZIP_DECOMPRESSED_BYTES",
        )
        # zipfile never returns more than a member declares, so the check above bounds this
        return [roi_type.frombytes(archive.read(info)) for info in members]


def rois_from_zip_bytes(
    payload: bytes | bytearray | memoryview, *, max_decompressed_bytes: int | None = None
) -> list[Any]:
    """The ROIs in a ``.roi.zip`` archive held in memory (as roifile.ImagejRoi, in archive order).

    Raises :class:`UnsupportedDataError` if it is no zip archive, :class:`CorruptDataError`
    if it is a damaged or forged one (or holds something other than ROIs), and
    :class:`LimitExceededError` if it would expand beyond ``limits.ROI_ZIP_DECOMPRESSED_BYTES``
    (or ``max_decompressed_bytes``). Bytes from a socket meet nothing else.
    """
    shown = "The .roi.zip payload"
    try:
        return _read_roi_zip(io.BytesIO(bytes(payload)), shown, max_decompressed_bytes)
    except zipfile.BadZipFile as error:
        raise UnsupportedDataError(f"Not a .roi.zip archive: {error}") from error
    except PolystoreError:
        raise
    except Exception as error:  # zlib, zipfile (encrypted, unknown method) and roifile errors
        raise CorruptDataError(
            f"{shown} cannot be read: {type(error).__name__}: {error}. It is damaged, forged, "
            "or holds something other than ImageJ ROIs."
        ) from error


def _load_roi_zip(handle: IO[bytes], *, max_decompressed_bytes: int | None = None) -> list[Any]:
    return _read_roi_zip(handle, f"'{getattr(handle, 'name', '.roi.zip')}'", max_decompressed_bytes)


def _save_roi(data: Any, handle: IO[bytes]) -> None:
    rois = _as_roi_list(data)
    if len(rois) != 1:
        raise UnsupportedDataError(
            f"A .roi file holds one ROI; got {len(rois)}. Save several as .roi.zip."
        )
    handle.write(rois[0].tobytes())


def _load_roi(handle: IO[bytes]) -> Any:
    return _roifile().ImagejRoi.frombytes(handle.read())


FORMATS = [
    Format(
        "imagej-roi-set", (".roi.zip",), _save_roi_zip, _load_roi_zip,
        description="ImageJ ROI set (RoiManager's zip)",
        accepts="a list of roifile.ImagejRoi, or the zip's bytes",
        options={"max_decompressed_bytes": "load: raise the decompression limit (default 256 MiB)"},
    ),
    Format(
        "imagej-roi", (".roi",), _save_roi, _load_roi,
        description="one ImageJ ROI",
        accepts="one roifile.ImagejRoi",
    ),
]
