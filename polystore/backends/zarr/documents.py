"""Zarr metadata documents (``zarr.json``; ``.zgroup``, ``.zattrs``, ``.zarray``), read and
written as documents for the per-field path of plates and images.

Written by hand because zarr-python's own calls look around before they act: ``create_array``
deletes the path and checks every parent group up to the store's root, opening an image means
opening its group and then its array, updating attributes opens the group first, each step a
hop to zarr's event-loop thread (1-5 ms a call, a request or more on object storage). On a
plate, where every field pays them, they cost more than all the data's metadata. A group's
document is the specification's few keys; an array's is the one zarr itself writes for the
same options (made once, in an in-memory store), so zarr reads both as its own.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polystore.backends.zarr.location import (
    KeyStore,
    Location,
    Stores,
    delete_leftovers,
    join_key,
    zarr_module,
)
from polystore.backends.zarr.marks import incomplete_error, is_incomplete
from polystore.exceptions import (
    CorruptDataError,
    InvalidOptionError,
    NotADirectoryStorageError,
    StorageFileNotFoundError,
    UnsupportedDataError,
)
from polystore.ome import ngff


def attributes_document(zarr_format: int) -> str:
    """The metadata document that holds a node's attributes in ``zarr_format``."""
    return "zarr.json" if zarr_format == 3 else ".zattrs"


def encode_document(document: dict[str, Any]) -> bytes:
    """A metadata document's bytes: compact JSON. Indented JSON goes through the json module's
    pure-Python encoder, 0.7 ms of CPU a save here (a plate's document grows with its wells)."""
    return json.dumps(document).encode()


def group_documents(zarr_format: int, attributes: dict[str, Any]) -> dict[str, bytes]:
    """The documents of a group with ``attributes``, as the Zarr specifications define them."""
    if zarr_format == 3:
        document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
        return {"zarr.json": encode_document(document)}
    documents = {".zgroup": encode_document({"zarr_format": 2})}
    if attributes:
        documents[".zattrs"] = encode_document(attributes)
    return documents


def damaged(location: Location, document: str, error: Exception) -> CorruptDataError:
    return CorruptDataError(
        f"'{location.display}': its {document} document is not valid JSON ({error}). The store is damaged "
        "or was written partly (by a tool without atomic writes); rewrite this node, run "
        "`polystore repair` on the store, or restore the document from a copy."
    )


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


