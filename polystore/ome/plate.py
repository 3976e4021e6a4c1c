"""High-content-screening plate layout: well names, file-name parsing, plate bookkeeping.

Rows are letters (A..Z, then AA..AF for 1536-well plates), columns are numbers kept as
written ("03" stays "03"), fields of view are 0-based integers as in OME-NGFF's
``plate.zarr/<row>/<column>/<field>`` layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Pipelines name images like "A01_s1_w2.tif" (ImageXpress) or "B03_s2_w1_z4_t3.tif":
# well, then optional site (field), wavelength (channel), z and t indices, all 1-based.
DEFAULT_NAME_PATTERN = (
    r"^(?P<row>[A-Z]{1,2})(?P<column>\d{1,3})"
    r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?(?:_z(?P<z>\d+))?(?:_t(?P<t>\d+))?"
    r"(?:\.[A-Za-z0-9.]+)?$"
)
PLATE_PATH = re.compile(r"^(?P<row>[A-Za-z]{1,2})/(?P<column>\d{1,3})/(?P<field>\d+)$")


def row_sort_key(row: str) -> tuple[int, str]:
    """A..Z before AA..AF, as plates are labelled."""
    return (len(row), row.upper())


def column_sort_key(column: str) -> tuple[int, str]:
    return (int(column), column) if column.isdigit() else (10**9, column)


@dataclass(frozen=True)
class PlaneAddress:
    """Where one image of a plate goes: a field image, and optionally a plane inside it."""

    row: str
    column: str
    field: int
    """0-based field of view."""
    channel: int | None = None
    """0-based indices of the plane inside the field image (None: the whole image)."""
    z: int | None = None
    t: int | None = None

    @property
    def well_path(self) -> str:
        return f"{self.row}/{self.column}"

    @property
    def field_path(self) -> str:
        return f"{self.row}/{self.column}/{self.field}"

    @property
    def plane_axes(self) -> str:
        """The leading axes of the field image that this plane indexes ('tcz' subset)."""
        return "".join(a for a, v in (("t", self.t), ("c", self.channel), ("z", self.z)) if v is not None)

    @property
    def plane_index(self) -> tuple[int, ...]:
        return tuple(v for v in (self.t, self.channel, self.z) if v is not None)


def parse_plate_path(node: str, name_pattern: str = DEFAULT_NAME_PATTERN) -> PlaneAddress | None:
    """Recognise ``B/03/0`` (an NGFF field path) or ``A01_s1_w2.tif`` (a pipeline file name)."""
    explicit = PLATE_PATH.match(node)
    if explicit:
        return PlaneAddress(explicit["row"].upper(), explicit["column"], int(explicit["field"]))
    named = re.match(name_pattern, node.rsplit("/", 1)[-1])
    if named is None or node.count("/") > 0:
        return None
    groups = named.groupdict()

    def index(key: str) -> int | None:
        value = groups.get(key)
        return int(value) - 1 if value is not None else None

    return PlaneAddress(
        row=groups["row"].upper(),
        column=groups["column"],
        field=index("field") or 0,
        channel=index("channel"),
        z=index("z"),
        t=index("t"),
    )


@dataclass
class PlateLayout:
    """Rows, columns and wells present, merged from existing metadata and new arrivals."""

    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    wells: list[tuple[str, str]] = field(default_factory=list)
    field_count: int = 0

    @classmethod
    def from_attributes(cls, plate: dict[str, object] | None) -> PlateLayout:
        if not plate:
            return cls()
        rows = [r["name"] for r in plate.get("rows", [])]  # type: ignore[attr-defined]
        columns = [c["name"] for c in plate.get("columns", [])]  # type: ignore[attr-defined]
        wells = [tuple(w["path"].split("/")) for w in plate.get("wells", [])]  # type: ignore[attr-defined]
        count = plate.get("field_count", 0)
        return cls(rows, columns, wells, int(count) if isinstance(count, int) else 0)

    def add(self, row: str, column: str, field_index: int) -> bool:
        """Record a field; return whether the plate's metadata changed."""
        changed = False
        if row not in self.rows:
            self.rows = sorted([*self.rows, row], key=row_sort_key)
            changed = True
        if column not in self.columns:
            self.columns = sorted([*self.columns, column], key=column_sort_key)
            changed = True
        if (row, column) not in self.wells:
            self.wells = sorted(
                [*self.wells, (row, column)],
                key=lambda w: (row_sort_key(w[0]), column_sort_key(w[1])),
            )
            changed = True
        if field_index + 1 > self.field_count:
            self.field_count = field_index + 1
            changed = True
        return changed
