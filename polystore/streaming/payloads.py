"""What streams besides plain arrays: ROI sets and tables, encoded as bytes with a stated format.

The wire carries one numeric array per item. An ImageJ ROI set travels as the bytes of its
``.roi.zip`` (kind ``roi_set``); a pandas DataFrame as JSON in pandas' "split" layout (kind
``table``, ``metadata["encoding"] = "pandas-split-json"``), so that string columns survive;
a numeric array saved under a ``.csv`` path is a table as it is (columns 0..n-1).
Receivers turn them back with ``StreamItem.rois()`` / ``StreamItem.table()`` (built on
:func:`decode_rois` and :func:`decode_table`). Nothing here is ever unpickled: zip + ImageJ's
ROI format, and JSON. This module knows nothing of headers or sockets.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from polystore.arrays import to_numpy
from polystore.exceptions import UnsupportedDataError

ROI_SET_SUFFIXES = (".roi.zip", ".roi")
TABLE_SUFFIXES = (".csv",)
TABLE_ENCODING = "pandas-split-json"


@dataclass(frozen=True)
class Payload:
    """An item ready for the wire: its bytes (or array), its kind, and what the receiver needs to know."""

    array: np.ndarray
    kind: str | None = None
    metadata: dict[str, Any] | None = None


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def _roi_set(data: Any) -> Payload:
    from polystore.formats.roi import roi_zip_bytes

    return Payload(np.frombuffer(roi_zip_bytes(data), dtype=np.uint8), "roi_set")


def _dataframe(data: Any) -> Payload:
    text = data.to_json(orient="split", date_format="iso", double_precision=15)
    return Payload(np.frombuffer(text.encode(), dtype=np.uint8), "table", {"encoding": TABLE_ENCODING})


def _numeric_table(data: Any) -> Payload:
    return Payload(to_numpy(data), "table")


def _suffix(path: str, suffixes: tuple[str, ...]) -> bool:
    return path.lower().endswith(suffixes)


# (does this item need encoding?, how): the first rule that matches wins; arrays need none
ENCODERS: tuple[tuple[Callable[[Any, str], bool], Callable[[Any], Payload]], ...] = (
    (lambda data, path: _suffix(path, ROI_SET_SUFFIXES), _roi_set),
    (lambda data, path: _is_dataframe(data), _dataframe),
    (lambda data, path: _suffix(path, TABLE_SUFFIXES), _numeric_table),
)


def encode(data: Any, path: os.PathLike[str] | str) -> Payload:
    """``data`` as one numeric array for the wire, with the kind and metadata its encoding implies."""
    if isinstance(data, np.ndarray):
        name = os.fspath(path)
        if not _suffix(name, ROI_SET_SUFFIXES + TABLE_SUFFIXES):
            return Payload(data)  # the common case, without a pass over the table
    name = os.fspath(path)
    for applies, encoder in ENCODERS:
        if applies(data, name):
            return encoder(data)
    return Payload(to_numpy(data))


def decode_rois(array: np.ndarray) -> list[Any]:
    """The ``roifile.ImagejRoi`` objects of a ``roi_set`` item's bytes."""
    from polystore.formats.roi import rois_from_zip_bytes

    return rois_from_zip_bytes(np.ascontiguousarray(array).tobytes())


def decode_table(array: np.ndarray, metadata: Mapping[str, Any], path: str = "") -> Any:
    """A ``table`` item as a pandas DataFrame (a numeric array becomes columns 0..n-1)."""
    from polystore.lazy import optional_import

    pandas = optional_import("pandas", extra="pandas", purpose="Receiving tables")
    encoding = metadata.get("encoding")
    if encoding == TABLE_ENCODING:
        text = np.ascontiguousarray(array).tobytes().decode()
        return pandas.read_json(io.StringIO(text), orient="split")
    if encoding is not None:
        raise UnsupportedDataError(f"table {path!r} uses encoding {encoding!r}; known: {TABLE_ENCODING}")
    table = array if array.ndim == 2 else array.reshape(len(array), -1)
    return pandas.DataFrame(table)
