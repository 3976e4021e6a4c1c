"""Zarr metadata documents, read and written as documents (``zarr.json``; ``.zgroup``,
``.zattrs``, ``.zarray``), for the zarr backend's per-field path.

Written by hand because zarr-python's own calls look around before they act: ``create_array``
deletes the path and checks every parent group up to the store's root, opening an image means
opening its group and then its array, updating attributes opens the group first, each step a
hop to zarr's event-loop thread (1-5 ms a call, a request or more on object storage). On a
plate, where every field pays them, they cost more than all the data's metadata. The
documents written here are made by zarr's own metadata classes (``GroupMetadata``, the
metadata of an array zarr makes in memory), so zarr reads them as its own; the backend calls
these where it has just looked, under its locks.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polystore.atomic import atomic_write
from polystore.exceptions import CorruptDataError, NotADirectoryStorageError
from polystore.lazy import optional_import
from polystore.ome import ngff


def zarr_module() -> Any:
    return optional_import("zarr", extra="zarr", purpose="The zarr backend")


@dataclass(frozen=True)
class Location:
    """A node of a zarr store."""

    store: str
    """Local path or URL of the store."""
    node: str
    """Path of the node inside the store ('' for its root)."""

    @property
    def remote(self) -> bool:
        return "://" in self.store

    @property
    def name(self) -> str:
        return self.node.rsplit("/", 1)[-1]

    @property
    def display(self) -> str:
        """How messages name the node: the store's path or URL and the node's path."""
        return f"{self.store}/{self.node}" if self.node else self.store

    def child(self, name: str) -> Location:
        return Location(self.store, join_key(self.node, name))


StoreOpener = Callable[..., Any]
"""``open_store(store, writable=...)``: the backend's zarr store for a path or URL."""


