"""Repair a store that writers left part-written (killed, out of space, a lost connection):
rebuild every image's multiscales metadata from the level arrays present, and the wells' and
plate's metadata from the field images present; remove lock objects and temporary files of
writers that are gone.

What is there is the truth: an image whose full-resolution level is present and readable is
kept (its levels made to agree in shape, its channels listed), and listed by its well and
the plate; one that cannot be read is reported and left out of the metadata (the next save
into it writes it again). Nothing with pixels in it is deleted. Levels without their image's
group document are not an image: a new image's save writes that document last, as its
commit, so they are a save killed before it finished (or one running now); they are reported
as unfinished and left as they are, never published (their unwritten chunks would read as 0).
A bare array its writer marked (killed, or failed after clearing it) is reported and left
marked: no plate fills it plane by plane, so what is there is not data to publish. A pyramid
a plane save stopped in between levels (``levels_pending``) has its levels below level 0
made again from it.

Except for what a conversion (``polystore convert``) has not finished: its unwritten pixels
are not in the store but in its source files, so an image it marked stays marked (and listed:
the conversion listed it), and the report says to resume it; made whole here, its unwritten
fields would read as zeros that look like data. Nor is an image whose save failed after
clearing it (marked with the reason): it is reported, left marked and out of its well.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.atomic import TEMP_SUFFIX
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import ARRAY, GroupDocument, MetadataDocuments
from polystore.backends.zarr.image import ImageSpec, ImageWriter, level_shape, rebuild_levels
from polystore.backends.zarr.listing import PlateLayout, plate_name
from polystore.backends.zarr.location import LocalKeys, Location, ObjectKeys, Stores, join_key, locate
from polystore.backends.zarr.locks import DEFAULT_LEASE_S, holder_is_dead, lock_keys
from polystore.backends.zarr.marks import (
    conversion_of,
    failure_of,
    is_incomplete,
    is_marked_array,
    is_replacing,
    pending_levels_of,
    resume_advice,
)
from polystore.exceptions import InvalidPathError, PolystoreError, StorageFileNotFoundError
from polystore.ome import ngff

_FIELD_PATH = re.compile(r"^([A-Za-z]{1,2})/(\d{1,3})/(\d+)$")
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+(?:\.polystore-tmp|\.create)$")
_STAGED = re.compile(r"^.+#\d+$")
"""A chunk staged by obstore's local store (``0#1``), left where its writer died before the rename."""


@dataclass
class RepairReport:
    """What ``repair_plate`` changed, and what it could not save."""

    store: str
    changed: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    unconverted: list[str] = field(default_factory=list)
    """Images an unfinished conversion left marked, and left so: only it can finish them."""
    advice: list[str] = field(default_factory=list)
    """What to run to finish those conversions (one line per conversion)."""
    unfinished: list[str] = field(default_factory=list)
    """Images whose first save never finished (levels, no group document): never readable,
    left out and as they are (the next save there clears them); the store is consistent."""

    @property
    def ok(self) -> bool:
        return not (self.unrecoverable or self.unconverted)

    def __str__(self) -> str:
        found = self.changed or self.unrecoverable or self.unconverted or self.unfinished
        lines = [f"{self.store}: " + (f"{len(self.changed)} change(s), {len(self.unrecoverable)} node(s) "
                                      f"not recoverable, {len(self.unconverted)} image(s) not converted yet, "
                                      f"{len(self.unfinished)} unfinished image(s) left out"
                                      if found else "nothing to repair")]
        lines += [f"  repaired: {line}" for line in self.changed]
        lines += [f"  NOT RECOVERABLE: {line}" for line in self.unrecoverable]
        lines += [f"  NOT CONVERTED YET (left marked incomplete): {line}" for line in self.unconverted]
        lines += [f"  left out, never finished: {line}" for line in self.unfinished]
        lines += [f"  {line[0].upper()}{line[1:]}" for line in self.advice]
        return "\n".join(lines)


