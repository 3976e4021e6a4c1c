"""Tables between Python and ImageJ's ResultsTables.

A table streamed to the bridge (``fm.save(df, "results/cells.csv", backend="fiji")``: a pandas
DataFrame, or a numeric array under a ``.csv`` path) arrives as a stream item of kind
``table`` (:mod:`polystore.streaming.payloads` encodes it exactly; ``StreamItem.table()`` gives
it back as the DataFrame sent) and becomes a ResultsTable titled by its path without the
extension (``results/cells``: :func:`polystore_fiji.placement.path_title`), with the
DataFrame's column names and values: numbers as ImageJ's doubles (booleans as 1 and 0), any
other column as text (dates and categories as their text, missing values as empty text), a
``Label`` column as ImageJ's row labels. The index is not sent (``df.reset_index()`` keeps it
as a column). What a ResultsTable cannot hold as it is (a column without a name, two columns
of one name, integers beyond 2**53, complex numbers, a numeric ``Label``) is refused when it
is sent (:func:`check_results_table`), never changed on the way.

A ResultsTable comes back as columns: numbers as float64 arrays, text as lists of strings.
Everything here but :func:`check_results_table` and :func:`table_columns` needs the JVM.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polystore.exceptions import UnsupportedDataError
from polystore_fiji.jvm import is_headless, java_class

logger = logging.getLogger(__name__)

LABEL_COLUMN = "Label"
"""ImageJ's row labels (a text column ResultsTable keeps apart from the others, shown first)."""
MAIN_TABLE = "Results"
"""The title of ImageJ's own results table, where Analyze > Measure writes."""
ROW_NUMBERS = " "
"""The heading of the row-number column ImageJ lists first."""
EXACT_INTEGERS = 2**53
"""Integers a double holds exactly, in magnitude: ResultsTable cells are doubles."""

Columns = dict[str, "np.ndarray | list[str]"]


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def column_names(frame: Any, metadata: Mapping[str, Any]) -> list[str]:
    """The ResultsTable headings of a table item's columns: a DataFrame's own names (as text);
    for a plain numeric array (no ``encoding`` in its metadata), ``metadata["columns"]`` when
    it lists one name per column, else ``C1``, ``C2``, ..."""
    if metadata.get("encoding") is not None:
        return [str(name) for name in frame.columns]
    count = frame.shape[1] if getattr(frame, "ndim", 2) == 2 else 1
    given = metadata.get("columns")
    if isinstance(given, list) and len(given) == count:
        return [str(name) for name in given]
    return [f"C{index + 1}" for index in range(count)]


