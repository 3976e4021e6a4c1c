"""The wells' and the plate's metadata that list a plate's fields: what adding fields changes,
and how it is written.

Read-modify-write of those documents under the store's metadata lock, and only of those whose
content changes; fields already listed need no lock (documents are written whole, so reading
them needs none). A writer that knows which field it is adding may *stage* the change while it
writes the field's pixels (the documents read, the new ones written aside), then publish it
once the field is committed: under the lock, the documents are read again, and if they are
what the change was made from, the staged ones are renamed into place; if another writer
changed them meanwhile, the change is made again from what is there now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import GroupDocument, MetadataDocuments
from polystore.backends.zarr.location import Location, Staged, Stores
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


def plate_name(store: str) -> str:
    return Path(store.rstrip("/")).name.removesuffix(".zarr")


Change = list[tuple[GroupDocument, dict[str, Any]]]
"""(document as read, its new attributes): the wells' first, then the plate's."""


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
            self.write_change(store, fields, config)
        elif not self._listed(store, fields, config):
            with metadata_lock(self.stores, store):
                self.write_change(store, fields, config)

    def stage(self, store: str, fields: Iterable[Field], config: ZarrConfig) -> StagedListing:
        """The change ``commit`` would make now, staged; ``StagedListing.publish`` commits it
        (or ``commit``'s change, if the documents changed since), ``discard`` drops it."""
        fields = list(fields)
        read = self._read(store, fields, config) if config.ome_zarr_metadata else None
        if read is None:  # no metadata kept, or a group not there yet (the commit makes it)
            return StagedListing(self, store, fields, config, None, [])
        change = self._change(store, *read, fields, config)
        if not change:
            return StagedListing(self, store, fields, config, [], [])
        basis = [read[0], *read[1].values()]
        staged: list[Staged] = []
        try:
            for document, attributes in change:
                staged.append(document.stage(attributes))
        except BaseException:
            for each in staged:
                each.discard()
            raise
        return StagedListing(self, store, fields, config, basis, staged)

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

    def write_change(self, store: str, fields: list[Field], config: ZarrConfig) -> None:
        """The change, made from the documents as they are now (groups missing made first); the
        caller holds the store's metadata lock, or is its one committer."""
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


@dataclass
class StagedListing:
    """A listing change staged by ``PlateListing.stage``: publish it once the fields are written."""

    listing: PlateListing
    store: str
    fields: list[Field]
    config: ZarrConfig
    basis: list[GroupDocument] | None
    """The plate's and the wells' documents, as read (None: the change is made at publish
    instead; empty: there is none to make, every field being listed)."""
    staged: list[Staged]

    def publish(self) -> None:
        """The staged documents renamed into place if the documents they were made from are
        all still as read (read again under the lock), else the change made from what is
        there now."""
        if self.basis is None:
            self.listing.commit(self.store, self.fields, self.config)
            return
        if not self.basis:
            return  # every field was listed (no lock, as ``commit``)
        with metadata_lock(self.listing.stores, self.store):
            if all(document.unchanged() for document in self.basis):
                while self.staged:
                    self.staged.pop(0).publish()
                return
            self.discard()
            self.listing.write_change(self.store, self.fields, self.config)

    def discard(self) -> None:
        while self.staged:
            self.staged.pop(0).discard()
