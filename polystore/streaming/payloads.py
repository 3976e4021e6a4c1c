"""What streams besides plain arrays: ROI sets and tables, encoded as bytes with a stated format.

The wire carries one numeric array per item. An ImageJ ROI set travels as the bytes of its
``.roi.zip`` (kind ``roi_set``); a pandas DataFrame as a typed table (kind ``table``,
``metadata["encoding"] = "polystore-table-1"``, see :func:`encode_table`): every column with
its dtype, numbers as their raw little-endian bytes and text as JSON lists, so that what is
sent is what arrives (``"001"`` stays text, ``1/3`` and ``2**60 + 1`` stay exact); a numeric
array saved under a ``.csv`` path is a table as it is (columns 0..n-1). Receivers turn them
back with ``StreamItem.rois()`` / ``StreamItem.table()`` (built on :func:`decode_rois` and
:func:`decode_table`), which check every part (sizes, lengths, dtypes) before using it: it
came from a socket. Nothing here is ever unpickled: zip + ImageJ's ROI format, and JSON with
raw buffers. This module knows nothing of headers or sockets.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.arrays import to_numpy
from polystore.exceptions import CorruptDataError, UnsupportedDataError

ROI_SET_SUFFIXES = (".roi.zip", ".roi")
TABLE_SUFFIXES = (".csv",)
TABLE_ENCODING = "polystore-table-1"
"""``metadata["encoding"]`` of a DataFrame on the wire (:func:`encode_table`)."""
TABLE_MAGIC = b"PSTABLE1"
_JSON_LENGTH = struct.Struct("<Q")
MAX_TABLE_JSON_BYTES = 1 << 30
"""The description and text of one table, at most (numbers travel beside it, raw)."""
ARRAY_KINDS = frozenset("biufcmM")
"""NumPy dtype kinds a column travels as raw bytes: bool, integers, floats, complex, timedelta
and datetime (never object, strings, void or structured)."""
TEXT_DTYPES = frozenset({"object", "str", "string"})
"""pandas dtypes of text columns: object (of str), pandas 3's default ``str``, ``string``."""
MASKED_DTYPES: dict[str, str] = {
    **{name: f"<i{size}" for name, size in (("Int8", 1), ("Int16", 2), ("Int32", 4), ("Int64", 8))},
    **{name: f"<u{size}" for name, size in (("UInt8", 1), ("UInt16", 2), ("UInt32", 4), ("UInt64", 8))},
    "Float32": "<f4", "Float64": "<f8", "boolean": "|b1",
}
"""pandas' nullable dtypes -> the NumPy dtype of their values (sent with a mask of the missing)."""


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
    return Payload(np.frombuffer(encode_table(data), dtype=np.uint8), "table", {"encoding": TABLE_ENCODING})


def _numeric_table(data: Any) -> Payload:
    array = to_numpy(data)
    _check_numeric_table(array, "a table saved under a .csv path")
    return Payload(array, "table")


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
    """A ``table`` item as a pandas DataFrame: the DataFrame that was sent (:func:`encode_table`),
    or a numeric array's columns 0..n-1 (a 1-D array is one column)."""
    from polystore.lazy import optional_import

    pandas = optional_import("pandas", extra="pandas", purpose="Receiving tables")
    encoding = metadata.get("encoding")
    if encoding == TABLE_ENCODING:
        return decode_typed_table(array, path)
    if encoding is not None:
        raise UnsupportedDataError(f"table {path!r} uses encoding {encoding!r}; known: {TABLE_ENCODING}")
    _check_numeric_table(array, f"table {path!r}")
    table = array if array.ndim == 2 else array.reshape(-1, 1)
    # a copy: a zero-copy stream item's memory is the sender's slot, reused for later items
    return pandas.DataFrame(np.array(table, copy=True))


def _check_numeric_table(array: np.ndarray, what: str) -> None:
    if array.ndim not in (1, 2):
        raise UnsupportedDataError(
            f"{what} has shape {array.shape}: a table of numbers is 1-D (one column) or 2-D "
            "(rows, columns); send a DataFrame for anything else"
        )
    if array.dtype.kind not in "biuf":
        raise UnsupportedDataError(f"{what} holds {array.dtype} values: a table of numbers holds "
                                   "bool, integers or floats; send a DataFrame for anything else")


# -- the typed table encoding ---------------------------------------------------------------------
#
# TABLE_MAGIC, the description's length (8 bytes, little-endian), the description (UTF-8 JSON:
# {"rows": n, "columns": [column, ...], "index": column or null, "columns_name": ...}), then the
# columns' raw buffers. A column is {"name", "kind", ...}:
#   "array":       "dtype" (NumPy's str, little-endian), "data": {"offset", "nbytes"}
#   "masked":      "dtype" (a pandas nullable dtype), "data" and "mask" (one bool byte each)
#   "text":        "dtype" (object, str or string), "values": [str or null, ...]
#   "categorical": "ordered", "categories" (an array or text column with its "length"), "codes"
# Offsets count from the first byte after the description. Hand-written rather than Arrow IPC
# or Parquet: pyarrow is no dependency here, and every part must be checked before it is used.