class MetadataDocuments:
    """The metadata documents of the nodes of the stores a backend opens."""

    def __init__(self, open_store: StoreOpener, preferred_format: int) -> None:
        self._open_store = open_store
        self.preferred_format = preferred_format
        """The format tried first where a node's is not known (the backend's)."""

    def read(self, location: Location, name: str) -> bytes | None:
        """The bytes of metadata document ``name`` of the node at ``location``; None if absent."""
        if not location.remote:  # a plain file: no hop to zarr's event-loop thread
            try:
                with open(os.path.join(location.store, location.node, name), "rb") as document:
                    return document.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
        from zarr.core.buffer import default_buffer_prototype

        store = self._open_store(location.store, writable=False)
        buffer = sync(store.get(join_key(location.node, name), prototype=default_buffer_prototype()))
        return None if buffer is None else bytes(buffer.to_bytes())

    def parsed(self, location: Location, name: str) -> dict[str, Any] | None:
        """Metadata document ``name`` of the node at ``location``, parsed; None if absent."""
        return parse_document(location, name, self.read(location, name))

    def write(self, location: Location, name: str, content: bytes) -> None:
        """Write metadata document ``name`` of the node at ``location``, whole or not at all."""
        if not location.remote:
            # as zarr's LocalStore writes it (a temporary file renamed over the document, not
            # fsynced), without the hop to zarr's event-loop thread (0.8 of 1 ms)
            with atomic_write(os.path.join(location.store, location.node, name), "wb", durable=False) as out:
                out.write(content)
            return
        from zarr.core.buffer import default_buffer_prototype

        store = self._open_store(location.store, writable=True)
        buffer = default_buffer_prototype().buffer.from_bytes(content)
        sync(store.set(join_key(location.node, name), buffer))

    def node_kind(self, location: Location) -> str | None:
        """``"array"``, ``"image"`` or ``"group"``, from the node's metadata documents; None if
        no node is there (a few file reads, or requests, where opening it through zarr costs
        1 ms)."""
        for zarr_format in (self.preferred_format, 5 - self.preferred_format):
            if zarr_format == 3:
                document = self.parsed(location, "zarr.json")
                if document is None:
                    continue
                if document.get("node_type") == "array":
                    return "array"
                attributes = document.get("attributes") or {}
            else:
                if self.read(location, ".zarray") is not None:
                    return "array"
                if self.read(location, ".zgroup") is None:
                    continue
                attributes = self.parsed(location, ".zattrs") or {}
            is_image = isinstance(attributes, dict) and ngff.is_multiscale_image(attributes)
            return "image" if is_image else "group"
        return None

    def image_level_array(self, location: Location, level: int) -> Any | None:
        """Level ``level`` of the OME-Zarr image at ``location``, or None if it is not one.

        The image group's metadata document is read as a document, not opened as a zarr
        group: opening the group and then its level costs two rounds of zarr's metadata
        probes (1-2 ms a field here, a request or more each on object storage), reading the
        document one; the level array is then opened as zarr-python alone would open it.
        """
        for zarr_format in (self.preferred_format, 5 - self.preferred_format):
            name = attributes_document(zarr_format)
            metadata = self.parsed(location, name)
            if metadata is None:
                continue
            if zarr_format == 3 and metadata.get("node_type") != "group":
                return None
            attributes = metadata.get("attributes", {}) if zarr_format == 3 else metadata
            if not isinstance(attributes, dict) or not ngff.is_multiscale_image(attributes):
                return None
            paths = ngff.multiscale_paths(attributes)
            if not 0 <= level < len(paths):
                raise ValueError(f"'{location.display}' has {len(paths)} levels; asked for {level}.")
            store = self._open_store(location.store, writable=False)
            level_location = Location(location.store, join_key(location.node, paths[level]))
            try:
                return zarr_module().open_array(
                    store=store, path=level_location.node, mode="r", zarr_format=zarr_format
                )
            except json.JSONDecodeError as error:
                document = "zarr.json" if zarr_format == 3 else ".zarray"
                raise damaged(level_location, document, error) from error
            except FileNotFoundError as error:
                raise CorruptDataError(
                    f"'{location.display}' is an image whose level '{paths[level]}' is "
                    "missing: it was written partly or damaged. Save the image again, or delete "
                    "it (delete_all)."
                ) from error
        return None

    def group(self, location: Location, zarr_format: int) -> GroupDocument:
        """The attributes document of the group at ``location`` (made a group if nothing is)."""
        document = GroupDocument.read(self, location, zarr_format)
        if document is None:
            store = self._open_store(location.store, writable=True)
            zarr_module().open_group(store, path=location.node, mode="a", zarr_format=zarr_format)
            document = GroupDocument.read(self, location, zarr_format)
        if document is None:
            raise CorruptDataError(f"'{location.display}' is not a zarr group after creating it")
        return document

    def create_group(self, location: Location, zarr_format: int, attributes: dict[str, Any]) -> Any:
        """A new group with its attributes at ``location``, where the caller knows there is nothing.

        zarr's ``create_group`` first looks, in several reads, for an array or group already
        there; the backend has just looked, under the field's lock, so it writes zarr's own
        metadata document(s) for the group directly (a third of the time: this is per field
        of a plate).
        """
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.group import GroupMetadata

        self.ensure_parent_groups(location, zarr_format)
        metadata = GroupMetadata(attributes=attributes, zarr_format=zarr_format)  # type: ignore[arg-type]
        for name, document in metadata.to_buffer_dict(default_buffer_prototype()).items():
            self.write(location, name, document.to_bytes())
        zarr = zarr_module()
        store = self._open_store(location.store, writable=True)
        # the group as zarr would open it, from the metadata just written (no read back)
        store_path = zarr.storage.StorePath(store, location.node)
        return zarr.Group(zarr.AsyncGroup(metadata=metadata, store_path=store_path))

    def ensure_parent_groups(self, location: Location, zarr_format: int) -> None:
        """Make every missing group above ``location`` (as zarr does for a new node), from the
        top down, so that a node is never left without its parents' metadata.

        Each ancestor is looked at (its documents: file reads, or a request each), never
        remembered: another process may have removed it since. A missing one is
        written only if still absent (an exclusive create), so two writers making the same
        well never replace each other's attributes with an empty group's.
        """
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.group import GroupMetadata

        missing: list[str] = []
        node = location.node
        while node:
            node = node.rpartition("/")[0]
            kind = self.node_kind(Location(location.store, node))
            if kind == "group":
                break
            if kind is not None:
                raise NotADirectoryStorageError(
                    f"Cannot create '{location.display}': '{node}' is an array, not a group."
                )
            missing.append(node)
        if not missing:
            return
        empty = GroupMetadata(zarr_format=zarr_format).to_buffer_dict(default_buffer_prototype())  # type: ignore[arg-type]
        store = self._open_store(location.store, writable=True)
        for node in reversed(missing):
            for name, document in empty.items():
                sync(store.set_if_not_exists(join_key(node, name), document))

    def create_array(self, location: Location, options: dict[str, Any], zarr_format: int) -> Any:
        """A new array at ``location``, in a group the caller has just made (nothing is there).

        zarr's ``create_array`` would first delete the (empty) path, then check or write the
        metadata of every parent group up to the store's root, each a hop to its event-loop
        thread: 4-5 ms a field of a plate, more than the rest of the metadata together. The
        array's metadata here is the very object zarr makes for these options (made once per
        shape, dtype and codecs, in memory), written as its one document.
        """
        from zarr.core.buffer import default_buffer_prototype

        zarr = zarr_module()
        store_path = zarr.storage.StorePath(self._open_store(location.store, writable=True), location.node)
        # chunks left without metadata (an interrupted delete) must not come back as data, as
        # zarr's overwrite would have cleared them: a stat here, a listing on object storage
        if location.remote:
            sync(store_path.delete_dir())
        elif os.path.isdir(os.path.join(location.store, location.node)):
            shutil.rmtree(os.path.join(location.store, location.node))
        # a copy with its own attributes: the cached object is shared, zarr changes them in place
        metadata = array_metadata(zarr_format, options).update_attributes({})
        for name, document in metadata.to_buffer_dict(default_buffer_prototype()).items():
            self.write(location, name, document.to_bytes())
        return zarr.Array(zarr.AsyncArray(metadata=metadata, store_path=store_path))