class MetadataDocuments:
    """The metadata documents of the nodes of the stores a backend opens."""

    def __init__(
        self, stores: Stores, preferred_format: int, open_store: Callable[..., Any] | None = None
    ) -> None:
        self.stores = stores
        self.zarr_store: Callable[..., Any] = open_store or stores.zarr_store
        """``zarr_store(store, writable=...)``: zarr-python's store for a path or URL."""
        self.preferred_format = preferred_format
        """The format tried first where a node's is not known (the backend's)."""
        self._lock = threading.Lock()
        self._readers: dict[tuple[str, str, tuple[bytes | None, ...]], Any] = {}

    def keys(self, location: Location) -> KeyStore:
        return self.stores.keys(location.store)

    def read(self, location: Location, name: str) -> bytes | None:
        """The bytes of metadata document ``name`` of the node at ``location``; None if absent."""
        return self.keys(location).get(join_key(location.node, name))

    def parsed(self, location: Location, name: str) -> dict[str, Any] | None:
        """Metadata document ``name`` of the node at ``location``, parsed; None if absent."""
        return parse_document(location, name, self.read(location, name))

    def write(self, location: Location, name: str, content: bytes) -> None:
        """Write metadata document ``name`` of the node at ``location``, whole or not at all."""
        self.keys(location).put(join_key(location.node, name), content)

    def node_kind(self, location: Location) -> str | None:
        """``"array"``, ``"image"`` or ``"group"``, from the node's metadata documents; None if
        no node is there (a few file reads, or requests, where opening it through zarr costs
        1 ms)."""
        found = self.kind_and_format(location)
        return None if found is None else found[0]

    def kind_and_format(self, location: Location) -> tuple[str, int] | None:
        """``node_kind`` and the Zarr format the node is in; None if no node is there."""
        for zarr_format in (self.preferred_format, 5 - self.preferred_format):
            attributes = self.attributes(location, zarr_format)
            if attributes is None:
                continue
            if attributes is ARRAY:
                return "array", zarr_format
            # a marked image (its replacing save failed or stopped) is still an image to replace
            image = ngff.is_multiscale_image(attributes) or is_incomplete(attributes)
            return ("image" if image else "group"), zarr_format
        return None

    def attributes(self, location: Location, zarr_format: int) -> dict[str, Any] | None:
        """A group's attributes in ``zarr_format``; ``ARRAY`` for an array; None for nothing."""
        if zarr_format == 3:
            document = self.parsed(location, "zarr.json")
            if document is None:
                return None
            if document.get("node_type") == "array":
                return ARRAY
            found = document.get("attributes") or {}
        else:
            if self.read(location, ".zarray") is not None:
                return ARRAY
            if self.read(location, ".zgroup") is None:
                return None
            found = self.parsed(location, ".zattrs") or {}
        return found if isinstance(found, dict) else {}

    def open_array(self, location: Location, zarr_format: int, *, writable: bool = False) -> Any:
        """The array at ``location``, as zarr would open it, from its metadata document read
        here: zarr's ``open_array`` hops to its event-loop thread, looks for the document and
        parses it (1 ms of CPU a level here, most of a small read); the document's bytes are
        read as any document is, and their parse is made once per distinct document (a plate's
        levels share a few). FileNotFoundError where no array is; CorruptDataError where its
        document is damaged."""
        names = ARRAY_DOCUMENTS[zarr_format]
        contents = tuple(self.read(location, name) for name in names)
        if contents[0] is None:
            raise StorageFileNotFoundError(location.display, "zarr", "No zarr array there")
        try:
            metadata = array_metadata(zarr_format, contents)
        except (ValueError, TypeError, KeyError) as error:  # json.JSONDecodeError is a ValueError
            raise damaged(location, names[0], error) from error
        if metadata is None:
            raise StorageFileNotFoundError(
                location.display, "zarr", "A group, not an array, is there; load an array inside it"
            )
        key = (location.store, location.node, contents)
        if not writable:
            with self._lock:
                if (found := self._readers.get(key)) is not None:
                    return found
        zarr = zarr_module()
        store = self.zarr_store(location.store, writable=writable)
        # a copy of the cached metadata, whose attributes zarr would change in place
        array = zarr.Array(zarr.AsyncArray(metadata=metadata.update_attributes(dict(metadata.attributes)),
                                           store_path=zarr.storage.StorePath(store, location.node)))
        if not writable:
            # The same node with the same document is the same array (zarr keeps no pixels in
            # it), so a reader is made once, with its codec pipeline (zarrs parses the metadata
            # again and opens its store: a fifth of a small read's overhead). Writable arrays
            # are never kept: a resize changes one in place.
            with self._lock:
                if len(self._readers) >= 1024:
                    self._readers.clear()
                self._readers[key] = array
        return array

    def image_level_array(self, location: Location, level: int, *, writable: bool = False,
                          incomplete: bool = False) -> Any | None:
        """Level ``level`` of the OME-Zarr image at ``location``, or None if it is not one.
        An image marked incomplete (marks.py) is refused (CorruptDataError) unless
        ``incomplete``: only its writer, filling it, may open it.

        The image group's metadata document is read as a document, not opened as a zarr
        group: opening the group and then its level costs two rounds of zarr's metadata
        probes (1-2 ms a field here, a request or more each on object storage), reading the
        document one; the level array is then opened as zarr-python alone would open it.
        """
        for zarr_format in (self.preferred_format, 5 - self.preferred_format):
            attributes = self.attributes(location, zarr_format)
            if attributes is None:
                continue
            if attributes is ARRAY or not ngff.is_multiscale_image(attributes):
                return None
            if is_incomplete(attributes) and not incomplete:
                raise incomplete_error(location, attributes)
            paths = ngff.multiscale_paths(attributes)
            if not 0 <= level < len(paths):
                raise InvalidOptionError(
                    f"'{location.display}' has {len(paths)} levels; asked for level={level}. "
                    f"Pass a level from 0 to {len(paths) - 1} (0 is full resolution)."
                )
            try:
                return self.open_array(location.child(paths[level]), zarr_format, writable=writable)
            except FileNotFoundError as error:
                raise CorruptDataError(
                    f"'{location.display}' is an image whose level '{paths[level]}' is "
                    "missing: it was written partly or damaged. Save the image again, run "
                    "`polystore repair` on the store, or delete it (delete_all)."
                ) from error
        return None

    def group(self, location: Location, zarr_format: int) -> GroupDocument:
        """The attributes document of the group at ``location`` (made a group if nothing is)."""
        document = GroupDocument.read(self, location, zarr_format)
        if document is None:
            self.ensure_parent_groups(location, zarr_format)
            for name, content in group_documents(zarr_format, {}).items():
                self.keys(location).create(join_key(location.node, name), content)
            document = GroupDocument.read(self, location, zarr_format)
        if document is None:
            raise NotADirectoryStorageError(f"'{location.display}' is an array, not a group.")
        return document

    def write_group(self, location: Location, zarr_format: int, attributes: dict[str, Any]) -> None:
        """Write the group at ``location`` with ``attributes`` (replacing its documents)."""
        for name, content in group_documents(zarr_format, attributes).items():
            self.write(location, name, content)

    def ensure_parent_groups(self, location: Location, zarr_format: int) -> None:
        """Make every missing group above ``location`` (as zarr does for a new node), from the
        top down, so that a node is never left without its parents' metadata.

        Each ancestor is looked at (its documents: file reads, or a request each), never
        remembered: another process may have removed it since. A missing one is written only
        if still absent (an exclusive create), so two writers making the same well never
        replace each other's attributes with an empty group's.
        """
        missing: list[str] = []
        node = location.node
        while node:
            node = node.rpartition("/")[0]
            found = self.kind_and_format(Location(location.store, node))
            kind = None if found is None else found[0]
            if found is not None and kind == "group":
                if found[1] != zarr_format:
                    # a node of this format under a group of the other: zarr would not find it,
                    # and a plate's field or documents written so would replace or hide the
                    # store's own (a v3 field's level written over a v2 one's chunks)
                    raise InvalidOptionError(
                        f"Cannot write '{location.display}' in Zarr v{zarr_format}: "
                        f"'{Location(location.store, node).display}' is a Zarr v{found[1]} group, so the "
                        f"store is v{found[1]}. Open the backend with zarr_format={found[1]} to write "
                        "into it."
                    )
                break
            if kind is not None:  # an array, or an image (a group holding its levels only)
                raise NotADirectoryStorageError(
                    f"Cannot create '{location.display}': '{Location(location.store, node).display}' "
                    f"is {'an image' if kind == 'image' else 'an array'}, not a group."
                )
            missing.append(node)
        keys = self.keys(location)
        for node in reversed(missing):
            for name, content in group_documents(zarr_format, {}).items():
                keys.create(join_key(node, name), content)

    def write_array(self, location: Location, options: dict[str, Any], zarr_format: int, *,
                    mark: dict[str, Any] | None = None, clear: bool = True) -> None:
        """Write the documents of a new array at ``location`` (then ``new_array`` opens it).

        Chunks left at the path without metadata (an interrupted write or delete) are removed
        first (unless ``clear`` is False: the caller cleared them under a mark): they must not
        come back as data. Only what zarr writes (``delete_leftovers``): files of the user's
        in that folder stay. The array's document is the one zarr
        writes for these options (made once, in memory), with ``mark`` as its attributes where
        given (a bare array being written: ``marks.py``; ``unmark_array`` ends it).
        """
        keys = self.keys(location)
        if clear:
            folder = None if location.remote else os.path.join(location.store, location.node)
            if folder is not None and location.name.isdigit() and os.path.isfile(folder):
                # a chunk of an earlier v2 array one level up ("image/0" of a 1-D array whose
                # metadata is gone), in the way of this level's folder
                os.remove(folder)
            delete_leftovers(keys, location.node, folder, zarr_format=zarr_format,
                             ndim=len(options["shape"]))
        documents = array_documents(zarr_format, options)[1] if mark is None \
            else marked_array_documents(zarr_format, options, mark)
        if zarr_format == 2 and not clear:  # a group's document beside .zarray: both at once
            keys.delete(join_key(location.node, ".zgroup"))
        for name, content in documents.items():
            keys.put(join_key(location.node, name), content)

    def unmark_array(self, location: Location, options: dict[str, Any], zarr_format: int) -> None:
        """End the mark ``write_array(mark=...)`` wrote: the array's attributes document written
        as zarr writes it for ``options`` (one document, whole: the commit of a bare array)."""
        documents = array_documents(zarr_format, options)[1]
        name = attributes_document(zarr_format)
        if name in documents:
            self.write(location, name, documents[name])
        else:
            self.keys(location).delete(join_key(location.node, name))

    def mark_array(self, location: Location, mark: dict[str, Any]) -> bool:
        """Put ``mark`` as the attributes of the array at ``location`` (in its own format), so
        that it stays a valid array in both formats; False where no array is there."""
        document = self.parsed(location, "zarr.json")
        if document is not None and document.get("node_type") == "array":
            self.write(location, "zarr.json", encode_document({**document, "attributes": mark}))
            return True
        if document is None and self.read(location, ".zarray") is not None:
            self.write(location, ".zattrs", encode_document(mark))
            return True
        return False

    def new_array(self, location: Location, options: dict[str, Any], zarr_format: int) -> Any:
        """The writable zarr array ``write_array`` writes at ``location``, as zarr would open it,
        made from the metadata alone (no I/O: it may be made before its documents are written,
        so that its chunks are encoded while they are). A copy of the cached metadata, whose
        attributes zarr would change in place."""
        zarr = zarr_module()
        metadata, _documents = array_documents(zarr_format, options)
        store_path = zarr.storage.StorePath(self.zarr_store(location.store, writable=True), location.node)
        return zarr.Array(zarr.AsyncArray(metadata=metadata.update_attributes({}), store_path=store_path))