def repair_plate(
    store_url: str, *, storage_options: dict[str, Any] | None = None, dry_run: bool = False,
    ngff_version: str | None = None,
) -> RepairReport:
    """Rebuild the metadata of the zarr store at ``store_url`` (local path or ``s3://`` URL)
    from the arrays present; see the module's docstring. ``dry_run``: report, change nothing."""
    if not any(part.lower().endswith(".zarr") for part in str(store_url).replace("\\", "/").split("/")):
        # locate() would take it for a node of ./images.zarr, the backend's store for such paths
        raise InvalidPathError(
            f"'{store_url}' names no zarr store: give the store's path or URL (plate.zarr, "
            "s3://bucket/plate.zarr: a store is found by its name ending in .zarr); rename a store "
            "named otherwise."
        )
    location = locate(store_url, None, "images.zarr")
    store = location.store
    stores = Stores(storage_options or {})
    if not stores.exists(store):
        raise StorageFileNotFoundError(store, "zarr")
    keys = stores.keys(store)
    all_keys = sorted(keys.list())
    zarr_format = 2 if ".zgroup" in all_keys and "zarr.json" not in all_keys else 3
    documents = MetadataDocuments(stores, zarr_format)
    report = RepairReport(store)
    version = ngff_version or _existing_version(documents, store, zarr_format)
    config = ZarrConfig(zarr_format=zarr_format, ngff_version=version)  # type: ignore[arg-type]
    marked_arrays, marked_groups = _marked_nodes(documents, store, all_keys, zarr_format, report, dry_run)
    images = [node for node in sorted(set(_image_nodes(all_keys, zarr_format)) | marked_groups)
              if _looks_like_image(documents, Location(store, node), zarr_format)]
    for node, attributes in marked_arrays:
        _report_marked_array(Location(store, node), attributes, report)
    valid: list[str] = []
    for node in images:
        if _repair_image(documents, Location(store, node), config, report, dry_run):
            valid.append(node)
    _repair_plate(documents, store, valid, [node for node in images if node not in valid], config,
                  report, dry_run)
    _remove_leftovers(stores, store, all_keys, report, dry_run)
    return report


def _existing_version(documents: MetadataDocuments, store: str, zarr_format: int) -> str:
    attributes = documents.attributes(Location(store, ""), zarr_format) or {}
    section = ngff.ngff_section(attributes) if attributes is not ARRAY else {}
    found = section.get("version") or (section.get("plate") or {}).get("version")
    if found in ("0.4", "0.5", "0.6"):
        return str(found)
    return "0.5" if zarr_format == 3 else "0.4"


def _image_nodes(all_keys: list[str], zarr_format: int) -> list[str]:
    """Nodes that hold level arrays (children named 0, 1, ... with array metadata)."""
    array_document = "zarr.json" if zarr_format == 3 else ".zarray"
    found = set()
    for key in all_keys:
        parts = key.split("/")
        if len(parts) >= 2 and parts[-1] == array_document and parts[-2] == "0":
            found.add("/".join(parts[:-2]))
    return sorted(found)


def _marked_nodes(
    documents: MetadataDocuments, store: str, all_keys: list[str], zarr_format: int, report: RepairReport,
    dry_run: bool,
) -> tuple[list[tuple[str, dict[str, Any]]], set[str]]:
    """(node, attributes) of the bare arrays that carry the mark (``marks.py``), and the groups
    that do (an image's, or an earlier version's mark of a replaced bare array: a group with
    no levels). An earlier version marked a v2 array with a group document beside its
    ``.zarray`` (a node both a group and an array, which zarr reads as the array): that
    ``.zgroup`` is removed, the mark it wrote in ``.zattrs`` staying the array's own."""
    names = ("zarr.json",) if zarr_format == 3 else (".zarray", ".zgroup")
    present = set(all_keys)
    arrays: list[tuple[str, dict[str, Any]]] = []
    groups: set[str] = set()
    for node in sorted({key.rpartition("/")[0] for key in all_keys if key.rpartition("/")[2] in names}):
        location = Location(store, node)
        try:
            is_array, attributes = _node_attributes(documents, location, zarr_format)
        except PolystoreError:
            continue  # a damaged document: the image's own repair, or zarr, names it
        if is_array and zarr_format == 2 and join_key(node, ".zgroup") in present:
            report.changed.append(f"{location.display}: a group document beside its .zarray (an earlier "
                                  "version's mark of a failed save) removed; the array stays")
            if not dry_run:
                documents.keys(location).delete(join_key(node, ".zgroup"))
        if is_array and is_marked_array(attributes):
            arrays.append((node, attributes))
        elif not is_array and is_incomplete(attributes):
            groups.add(node)
    return arrays, groups


def _node_attributes(
    documents: MetadataDocuments, location: Location, zarr_format: int
) -> tuple[bool, dict[str, Any]]:
    """(whether the node is an array, its attributes): an array's too, where
    ``MetadataDocuments.attributes`` says only that it is one."""
    if zarr_format == 3:
        document = documents.parsed(location, "zarr.json") or {}
        is_array, attributes = document.get("node_type") == "array", document.get("attributes")
    else:
        is_array = documents.read(location, ".zarray") is not None
        attributes = documents.parsed(location, ".zattrs")
    return is_array, attributes if isinstance(attributes, dict) else {}


