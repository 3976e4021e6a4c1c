"""Tables between Python and ImageJ's ResultsTables.

A table streamed to the bridge (``fm.save(df, "results/cells.csv", backend="fiji")``: a pandas
DataFrame, or a numeric array under a ``.csv`` path) arrives as a stream item of kind
``table`` (:mod:`polystore.streaming.payloads` encodes it; ``StreamItem.table()`` gives it
back as a DataFrame) and becomes a ResultsTable titled by its path without the extension
(``results/cells``: :func:`polystore_fiji.placement.path_title`), with the DataFrame's column
names and values: numbers as numbers, any other column as text, a ``Label`` column as
ImageJ's row labels. The index is not sent (``df.reset_index()`` keeps it as a column).

A ResultsTable comes back as columns: numbers as float64 arrays, text as lists of strings.
Everything here but :func:`dataframe_columns` needs the JVM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore_fiji.jvm import is_headless, java_class, on_edt

LABEL_COLUMN = "Label"
"""ImageJ's row labels (a text column ResultsTable keeps apart from the others)."""
MAIN_TABLE = "Results"
"""The title of ImageJ's own results table, where Analyze > Measure writes."""
ROW_NUMBERS = " "
"""The heading of the row-number column ImageJ lists first."""

Columns = dict[str, "np.ndarray | list[str]"]


def dataframe_columns(frame: Any, metadata: Mapping[str, Any] | None = None) -> Columns:
    """A DataFrame's columns for a ResultsTable: numeric and boolean columns as float64 arrays,
    every other column as text (missing values as empty text).

    A table sent as a plain numeric array has columns 0..n-1: they are named from
    ``metadata["columns"]`` when it lists one name per column, else ``C1``, ``C2``, ...
    """
    names = [str(name) for name in frame.columns]
    given = (metadata or {}).get("columns")
    if _unnamed(frame.columns):
        if isinstance(given, list) and len(given) == len(names):
            names = [str(name) for name in given]
        else:
            names = [f"C{index + 1}" for index in range(len(names))]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise UnsupportedDataError(
            f"a ResultsTable's columns have distinct names; this table repeats {', '.join(repeated)}"
        )
    columns: Columns = {}
    for name, (_, series) in zip(names, frame.items(), strict=True):
        if series.dtype.kind in "biuf" and name != LABEL_COLUMN:
            columns[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[name] = ["" if _missing(value) else str(value) for value in series.tolist()]
    return columns


def _unnamed(index: Any) -> bool:
    """Whether a DataFrame's columns are the positions 0..n-1 a plain array gets."""
    return list(index) == list(range(len(index)))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def table_from_columns(columns: Mapping[str, Sequence[Any] | np.ndarray], title: str | None = None) -> Any:
    """A new ImageJ ResultsTable holding ``columns``; shown under ``title`` when given (and a
    display exists). Numeric columns go in whole (``ResultsTable.setValues``), text cell by cell."""
    table = java_class("ij.measure.ResultsTable")()
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise UnsupportedDataError(f"table columns differ in length: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    for _ in range(rows):
        table.incrementCounter()
    for name, values in columns.items():
        if name == LABEL_COLUMN:
            for row, value in enumerate(values):
                table.setLabel(str(value), row)
        elif isinstance(values, np.ndarray):
            table.setValues(name, values.astype(np.float64, copy=False))
        else:
            for row, value in enumerate(values):
                if isinstance(value, str):
                    table.setValue(name, row, value)
                else:
                    table.setValue(name, row, float(value))
    if title is not None and not is_headless():
        on_edt(lambda: table.show(title))
    return table


def find_results_table(title: str = MAIN_TABLE) -> Any:
    """ImageJ's ResultsTable titled ``title`` (``Results``: its main table), or None."""
    table_class = java_class("ij.measure.ResultsTable")
    return table_class.getResultsTable() if title == MAIN_TABLE else table_class.getResultsTable(title)


def results_table_titles() -> list[str]:
    """The titles of the ResultsTables ImageJ shows in windows (its main table when not empty)."""
    titles = []
    main = java_class("ij.measure.ResultsTable").getResultsTable()
    if main is not None and int(main.size()) > 0:
        titles.append(MAIN_TABLE)
    if is_headless():
        return titles
    text_window = java_class("ij.text.TextWindow")
    for window in java_class("ij.WindowManager").getNonImageWindows() or []:
        if isinstance(window, text_window) and window.getResultsTable() is not None:
            titles.append(str(window.getTitle()))
    return sorted(set(titles))


def results_columns(table: Any) -> Columns:
    """A ResultsTable's columns in order: float64 arrays, or lists of strings for text columns."""
    rows = int(table.size())
    columns: Columns = {}
    if rows and table.getLabel(0) is not None:
        columns[LABEL_COLUMN] = [str(table.getLabel(row) or "") for row in range(rows)]
    for heading in (str(h) for h in table.getHeadings()):
        if heading in (LABEL_COLUMN, ROW_NUMBERS) or not heading.strip():
            continue
        index = int(table.getColumnIndex(heading))
        if index < 0:
            continue
        values = np.array(table.getColumnAsDoubles(index), dtype=np.float64)
        if not np.isnan(values).any():
            columns[heading] = values
            continue
        texts = [str(table.getStringValue(index, row)) for row in range(rows)]
        # a NaN where the cell's text is not "NaN" is a text cell: the column is text
        pairs = zip(values.tolist(), texts, strict=True)
        text_cells = any(math.isnan(value) and text not in ("NaN", "") for value, text in pairs)
        columns[heading] = texts if text_cells else values
    return columns
