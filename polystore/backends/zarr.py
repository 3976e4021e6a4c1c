"""Zarr and OME-Zarr, on local disk or object storage (``s3://...``), through zarr-python 3.

Paths name a store and a node inside it: ``plate.zarr/B/03/0`` is node ``B/03/0`` of store
``plate.zarr``; a path with no ``.zarr`` component lives in ``<root>/<store_name>``. Groups
are directories; arrays are files, and so is an OME-Zarr multiscale image (a group holding
one array per resolution level): ``load`` gives its full resolution.

Screening plates follow OME-NGFF's HCS layout. Saving to ``plate.zarr/B/03/0`` writes a
field image and updates the well's and the plate's metadata; saving ``plate.zarr/A01_s1_w2.tif``
(a pipeline file name) puts that plane at channel 1 of field 0 of well A/01, growing the
field image as channels arrive. Metadata updates are serialised by a file lock on local
stores, so several processes can fill one plate; object stores have no locks, so a plate on
``s3://`` is filled by one process (its threads are serialised).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from polystore.arrays import as_plain_array, convert, framework_of, to_numpy
from polystore.atomic import LOCK_SUFFIX, LOCKS_FOLDER_SUFFIX, file_lock
from polystore.backends.object_lock import ObjectStoreLock
from polystore.backends.zarr_config import ZarrChunkStrategy, ZarrCompressor, ZarrConfig
from polystore.backends.zarr_documents import (
    Location,
    MetadataDocuments,
    damaged,
    join_key,
    sync,
    zarr_module,
)
from polystore.base import FileStat, PathLike, StorageBackend
from polystore.batch import run_batch
from polystore.exceptions import (
    DirectoryNotEmptyError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    StorageFileNotFoundError,
    UnsupportedDataError,
)
from polystore.lazy import optional_import
from polystore.ome import ngff
from polystore.ome.plate import PlaneAddress, PlateLayout, parse_plate_path
from polystore.paths import join_given, matches, normalize_extensions

__all__ = ["ZarrBackend", "ZarrChunkStrategy", "ZarrCompressor", "ZarrConfig"]


def _is_lazy(data: Any) -> bool:
    return type(data).__module__.partition(".")[0] == "dask"


class ZarrBackend(StorageBackend):
    """Chunked, compressed arrays and OME-Zarr images and plates; local or on object storage.

    ``root``: folder or URL the paths are taken from (``None``: as given). ``config`` or
    keyword overrides (``ZarrBackend(compressor="gzip", pyramid_levels=3)``) set layout and
    compression. ``storage_options`` go to fsspec for URLs (endpoint, credentials; by
    default the standard ``AWS_*`` environment variables are used).
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
        self._stores: dict[tuple[str, bool], Any] = {}
        self._lock = threading.RLock()
        self._known_groups: set[tuple[str, str]] = set()
        """(store, node) seen to be plain groups; forgotten when this backend removes anything."""
        self._documents = MetadataDocuments(self._open_store, self.config.zarr_format)

    # -- locating ------------------------------------------------------------------------
    def locate(self, path: PathLike) -> Location:
        """Split ``path`` into its store and the node inside it."""
        text = os.fspath(path).replace("\\", "/")
        if self.root is not None and "://" not in text and not os.path.isabs(text):
            text = f"{self.root.rstrip('/')}/{text}" if text not in ("", ".") else self.root
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        parts = [p for p in rest.split("/") if p not in ("", ".")]
        leading = "/" if rest.startswith("/") else ""
        prefix = f"{scheme}://" if sep else leading
        for index, part in enumerate(parts):
            if part.lower().endswith(".zarr"):
                node_parts = parts[index + 1 :]
                if ".." in node_parts:
                    raise ValueError(f"'{path}': '..' cannot climb out of a zarr store.")
                return Location(prefix + "/".join(parts[: index + 1]), "/".join(node_parts))
        base = self.root if self.root is not None else "."
        store = f"{base.rstrip('/')}/{self.config.store_name}"
        node_parts = [p for p in os.fspath(path).replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in node_parts:
            raise ValueError(f"'{path}': '..' cannot climb out of a zarr store.")
        return Location(store, "/".join(node_parts))

    def _open_store(self, store: str, *, writable: bool) -> Any:
        key = (store, writable)
        with self._lock:
            cached = self._stores.get(key)
            if cached is not None:
                return cached
            storage = zarr_module().storage
            if "://" in store:
                opened = storage.FsspecStore.from_url(
                    store, storage_options=self._fsspec_options(store), read_only=not writable
                )
            else:
                opened = storage.LocalStore(store, read_only=not writable)
            self._stores[key] = opened
            return opened

    def _fsspec_options(self, url: str) -> dict[str, Any]:
        """fsspec options for ``url``: the user's ``storage_options`` over these defaults.

        - ``asynchronous``: zarr's FsspecStore drives the filesystem from its event loop.
        - ``use_listings_cache=False``: an object store is shared with other processes and
          machines; a cached listing would hide their writes and deletes (stale ``exists``,
          ``list_dir``), and nothing would ever invalidate it. fsspec's instance cache stays
          on (a dropped async instance leaves its HTTP session unclosed): backends with equal
          options share connections and credentials, but no data.
        - s3 ``max_concurrency=1``: s3fs otherwise asks for each object's size (a HEAD, and a
          listing when the object is missing) before every whole-object read, tripling the
          requests for zarr's metadata probes and small chunks; ranged reads are unaffected.
        """
        options = dict(self.storage_options)
        s3 = url.split("://", 1)[0] in ("s3", "s3a")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if s3 and endpoint and "endpoint_url" not in options:
            options["endpoint_url"] = endpoint  # older s3fs do not read this variable
        options.setdefault("asynchronous", True)
        options.setdefault("use_listings_cache", False)
        if s3:
            options.setdefault("max_concurrency", 1)
        return options

    def _store_exists(self, store: str) -> bool:
        if "://" in store:  # any object under the prefix (s3 has no directories)
            return bool(self._filesystem(store).exists(store.rstrip("/")))
        return os.path.isdir(store)

    def _filesystem(self, url: str) -> Any:
        fsspec = optional_import("fsspec", extra="s3", purpose="Zarr stores on object storage")
        options = {k: v for k, v in self._fsspec_options(url).items() if k != "asynchronous"}
        return fsspec.filesystem(url.split("://", 1)[0], **options)

    def _open_node(self, location: Location) -> Any:
        """The zarr Array or Group at ``location``, or StorageFileNotFoundError."""
        # a missing remote store reads as missing keys: no separate (two-request) existence check
        if not location.remote and not os.path.isdir(os.path.join(location.store, location.node)):
            # every local node, array or group, v2 or v3, is a folder: one stat answers "missing"
            # where zarr would take two metadata probes, each a hop to its event-loop thread
            raise StorageFileNotFoundError(location.display, "zarr")
        store = self._open_store(location.store, writable=False)
        # The configured format first: a node in it costs one or two metadata reads, where
        # zarr_format=None reads both formats' keys (seven objects for a group, each a
        # request on object storage). The other format is then tried for foreign stores.
        preferred = self.config.zarr_format
        error: Exception | None = None
        for zarr_format in (preferred, 5 - preferred):
            try:
                return zarr_module().open(store=store, path=location.node, mode="r", zarr_format=zarr_format)
            except (FileNotFoundError, KeyError) as missing:
                error = missing
            except json.JSONDecodeError as not_json:
                documents = "zarr.json" if zarr_format == 3 else ".zarray/.zgroup/.zattrs"
                raise damaged(location, documents, not_json) from not_json
        raise StorageFileNotFoundError(location.display, "zarr") from error

    def _is_array(self, node: Any) -> bool:
        return hasattr(node, "shape") and hasattr(node, "chunks")

    def _is_image(self, node: Any) -> bool:
        return not self._is_array(node) and ngff.is_multiscale_image(dict(node.attrs))

    # -- reading -------------------------------------------------------------------------
    def _resolve_array(self, location: Location, level: int) -> tuple[Any, tuple[int, ...]]:
        """The zarr array behind ``location`` and, for a plate plane name, its index."""
        address = self._plane_address(location)
        plane_name = address is not None and address.field_path != location.node
        if not plane_name:
            level_array = self._documents.image_level_array(location, level)
            if level_array is not None:
                return level_array, ()
        try:
            node = self._open_node(location)
        except FileNotFoundError:
            if address is None or not plane_name:
                raise
            field_location = Location(location.store, address.field_path)
            level_array = self._documents.image_level_array(field_location, level)
            if level_array is None:
                level_array = self._level_array(self._open_node(field_location), level, location)
            return level_array, address.plane_index
        return self._level_array(node, level, location), ()

    def _level_array(self, node: Any, level: int, location: Location) -> Any:
        if self._is_array(node):
            return node
        if self._is_image(node):
            paths = ngff.multiscale_paths(dict(node.attrs))
            if not 0 <= level < len(paths):
                raise ValueError(f"'{location.display}' has {len(paths)} levels; asked for {level}.")
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
        **kwargs: Any,
    ) -> Any:
        """The array at ``file_path`` (an OME-Zarr image's full resolution, or ``level``).

        ``lazy=True`` returns a dask array (reading nothing yet); ``selection`` (e.g.
        ``np.s_[0, 5]``) reads only the chunks it touches.
        """
        location = self.locate(file_path)
        array, plane = self._resolve_array(location, level)
        if lazy:
            dask_array = optional_import("dask.array", extra="zarr", purpose="lazy=True")
            result = dask_array.from_zarr(array)
            if plane:
                result = result[plane]
            return result[selection] if selection is not None else result
        index = plane + (tuple(selection) if isinstance(selection, tuple) else (selection,)) \
            if selection is not None else plane
        data = array[index] if index else array[...]
        return convert(np.asarray(data), framework)

    def _members(self, group: Any, recursive: bool) -> Iterator[tuple[str, Any]]:
        """(relative path, node) of files below ``group``: arrays and whole OME images."""
        for name, member in sorted(group.members(), key=lambda item: item[0]):
            if self._is_array(member) or self._is_image(member):
                yield name, member
            elif recursive:
                for sub_name, sub in self._members(member, recursive):
                    yield f"{name}/{sub_name}", sub

    def _open_group(self, location: Location, path: PathLike) -> Any:
        node = self._open_node(location)
        if self._is_array(node) or self._is_image(node):
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
        group = self._open_group(self.locate(path), path)
        return sorted(group.keys())

    def exists(self, path: PathLike) -> bool:
        try:
            self._resolve_array(self.locate(path), 0)
        except IsADirectoryError:
            return True
        except FileNotFoundError:
            return False
        return True

    def is_file(self, path: PathLike) -> bool:
        try:
            self._resolve_array(self.locate(path), 0)
        except (FileNotFoundError, IsADirectoryError):
            return False
        return True

    def is_dir(self, path: PathLike) -> bool:
        try:
            node = self._open_node(self.locate(path))
        except FileNotFoundError:
            return False
        return not (self._is_array(node) or self._is_image(node))

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
        location = self.locate(path)
        try:
            array, plane = self._resolve_array(location, 0)
        except IsADirectoryError:
            return FileStat(str(path), "directory")
        size = int(array.nbytes_stored()) if not plane else None
        return FileStat(str(path), "file", size)

    # -- writing -------------------------------------------------------------------------
    def _plane_address(self, location: Location) -> PlaneAddress | None:
        if not self.config.write_plate_metadata or not location.node:
            return None
        return parse_plate_path(location.node, self.config.name_pattern)

    def _lock_for(self, store: str) -> contextlib.AbstractContextManager[Any]:
        """Serialise metadata read-modify-write across processes (and machines, for URLs).

        A file lock beside a local store; beside a store on object storage, a lock object
        created with a conditional write (:class:`ObjectStoreLock`).
        """
        if "://" in store:
            return ObjectStoreLock(self._filesystem(store), _beside(store, f".{{}}{LOCK_SUFFIX}"))
        return file_lock(store)

    def _field_lock(self, store: str, field_path: str) -> contextlib.AbstractContextManager[Any]:
        """Serialise writers of one field image (creating, growing, filling it).

        One lock per field, not per store, so processes writing different wells run in
        parallel. The locks live in one hidden folder beside the store, never inside it.
        Always taken before the store's metadata lock, never while holding it.
        """
        lock_name = field_path.replace("/", "_")
        if "://" in store:
            key = _beside(store, f".{{}}{LOCKS_FOLDER_SUFFIX}/{lock_name}{LOCK_SUFFIX}")
            return ObjectStoreLock(self._filesystem(store), key)
        locks = Path(store).with_name(f".{Path(store).name}{LOCKS_FOLDER_SUFFIX}")
        return file_lock(locks / lock_name)

    def _check_parent(self, location: Location, path: PathLike) -> None:
        """Refuse a node below an array or image, however far up (the nearest existing ancestor)."""
        parent = location.node.rsplit("/", 1)[0] if "/" in location.node else ""
        if not parent or not self._store_exists(location.store):
            return
        while parent:
            if (location.store, parent) in self._known_groups:
                return  # seen to be a plain group (a plate's well, most often) by an earlier save
            kind = self._documents.node_kind(Location(location.store, parent))
            if kind is None:
                parent = parent.rpartition("/")[0]
                continue
            if kind != "group":
                raise NotADirectoryStorageError(f"Cannot save '{path}': '{parent}' is an array, not a group.")
            self._known_groups.add((location.store, parent))
            return

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
        **config_overrides: Any,
    ) -> None:
        """Write an array (of any framework, or a dask array, written chunk by chunk).

        With OME-Zarr metadata on (the default), 2-D to 5-D arrays become multiscale images
        (``axes`` default to yx, zyx, czyx, tczyx; ``levels`` resolution levels;
        ``channel_names``/``colors`` for the viewer; ``scale`` per axis; ``labels=True``
        downsamples by picking, not averaging). Other keywords override the config for
        this call (``compressor="gzip"``, ``shards=(...)``).
        """
        config = self.config.replace(**config_overrides) if config_overrides else self.config
        if chunks is not None:
            config = config.replace(chunks=tuple(chunks))
        location = self.locate(file_path)
        array = data if _is_lazy(data) else as_plain_array(data, "Zarr")
        address = self._plane_address(location)
        image = _ImageSpec(axes, levels, channel_names, colors, scale, units, labels)
        self._check_parent(location, file_path)
        if address is not None and address.plane_axes:
            self._write_plane(location, address, array, config, image)
        else:
            if address is None:
                self._write_node(location, array, config, image, file_path)
                return
            # "B/03/0", or "A01_s2.tif" without a plane index: the whole field image
            location = Location(location.store, address.field_path)
            with self._field_lock(location.store, address.field_path):
                self._write_node(location, array, config, image, file_path)
            self._record_fields(location.store, [address], config)

    def _write_node(
        self, location: Location, array: Any, config: ZarrConfig, image: _ImageSpec, path: PathLike,
        *, absent: bool = False,
    ) -> None:
        """Write ``array`` (an image, or a bare array) at ``location``, replacing what is there.

        ``absent``: the caller has just found nothing at ``location``, so there is no need to look.
        """
        zarr = zarr_module()
        store = self._open_store(location.store, writable=True)
        if not config.overwrite and not absent and self.exists(path):
            raise FileExistsError(f"'{path}' exists and this backend is set to overwrite=False.")
        existing = None
        if not absent:
            with contextlib.suppress(FileNotFoundError):
                existing = self._open_node(location)
        is_file = existing is not None and (self._is_array(existing) or self._is_image(existing))
        if existing is not None and location.node and not is_file:
            raise IsADirectoryStorageError(
                f"Cannot save to '{path}': it is a group (directory). Choose a name inside it."
            )
        given_axes = image.axes
        if given_axes is None and image.channel_names and array.ndim in (3, 4):
            given_axes = "c" + "zyx"[4 - array.ndim :]  # naming channels says the first axis is c
        axes = ngff.infer_axes(array.ndim, given_axes) if config.ome_zarr_metadata else None
        if axes is None:
            target = zarr.create_array(
                store, name=location.node or None, **self._array_kwargs(array, config), overwrite=True
            )
            _write_into(target, array)
            return
        level_count = max(1, image.levels if image.levels is not None else config.pyramid_levels)
        base = list(image.scale) if image.scale is not None else [1.0] * len(axes)
        scales = [
            [s * (2**level if a in "yx" else 1) for a, s in zip(axes, base, strict=True)]
            for level in range(level_count)
        ]
        channels = None
        if "c" in axes and not image.labels:
            windows = ngff.data_windows(array, axes.index("c")) if isinstance(array, np.ndarray) else None
            channels = ngff.channel_infos(
                array.shape[axes.index("c")], np.dtype(array.dtype), image.channel_names, image.colors,
                windows,
            )
        attrs = ngff.image_attributes(
            axes, scales, version=config.ngff_version, units=image.units,
            name=location.name or None, channels=channels, dtype=np.dtype(array.dtype),
        )
        if existing is None:
            group = self._documents.create_group(location, config.zarr_format, attrs)
        else:
            group = zarr.open_group(store, path=location.node, mode="a", zarr_format=config.zarr_format)
            for name in list(group.keys()):  # replacing an image: its old levels go first
                del group[name]
        source: Any = array
        for level in range(level_count):
            if level:
                source = _downsample(source, axes, image.labels)
            options = self._array_kwargs(source, config)
            options.pop("zarr_format")  # a group's arrays take the group's format
            if config.zarr_format == 3:  # NGFF 0.5 requires arrays to name their axes
                options["dimension_names"] = tuple(axes)
            if existing is None:  # a group just made: nothing can be in the way
                target = self._documents.create_array(
                    Location(location.store, join_key(location.node, str(level))), options,
                    config.zarr_format,
                )
            else:
                target = group.create_array(str(level), **options, overwrite=True)
            _write_into(target, source)
            source = target  # next level reads back the chunks just written, not the input
        if existing is not None:
            group.attrs.put(attrs)  # after the new levels: the image is whole when it says so

    def _array_kwargs(self, array: Any, config: ZarrConfig) -> dict[str, Any]:
        dtype = np.dtype(array.dtype)
        shape = tuple(int(s) for s in array.shape)
        kwargs: dict[str, Any] = {
            "shape": shape,
            "dtype": dtype,
            "chunks": config.chunk_shape(shape),
            "compressors": config.compressors(dtype),
            "zarr_format": config.zarr_format,
        }
        if config.shards is not None:
            if config.zarr_format != 3:
                raise ValueError("Sharding needs Zarr v3 (zarr_format=3).")
            kwargs["shards"] = config.shards
        if config.zarr_format == 2:  # nested chunk keys ("0/0"), as OME-NGFF 0.4 requires
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        return kwargs

    def _write_plane(
        self, location: Location, address: PlaneAddress, plane: Any, config: ZarrConfig, image: _ImageSpec
    ) -> None:
        """Put one plane into its field image, creating or growing the image as needed."""
        plane = np.asarray(plane) if not _is_lazy(plane) else plane.compute()
        if plane.ndim != 2:
            raise UnsupportedDataError(
                f"'{location.node}' names one plane of a plate (a 2-D image); got {plane.ndim}-D "
                f"data. Save whole field images to '{address.field_path}' instead."
            )
        with self._field_lock(location.store, address.field_path):
            self._grow_and_write(location.store, address, plane, config, image)
        self._record_fields(location.store, [address], config)

    def _grow_and_write(
        self, store_path: str, address: PlaneAddress, plane: np.ndarray, config: ZarrConfig, image: _ImageSpec
    ) -> None:
        zarr = zarr_module()
        store = self._open_store(store_path, writable=True)
        axes = address.plane_axes + "yx"
        needed = tuple(i + 1 for i in address.plane_index) + plane.shape
        field_location = Location(store_path, address.field_path)
        try:
            group = zarr.open_group(store, path=address.field_path, mode="r+")
            existing_axes = ngff.multiscale_axes(dict(group.attrs))
        except FileNotFoundError:
            group, existing_axes = None, ""
        if group is not None and existing_axes != axes:
            raise UnsupportedDataError(
                f"Field {address.field_path} holds a '{existing_axes}' image; this name addresses a "
                f"plane of a '{axes}' image. Use one naming style per field (e.g. A01_s1_w1.tif, "
                f"A01_s1_w2.tif), or delete the field first (delete_all('{address.field_path}'))."
            )
        if group is None:
            empty = np.zeros(needed, dtype=plane.dtype)
            # the plane's axes, not the default ones of an array of that many dimensions
            names = image.channel_names or _channel_labels(needed, axes)
            spec = replace(image, axes=axes, channel_names=names)
            self._write_node(field_location, empty, config.replace(overwrite=True), spec, address.field_path)
            group = zarr.open_group(store, path=address.field_path, mode="r+")
        paths = ngff.multiscale_paths(dict(group.attrs))
        level_arrays = [group[p] for p in paths]
        current = level_arrays[0].shape
        grown = tuple(max(a, b) for a, b in zip(current, needed, strict=True))
        if grown != current:
            for level, level_array in enumerate(level_arrays):
                level_array.resize(grown[:-2] + _level_shape(grown[-2:], level))
            self._update_channels(group, grown, axes, config, plane.dtype)
        source = plane
        for level, level_array in enumerate(level_arrays):
            if level:
                source = np.asarray(_downsample(source, "yx", image.labels))
            level_array[address.plane_index] = source

    def _update_channels(
        self, group: Any, shape: tuple[int, ...], axes: str, config: ZarrConfig, dtype: np.dtype[Any]
    ) -> None:
        attrs = dict(group.attrs)
        paths = ngff.multiscale_paths(attrs)
        section = ngff.ngff_section(attrs)
        scales = [
            d["coordinateTransformations"][0]["scale"] for d in section["multiscales"][0]["datasets"]
        ]
        channels = None
        if "c" in axes:
            count = shape[axes.index("c")]
            known = (section.get("omero") or attrs.get("omero") or {}).get("channels", [])
            labels = [c.get("label") for c in known] + [f"w{i + 1}" for i in range(len(known), count)]
            colors = [c.get("color") for c in known if c.get("color")]
            windows = [(c["window"]["start"], c["window"]["end"]) for c in known if c.get("window")]
            channels = ngff.channel_infos(count, np.dtype(dtype), labels, colors or None, windows or None)
        new = ngff.image_attributes(
            axes, scales[: len(paths)], version=config.ngff_version, channels=channels,
            dtype=np.dtype(dtype), name=section["multiscales"][0].get("name"),
        )
        group.update_attributes(new)  # one metadata write (attrs.update writes per key)

    def _record_fields(
        self, store_path: str, addresses: Sequence[PlaneAddress], config: ZarrConfig
    ) -> None:
        """Add fields to their wells' and the plate's metadata (read-modify-write, locked).

        The groups' attribute documents are read and written as documents: opening each
        group through zarr and updating its attributes costs 4 ms a call here (a lone
        ``save`` of a field pays it every time), the documents 1 ms. Only a document whose
        content changes is written.
        """
        if not config.ome_zarr_metadata:
            return
        with self._lock_for(store_path):
            plate = self._documents.group(Location(store_path, ""), config.zarr_format)
            plate_attrs = ngff.ngff_section(plate.attributes).get("plate")
            layout = PlateLayout.from_attributes(plate_attrs)
            changed = False
            fields_by_well: dict[str, set[str]] = {}
            for address in addresses:
                changed |= layout.add(address.row, address.column, address.field)
                fields_by_well.setdefault(address.well_path, set()).add(str(address.field))
            for well_path, fields in fields_by_well.items():
                well = self._documents.group(Location(store_path, well_path), config.zarr_format)
                well_meta = ngff.ngff_section(well.attributes).get("well") or {}
                known = [image["path"] for image in well_meta.get("images", [])]
                if set(fields) - set(known):
                    merged = sorted(set(known) | fields, key=int)
                    well.update(ngff.well_attributes(merged, version=config.ngff_version))
            if changed or not plate_attrs:
                plate.update(
                    ngff.plate_attributes(
                        layout.rows, layout.columns, layout.wells,
                        version=config.ngff_version, field_count=layout.field_count,
                        name=Path(store_path.rstrip("/")).name.removesuffix(".zarr"),
                    )
                )

    def save_batch(
        self,
        data_list: Sequence[Any],
        file_paths: Sequence[PathLike],
        *,
        progress: bool = False,
        max_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Save many items; planes of one plate field are assembled and written together."""
        items = list(zip(list(data_list), list(file_paths), strict=True))
        fields: dict[tuple[str, str], list[tuple[PlaneAddress, Any]]] = {}
        others: list[tuple[Any, PathLike]] = []
        for data, path in items:
            location = self.locate(path)
            address = self._plane_address(location)
            if address is not None and address.plane_axes:
                # planes of one field go together; whether the field exists is looked at once,
                # under its lock (write_field): new ones are written whole, others grown
                fields.setdefault((location.store, address.field_path), []).append((address, data))
                continue
            others.append((data, path))
        written: dict[str, list[PlaneAddress]] = {}
        checked_parents: set[tuple[str, str]] = set()
        bookkeeping = threading.Lock()

        def write_field(entry: tuple[tuple[str, str], list[tuple[PlaneAddress, Any]]]) -> None:
            (store_path, field_path), planes = entry
            stack = _assemble(planes)
            first = planes[0][0]
            # one check per well: this batch only adds groups above the fields it writes
            parent = (store_path, field_path.rpartition("/")[0])
            with bookkeeping:
                check = parent not in checked_parents
                checked_parents.add(parent)
            if check:
                self._check_parent(Location(store_path, field_path), field_path)
            axes = first.plane_axes + "yx"
            spec = _ImageSpec(axes, kwargs.get("levels"),
                              kwargs.get("channel_names") or _channel_labels(stack.shape, axes),
                              kwargs.get("colors"), None, None, False)
            with self._field_lock(store_path, field_path):
                if not self._field_exists(Location(store_path, field_path), first, self.config.zarr_format):
                    self._write_node(
                        Location(store_path, field_path), stack, self.config, spec,
                        field_path, absent=True,  # looked just now, under the field's lock
                    )
                else:  # another process created it meanwhile: add our planes to it
                    for address, plane in planes:
                        self._grow_and_write(store_path, address, np.asarray(plane), self.config, spec)
            with bookkeeping:
                written.setdefault(store_path, []).append(PlaneAddress(first.row, first.column, first.field))

        try:
            # fields in parallel: while one thread waits on metadata I/O another compresses
            # (the codecs release the GIL); one thread per core, as compression is CPU-bound
            run_batch(
                "save_batch", write_field, list(fields.items()), path_of=lambda entry: entry[0][1],
                parallel=len(fields) > 1, progress=progress,
                max_workers=max_workers if max_workers is not None else (os.cpu_count() or 1),
            )
        finally:
            # the wells' and plate's metadata once per store for the whole batch, not once per
            # field (one lock, one read-modify-write); also after an error, for the fields written
            for store_path, addresses in written.items():
                self._record_fields(store_path, addresses, self.config)
        if others:
            super().save_batch(
                [d for d, _ in others], [p for _, p in others],
                progress=progress, max_workers=max_workers, **kwargs,
            )

    def _field_exists(self, location: Location, address: PlaneAddress, zarr_format: int) -> bool:
        # whether the node's metadata document is there, without opening it: the document of
        # the format this backend writes (a store holds one format)
        store = self._open_store(location.store, writable=True)
        names = ("zarr.json",) if zarr_format == 3 else (".zgroup", ".zarray")
        return any(sync(store.exists(f"{address.field_path}/{name}")) for name in names)

    def ensure_directory(self, directory: PathLike) -> str:
        # docstring inherited
        location = self.locate(directory)
        store = self._open_store(location.store, writable=True)
        try:
            node = self._open_node(location)
        except FileNotFoundError:
            self._check_parent(location, directory)
            zarr_module().open_group(store, path=location.node, mode="a", zarr_format=self.config.zarr_format)
            return os.fspath(directory)
        if self._is_array(node) or self._is_image(node):
            raise NotADirectoryStorageError(f"Cannot create group '{directory}': an array is in the way.")
        return os.fspath(directory)

    def delete(self, path: PathLike) -> None:
        # docstring inherited
        location = self.locate(path)
        node = self._open_node(location)
        if not (self._is_array(node) or self._is_image(node)) and list(node.keys()):
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
        self._known_groups.clear()  # what was a group may be gone, or come back as an array
        if not location.node:
            if location.remote:
                self._filesystem(location.store).rm(location.store, recursive=True)
            else:
                shutil.rmtree(location.store)
            return
        parent, _, name = location.node.rpartition("/")
        store = self._open_store(location.store, writable=True)
        group = zarr_module().open_group(store, path=parent, mode="r+")
        del group[name]

    def copy(self, source: PathLike, destination: PathLike, **kwargs: Any) -> None:
        """Copy an array, image or group, keeping chunking, compression and metadata."""
        src, dst = self.locate(source), self.locate(destination)
        node = self._open_node(src)
        if src.store == dst.store and (not src.node or f"{dst.node}/".startswith(f"{src.node}/")):
            raise ValueError(f"Cannot copy '{source}' onto or into itself ('{destination}').")
        with contextlib.suppress(FileNotFoundError):
            existing = self._open_node(dst)
            if self._is_array(existing) or self._is_image(existing):
                if not (self._is_array(node) or self._is_image(node)):
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
        if self._is_array(node):
            with contextlib.suppress(FileNotFoundError):
                if self.is_dir(f"{display}") and dst.node:
                    raise IsADirectoryStorageError(f"Cannot copy an array onto group '{display}'.")
            # keeps chunks, shards, codecs, chunk key encoding and dimension names (NGFF 0.5 needs them)
            zarr.from_array(store, data=node, name=dst.node or None, overwrite=True)
            return
        group = zarr.open_group(store, path=dst.node, mode="a", zarr_format=node.metadata.zarr_format)
        if self._is_image(node):
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
            raise ValueError(f"Cannot move '{source}' into itself ('{destination}').")
        same_local_store = src.store == dst.store and not src.remote
        if same_local_store and src.node and dst.node and not self.exists(destination):
            self._check_parent(dst, destination)
            self._documents.ensure_parent_groups(dst, self.config.zarr_format)
            self._known_groups.clear()  # the source's groups are gone from where they were
            os.replace(os.path.join(src.store, src.node), os.path.join(dst.store, dst.node))
            return
        self.copy(source, destination)
        self._remove(src)


@dataclass(frozen=True)
class _ImageSpec:
    axes: str | None
    levels: int | None
    channel_names: Sequence[str] | None
    colors: Sequence[str] | None
    scale: Sequence[float] | None
    units: dict[str, str] | None
    labels: bool


def _beside(store_url: str, name_template: str) -> str:
    """A key next to ``store_url`` (``s3://b/p.zarr``), named from the store's name."""
    parent, _, name = store_url.rstrip("/").rpartition("/")
    return f"{parent}/{name_template.format(name)}"


def _channel_labels(shape: tuple[int, ...], axes: str) -> list[str]:
    """Labels of a plate field's channels: w1, w2, ... as pipeline file names number them."""
    return [f"w{i + 1}" for i in range(shape[axes.index("c")])] if "c" in axes else []


def _level_shape(yx: tuple[int, ...], level: int) -> tuple[int, ...]:
    return tuple(max(1, s // (2**level)) for s in yx)


def _downsample(source: Any, axes: str, labels: bool) -> Any:
    """Halve y and x: block mean for intensities, every other pixel for labels (dask)."""
    dask_array = optional_import("dask.array", extra="zarr", purpose="Writing pyramids")
    lazy = dask_array.from_zarr(source) if hasattr(source, "chunks") and not _is_lazy(source) \
        and not isinstance(source, np.ndarray) else dask_array.asarray(source)
    factors = {i: 2 for i, a in enumerate(axes) if a in "yx" and lazy.shape[i] >= 2}
    if not factors:
        return lazy
    if labels:
        index = tuple(slice(None, None, 2) if i in factors else slice(None) for i in range(lazy.ndim))
        return lazy[index]
    reduced = dask_array.coarsen(np.mean, lazy, factors, trim_excess=True)
    if lazy.dtype.kind in "iu":  # a block mean of integers rounds, it does not truncate
        reduced = dask_array.round(reduced)
    return reduced.astype(lazy.dtype)


def _write_into(target: Any, source: Any) -> None:
    """Write ``source`` into the zarr array ``target``: NumPy at once, dask chunk by chunk."""
    if _is_lazy(source) or (hasattr(source, "chunks") and not isinstance(source, np.ndarray)):
        dask_array = optional_import("dask.array", extra="zarr", purpose="Writing lazy arrays")
        lazy = source if _is_lazy(source) else dask_array.from_zarr(source)
        dask_array.store(lazy.rechunk(target.chunks), target, lock=False)
    elif source.size:
        target[...] = source


def _assemble(planes: list[tuple[PlaneAddress, Any]]) -> np.ndarray:
    """Stack the planes of one field into a (t, c, z, y, x)-subset array, by their indices."""
    first_plane = np.asarray(planes[0][1])
    if first_plane.ndim != 2:
        raise UnsupportedDataError(
            f"'{planes[0][0].field_path}' is assembled from file names that each name one plane "
            f"(a 2-D image); got {first_plane.ndim}-D data. Save whole field images instead."
        )
    shape = tuple(max(a.plane_index[i] for a, _ in planes) + 1 for i in range(len(planes[0][0].plane_index)))
    complete = len({a.plane_index for a, _ in planes}) == int(np.prod(shape))
    # every position given (the usual case): no need to zero what is overwritten anyway
    stack = (np.empty if complete else np.zeros)(shape + first_plane.shape, dtype=first_plane.dtype)
    for address, plane in planes:
        array = to_numpy(plane) if framework_of(plane) is not None else np.asarray(plane)
        if array.shape != first_plane.shape:
            raise UnsupportedDataError(
                f"Planes of field {address.field_path} differ in shape: {array.shape} vs {first_plane.shape}."
            )
        stack[address.plane_index] = array
    return stack
