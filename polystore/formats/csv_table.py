"""CSV tables: NumPy arrays (1-D or 2-D, no header) and pandas DataFrames (with a header).

Loading decides by the first line: all numbers -> a NumPy array (int64 if every value is an
integer, else float64; a single column comes back 1-D); otherwise -> a DataFrame. Pass
``as_dataframe=True/False`` to choose. So an array round-trips exactly only as int64 or
float64, 1-D or with more than one column, and not empty: anything else is refused at save
with what to do instead, never changed on the way.
"""

from __future__ import annotations

import io
from typing import IO, Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format, text_handle
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


def _save_csv(data: Any, handle: IO[bytes], *, index: bool = False) -> None:
    if _is_dataframe(data):
        with text_handle(handle) as text:
            data.to_csv(text, index=index)
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
    text = handle.read().decode("utf-8")
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