def check_results_table(data: Any, metadata: Mapping[str, Any]) -> None:
    """:class:`UnsupportedDataError`, saying what to change, for a table (a DataFrame, or a numeric
    array under a ``.csv`` path) that a ResultsTable cannot hold as it is: a column without a
    name (ImageJ lists none), two columns of one name, a numeric ``Label`` (ImageJ's row labels
    are text), integers beyond 2**53 or complex numbers (its cells are doubles)."""
    if _is_dataframe(data):
        if data.columns.nlevels > 1:
            raise UnsupportedDataError("a ResultsTable has one row of headings: flatten the table's "
                                       "MultiIndex columns first (one text name per column)")
        names = [str(name) for name in data.columns]
        columns = [(name, data.iloc[:, position]) for position, name in enumerate(names)]
    else:
        array = np.asarray(data)
        given = metadata.get("columns")
        count = array.shape[1] if array.ndim == 2 else 1
        if isinstance(given, list) and len(given) != count:
            raise UnsupportedDataError(
                f"metadata['columns'] names {len(given)} columns for a table of {count}"
            )
        names = column_names(array if array.ndim == 2 else array.reshape(-1, 1), {"columns": given})
        columns = [(name, array[:, position] if array.ndim == 2 else array)
                   for position, name in enumerate(names)]
    for name in names:
        if not name.strip():
            raise UnsupportedDataError(
                f"column {name!r} has no name: ImageJ's ResultsTable lists no column without a "
                "heading; rename it (df.rename(columns={...}))"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UnsupportedDataError(
            f"a ResultsTable's columns have distinct names; this table repeats {', '.join(repeated)} "
            "(as text); rename them"
        )
    for name, values in columns:
        _check_column(name, values)


def _check_column(name: str, values: Any) -> None:
    kind = getattr(values.dtype, "kind", "O")
    if name == LABEL_COLUMN and kind in "biufc":
        raise UnsupportedDataError(
            f"a '{LABEL_COLUMN}' column holds ImageJ's row labels, which are text: convert it "
            f"(df['{LABEL_COLUMN}'].astype(str)) or rename it"
        )
    if kind == "c":
        raise UnsupportedDataError(f"column {name!r} holds complex numbers, which a ResultsTable cannot "
                                   "hold; send its real and imaginary parts (or its magnitude) as columns")
    if kind in "iu":
        numbers = np.asarray(values.dropna() if hasattr(values, "dropna") else values)
        if numbers.size and (numbers.max() > EXACT_INTEGERS or numbers.min() < -EXACT_INTEGERS):
            raise UnsupportedDataError(
                f"column {name!r} holds integers beyond 2**53, which ImageJ's ResultsTable (doubles) "
                "cannot hold exactly; send them as text (.astype(str)) or as floats if rounding is wanted"
            )


def table_columns(frame: Any, metadata: Mapping[str, Any]) -> Columns:
    """A table item's columns for a ResultsTable (``frame``: its DataFrame): numeric and boolean
    columns as float64 arrays, every other column as text (missing values as empty text)."""
    names = column_names(frame, metadata)
    columns: Columns = {}
    for name, (_, series) in zip(names, frame.items(), strict=True):
        if series.dtype.kind in "biuf" and name != LABEL_COLUMN:
            columns[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[name] = ["" if _missing(value) else str(value) for value in series.tolist()]
    return columns


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in (
        "NAType", "NaTType")


@functools.cache
def _private_field(name: str) -> Any:
    """ResultsTable's private ``name`` (``stringColumns``, ``rowLabels``: 1.52 to 1.54)."""
    reflected = java_class("ij.measure.ResultsTable").class_.getDeclaredField(name)
    reflected.setAccessible(True)
    return reflected


def _java_strings(values: Sequence[str | None]) -> Any:
    """A Java ``String[]`` of ``values``, made by JPype in one call."""
    import jpype

    return jpype.JArray(jpype.JString)(list(values))


def table_from_columns(columns: Mapping[str, Sequence[Any] | np.ndarray]) -> Any:
    """A new ImageJ ResultsTable holding ``columns`` (any thread: it is not shown yet).

    Built in bulk, a column per call, not cell by cell (300 000 rows took the event thread
    seconds): numbers with ``setValues``; text as ImageJ keeps it, a NaN column with its list
    of strings (the private ``stringColumns``), and the row labels as one array."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise UnsupportedDataError(f"table columns differ in length: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    table = java_class("ij.measure.ResultsTable")(java_class("java.lang.Integer")(rows))
    if not rows:
        return table  # (ImageJ makes no column without a row)
    arrays = java_class("java.util.Arrays")
    for name, values in columns.items():
        if name == LABEL_COLUMN:
            table.setLabel("", 0)  # ImageJ sets up its label column (an array as long as its capacity)
            labels = _private_field("rowLabels")
            capacity = len(labels.get(table))
            labels.set(table, _java_strings([str(v) for v in values] + [None] * (capacity - rows)))
        elif isinstance(values, np.ndarray):
            table.setValues(name, values.astype(np.float64, copy=False))
        else:
            table.setValues(name, np.full(rows, np.nan))  # the column, its rows NaN: text cells
            strings = _private_field("stringColumns")
            if strings.get(table) is None:
                strings.set(table, java_class("java.util.Hashtable")())
            index = java_class("java.lang.Integer")(int(table.getColumnIndex(name)))
            strings.get(table).put(index, java_class("java.util.ArrayList")(
                arrays.asList(_java_strings([str(v) for v in values]))))
    return table


def show_table(table: Any, title: str) -> None:
    """Show ``table`` in a window titled ``title`` (nothing where there is no display). Any
    thread, as ImageJ's measuring plugins do from theirs: not the event thread for a long
    table, whose rows ImageJ turns into lines of text as it shows it."""
    if not is_headless():
        table.show(title)


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


def _strings(array: Any) -> list[str]:
    return [str(value) if value is not None else "" for value in array]


def _text_columns(table: Any) -> set[int] | None:
    """The indices of ``table``'s text columns (None where ImageJ's internals are not as known)."""
    try:
        found = _private_field("stringColumns").get(table)
    except Exception:  # another ImageJ: fall back on what the values say
        logger.debug("ResultsTable.stringColumns is not readable here", exc_info=True)
        return None
    return set() if found is None else {int(key) for key in found.keySet()}


def results_columns(table: Any, order: Sequence[str] | None = None) -> Columns:
    """A ResultsTable's columns: float64 arrays, or lists of strings for text columns; in
    ``order`` (the columns a streamed table was sent with) while it names the same columns,
    else in ImageJ's (its row labels first)."""
    rows = int(table.size())
    columns: Columns = {}
    if rows and table.getLabel(0) is not None:
        columns[LABEL_COLUMN] = _strings(table.getColumnAsStrings(LABEL_COLUMN))
    text = _text_columns(table)
    for heading in (str(h) for h in table.getHeadings()):
        if heading in (LABEL_COLUMN, ROW_NUMBERS) or not heading.strip():
            continue
        index = int(table.getColumnIndex(heading))
        if index < 0:
            continue
        if text is not None:
            columns[heading] = (_strings(table.getColumnAsStrings(heading)) if index in text
                                else np.array(table.getColumnAsDoubles(index), dtype=np.float64))
            continue
        values = np.array(table.getColumnAsDoubles(index), dtype=np.float64)
        texts = _strings(table.getColumnAsStrings(heading)) if np.isnan(values).any() else []
        # a NaN where the cell's text is not "NaN" is a text cell: the column is text
        text_cells = any(math.isnan(v) and t not in ("NaN", "")
                         for v, t in zip(values.tolist(), texts, strict=False))
        columns[heading] = texts if text_cells else values
    if order is not None and set(order) == set(columns):
        return {name: columns[name] for name in order}
    return columns
