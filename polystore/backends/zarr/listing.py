"""The wells' and the plate's metadata that list a plate's fields: what adding fields changes,
and writing it.

Read-modify-write of those documents under the store's metadata lock, and only of those whose
content changes; fields already listed need no lock (documents are written whole, so reading
them needs none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import GroupDocument, MetadataDocuments
from polystore.backends.zarr.location import Location, Stores
from polystore.backends.zarr.locks import metadata_lock
from polystore.ome import ngff
from polystore.plates.wells import column_sort_key, row_sort_key

Field = tuple[str, str, int]
"""A field of a plate: (row, column, field index)."""


@dataclass
class PlateLayout:
    """Rows, columns and wells of a plate's NGFF metadata, merged from what it says and new fields."""

    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    wells: list[tuple[str, str]] = field(default_factory=list)
    field_count: int = 0

    @classmethod
    def from_attributes(cls, plate: Mapping[str, Any] | None) -> PlateLayout:
        if not plate:
            return cls()
        rows = [r["name"] for r in plate.get("rows", [])]
        columns = [c["name"] for c in plate.get("columns", [])]
        wells = [tuple(w["path"].split("/")) for w in plate.get("wells", [])]
        count = plate.get("field_count", 0)
        return cls(rows, columns, wells, int(count) if isinstance(count, int) else 0)

    def spelled(self, row: str, column: str) -> tuple[str, str]:
        """``row`` and ``column`` as this plate spells them (a row in another case, a column
        with or without leading zeros), or as given where it lists no such row or column."""
        row = next((r for r in self.rows if r.upper() == row.upper()), row)
        column = next((c for c in self.columns if same_column(c, column)), column)
        return row, column

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
                [*self.wells, (row, column)], key=lambda w: (row_sort_key(w[0]), column_sort_key(w[1]))
            )
            changed = True
        if field_index + 1 > self.field_count:
            self.field_count = field_index + 1
            changed = True
        return changed

    def attributes(self, version: ngff.NgffVersion, name: str) -> dict[str, Any]:
        return ngff.plate_attributes(
            self.rows, self.columns, self.wells, version=version, field_count=self.field_count, name=name,
        )


def same_column(listed: str, named: str) -> bool:
    """Whether a plate's column ``listed`` is the column ``named``: other tools (ome-zarr-py)
    spell column 1 as ``1`` where the plate model says ``01``."""
    return listed == named or (listed.isdigit() and named.isdigit() and int(listed) == int(named))


def plate_name(store: str) -> str:
    return Path(store.rstrip("/")).name.removesuffix(".zarr")


Change = list[tuple[GroupDocument, dict[str, Any]]]
"""(document as read, its new attributes): the wells' first, then the plate's, in the order
they are written."""


class PlateListing:
    """Lists fields in the wells' and plate's metadata of the stores of one backend."""

    def __init__(self, stores: Stores, documents: MetadataDocuments) -> None:
        self.stores = stores
        self.documents = documents

    def commit(self, store: str, fields: Iterable[Field], config: ZarrConfig, *, lock: bool = True) -> None:
        """Add ``fields`` to their wells' and the plate's metadata, under the store's metadata
        lock unless ``lock=False`` (one committer, e.g. after a distributed write)."""
        if not config.ome_zarr_metadata:
            return
        fields = list(fields)
        if not lock:
            self._write(store, fields, config)
        elif not self._listed(store, fields, config):
            with metadata_lock(self.stores, store):
                self._write(store, fields, config)

    def layout(self, store: str, config: ZarrConfig) -> PlateLayout:
        """The rows, columns and wells the plate at ``store`` lists (none if there is no plate)."""
        plate = GroupDocument.read(self.documents, Location(store, ""), config.zarr_format)
        attributes = None if plate is None else ngff.ngff_section(plate.attributes).get("plate")
        return PlateLayout.from_attributes(attributes)

    def _read(self, store: str, fields: Sequence[Field], config: ZarrConfig,
              ) -> tuple[GroupDocument, dict[str, GroupDocument]] | None:
        """The plate's document and its wells' (of ``fields``), as they are; None if one is missing."""
        plate = GroupDocument.read(self.documents, Location(store, ""), config.zarr_format)
        wells: dict[str, GroupDocument] = {}
        for row, column, _index in fields:
            path = f"{row}/{column}"
            if path not in wells:
                well = GroupDocument.read(self.documents, Location(store, path), config.zarr_format)
                if well is None:
                    return None
                wells[path] = well
        return None if plate is None else (plate, wells)

    def _listed(self, store: str, fields: list[Field], config: ZarrConfig) -> bool:
        """Whether the plate and its wells already list every one of ``fields``."""
        read = self._read(store, fields, config)
        return read is not None and not self._change(store, *read, fields, config)

    def _write(self, store: str, fields: list[Field], config: ZarrConfig) -> None:
        """The change, made from the documents as they are now (groups missing made first)."""
        plate = self.documents.group(Location(store, ""), config.zarr_format)
        wells = {path: self.documents.group(Location(store, path), config.zarr_format)
                 for path in dict.fromkeys(f"{row}/{column}" for row, column, _ in fields)}
        for document, attributes in self._change(store, plate, wells, fields, config):
            document.put(attributes)

    @staticmethod
    def _change(store: str, plate: GroupDocument, wells: Mapping[str, GroupDocument],
                fields: Sequence[Field], config: ZarrConfig) -> Change:
        """What adding ``fields`` changes in these documents (nothing, if they list them all)."""
        plate_attrs = ngff.ngff_section(plate.attributes).get("plate")
        layout = PlateLayout.from_attributes(plate_attrs)
        layout_changed = False
        by_well: dict[str, set[str]] = {}
        for row, column, index in fields:
            layout_changed |= layout.add(row, column, index)
            by_well.setdefault(f"{row}/{column}", set()).add(str(index))
        change: Change = []
        for well_path, names in by_well.items():
            well = wells[well_path]
            known = [image["path"] for image in (ngff.ngff_section(well.attributes).get("well") or {})
                     .get("images", [])]
            if names - set(known):
                change.append((well, {**well.attributes, **ngff.well_attributes(
                    sorted(set(known) | names, key=int), version=config.ngff)}))
        if layout_changed or not plate_attrs:
            change.append((plate, {**plate.attributes, **layout.attributes(config.ngff, plate_name(store))}))
        return change
