"""OME-NGFF plate bookkeeping on top of the plate model (:mod:`polystore.plates`).

Where an image of a plate goes in an OME-Zarr store (``<row>/<column>/<field>``, and the plane
inside the field image), and the plate's rows, columns and wells as they fill. What a path
means (well names, naming conventions, 0-based indices) is the plate model's, not this
module's: every convention it knows (ImageXpress, well folders, Phenix, Yokogawa, ...) lands
in the right field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polystore.plates import Components, parse_components
from polystore.plates.wells import column_sort_key, row_sort_key

DEFAULT_NAME_PATTERN = (
    r"^(?P<row>[A-Z]{1,2})(?P<column>\d{1,3})"
    r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?(?:_z(?P<z>\d+))?(?:_t(?P<t>\d+))?"
    r"(?:\.[A-Za-z0-9.]+)?$"
)
"""``ZarrConfig.name_pattern``'s default, which means: every naming convention of the plate
model (this pattern, ImageXpress's simplest names, is one of them). Any other pattern is
tried first, then the conventions."""

__all__ = [
    "DEFAULT_NAME_PATTERN",
    "PlaneAddress",
    "PlateLayout",
    "column_sort_key",
    "parse_plate_path",
    "row_sort_key",
]


@dataclass(frozen=True)
class PlaneAddress:
    """Where one image of a plate goes: a field image, and optionally a plane inside it."""

    row: str
    column: str
    """The row and column as nodes of the store (for an NGFF path, as the path writes them)."""
    field: int
    """0-based field of view."""
    channel: int | None = None
    """0-based indices of the plane inside the field image (None: the whole image)."""
    z: int | None = None
    t: int | None = None

    @classmethod
    def of(cls, components: Components) -> PlaneAddress:
        return cls(components.row, components.column, components.field, components.channel, components.z,
                   components.t)

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
    """Where node ``node`` of a store goes on the plate: ``B/03/0`` (an NGFF field path),
    ``A01_s1_w2.tif``, ``A01/s1_w1.tif``, ``r02c03f01p01-ch1sk1fk1fl1.tiff``, ... (any naming
    convention of :mod:`polystore.plates`); None for a node with no plate meaning.

    Raises :class:`polystore.plates.PlateNameError` for a name whose indices are out of its
    convention's range (``A01_s1_w0.tif``) or that two conventions read differently.
    """
    components = None
    if name_pattern != DEFAULT_NAME_PATTERN:
        components = parse_components(node, convention=name_pattern)
    if components is None:
        components = parse_components(node)
    if components is None:
        return None
    if components.convention == "ngff":
        # The path is the node: keep its row and column as written ("A/1/0" stays A/1), so a
        # plate another tool wrote with unpadded columns is written where it is. A field path
        # below other groups ("other/B/03/0") is not this store's plate: a plain node.
        parts = node.strip("/").split("/")
        if len(parts) != 3:
            return None
        return PlaneAddress(parts[0].upper(), parts[1], components.field)
    return PlaneAddress.of(components)


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
