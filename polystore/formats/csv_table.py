"""CSV tables: NumPy arrays (1-D or 2-D, no header) and pandas DataFrames (with a header).

Loading decides by the first line: all numbers -> a NumPy array (int64 if every value is an
integer, else float64; a single column comes back 1-D); otherwise -> a DataFrame. Pass
``as_dataframe=True/False`` to choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np

from polystore.arrays import as_plain_array
from polystore.exceptions import UnsupportedDataError
from polystore.formats import Format, text_handle
from polystore.lazy import optional_import


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.partition(".")[0] == "pandas" and hasattr(data, "to_csv")


def _save_csv(data: Any, handle: IO[bytes], *, index: bool = False) -> None:
    if _is_dataframe(data):
        with text_handle(handle) as text:
            data.to_csv(text, index=index)
        return
    array = as_plain_array(data, "CSV")
    if array.ndim not in (1, 2) or array.dtype.kind not in "biuf":
        raise UnsupportedDataError(
            f"CSV holds 1-D or 2-D numeric arrays; got {array.ndim}-D {array.dtype}. "
            "Save n-D arrays as .npy or .tif, and mixed tables as pandas DataFrames."
        )
    fmt = "%.17g" if array.dtype.kind == "f" else "%d"  # %.17g round-trips float64 exactly
    np.savetxt(handle, array, delimiter=",", fmt=fmt)


def _first_line_is_numeric(path: Path) -> bool:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
    try:
        [float(field) for field in first.split(",")]
    except ValueError:
        return False
    return True


def _load_csv(path: Path, *, as_dataframe: bool | None = None) -> Any:
    if as_dataframe is None:
        as_dataframe = not _first_line_is_numeric(path)
    if as_dataframe:
        pandas = optional_import("pandas", extra="pandas", purpose="Reading CSV tables with a header")
        return pandas.read_csv(path)
    try:
        array = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError:
        array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    return array[:, 0] if array.shape[1] == 1 else array


FORMATS = [
    Format(
        "csv", (".csv",), _save_csv, _load_csv,
        description="comma-separated table",
        accepts="1-D/2-D numeric arrays of any framework, pandas DataFrames",
        options={
            "as_dataframe": "load: True for a DataFrame, False for an array (default: by header)",
            "index": "save: write a DataFrame's index too",
        },
    ),
]