def _report_marked_array(location: Location, attributes: dict[str, Any], report: RepairReport) -> None:
    """A bare array marked by its writer is left marked: no plate fills it plane by plane, so
    what a killed or failed writer left is part of an array at most, not one to publish."""
    reason = failure_of(attributes)
    what = (f"its save failed ({reason}) after clearing its previous data, so it holds no data"
            if reason is not None else
            "its save was stopped part-way (its writer killed), so it holds part of its data at most")
    report.unrecoverable.append(
        f"{location.display}: a bare array: {what}. It is left marked (load refuses it); save it "
        "again, or delete it (delete_all)."
    )


def _looks_like_image(documents: MetadataDocuments, location: Location, zarr_format: int) -> bool:
    """Whether ``location`` is an image: its level 0 is an array, or its group says it is one
    (a level 0 too damaged to read still makes it an image, to be reported)."""
    try:
        if documents.attributes(location.child("0"), zarr_format) is ARRAY:
            return True
    except PolystoreError:
        pass
    try:
        attributes = documents.attributes(location, zarr_format)
    except PolystoreError:
        return False
    if not attributes or attributes is ARRAY:
        return False
    return ngff.is_multiscale_image(attributes) or is_incomplete(attributes)


def _level_arrays(documents: MetadataDocuments, location: Location, zarr_format: int) -> list[Any]:
    """The readable level arrays 0, 1, ... of the image at ``location``, in order."""
    arrays: list[Any] = []
    level = 0
    while True:
        try:
            array = documents.open_array(location.child(str(level)), zarr_format, writable=True)
        except (FileNotFoundError, PolystoreError, ValueError):
            break
        if arrays and array.ndim != arrays[0].ndim:
            break
        arrays.append(array)
        level += 1
    return arrays


def _repair_image(
    documents: MetadataDocuments, location: Location, config: ZarrConfig, report: RepairReport,
    dry_run: bool,
) -> bool:
    """Make the image at ``location`` whole again; whether it is (or was) a readable image."""
    group = GroupDocument.read(documents, location, config.zarr_format)
    if group is None:
        # a new image's group document is its commit, written after every level (image.py):
        # levels without one are a save killed part-way (or running now), whose pixels are not
        # all written; published, its unwritten chunks would read as data (0)
        report.unfinished.append(
            f"{location.display}: levels without the image's group document: its first save was "
            "stopped before it finished (or is running now), so it was never readable and is not "
            "published. Save it again (that clears them), or delete it (delete_all)."
        )
        return False
    destination = conversion_of(group.attributes)
    if destination is not None:
        report.unconverted.append(location.display)
        advice = resume_advice(location, destination)
        if advice not in report.advice:
            report.advice.append(advice)
        return True
    reason = failure_of(group.attributes)
    if reason is not None:  # its writer cleared it, then failed: no pixels of it are left
        report.unrecoverable.append(
            f"{location.display}: it holds no pixels: its save failed ({reason}) after clearing its "
            "previous data. Save it again, or delete it (delete_all); it is left out of its well."
        )
        return False
    if is_replacing(group.attributes):  # cleared, then rewritten in part: neither image is there
        report.unrecoverable.append(
            f"{location.display}: its writer was stopped while replacing it: its previous data was "
            "cleared and the new is not all written. Save it again, or delete it (delete_all); it is "
            "left marked and out of its well."
        )
        return False
    try:
        levels = _level_arrays(documents, location, config.zarr_format)
    except Exception as error:
        report.unrecoverable.append(f"{location.display}: level 0 cannot be read ({error})")
        return False
    if not levels:
        report.unrecoverable.append(f"{location.display}: its full-resolution level 0 is damaged")
        return False
    attributes = group.attributes
    axes = _axes_of(levels[0], attributes)
    if axes is None:
        report.unrecoverable.append(f"{location.display}: {levels[0].ndim}-D levels, no NGFF axes")
        return False
    changes: list[str] = []
    for level, array in enumerate(levels):
        wanted = level_shape(tuple(levels[0].shape), axes, level)
        if tuple(array.shape) != wanted:
            changes.append(f"level {level} resized {tuple(array.shape)} -> {wanted}")
            if not dry_run:
                array.resize(wanted)
    for level, array in enumerate(levels):
        for key in _undecodable_chunks(array, dry_run):
            changes.append(f"level {level}: chunk {key} could not be decoded (written partly), removed")
    labels = pending_levels_of(attributes)
    if labels is not None:  # a plane save stopped after level 0: the levels below may be older
        changes.append(f"levels 1-{len(levels) - 1} made again from level 0 (a plane save into it "
                       "stopped between levels)" if len(levels) > 1 else "a plane save's mark removed")
        if not dry_run:
            rebuild_levels(levels, labels)
    expected = _image_attributes(location, levels, axes, attributes, config)
    if is_incomplete(attributes):
        changes.append("was marked as being written: its metadata rebuilt")
    elif ngff.multiscale_paths(attributes) != [str(i) for i in range(len(levels))]:
        changes.append(f"multiscales rebuilt from {len(levels)} level(s)")
    elif _channel_count(attributes) != _channel_count(expected):
        changes.append("channels listed again from the data's shape")
    if changes:
        report.changed.append(f"{location.display}: " + "; ".join(changes))
        if not dry_run:
            documents.write_group(location, config.zarr_format, expected)
    return True