@dataclass
class _Buffers:
    parts: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, array: np.ndarray) -> dict[str, int]:
        data = np.ascontiguousarray(array).tobytes()
        where = {"offset": self.size, "nbytes": len(data)}
        self.parts.append(data)
        self.size += len(data)
        return where


def encode_table(frame: Any) -> bytes:
    """A pandas DataFrame as bytes that :func:`decode_typed_table` turns back into the same
    DataFrame: column names (text or whole numbers) and order, dtypes, values, missing values,
    and the index unless it is the default 0..n-1.

    Refused (:class:`UnsupportedDataError`, naming the column and what to do): what would not
    come back the same, e.g. an object column holding something other than text and missing
    values, time zones, intervals, MultiIndexes."""
    from polystore.lazy import optional_import

    pandas = optional_import("pandas", extra="pandas", purpose="Streaming tables")
    for axis, labels in (("columns", frame.columns), ("rows", frame.index)):
        if isinstance(labels, pandas.MultiIndex):
            raise UnsupportedDataError(
                f"a table with a MultiIndex on its {axis} does not stream; flatten it first "
                "(df.reset_index(), or join the levels of df.columns into one name each)"
            )
    buffers = _Buffers()
    columns = [_encode_column(name, frame.iloc[:, position], buffers)
               for position, name in enumerate(frame.columns)]
    default_index = isinstance(frame.index, pandas.RangeIndex) and frame.index.start == 0 \
        and frame.index.step == 1 and frame.index.name is None
    index = None if default_index else _encode_column(frame.index.name, frame.index, buffers)
    if index is not None and getattr(frame.index, "freqstr", None) is not None:
        index["freq"] = frame.index.freqstr  # a date index's regular step (pandas checks it)
    description = {
        "rows": len(frame), "columns": columns,
        "columns_name": _label(frame.columns.name, "the columns' name"), "index": index,
    }
    text = json.dumps(description, ensure_ascii=False, allow_nan=False).encode()
    return b"".join([TABLE_MAGIC, _JSON_LENGTH.pack(len(text)), text, *buffers.parts])


def _label(name: Any, what: str) -> str | int | None:
    """A column's (or index's) name as JSON: text, a whole number, or None."""
    if name is None or isinstance(name, str):
        return name
    if isinstance(name, (int, np.integer)) and not isinstance(name, (bool, np.bool_)):
        return int(name)
    raise UnsupportedDataError(
        f"{what} is {name!r} ({type(name).__name__}): a streamed table's column names are text or "
        "whole numbers; rename it (df.columns = [str(c) for c in df.columns])"
    )


def _encode_column(name: Any, values: Any, buffers: _Buffers, *, nested: bool = False) -> dict[str, Any]:
    """One column (a Series, or an Index) as a column description; its buffers added."""
    dtype = values.dtype
    where = f"column {name!r}" if not nested else "the categories of a categorical column"
    spec: dict[str, Any] = {"name": _label(name, f"column name {name!r}") if not nested else None}
    plain = isinstance(dtype, np.dtype) and dtype.fields is None and dtype.subdtype is None
    if plain and dtype.kind in ARRAY_KINDS:
        array = values.to_numpy()
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        spec.update(kind="array", dtype=little.dtype.str, data=buffers.add(little))
    elif str(dtype) in MASKED_DTYPES and not nested:
        masked = values.array
        missing = np.asarray(masked.isna(), dtype=bool)
        data = masked.to_numpy(dtype=np.dtype(MASKED_DTYPES[str(dtype)]), na_value=0)
        spec.update(kind="masked", dtype=str(dtype), data=buffers.add(data), mask=buffers.add(missing))
    elif str(dtype) == "category" and not nested:
        codes = np.asarray(values.array.codes)
        spec.update(kind="categorical", ordered=bool(dtype.ordered),
                    categories={**_encode_column(None, dtype.categories, buffers, nested=True),
                                "length": len(dtype.categories)},
                    codes={"dtype": codes.dtype.newbyteorder("<").str, **buffers.add(codes.astype(
                        codes.dtype.newbyteorder("<"), copy=False))})
    elif str(dtype) in TEXT_DTYPES:
        spec.update(kind="text", dtype=str(dtype), values=[_text(value, where) for value in values.tolist()])
    else:
        raise UnsupportedDataError(
            f"{where} is of dtype {dtype}, which does not stream as it is: a table streams numbers "
            "(NumPy's and pandas' nullable ones), dates without a time zone, text and categories of "
            "those; convert it first (e.g. .astype(str))"
        )
    return spec


