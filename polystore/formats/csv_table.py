"""CSV tables: NumPy arrays (1-D or 2-D, no header) and pandas DataFrames (with a header).

Loading decides by the first line: all numbers -> a NumPy array (int64 if every value is an
integer, else float64; a single column comes back 1-D); otherwise -> a DataFrame. Pass
``as_dataframe=True/False`` to choose. So an array round-trips exactly only as int64 or
float64, 1-D or with more than one column, and not empty: anything else is refused at save
with what to do instead, never changed on the way. A DataFrame is read back from the text
written before it is saved, and refused if it would come back changed (numbers as column
names, an index left out, strings of digits that come back as numbers, dates as text).
"""

from __future__ import annotations

import io
from typing import IO, Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format
from polystore.lazy import optional_import

_KEPT = {np.dtype(np.int64), np.dtype(np.float64)}
"""What a CSV array comes back as; other dtypes would change on the way."""


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.partition(".")[0] == "pandas" and hasattr(data, "to_csv")


def _problem(array: np.ndarray) -> tuple[str, str] | None:
    """(what would go wrong, what to do instead) for an array that CSV cannot give back exactly."""
    if array.ndim not in (1, 2):
        return f"it is {array.ndim}-D; CSV holds 1-D and 2-D tables", "save it as .npy or .tif"
    if array.dtype.kind not in "biuf":
        return f"{array.dtype} is not a number CSV can hold", "save it as .npy"
    if array.dtype.newbyteorder("=") not in _KEPT:
        if array.dtype.kind == "u" and array.dtype.itemsize == 8:
            problem = "uint64 comes back as int64, which cannot hold values of 2**63 and above"
        else:
            problem = f"{array.dtype} comes back as int64 or float64"
        return problem, "convert first (a.astype(np.int64) or a.astype(np.float64)), or save it as .npy"
    if array.size == 0:
        return "it is empty, and an empty CSV has no shape or dtype to read back", "save it as .npy"
    if array.ndim == 2 and array.shape[1] == 1:
        return "a single column comes back 1-D", "save a[:, 0], or save it as .npy"
    return None


def _frame_change(frame: Any, index: bool, text: str) -> str | None:
    """How ``frame`` written as ``text`` would come back changed from this module's loader, if
    it would. Read back rather than predicted: pandas' parser decides dtypes and headers, and
    reading it is the one way to know what it decides."""
    pandas = optional_import("pandas", extra="pandas", purpose="Writing DataFrames as CSV")
    if not index and not frame.index.equals(pandas.RangeIndex(len(frame))):
        return ("its index is not written (index=False), so it would come back as 0, 1, 2...; "
                "pass index=True to write it as the first column (which loads back as a "
                "column), or frame.reset_index(drop=True)")
    try:
        back = _load_csv(io.BytesIO(text.encode("utf-8")))
    except Exception as error:  # an empty frame, a header pandas cannot read back
        return f"it cannot be read back ({type(error).__name__}: {error})"
    if not _is_dataframe(back):
        return (f"its header {list(frame.columns)!r} is all numbers, so it loads back as an array "
                "with the header as its first row; name the columns with text")
    expected = frame.reset_index() if index else frame
    if index:  # an unnamed index has no header: pandas names it 'Unnamed: 0' when reading
        names = [name if name is not None else back.columns[i] for i, name in enumerate(frame.index.names)]
        expected = expected.set_axis([*names, *frame.columns], axis=1)
    if [(type(c), c) for c in back.columns] != [(type(c), c) for c in expected.columns]:
        return (f"its column names {list(expected.columns)!r} come back as {list(back.columns)!r} "
                "(CSV headers are text)")
    for name in expected.columns:
        if back[name].dtype != expected[name].dtype:
            return (f"column {name!r} ({expected[name].dtype}) comes back as {back[name].dtype}: "
                    "CSV keeps no types, the reader guesses them")
        if not back[name].equals(expected[name].reset_index(drop=True)):
            return f"the values of column {name!r} come back changed"
    return None


def _save_csv(data: Any, handle: IO[bytes], *, index: bool = False) -> None:
    if _is_dataframe(data):
        text = data.to_csv(index=index)
        change = _frame_change(data, index, text)
        if change is not None:
            raise UnsupportedDataError(
                f"CSV cannot keep this DataFrame: {change}. Instead, change it so that it does "
                "(text column names, a default index, numbers in numeric columns), or save its "
                "columns as arrays in .npz ({name: data[name].to_numpy() for name in data})."
            )
        handle.write(text.encode("utf-8"))
        return
    array = as_plain_array(data, "CSV")
    problem = _problem(array)
    if problem is not None:
        raise UnsupportedDataError(f"CSV cannot keep this {array.shape} array: {problem[0]}. "
                                   f"Instead, {problem[1]}.")
    rows = array.reshape(len(array), -1).tolist()
    # repr: the shortest text that reads back as the same float64, always with '.', 'e',
    # 'nan' or 'inf' in it (so 1.0 is not read back as the integer 1)
    lines = (",".join(map(repr, row)) for row in rows)
    handle.write(("\n".join(lines) + "\n").encode("ascii"))


def _first_line_is_numeric(text: str) -> bool:
    first = text.partition("\n")[0].strip()
    try:
        [float(field) for field in first.split(",")]
    except ValueError:
        return False
    return True


def _load_csv(handle: IO[bytes], *, as_dataframe: bool | None = None) -> Any:
    text = handle.read().decode("utf-8-sig")  # a byte order mark (Excel writes one) is not data
    if as_dataframe is None:
        as_dataframe = not _first_line_is_numeric(text)
    if as_dataframe:
        pandas = optional_import("pandas", extra="pandas", purpose="Reading CSV tables with a header")
        return pandas.read_csv(io.StringIO(text))
    try:
        array = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OverflowError):
        array = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)
    return array[:, 0] if array.shape[1] == 1 else array


FORMATS = [
    Format(
        "csv", (".csv",), _save_csv, _load_csv,
        description="comma-separated table",
        accepts="int64/float64 arrays of any framework (1-D, or 2-D with several columns, "
        "not empty), pandas DataFrames",
        options={
            "as_dataframe": "load: True for a DataFrame, False for an array (default: by header)",
            "index": "save: write a DataFrame's index too",
        },
    ),
]