class _Array(dict[str, Any]):
    """The marker ``MetadataDocuments.attributes`` returns for an array."""


ARRAY: dict[str, Any] = _Array()


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
        self.put({**self.attributes, **changes})

    def put(self, attributes: dict[str, Any]) -> None:
        """Replace the attributes and write them."""
        if self.zarr_format == 3:
            self.document["attributes"] = attributes
        else:
            self.document = attributes
        name = attributes_document(self.zarr_format)
        self.documents.write(self.location, name, encode_document(self.document))


ARRAY_DOCUMENTS = {3: ("zarr.json",), 2: (".zarray", ".zattrs")}
"""The documents an array's metadata is read from, per Zarr format (the first must exist)."""
_METADATA: dict[tuple[int, tuple[bytes | None, ...]], Any] = {}
_METADATA_LOCK = threading.Lock()


def array_metadata(zarr_format: int, contents: tuple[bytes | None, ...]) -> Any:
    """zarr's metadata object for an array's documents (None where they describe a group), as
    zarr reads them: opened from an in-memory store holding just those documents. Cached by
    the documents' bytes (metadata objects are immutable)."""
    key = (zarr_format, contents)
    with _METADATA_LOCK:
        if key in _METADATA:
            return _METADATA[key]
    zarr = zarr_module()
    document = json.loads(contents[0] or b"")  # raises on a damaged document before zarr does
    if not isinstance(document, dict) or document.get("node_type", "array") != "array":
        metadata = None
    else:
        buffer = importlib.import_module("zarr.buffer.cpu").Buffer  # public, not imported by zarr
        memory = {name: buffer.from_bytes(raw) for name, raw in zip(ARRAY_DOCUMENTS[zarr_format],
                                                                    contents, strict=True)
                  if raw is not None}
        metadata = zarr.open_array(zarr.storage.MemoryStore(memory), mode="r",
                                   zarr_format=zarr_format).metadata
    with _METADATA_LOCK:
        if len(_METADATA) >= 256:  # the shapes and codecs of a session are few
            _METADATA.clear()
        _METADATA[key] = metadata
    return metadata