MISSING_TEXT: dict[str, Any] = {"nan": math.nan, "NA": None}
"""A text column's missing values besides None (JSON null), as ``{"missing": key}``: an object
column keeps whichever it held (``pd.NA`` is filled in at decoding, pandas being imported then)."""


def _text(value: Any, where: str) -> str | dict[str, str] | None:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float) and math.isnan(value):
        return {"missing": "nan"}
    if type(value).__name__ == "NAType":
        return {"missing": "NA"}
    raise UnsupportedDataError(
        f"{where} holds {value!r} ({type(value).__name__}) among its text: a text column streams "
        "text and missing values only; convert it first (e.g. .astype(str))"
    )


def decode_typed_table(array: np.ndarray, path: str = "") -> Any:
    """The DataFrame :func:`encode_table` encoded; :class:`CorruptDataError` (naming what is
    wrong) for bytes that are not such a table, every size, offset, length and dtype checked."""
    from polystore.lazy import optional_import

    optional_import("pandas", extra="pandas", purpose="Receiving tables")  # a clear error without it
    where = f"table {path!r}"
    if array.dtype != np.uint8 or array.ndim != 1:
        raise CorruptDataError(f"{where}: a typed table is 1-D uint8 bytes, not {array.ndim}-D {array.dtype}")
    view = memoryview(np.ascontiguousarray(array).data).cast("B")
    start = len(TABLE_MAGIC) + _JSON_LENGTH.size
    if len(view) < start or bytes(view[: len(TABLE_MAGIC)]) != TABLE_MAGIC:
        raise CorruptDataError(f"{where}: not a typed table (no {TABLE_MAGIC!r} at its start)")
    (length,) = _JSON_LENGTH.unpack_from(view, len(TABLE_MAGIC))
    if length > min(MAX_TABLE_JSON_BYTES, len(view) - start):
        raise CorruptDataError(f"{where}: its description claims {length} bytes; {len(view) - start} follow")
    try:
        description = json.loads(bytes(view[start: start + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CorruptDataError(f"{where}: its description is not JSON ({error})") from error
    try:
        return _frame(description, _ColumnDecoder(view[start + length:], where))
    except CorruptDataError:
        raise
    except (TypeError, ValueError, OverflowError) as error:  # what pandas itself refuses to build
        raise CorruptDataError(f"{where}: {error}") from error


def _frame(description: Any, decoder: _ColumnDecoder) -> Any:
    import pandas

    if not isinstance(description, dict) or set(description) != {"rows", "columns", "columns_name", "index"}:
        raise decoder.fail("its description is not a table's")
    rows = decoder.count(description["rows"], "rows")
    if not isinstance(description["columns"], list):
        raise decoder.fail("'columns' is not a list")
    names = [decoder.name(spec) for spec in description["columns"]]
    values = [decoder.column(spec, rows) for spec in description["columns"]]
    index_spec = description["index"]
    index = pandas.RangeIndex(rows) if index_spec is None else decoder.index(index_spec, rows)
    # each Series with its dtype given: pandas 3 would infer ``str`` for an object column of text
    frame = pandas.DataFrame({position: pandas.Series(column, index=index, dtype=column.dtype, copy=False)
                              for position, column in enumerate(values)}, index=index)
    columns_name = decoder.label(description["columns_name"], "columns_name")
    frame.columns = pandas.Index(names, name=columns_name) if names else \
        pandas.RangeIndex(0, name=columns_name)
    return frame


class _ColumnDecoder:
    """Checks and decodes the column descriptions of one table against its buffers."""

    def __init__(self, data: memoryview, where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, reason: str) -> CorruptDataError:
        return CorruptDataError(f"{self.where}: {reason}")

    def count(self, value: Any, what: str) -> int:
        if type(value) is not int or value < 0:
            raise self.fail(f"{what} is {value!r}, not a count")
        return value

    def label(self, value: Any, what: str) -> str | int | None:
        if value is None or type(value) in (str, int):
            return value  # type: ignore[no-any-return]
        raise self.fail(f"{what} is {value!r}: names are text, whole numbers or null")

    def name(self, spec: Any) -> str | int | None:
        if not isinstance(spec, dict):
            raise self.fail(f"a column's description is {type(spec).__name__}, not an object")
        return self.label(spec.get("name"), "a column's name")

    def dtype(self, text: Any, kinds: str | frozenset[str]) -> np.dtype[Any]:
        try:
            dtype = np.dtype(text) if isinstance(text, str) else None
        except TypeError:
            dtype = None
        plain = dtype is not None and dtype.fields is None and dtype.subdtype is None
        if dtype is None or not plain or dtype.kind not in kinds or dtype.byteorder == ">":
            raise self.fail(f"dtype {text!r} is not one a column travels as")
        return dtype

    def buffer(self, where: Any, dtype: np.dtype[Any], count: int) -> np.ndarray:
        """``count`` values of ``dtype`` at ``where`` (a copy, in native byte order)."""
        place = where if isinstance(where, dict) else {}
        offset, nbytes = place.get("offset"), place.get("nbytes")
        if type(offset) is not int or type(nbytes) is not int:
            raise self.fail("a buffer's place is not {'offset': int, 'nbytes': int}")
        if offset < 0 or nbytes != count * dtype.itemsize or offset + nbytes > len(self.data):
            raise self.fail(f"a buffer of {nbytes} bytes at {offset} is not {count} {dtype} values "
                            f"within the {len(self.data)} bytes sent")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=offset)
        if dtype.kind == "b" and (values.view(np.uint8) > 1).any():
            raise self.fail("a bool buffer holds bytes other than 0 and 1")
        return values.astype(dtype.newbyteorder("="), copy=True)

    def index(self, spec: Any, rows: int) -> Any:
        """The row labels of an ``index`` description (a date index with its ``freq``)."""
        import pandas

        labels = self.column(spec, rows)
        index = pandas.Index(labels, dtype=labels.dtype, name=self.name(spec))
        freq = spec.get("freq")
        if freq is None:
            return index
        try:
            dated = isinstance(index, pandas.DatetimeIndex | pandas.TimedeltaIndex)
            if not isinstance(freq, str) or not dated:
                raise ValueError(f"{freq!r} is no step of a date index")  # caught just below
            return type(index)(index, freq=freq)
        except ValueError as error:  # an unknown step, or dates that do not follow it
            raise self.fail(f"its index's freq: {error}") from error

    def text(self, spec: dict[str, Any], value: Any, missing: Mapping[str, Any]) -> Any:
        """One value of a text column: text, None, or the missing value ``{"missing": key}`` names."""
        if value is None or type(value) is str:
            return value
        if isinstance(value, dict) and len(value) == 1 and value.get("missing") in missing:
            return missing[value["missing"]]
        raise self.fail(f"column {spec.get('name')!r} holds {value!r} among its text")

    def column(self, spec: Any, rows: int, *, nested: bool = False) -> Any:
        """The values of one column description (a NumPy or pandas array of ``rows`` values)."""
        import pandas

        self.name(spec)
        kind = spec.get("kind")
        if kind == "array":
            return self.buffer(spec.get("data"), self.dtype(spec.get("dtype"), ARRAY_KINDS), rows)
        if kind == "text":
            values, dtype = spec.get("values"), spec.get("dtype")
            if dtype not in TEXT_DTYPES or not isinstance(values, list) or len(values) != rows:
                raise self.fail(f"column {spec.get('name')!r}: not {rows} texts (object, str or string)")
            missing = {**MISSING_TEXT, "NA": pandas.NA}
            return pandas.array([self.text(spec, value, missing) for value in values],
                                dtype=dtype)  # (object stays object: no inference)
        if kind == "masked" and not nested and spec.get("dtype") in MASKED_DTYPES:
            name = spec["dtype"]
            data = self.buffer(spec.get("data"), np.dtype(MASKED_DTYPES[name]), rows)
            mask = self.buffer(spec.get("mask"), np.dtype(np.bool_), rows)
            masked = {"b": pandas.arrays.BooleanArray, "f": pandas.arrays.FloatingArray}.get(
                data.dtype.kind, pandas.arrays.IntegerArray)
            return masked(data, mask)
        if kind == "categorical" and not nested:
            categories = spec.get("categories")
            if not isinstance(categories, dict) or categories.get("kind") not in ("array", "text"):
                raise self.fail(f"column {spec.get('name')!r}: its categories are not an array or text")
            count = self.count(categories.get("length"), "the number of categories")
            levels = self.column(categories, count, nested=True)
            codes_spec = spec.get("codes")
            codes = self.buffer(codes_spec, self.dtype(codes_spec.get("dtype") if isinstance(codes_spec, dict)
                                                       else None, "i"), rows)
            if ((codes < -1) | (codes >= count)).any():
                raise self.fail(f"column {spec.get('name')!r}: a category code out of 0..{count - 1}")
            try:
                return pandas.Categorical.from_codes(codes, categories=pandas.Index(levels),
                                                     ordered=spec.get("ordered") is True)
            except ValueError as error:  # repeated or missing categories
                raise self.fail(f"column {spec.get('name')!r}: {error}") from error
        raise self.fail(f"column {spec.get('name')!r} is of kind {kind!r}, which no table column is")