def _undecodable_chunks(array: Any, dry_run: bool) -> list[str]:
    """Keys of the stored chunks (or shards) of ``array`` that cannot be decoded, deleted
    unless ``dry_run``: polystore writes every chunk whole, but another tool may not (one
    killed while writing a chunk in place leaves it torn), and disks fail; without it, its
    region reads as the fill value. Every chunk is read once: repair reads the whole store."""
    grid = array.shards or array.chunks
    counts = [-(-size // step) for size, step in zip(array.shape, grid, strict=True)]
    keys = LocalKeys(str(array.store_path.store.root)) if hasattr(array.store_path.store, "root") \
        else None
    bad: list[str] = []
    for index in itertools.product(*(range(n) for n in counts)):
        region = tuple(slice(i * step, (i + 1) * step) for i, step in zip(index, grid, strict=True))
        try:
            array[region]
        except Exception:
            key = f"{array.store_path.path}/{array.metadata.encode_chunk_key(index)}"
            bad.append(key)
            if not dry_run:
                if keys is not None:
                    keys.delete(key)
                else:
                    _sync_delete(array, key)
    return bad


def _sync_delete(array: Any, key: str) -> None:
    """Delete ``key`` from the array's (object) store through its obstore store."""
    store = array.store_path.store
    obstore_store = getattr(store, "store", None)
    if obstore_store is not None:
        ObjectKeys(obstore_store, str(store)).delete(key)


def _axes_of(level: Any, attributes: dict[str, Any]) -> str | None:
    known = ngff.multiscale_axes(attributes) if ngff.is_multiscale_image(attributes) else ""
    if len(known) == level.ndim:
        return known
    names = getattr(level.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) and len(n) == 1 for n in names):
        return "".join(names)
    return ngff.infer_axes(level.ndim)


def _channel_count(attributes: dict[str, Any]) -> int:
    return len((ngff.ngff_section(attributes).get("omero") or {}).get("channels", []))


def _image_attributes(
    location: Location, levels: list[Any], axes: str, attributes: dict[str, Any], config: ZarrConfig,
) -> dict[str, Any]:
    section = ngff.ngff_section(attributes)
    known = (section.get("omero") or {}).get("channels", [])
    shape = tuple(levels[0].shape)
    labels = colors = None
    if "c" in axes:
        count = shape[axes.index("c")]
        labels = [c.get("label") for c in known[:count]] + [f"w{i + 1}" for i in range(len(known), count)]
        colors = [c.get("color") for c in known[:count] if c.get("color")] or None
    scale = translation = units = None
    if section.get("multiscales") and ngff.multiscale_axes(attributes) == axes:
        # what the damaged document still says of its full resolution: kept, not reset
        scale, translation = ngff.image_transform(attributes)
        units = ngff.multiscale_units(attributes)
    label = "image-label" in section
    spec = ImageSpec(axes, len(levels), labels, colors, scale, units, label, translation)
    writer = ImageWriter(MetadataDocuments(Stores({}), config.zarr_format))
    return writer.attributes(location, axes, shape, np.dtype(levels[0].dtype), config, spec, len(levels))


def _repair_plate(
    documents: MetadataDocuments, store: str, images: list[str], dropped: list[str], config: ZarrConfig,
    report: RepairReport, dry_run: bool,
) -> None:
    """The wells' and plate's lists made those of the readable field ``images``: a well whose
    fields were all ``dropped`` (left out as unreadable) lists none, not them."""
    fields = [m for node in images if (m := _FIELD_PATH.match(node))]
    dropped_wells = {f"{m.group(1)}/{m.group(2)}" for node in dropped if (m := _FIELD_PATH.match(node))}
    root = GroupDocument.read(documents, Location(store, ""), config.zarr_format)
    plate_attrs = ngff.ngff_section(root.attributes).get("plate") if root is not None else None
    if not fields and not plate_attrs:
        return  # not a plate
    layout = PlateLayout()
    by_well: dict[str, list[str]] = {}
    for match in fields:
        row, column, index = match.group(1), match.group(2), int(match.group(3))
        layout.add(row, column, index)
        by_well.setdefault(f"{row}/{column}", []).append(str(index))
    old_wells = {w["path"] for w in (plate_attrs or {}).get("wells", [])}
    for well_path in sorted(old_wells - set(by_well)):
        report.changed.append(f"{store}: well {well_path} left out of the plate (no readable field)")
    for well_path in sorted(set(by_well) | old_wells | dropped_wells):
        names = by_well.get(well_path, [])
        location = Location(store, well_path)
        well = GroupDocument.read(documents, location, config.zarr_format)
        listed = (ngff.ngff_section(well.attributes).get("well") or {}) if well is not None else {}
        known = [image["path"] for image in listed.get("images", [])]
        wanted = sorted(names, key=int)
        if well is None and not names:
            continue  # no well group, no field: nothing lists anything
        if well is None or sorted(known, key=lambda p: int(p) if p.isdigit() else -1) != wanted:
            added, left_out = set(wanted) - set(known), set(known) - set(wanted)
            report.changed.append(
                f"{location.display}: well lists fields {wanted}"
                + (f" (added {sorted(added, key=int)})" if added else "")
                + (f" (left out {sorted(left_out)})" if left_out else "")
            )
            if not dry_run:
                attributes = {**(well.attributes if well is not None else {}),
                              **ngff.well_attributes(wanted, version=config.ngff)}
                documents.write_group(location, config.zarr_format, attributes)
        if well_path not in old_wells and names:
            report.changed.append(f"{store}: well {well_path} added to the plate")
    new_plate = layout.attributes(config.ngff, plate_name(store))
    if ngff.ngff_section(new_plate).get("plate") != _comparable(plate_attrs, plate_name(store)):
        if not any(f"{store}: well" in line for line in report.changed):
            report.changed.append(f"{store}: plate metadata rebuilt from the fields present")
        if not dry_run:
            attributes = {**(root.attributes if root is not None else {}), **new_plate}
            documents.write_group(Location(store, ""), config.zarr_format, attributes)


def _comparable(plate: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    return None if plate is None else {**plate, "name": plate.get("name", name)}


def _remove_leftovers(stores: Stores, store: str, all_keys: list[str], report: RepairReport,
                      dry_run: bool) -> None:
    """Lock objects of writers that are gone; temporary files of processes that are gone."""
    for keys, key in lock_keys(stores, store):
        raw = keys.get(key)
        try:
            content = json.loads(raw) if raw else {}
        except ValueError:
            content = {}
        if isinstance(content, dict) and holder_is_dead(content):
            report.changed.append(f"{keys.display}/{key}: lock of a writer that is gone, removed")
            if not dry_run:
                keys.delete(key)
    store_keys = stores.keys(store)
    for key in all_keys:
        match = _TEMPORARY.match(key.rsplit("/", 1)[-1])
        if match and (key.endswith(TEMP_SUFFIX) or key.endswith(".create")) \
                and holder_is_dead({"owner": f"{socket.gethostname()}:{match['pid']}:"}):
            report.changed.append(f"{store}/{key}: temporary file of a writer that is gone, removed")
            if not dry_run:
                store_keys.delete(key)
        elif _STAGED.match(key.rsplit("/", 1)[-1]) and _untouched_for(store, key, DEFAULT_LEASE_S):
            # its name holds no owner: a writer stages a chunk and renames it within
            # milliseconds, so one untouched for a lock's lease belongs to a writer that is gone
            report.changed.append(f"{store}/{key}: chunk staged by a writer that is gone, removed")
            if not dry_run:
                store_keys.delete(key)


def _untouched_for(store: str, key: str, seconds: float) -> bool:
    if "://" in store:
        return False  # an object store's put is whole: nothing is staged there
    try:
        return time.time() - os.stat(os.path.join(store, key)).st_mtime > seconds
    except OSError:
        return False
