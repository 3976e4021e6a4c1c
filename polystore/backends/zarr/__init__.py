"""Zarr and OME-Zarr, on local disk or object storage (``s3://...``), through zarr-python 3.

Paths name a store and a node inside it: ``plate.zarr/B/03/0`` is node ``B/03/0`` of store
``plate.zarr``; a path with no ``.zarr`` component lives in ``<root>/<store_name>``. Groups
are directories; arrays are files, and so is an OME-Zarr multiscale image (a group holding
one array per resolution level): ``load`` gives its full resolution.

This module is the storage contract only; the work is done by its parts (docs/zarr.md has
the map): ``location`` (stores, nodes, URLs, key I/O), ``documents`` (metadata documents),
``image`` (the NGFF image writer), ``addresses`` (which plate plane a path names),
``plate`` (plates: fields, well and plate metadata), ``marks``, ``oserrors``, ``selection``
(a ``load`` selection outside the array), ``locks``, ``repair`` and ``config``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from polystore.arrays import as_plain_array, convert
from polystore.backends.zarr.addresses import FieldPlanes, FieldWriter, PlaneAddress, address_of
from polystore.backends.zarr.config import ZarrChunkStrategy, ZarrCompressor, ZarrConfig
from polystore.backends.zarr.documents import MetadataDocuments, damaged, refuse_unstorable_dtype
from polystore.backends.zarr.image import ImageSpec, ImageWriter, is_lazy
from polystore.backends.zarr.listing import PlateLayout
from polystore.backends.zarr.location import KeyStore, Location, Stores, locate, zarr_module
from polystore.backends.zarr.marks import incomplete_error, is_incomplete, is_marked_array
from polystore.backends.zarr.oserrors import os_errors
from polystore.backends.zarr.pipeline import configure as configure_pipeline
from polystore.backends.zarr.planes import plane_chunks
from polystore.backends.zarr.plate import PlateWriter
from polystore.backends.zarr.selection import checked_selection
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.batch import run_batch
from polystore.exceptions import (
    CastRangeError,
    CorruptDataError,
    DirectoryNotEmptyError,
    InvalidOptionError,
    InvalidPathError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    SelectionError,
    StorageExistsError,
    StorageFileNotFoundError,
    UnsupportedDataError,
)
from polystore.lazy import optional_import
from polystore.ome import ngff
from polystore.paths import join_given, matches, normalize_extensions

__all__ = [
    "CastRangeError", "SelectionError", "ZarrBackend", "ZarrChunkStrategy", "ZarrCompressor", "ZarrConfig",
]


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "chunks")


def _is_image(node: Any) -> bool:
    if _is_array(node):
        return False
    attributes = dict(node.attrs)
    return ngff.is_multiscale_image(attributes) or is_incomplete(attributes)


def _is_file(node: Any) -> bool:
    return _is_array(node) or _is_image(node)


class ZarrBackend(StorageBackend):
    """Chunked, compressed arrays and OME-Zarr images and plates; local or on object storage.

    Parameters
    ----------
    root
        The folder or URL paths are taken from (``None``: as given).
    config
        A :class:`ZarrConfig`: layout, chunking, compression, formats.
    storage_options
        Options of object stores (s3fs-style ``key``, ``secret``, ``endpoint_url``); by default
        the standard ``AWS_*`` environment variables are used.
    **config_overrides
        Fields of ``config`` to change (``ZarrBackend(compressor="gzip", pyramid_levels=3)``).
    """

    _backend_type = "zarr"
    parallel_io = True

    def __init__(
        self,
        root: PathLike | None = None,
        *,
        config: ZarrConfig | None = None,
        storage_options: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> None:
        self.root = os.fspath(root) if root is not None else None
        self.config = (config or ZarrConfig()).replace(**config_overrides)
        self.storage_options = dict(storage_options or {})
        self.codec_pipeline = configure_pipeline(self.config.codec_pipeline, self.config.threads)
        """The codec pipeline zarr uses in this process (zarrs' where it applies)."""
        self.stores = Stores(self.storage_options)
        # zarr stores through _open_store, which a subclass may wrap (tests record reads there)
        self.documents = MetadataDocuments(self.stores, self.config.zarr_format, self._open_store)
        self.images = ImageWriter(self.documents)
        self.plates = PlateWriter(self.stores, self.documents, self.images)
        """The plate writer: ``create_field``, ``write_planes``, ``commit`` (docs/zarr.md)."""

    # -- locating ------------------------------------------------------------------------
    def locate(self, path: PathLike) -> Location:
        """Split ``path`` into its store and the node inside it."""
        return locate(path, self.root, self.config.store_name)

    def _open_store(self, store: str, *, writable: bool) -> Any:
        return self.stores.zarr_store(store, writable=writable)

    def _keys(self, store: str) -> KeyStore:
        """Plain key I/O on ``store``, which whole planes are read through (see ``planes``)."""
        return self.stores.keys(store)

    def _open_node(self, location: Location) -> Any:
        """The zarr Array or Group at ``location``, or StorageFileNotFoundError."""
        if not location.remote and not os.path.isdir(os.path.join(location.store, location.node)):
            # every local node is a folder: one stat answers "missing" where zarr would take
            # two metadata probes, each a hop to its event-loop thread
            raise StorageFileNotFoundError(location.display, "zarr")
        store = self._open_store(location.store, writable=False)
        # The configured format first: a node in it costs one or two metadata reads, where
        # zarr_format=None reads both formats' keys (a request each on object storage).
        preferred = self.config.zarr_format
        error: Exception | None = None
        for zarr_format in (preferred, 5 - preferred):
            try:
                return zarr_module().open(store=store, path=location.node, mode="r", zarr_format=zarr_format)
            except (FileNotFoundError, KeyError) as missing:
                error = missing
            except ValueError as not_json:  # json.JSONDecodeError is a ValueError
                documents = "zarr.json" if zarr_format == 3 else ".zarray/.zgroup/.zattrs"
                raise damaged(location, documents, not_json) from not_json
        raise StorageFileNotFoundError(location.display, "zarr") from error

    def spelled_address(self, store: str, address: PlaneAddress, config: ZarrConfig | None = None,
                        layout: PlateLayout | None = None) -> PlaneAddress:
        """``address``, read from a plate file name, with its well as the plate at ``store``
        spells it: in a plate another tool wrote (ome-zarr-py's ``A/1``), ``A01_s1_w1.tif`` is
        in the well ``A/1``, not in a second well ``A/01`` beside it.

        ``address`` is what :func:`~polystore.backends.zarr.addresses.address_of` gives for the
        node; an NGFF node path (``A/1/0``) is returned as written. The plate's metadata are
        read (one document) unless its ``layout`` is given; ``config`` defaults to the
        backend's. A well the plate does not list keeps the plate model's spelling (``A/01``).
        """
        if address.components is None:  # an NGFF path ("A/1/0") names its node as written
            return address
        found = layout if layout is not None else self.plates.listing.layout(store, config or self.config)
        row, column = found.spelled(address.row, address.column)
        if (row, column) == (address.row, address.column):
            return address
        return dataclasses.replace(address, row=row, column=column)

    # -- reading -------------------------------------------------------------------------
    def _resolve_array(self, location: Location, level: int,
                       incomplete: bool = False) -> tuple[Any, tuple[int, ...]]:
        """The zarr array behind ``location`` and, for a plate plane name, its index (an image
        marked incomplete only if ``incomplete``, see :meth:`load`)."""
        address = address_of(location.node, self.config)
        plane_name = address is not None and address.field_path != location.node
        if address is not None and plane_name:
            # the plane's field first, where save puts it: looking for a node of the name
            # itself first costs a request per metadata document on object storage
            field = self.documents.image_level_array(Location(location.store, address.field_path), level,
                                                     incomplete=incomplete)
            if field is None and (spelled := self.spelled_address(location.store, address)) != address:
                address = spelled
                field = self.documents.image_level_array(Location(location.store, address.field_path), level,
                                                         incomplete=incomplete)
            inside = field is not None and all(
                i < s for i, s in zip(address.plane_index, field.shape, strict=False))
            if inside:
                return field, address.plane_index
        else:
            level_array = self.documents.image_level_array(location, level, incomplete=incomplete)
            if level_array is not None:
                return level_array, ()
        try:
            node = self._open_node(location)
        except FileNotFoundError:
            if address is None or not plane_name:
                raise
            field_location = Location(location.store, address.field_path)
            level_array = self.documents.image_level_array(field_location, level, incomplete=incomplete)
            if level_array is None:
                level_array = self._level_array(self._open_node(field_location), level, location,
                                                incomplete)
            if any(i >= s for i, s in zip(address.plane_index, level_array.shape, strict=False)):
                raise StorageFileNotFoundError(location.display, "zarr") from None
            return level_array, address.plane_index
        return self._level_array(node, level, location, incomplete), ()

    def _level_array(self, node: Any, level: int, location: Location, incomplete: bool) -> Any:
        if _is_array(node):
            attributes = dict(node.attrs)
            if is_marked_array(attributes) and not incomplete:
                raise incomplete_error(location, attributes, array=True)
            return node
        if _is_image(node):
            attributes = dict(node.attrs)
            if is_incomplete(attributes) and not incomplete:
                raise incomplete_error(location, attributes)
            paths = ngff.multiscale_paths(attributes)
            if not 0 <= level < len(paths):
                raise InvalidOptionError(
                    f"'{location.display}' has {len(paths)} levels; asked for level={level}. "
                    f"Pass a level from 0 to {len(paths) - 1} (0 is full resolution)."
                )
            return node[paths[level]]
        raise IsADirectoryStorageError(
            f"'{location.display}' is a group (a directory); load an array or image inside it."
        )

    def load(
        self,
        file_path: PathLike,
        *,
        level: int = 0,
        lazy: bool = False,
        selection: Any = None,
        framework: str | None = None,
        incomplete: bool = False,
        **kwargs: Any,
    ) -> Any:
        """The array at ``file_path`` (an OME-Zarr image's full resolution, or ``level``).

        ``lazy=True`` returns a dask array (reading nothing yet); ``selection`` (e.g.
        ``np.s_[0, 5]``) reads only the chunks it touches (one outside the array is refused
        with :class:`~polystore.exceptions.SelectionError`, an ``IndexError``). An image a conversion has not
        finished (or a writer stopped replacing) is refused with CorruptDataError saying what
        to run, unless ``incomplete=True``: then what is written so far is read and the rest
        reads as 0 (for a viewer watching a plate fill, never as data).
        """
        location = self.locate(file_path)
        array, plane = self._resolve_array(location, level, incomplete)
        if lazy:
            dask_array = optional_import("dask.array", extra="zarr", purpose="lazy=True")
            result = dask_array.from_zarr(array)
            if plane:
                result = result[plane]
            if selection is None:
                return result
            with checked_selection(file_path, result.shape, selection):
                return result[selection]
        index = plane + (tuple(selection) if isinstance(selection, tuple) else (selection,)) \
            if selection is not None else plane
        whole_planes = not location.remote and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in index)
        reader = plane_chunks(array, tuple(int(i) for i in index)) if whole_planes else None
        if reader is not None:
            data = reader.read(array, self._keys(location.store), tuple(int(i) for i in index),
                               location.display)
            return convert(data, framework)
        try:
            with checked_selection(file_path, tuple(array.shape)[len(plane):], selection) \
                    if selection is not None else contextlib.nullcontext():
                data = array[index] if index else array[...]
        except RuntimeError as error:  # what the codecs raise for a chunk they cannot decode
            raise CorruptDataError(
                f"'{file_path}': a chunk cannot be decoded ({error}): it is damaged, or another "
                "tool was stopped while writing it in place (polystore writes chunks whole). Run "
                "`polystore repair` on the store (the chunk is removed and reads as 0), or save "
                "the data again."
            ) from error
        return convert(np.asarray(data), framework)

    def _members(self, group: Any, recursive: bool) -> Iterator[tuple[str, Any]]:
        """(relative path, node) of files below ``group``: arrays and whole OME images."""
        for name, member in sorted(group.members(), key=lambda item: item[0]):
            if _is_file(member):
                yield name, member
            elif recursive:
                for sub_name, sub in self._members(member, recursive):
                    yield f"{name}/{sub_name}", sub

    def _open_group(self, location: Location, path: PathLike) -> Any:
        node = self._open_node(location)
        if _is_file(node):
            raise NotADirectoryStorageError(f"'{path}' is an array, not a group (directory).")
        return node

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        # docstring inherited
        group = self._open_group(self.locate(directory), directory)
        wanted = normalize_extensions(extensions)
        return sorted(
            join_given(directory, relative)
            for relative, _node in self._members(group, recursive)
            if matches(relative.rsplit("/", 1)[-1], pattern, wanted)
        )

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        return sorted(self._open_group(self.locate(path), path).keys())

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        try:
            self._resolve_array(self.locate(path), 0)
        except (IsADirectoryError, CorruptDataError):  # damaged or marked: there, load says why
            return True
        except FileNotFoundError:
            return False
        return True

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        try:
            self._resolve_array(self.locate(path), 0)
        except (FileNotFoundError, IsADirectoryError):
            return False
        except CorruptDataError:  # an image or array that load refuses, as list_files lists it
            return True
        return True

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        try:
            node = self._open_node(self.locate(path))
        except FileNotFoundError:
            return False
        return not _is_file(node)

    def node(self, path: PathLike) -> Any:
        """The zarr ``Array`` or ``Group`` at ``path``, for what polystore does not wrap.

        Opened through the backend's store cache and storage options (``s3://`` included);
        ``StorageFileNotFoundError`` when nothing is there.
        """
        return self._open_node(self.locate(path))

    def attributes(self, path: PathLike) -> dict[str, Any]:
        """The attributes of the group or array at ``path`` (its OME-NGFF metadata, for images)."""
        return dict(self.node(path).attrs)

    def stat(self, path: PathLike) -> FileStat:
        # docstring inherited
        try:  # a marked node (marks.py) is a file as listed: its size is what is stored now
            array, plane = self._resolve_array(self.locate(path), 0, incomplete=True)
        except IsADirectoryError:
            return FileStat(str(path), "directory")
        size = int(array.nbytes_stored()) if not plane else None
        return FileStat(str(path), "file", size)

    # -- writing -------------------------------------------------------------------------
    def _check_parent(self, location: Location, path: PathLike) -> None:
        """Refuse a node below an array or image, however far up (the nearest existing ancestor)."""
        parent = location.node.rpartition("/")[0]
        while parent:
            kind = self.documents.node_kind(Location(location.store, parent))
            if kind == "group":
                return
            if kind is not None:
                raise NotADirectoryStorageError(f"Cannot save '{path}': '{parent}' is an array, not a group.")
            parent = parent.rpartition("/")[0]

    def save(
        self,
        data: Any,
        file_path: PathLike,
        *,
        axes: str | None = None,
        chunks: tuple[int, ...] | None = None,
        levels: int | None = None,
        channel_names: Sequence[str] | None = None,
        colors: Sequence[str] | None = None,
        scale: Sequence[float] | None = None,
        units: dict[str, str] | None = None,
        labels: bool = False,
        translation: Sequence[float] | None = None,
        cast: bool = False,
        **config_overrides: Any,
    ) -> None:
        """Write an array (of any framework, or a dask array, written chunk by chunk).

        With OME-Zarr metadata on (the default), 2-D to 5-D arrays become multiscale images
        (``axes`` default to yx, zyx, czyx, tczyx; ``levels`` resolution levels;
        ``channel_names``/``colors`` for the viewer; ``scale`` per axis; ``translation`` per
        axis, where the first pixel's centre is, after ``scale``; ``labels=True`` downsamples by
        picking, not averaging). A plane of a plate (``A01_s1_w2.tif``) must
        have its field's dtype; ``cast=True`` casts it instead. Other keywords override the
        config for this call (``compressor="gzip"``, ``shards=(...)``).
        """
        config = self.config.replace(**config_overrides) if config_overrides else self.config
        if chunks is not None:
            config = config.replace(chunks=tuple(chunks))
        location = self.locate(file_path)
        array: Any = data if is_lazy(data) else as_plain_array(data, "Zarr")
        _refuse_empty(array, file_path)
        address = address_of(location.node, config)
        if not (cast and address is not None and address.plane_axes):  # a plane may be cast to its field's
            refuse_unstorable_dtype(np.dtype(array.dtype), config.zarr_format, file_path)
        if address is not None:
            address = self.spelled_address(location.store, address, config)
        if translation is not None and address is not None:  # a field is placed by its well
            raise InvalidOptionError(
                f"'{file_path}' is in a plate, whose fields take no translation: save the image "
                "outside the plate to place it, or leave translation out."
            )
        spec = ImageSpec(axes, levels, channel_names, colors, scale, units, labels, translation)
        self._check_parent(location, file_path)
        with os_errors(file_path, location.store):
            self._save(array, location, file_path, address, config, spec, cast)

    def _save(self, array: Any, location: Location, file_path: PathLike, address: PlaneAddress | None,
              config: ZarrConfig, spec: ImageSpec, cast: bool) -> None:
        """``save`` once its arguments are checked: a plate plane, a whole field, or a node."""
        if address is not None and address.plane_axes:
            plane = array.compute() if is_lazy(array) else array
            if np.ndim(plane) != 2:
                raise _not_a_plane(location, address, np.ndim(plane))
            self.plates.save_planes(location.store, address, {address.plane_index: np.asarray(plane)},
                                    config, spec, cast=cast)
            return
        if address is not None:  # "B/03/0", or "A01_s2.tif" without a plane index: a whole field
            field = Location(location.store, address.field_path)
            self._refuse_overwrite(field, file_path, config)
            self.plates.save_field(field, address, array, config, spec)
            return
        existing = self._refuse_overwrite(location, file_path, config)
        self.images.write(location, array, config, spec, existing=existing)

    def _refuse_overwrite(self, location: Location, path: PathLike, config: ZarrConfig) -> bool:
        """Whether a node is at ``location``; refused if it is a group, or if overwrite is off."""
        kind = self.documents.node_kind(location)
        if kind is None:
            return False
        if location.node and kind == "group":
            raise IsADirectoryStorageError(
                f"Cannot save to '{path}': it is a group (directory). Choose a name inside it."
            )
        if kind == "group" and (members := sorted(self._open_node(location).keys())):
            # the store's root: an empty group there (a new store) may become its image; one
            # holding nodes may not, or the save would clear them all (a plate's wells too)
            raise IsADirectoryStorageError(
                f"Cannot save to '{path}': the store's root is a group holding other nodes "
                f"({', '.join(members[:5])}{', ...' if len(members) > 5 else ''}), which saving an "
                "image there would remove. Save it to a name inside the store, or delete the store first."
            )
        if not config.overwrite:
            if kind == "image":  # a damaged image is not replaced silently either
                self.documents.image_level_array(location, 0)
            raise StorageExistsError(
                f"'{path}' exists and this backend is set to overwrite=False: delete it first "
                f"(delete_all('{path}')), or save with overwrite=True."
            )
        return True

    def save_batch(
        self,
        data_list: Sequence[Any],
        file_paths: Sequence[PathLike],
        *,
        progress: bool = False,
        max_workers: int | None = None,
        cast: bool = False,
        write_fields: FieldWriter | None = None,
        **kwargs: Any,
    ) -> None:
        """Save many items; planes of one plate field are assembled and written together.
        ``write_fields(fields, spec, cast, progress, written)`` writes the fields
        elsewhere instead of on threads here, adding each one written to ``written`` (store:
        [(row, column, field)]), which is committed here: ``polystore.distributed.save_batch``
        gives one for a dask cluster (``FileManager.save_batch(..., client=...)``), so this
        backend knows nothing of dask. Other items are saved here."""
        if "client" in kwargs:
            raise InvalidOptionError(
                "ZarrBackend.save_batch takes no client=: save through FileManager.save_batch(..., "
                "client=...) or polystore.distributed.save_batch(backend, ..., client=...)."
            )
        fields: dict[tuple[str, str], list[tuple[PlaneAddress, Any]]] = {}
        others: list[tuple[Any, PathLike]] = []
        layouts: dict[str, PlateLayout] = {}
        for data, path in zip(list(data_list), list(file_paths), strict=True):
            location = self.locate(path)
            address = address_of(location.node, self.config)
            if address is not None and address.plane_axes:
                if location.store not in layouts:
                    layouts[location.store] = self.plates.listing.layout(location.store, self.config)
                address = self.spelled_address(location.store, address, self.config, layouts[location.store])
                _refuse_empty(data, path)
                fields.setdefault((location.store, address.field_path), []).append((address, data))
            else:
                others.append((data, path))
        written: dict[str, list[tuple[str, str, int]]] = {}
        spec = ImageSpec(None, kwargs.get("levels"), kwargs.get("channel_names"), kwargs.get("colors"))

        def write_field(entry: FieldPlanes) -> None:
            (store, field_path), planes = entry
            self._check_parent(Location(store, field_path), field_path)
            with os_errors(f"{store}/{field_path}", store):
                self.plates.save_batch_field(store, planes, self.config, spec, cast=cast)
            first = planes[0][0]
            written.setdefault(store, []).append((first.row, first.column, first.field))

        try:
            if write_fields is not None:
                write_fields(list(fields.items()), spec, cast, progress, written)
            else:
                # fields in parallel: while one thread waits on I/O another compresses (the
                # codecs release the GIL); one thread per core, as compression is CPU-bound
                run_batch(
                    "save_batch", write_field, list(fields.items()), path_of=lambda entry: entry[0][1],
                    parallel=len(fields) > 1, progress=progress,
                    max_workers=max_workers if max_workers is not None else (os.cpu_count() or 1),
                )
        finally:
            # the wells' and plate's metadata once per store for the whole batch (one lock,
            # one read-modify-write); also after an error, for the fields written
            for store, addresses in written.items():
                self.plates.commit(store, addresses, self.config)
        if others:
            super().save_batch(
                [d for d, _ in others], [p for _, p in others],
                progress=progress, max_workers=max_workers, **kwargs,
            )

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        location = self.locate(directory)
        kind = self.documents.node_kind(location)
        if kind is None:
            self._check_parent(location, directory)
            self.documents.group(location, self.config.zarr_format)
        elif kind != "group":
            raise NotADirectoryStorageError(f"Cannot create group '{directory}': an array is in the way.")
        return os.fspath(directory)

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        location = self.locate(path)
        node = self._open_node(location)
        if not _is_file(node) and list(node.keys()):
            raise DirectoryNotEmptyError(
                f"Group '{path}' is not empty; use delete_all to remove it with its contents."
            )
        self._remove(location)

    def delete_all(self, path: PathLike) -> None:
        # docstring inherited
        location = self.locate(path)
        self._open_node(location)
        self._remove(location)

    def _remove(self, location: Location) -> None:
        self.stores.remove(location.store, location.node)

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy an array, image or group, keeping chunking, compression and metadata."""
        src, dst = self.locate(source), self.locate(destination)
        node = self._open_node(src)
        if src.store == dst.store and (not src.node or f"{dst.node}/".startswith(f"{src.node}/")):
            raise InvalidPathError(
                f"Cannot copy '{source}' onto or into itself ('{destination}'): choose a "
                "destination outside it, or copy what is inside it instead."
            )
        with contextlib.suppress(FileNotFoundError):
            existing = self._open_node(dst)
            if _is_file(existing):
                if not _is_file(node):
                    raise NotADirectoryStorageError(
                        f"Cannot copy group '{source}' onto array '{destination}'."
                    )
                if dst.node:  # a file replaces a file, whatever the layout of either
                    self._remove(dst)
        self._check_parent(dst, destination)
        self._copy_node(node, dst, destination)

    def _copy_node(self, node: Any, dst: Location, display: PathLike) -> None:
        zarr = zarr_module()
        store = self._open_store(dst.store, writable=True)
        if _is_array(node):
            with contextlib.suppress(FileNotFoundError):
                if self.is_dir(f"{display}") and dst.node:
                    raise IsADirectoryStorageError(f"Cannot copy an array onto group '{display}'.")
            # keeps chunks, shards, codecs, chunk key encoding and dimension names (NGFF 0.5 needs them)
            zarr.from_array(store, data=node, name=dst.node or None, overwrite=True)
            return
        group = zarr.open_group(store, path=dst.node, mode="a", zarr_format=node.metadata.zarr_format)
        if _is_image(node):
            for existing in list(group.keys()):
                del group[existing]
        group.update_attributes(dict(node.attrs))
        for name, member in node.members():
            self._copy_node(member, dst.child(name), f"{os.fspath(display).rstrip('/')}/{name}")

    def move(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Rename within one local store; copy and delete otherwise."""
        src, dst = self.locate(source), self.locate(destination)
        self._open_node(src)
        if dst.node.startswith(src.node + "/") and src.store == dst.store:
            raise InvalidPathError(
                f"Cannot move '{source}' into itself ('{destination}'): choose a destination "
                "outside it."
            )
        same_local_store = src.store == dst.store and not src.remote
        if same_local_store and src.node and dst.node and not self.exists(destination):
            self._check_parent(dst, destination)
            self.documents.ensure_parent_groups(dst, self.config.zarr_format)
            os.replace(os.path.join(src.store, src.node), os.path.join(dst.store, dst.node))
            return
        self.copy(source, destination)
        self._remove(src)


def _refuse_empty(array: Any, path: PathLike) -> None:
    """Refuse an array with an axis of length 0 before anything is written: its chunks, which
    have at least one element on every axis, would store it as an array of another shape."""
    shape = tuple(getattr(array, "shape", np.shape(array)))
    if 0 in shape:
        raise UnsupportedDataError(
            f"'{path}': an array of shape {shape} has no elements; the zarr backend stores arrays "
            "with at least one element on every axis. Skip the save, or save the empty result to "
            "a disk format (.npy keeps any shape)."
        )


def _not_a_plane(location: Location, address: PlaneAddress, ndim: int) -> Exception:
    return UnsupportedDataError(
        f"'{location.node}' names one plane of a plate (a 2-D image); got {ndim}-D data. Save "
        f"whole field images to '{address.field_path}' instead."
    )