def marked_array_documents(
    zarr_format: int, options: dict[str, Any], mark: dict[str, Any]
) -> dict[str, bytes]:
    """The documents of a new array made with ``options`` whose attributes are ``mark``, in the
    order to write them (v2: the attributes before ``.zarray``, so the array is never seen
    unmarked)."""
    documents = array_documents(zarr_format, options)[1]
    if zarr_format == 3:
        return {"zarr.json": encode_document({**json.loads(documents["zarr.json"]), "attributes": mark})}
    return {".zattrs": encode_document(mark), ".zarray": documents[".zarray"]}


_ARRAY_DOCUMENTS: dict[str, tuple[Any, dict[str, bytes]]] = {}
_ARRAY_DOCUMENTS_LOCK = threading.Lock()


def array_documents(zarr_format: int, options: dict[str, Any]) -> tuple[Any, dict[str, bytes]]:
    """The metadata zarr gives a new array made with ``options``, and its documents' bytes
    (cached: both are immutable; zarr's config decides what options leave open)."""
    zarr = zarr_module()
    key = repr((zarr_format, sorted(options.items()), zarr.config.get("array")))
    with _ARRAY_DOCUMENTS_LOCK:
        cached = _ARRAY_DOCUMENTS.get(key)
    if cached is None:
        refuse_unstorable_dtype(options.get("dtype"), zarr_format)
        written: dict[str, Any] = {}
        try:
            array = zarr.create_array(zarr.storage.MemoryStore(written), **options, zarr_format=zarr_format)
        except TypeError as error:  # e.g. a structured dtype zarr cannot give a fill value
            raise UnsupportedDataError(
                f"Zarr (format {zarr_format}) cannot store an array of dtype {options.get('dtype')} with "
                f"these options ({error}); nothing was written. Save numeric data (a structured array "
                "field by field), or another format."
            ) from error
        documents = {name: bytes(value.to_bytes()) for name, value in written.items()
                     if name in ("zarr.json", ".zarray", ".zattrs")}
        cached = (array.metadata, documents)
        with _ARRAY_DOCUMENTS_LOCK:
            if len(_ARRAY_DOCUMENTS) >= 64:  # shapes and codecs of one session are few
                _ARRAY_DOCUMENTS.clear()
            _ARRAY_DOCUMENTS[key] = cached
    return cached


def refuse_unstorable_dtype(dtype: Any, zarr_format: int, path: object = None) -> None:
    """Refuse a dtype zarr has no data type for (ml_dtypes' bfloat16, float8 and int4, as JAX
    and torch hand them over) with our error: zarr's was a bare ValueError. ``path``: the node
    saved, to name in the message."""
    try:
        importlib.import_module("zarr.dtype").parse_data_type(dtype, zarr_format=zarr_format)
    except ValueError as error:
        where = f"Cannot save '{path}': " if path is not None else ""
        raise UnsupportedDataError(
            f"{where}Zarr (format {zarr_format}) has no data type for {dtype} (its types are NumPy's "
            "own; ml_dtypes' bfloat16, float8 and int4 types are not among them); nothing was "
            "written. Convert it first: a.astype(np.float32) keeps bfloat16, float8 and int4 "
            "values exactly."
        ) from error
