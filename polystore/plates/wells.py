"""Well names: rows as letters (A..Z, then AA..AF), columns as zero-padded numbers.

Instruments write rows as letters (``B03``) or as numbers (Opera Phenix ``r02c03``); both
become ``"B"`` + ``"03"`` here, never ``"2" + "3"`` run together (``r01c12`` and ``r11c02``
would both read ``"112"``). Numbers written for rows and columns count from 1, as plates are
labelled. The largest plate format in use, 1536 wells, has 32 rows (A..AF) and 48 columns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from polystore.plates.errors import PlateNameError

MAX_ROWS = 32
"""A..Z then AA..AF: the rows of a 1536-well plate."""
MAX_COLUMNS = 48
"""The columns of a 1536-well plate."""

PLATE_FORMATS: dict[int, tuple[int, int]] = {
    6: (2, 3),
    12: (3, 4),
    24: (4, 6),
    48: (6, 8),
    96: (8, 12),
    384: (16, 24),
    1536: (32, 48),
}
"""Wells -> (rows, columns) of the standard (ANSI/SLAS) plate formats."""

_WELL = re.compile(r"^(?P<row>[A-Za-z]{1,2})(?P<column>\d{1,3})$")
_ROW = re.compile(r"[A-Z]{1,2}")


def row_letters(number: int) -> str:
    """The letters of row ``number`` (1 -> "A", 26 -> "Z", 27 -> "AA", 32 -> "AF")."""
    if not 1 <= number <= MAX_ROWS:
        raise PlateNameError(
            f"row {number} is outside a plate's rows (1..{MAX_ROWS}, A..AF); rows count from 1"
        )
    if number <= 26:
        return chr(ord("A") + number - 1)
    return "A" + chr(ord("A") + number - 27)


@functools.lru_cache(maxsize=4096)
def row_number(row: str) -> int:
    """The 1-based number of row ``row`` ("A" -> 1, "AF" -> 32); the inverse of :func:`row_letters`."""
    letters = row.upper()
    if not _ROW.fullmatch(letters):
        raise PlateNameError(f"row {row!r} is not a plate row: one or two letters, A..Z then AA..AF")
    number = ord(letters[-1]) - ord("A") + 1 + (26 if len(letters) == 2 else 0)
    if (len(letters) == 2 and letters[0] != "A") or number > MAX_ROWS:
        raise PlateNameError(f"row {row!r} is outside a plate's rows (A..Z, then AA..AF: {MAX_ROWS} rows)")
    return number


@functools.lru_cache(maxsize=4096)
def normalise_row(row: str | int) -> str:
    """Row letters in upper case; a number (as Phenix writes rows) becomes its letters."""
    if isinstance(row, int) or (isinstance(row, str) and row.isdigit()):
        return row_letters(int(row))
    letters = str(row).upper()
    row_number(letters)  # checks the range
    return letters


@functools.lru_cache(maxsize=4096)
def normalise_column(column: str | int) -> str:
    """The column as a zero-padded two-digit number ("3", "003", 3 -> "03")."""
    text = str(column)
    if not text.isdigit():
        raise PlateNameError(f"column {column!r} is not a plate column: a number 1..{MAX_COLUMNS}")
    number = int(text)
    if not 1 <= number <= MAX_COLUMNS:
        raise PlateNameError(
            f"column {column!r} is outside a plate's columns (1..{MAX_COLUMNS}); columns count from 1"
        )
    return f"{number:02d}"


@functools.lru_cache(maxsize=4096)  # a few thousand wells at most; parsed for every frame
def split_well(well: str) -> tuple[str, str]:
    """``"b3"`` -> ``("B", "03")``; :class:`PlateNameError` for anything that is not a well name."""
    match = _WELL.match(well.strip())
    if match is None:
        raise PlateNameError(
            f"{well!r} is not a well name: a row (A..Z, AA..AF) and a column number, e.g. 'B03'"
        )
    return normalise_row(match["row"]), normalise_column(match["column"])


def well_name(row: str | int, column: str | int | None = None) -> str:
    """The well's name, ``"B03"``: from a row and a column (letters or 1-based numbers), or
    from one well name written any way (``well_name("b3") == "B03"``)."""
    if column is None:
        if not isinstance(row, str):
            raise PlateNameError(f"well_name({row!r}) needs a column, or a well name such as 'B03'")
        return "".join(split_well(row))
    return normalise_row(row) + normalise_column(column)


def well_position(well: str) -> tuple[int, int]:
    """0-based (row, column) of a well on the plate grid: ``"B03"`` -> ``(1, 2)``."""
    row, column = split_well(well)
    return row_number(row) - 1, int(column) - 1


def row_sort_key(row: str) -> tuple[int, str]:
    """A..Z before AA..AF, as plates are labelled."""
    return (len(row), row.upper())


def column_sort_key(column: str) -> tuple[int, str]:
    return (int(column), column) if column.isdigit() else (10**9, column)


def well_sort_key(well: str) -> tuple[int, int]:
    """Plate order: by row, then by column."""
    return well_position(well)


def plate_format(wells: Iterable[str]) -> tuple[int, int]:
    """(rows, columns) of the smallest standard plate that holds all ``wells`` (96 at least)."""
    positions = [well_position(w) for w in wells]
    rows = max((r for r, _ in positions), default=0) + 1
    columns = max((c for _, c in positions), default=0) + 1
    for count in sorted(PLATE_FORMATS):
        shape = PLATE_FORMATS[count]
        if count >= 96 and rows <= shape[0] and columns <= shape[1]:
            return shape
    return PLATE_FORMATS[1536]