@dataclass
class GroupDocument:
    """A group's attributes as its metadata document holds them, to change and write back."""

    documents: MetadataDocuments
    location: Location
    zarr_format: int
    document: dict[str, Any]
    """zarr.json (v3: attributes under "attributes"), or .zattrs (v2: the attributes)."""

    @classmethod
    def read(cls, documents: MetadataDocuments, location: Location, zarr_format: int) -> GroupDocument | None:
        """The group's document; None where no group is (nothing, or an array)."""
        if zarr_format == 3:
            document = documents.parsed(location, "zarr.json")
            if document is None or document.get("node_type") != "group":
                return None
            return cls(documents, location, zarr_format, document)
        if documents.read(location, ".zgroup") is None:
            return None
        return cls(documents, location, zarr_format, documents.parsed(location, ".zattrs") or {})

    @property
    def attributes(self) -> dict[str, Any]:
        found = self.document.get("attributes", {}) if self.zarr_format == 3 else self.document
        return found if isinstance(found, dict) else {}

    def update(self, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into the attributes (as zarr's update_attributes) and write them."""
        attributes = {**self.attributes, **changes}
        if self.zarr_format == 3:
            self.document["attributes"] = attributes
        else:
            self.document = attributes
        name = attributes_document(self.zarr_format)
        self.documents.write(self.location, name, json.dumps(self.document, indent=2).encode())


def parse_document(location: Location, name: str, raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        raise damaged(location, name, error) from error
    if not isinstance(parsed, dict):
        raise damaged(location, name, ValueError("not a JSON object"))
    return parsed


def attributes_document(zarr_format: int) -> str:
    """The metadata document that holds a node's attributes in ``zarr_format``."""
    return "zarr.json" if zarr_format == 3 else ".zattrs"


def damaged(location: Location, document: str, error: Exception) -> CorruptDataError:
    return CorruptDataError(
        f"'{location.display}': its {document} document is not valid JSON ({error}). The store is damaged "
        "or was written partly (by a tool without atomic writes); rewrite this node, or restore "
        "the document from a copy."
    )


_ARRAY_METADATA: dict[str, Any] = {}
_ARRAY_METADATA_LOCK = threading.Lock()


def array_metadata(zarr_format: int, options: dict[str, Any]) -> Any:
    """The metadata zarr gives a new array made with ``options`` (cached: it is immutable)."""
    # zarr's config decides what options leave open (memory order, default codecs)
    key = repr((zarr_format, sorted(options.items()), zarr_module().config.get("array")))
    with _ARRAY_METADATA_LOCK:
        cached = _ARRAY_METADATA.get(key)
    if cached is None:
        zarr = zarr_module()
        cached = zarr.create_array(zarr.storage.MemoryStore(), **options, zarr_format=zarr_format).metadata
        with _ARRAY_METADATA_LOCK:
            if len(_ARRAY_METADATA) >= 64:  # shapes and codecs of one session are few
                _ARRAY_METADATA.clear()
            _ARRAY_METADATA[key] = cached
    return cached


def join_key(node: str, name: str) -> str:
    """A key inside a store: ``name`` under ``node`` ('' is the store's root)."""
    return f"{node}/{name}" if node else name


def sync(coroutine: Any) -> Any:
    """Run one of a zarr store's coroutines (its API is async) from this synchronous code."""
    from zarr.core.sync import sync

    return sync(coroutine)
