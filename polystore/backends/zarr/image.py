"""The OME-NGFF image writer: an array as a multiscale image (levels, channels, axes), or as a
bare zarr array where NGFF cannot describe it.

An image is written so that a reader, or a writer killed at any moment, never leaves
something that looks whole and is not: a new image's levels are written first and its group
document, the one that says "this is an image of these levels", last; an image being replaced
is first marked incomplete (its group document says so), then rewritten, then its group
document written whole. ``polystore repair`` and the next save treat a marked image, or a
group whose levels are missing, as damaged.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import MetadataDocuments, array_documents
from polystore.backends.zarr.location import (
    METADATA_DOCUMENTS,
    KeyStore,
    Location,
    delete_leftovers,
    join_key,
    zarr_entry,
)
from polystore.backends.zarr.marks import INCOMPLETE, REPLACING, failed_mark
from polystore.backends.zarr.planes import plane_chunks
from polystore.exceptions import ChunkingError, CorruptDataError, InvalidOptionError, InvalidPathError
from polystore.lazy import optional_import
from polystore.ome import ngff
from polystore.plates import channel_names


def is_lazy(data: Any) -> bool:
    return type(data).__module__.partition(".")[0] == "dask"


@dataclass(frozen=True)
class ImageSpec:
    """What the caller says about an image beyond its data."""

    axes: str | None = None
    levels: int | None = None
    channel_names: Sequence[str] | None = None
    colors: Sequence[str] | None = None
    scale: Sequence[float] | None = None
    units: dict[str, str] | None = None
    labels: bool = False
    translation: Sequence[float] | None = None


def channel_labels(shape: tuple[int, ...], axes: str) -> list[str]:
    """Labels of an image's channels when nothing names them: the plate model's (c0, c1, ...)."""
    return channel_names(shape[axes.index("c")]) if "c" in axes else []


def level_shape(shape: tuple[int, ...], axes: str, level: int) -> tuple[int, ...]:
    """The shape of ``level`` of an image whose full resolution is ``shape``."""
    return tuple(max(1, s // (2**level)) if a in "yx" else s for s, a in zip(shape, axes, strict=True))


def array_options(shape: tuple[int, ...], dtype: np.dtype[Any], config: ZarrConfig) -> dict[str, Any]:
    """zarr's ``create_array`` options for an array of ``shape`` and ``dtype`` under ``config``."""
    options: dict[str, Any] = {
        "shape": shape,
        "dtype": dtype,
        "chunks": config.chunk_shape(shape),
        "compressors": config.compressors(dtype),
    }
    if config.shards is not None:
        if len(config.shards) != len(shape):  # zip would cut the longer one
            raise InvalidOptionError(
                f"shards={config.shards} has {len(config.shards)} sizes for a {len(shape)}-D array of "
                f"shape {shape}: give one size per axis (shards=, --shards), or leave shards out."
            )
        # clamped to the array, but still whole chunks (zarr refuses a shard that is not)
        inner = options["chunks"] if options["chunks"] != "auto" else shape
        options["shards"] = tuple(min(s, -(-n // c) * c) if n else s
                                  for s, n, c in zip(config.shards, shape, inner, strict=True))
        if any(s % c for s, c in zip(options["shards"], inner, strict=True)):  # zarr's bare ValueError
            raise ChunkingError(
                f"shards={config.shards} for chunks {tuple(inner)} of a {shape} array: a shard holds "
                "whole chunks, so each shard size must be a multiple of its chunk size (or give "
                "chunks= that divide the shards)."
            )
    if config.zarr_format == 2:  # nested chunk keys ("0/0"), as OME-NGFF 0.4 requires
        options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return options


def downsample(source: Any, axes: str, labels: bool) -> Any:
    """Halve y and x: block mean for intensities, every other pixel for labels (dask)."""
    dask_array = optional_import("dask.array", extra="zarr", purpose="Writing pyramids")
    lazy = dask_array.from_zarr(source) if hasattr(source, "chunks") and not is_lazy(source) \
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


def downsample_plane(plane: np.ndarray, labels: bool) -> np.ndarray:
    """One 2-D plane halved in y and x, as ``downsample`` does (NumPy, no dask graph)."""
    h, w = plane.shape
    if labels:
        return plane[:: 2 if h >= 2 else 1, :: 2 if w >= 2 else 1]
    fy, fx = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
    trimmed = plane[: h - h % fy, : w - w % fx]
    if plane.dtype.kind in "iu" and plane.dtype.itemsize <= 4:
        # the same rounded block mean in integers (sum, shift, round half to even as np.round
        # does): 4x faster than through float64, the cost of every pyramid level
        total: Any = trimmed[0::fy, 0::fx].astype(np.int32 if plane.dtype.itemsize <= 2 else np.int64)
        for i, j in ((0, 1), (1, 0), (1, 1)):
            if i < fy and j < fx:
                total += trimmed[i::fy, j::fx]
        count = fy * fx
        half = count // 2
        rounded = total >> (count.bit_length() - 1)
        remainder = total & (count - 1)
        rounded += (remainder > half) | ((remainder == half) & (half > 0) & ((rounded & 1) == 1))
        return np.asarray(rounded.astype(plane.dtype))
    mean = trimmed.reshape(h // fy, fy, w // fx, fx).mean(axis=(1, 3))
    if plane.dtype.kind in "iu":
        mean = np.round(mean)
    return np.asarray(mean.astype(plane.dtype))


def rebuild_levels(levels: Sequence[Any], labels: bool) -> None:
    """Write levels 1, 2, ... of an image again from level 0, plane by plane (every axis but
    the last two, y and x, is the same at every level)."""
    base = levels[0]
    for index in itertools.product(*(range(int(n)) for n in base.shape[:-2])):
        source = np.asarray(base[index])
        for level in levels[1:]:
            source = downsample_plane(source, labels)
            level[index] = source


def write_into(target: Any, source: Any, keys: KeyStore | None = None,
               meanwhile: Callable[[], None] | None = None) -> None:
    """Write ``source`` into the zarr array ``target``: NumPy at once, dask chunk by chunk.
    ``keys``: the target's store as plain keys where it is local, for whole planes written as
    their chunks (``planes.py``). ``meanwhile``: I/O to do before any chunk is written (the
    target's documents), run while the planes are encoded where they are written as chunks."""
    if is_lazy(source) or (hasattr(source, "chunks") and not isinstance(source, np.ndarray)):
        if meanwhile is not None:
            meanwhile()
        dask_array = optional_import("dask.array", extra="zarr", purpose="Writing lazy arrays")
        lazy = source if is_lazy(source) else dask_array.from_zarr(source)
        dask_array.store(lazy.rechunk(target.chunks), target, lock=False)
    elif source.size:
        write_planes_into(target, (), source, keys, meanwhile)
    elif meanwhile is not None:
        meanwhile()


def write_planes_into(target: Any, index: tuple[int, ...], source: np.ndarray, keys: KeyStore | None,
                      meanwhile: Callable[[], None] | None = None) -> None:
    """``target[index] = source`` (whole planes under leading indices ``index``), as chunk files
    where the layout and store allow (``planes.py``), else through zarr; ``meanwhile`` first
    (see ``write_into``)."""
    chunks = plane_chunks(target, index, write=True) if keys is not None else None
    if keys is not None and chunks is not None and tuple(source.shape) == tuple(target.shape)[len(index):]:
        chunks.write(target, keys, index, source, meanwhile)
        return
    if meanwhile is not None:
        meanwhile()
    if index:
        target[index] = source
    else:
        target[...] = source


def level_scales(axes: str, base: Sequence[float] | None, level_count: int) -> list[list[float]]:
    scale = list(base) if base is not None else [1.0] * len(axes)
    if len(scale) != len(axes):  # zip would raise a bare ValueError
        raise InvalidOptionError(
            f"scale={tuple(scale)} has {len(scale)} values for an image of axes '{axes}': give one "
            f"per axis ({len(axes)}), or leave scale out."
        )
    return [[s * (2**level if a in "yx" else 1) for a, s in zip(axes, scale, strict=True)]
            for level in range(level_count)]


class ImageWriter:
    """Writes images and bare arrays as metadata documents and chunks."""

    def __init__(self, documents: MetadataDocuments) -> None:
        self.documents = documents

    def axes_for(self, array: Any, spec: ImageSpec, config: ZarrConfig) -> str | None:
        """The NGFF axes of ``array`` (None: written as a bare array)."""
        if not config.ome_zarr_metadata:
            return None
        given = spec.axes
        if given is None and spec.channel_names and array.ndim in (3, 4):
            given = "c" + "zyx"[4 - array.ndim :]  # naming channels says the first axis is c
        return ngff.infer_axes(array.ndim, given)

    def attributes(
        self, location: Location, axes: str, shape: tuple[int, ...], dtype: np.dtype[Any],
        config: ZarrConfig, spec: ImageSpec, level_count: int, data: Any = None,
    ) -> dict[str, Any]:
        """The image group's NGFF attributes (channel windows from ``data`` where given)."""
        channels = None
        if "c" in axes and not spec.labels:
            windows = ngff.data_windows(data, axes.index("c")) if isinstance(data, np.ndarray) else None
            count = shape[axes.index("c")]
            channels = ngff.channel_infos(count, dtype, spec.channel_names, spec.colors, windows)
        scales = level_scales(axes, spec.scale, level_count)
        translations = None if spec.translation is None else \
            ngff.level_translations(axes, scales, spec.translation, labels=spec.labels)
        return ngff.image_attributes(
            axes, scales, version=config.ngff, units=spec.units, name=location.name or None,
            channels=channels, dtype=dtype, label=spec.labels, level_translations=translations,
        )

    def create_levels(
        self, location: Location, axes: str, shape: tuple[int, ...], dtype: np.dtype[Any],
        config: ZarrConfig, level_count: int,
    ) -> list[Any]:
        """Empty level arrays ``0..level_count-1`` under ``location`` (metadata only: nothing
        the size of the image is allocated; unwritten chunks read as the fill value 0)."""
        levels = self._levels(location, axes, shape, dtype, config, level_count)
        for level_location, options in levels:
            self.documents.write_array(level_location, options, config.zarr_format)
        return [self.documents.new_array(where, options, config.zarr_format) for where, options in levels]

    def check_levels(
        self, location: Location, axes: str, shape: tuple[int, ...], dtype: np.dtype[Any], config: ZarrConfig,
        level_count: int,
    ) -> None:
        """Refuse what zarr would refuse creating these levels (a dtype it has no type for, or
        cannot fill), writing nothing: their documents are made in memory (and cached)."""
        for _where, options in self._levels(location, axes, shape, dtype, config, level_count):
            array_documents(config.zarr_format, options)

    @staticmethod
    def _levels(
        location: Location, axes: str, shape: tuple[int, ...], dtype: np.dtype[Any], config: ZarrConfig,
        level_count: int,
    ) -> list[tuple[Location, dict[str, Any]]]:
        """(location, zarr's array options) of each level of an image."""
        levels = []
        for level in range(level_count):
            options = array_options(level_shape(shape, axes, level), dtype, config)
            if config.zarr_format == 3:  # NGFF 0.5 requires arrays to name their axes
                options["dimension_names"] = tuple(axes)
            levels.append((location.child(str(level)), options))
        return levels

    def write(
        self, location: Location, array: Any, config: ZarrConfig, spec: ImageSpec, *, existing: bool,
    ) -> None:
        """Write ``array`` at ``location`` as an image (or a bare array), replacing what is there.

        ``existing``: whether a node is there now (the caller looked). The metadata I/O before
        the pixels (parent groups, the mark of a replaced image, the levels' documents) is done
        while the first level's planes are encoded. A save that fails leaves no trace of a new
        node (what it wrote is removed), and a replaced one marked incomplete with the reason
        (its previous pixels were cleared): see ``_failed``.
        """
        axes = self.axes_for(array, spec, config)
        zarr_format = config.zarr_format
        if not location.node and axes is None:
            raise InvalidPathError(
                f"'{location.display}': a bare array needs a name inside the store; save it to "
                "'<store>.zarr/<name>', or give it axes to save it as the store's image."
            )
        shape, dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)
        # refused before anything changes: chunks or shards that do not fit, a spec NGFF refuses
        # (a dtype zarr cannot store: by new_array, before prepare() writes anything)
        if axes is None:
            levels = [(location, array_options(shape, dtype, config))]
            attrs = None
        else:
            level_count = max(1, spec.levels if spec.levels is not None else config.pyramid_levels)
            levels = self._levels(location, axes, shape, dtype, config, level_count)
            attrs = self.attributes(location, axes, shape, dtype, config, spec, level_count, array)
        changed: list[str] = []  # "marked": an existing node's pixels are being cleared

        bare = attrs is None  # marked through its own attributes while written (marks.py)

        def prepare() -> None:
            self.documents.ensure_parent_groups(location, zarr_format)
            if existing:
                self.mark_incomplete(location, zarr_format, array=bare, mark=REPLACING)
                changed.append("marked")
            for level_location, options in levels:
                self.documents.write_array(level_location, options, zarr_format,
                                           mark=INCOMPLETE if bare else None, clear=not (bare and existing))

        try:
            targets = [self.documents.new_array(where, options, zarr_format) for where, options in levels]
            source: Any = array
            for level, target in enumerate(targets):
                if level:
                    source = downsample(source, axes or "", spec.labels)
                write_into(target, source, self.local_keys(location), prepare if level == 0 else None)
                source = target  # the next level reads back the chunks just written, not the input
            # the commit point: only now does the group say it is an image of these levels, or
            # the bare array lose its mark
            if attrs is not None:
                self.documents.write_group(location, zarr_format, attrs)
            else:
                self.documents.unmark_array(location, levels[0][1], zarr_format)
        except BaseException as error:
            self._failed(location, [where for where, _ in levels], zarr_format, error,
                         existing=existing, marked=bool(changed), ndim=len(shape))
            raise

    def _failed(self, location: Location, levels: Sequence[Location], zarr_format: int,
                error: BaseException, *, existing: bool, marked: bool, ndim: int) -> None:
        """After a failed save: see ``abandon``. A replaced node not marked yet (the save failed
        before touching it) is left as it was."""
        if not existing or marked:
            self.abandon(location, levels, zarr_format, error, existing=existing, ndim=ndim)

    def abandon(self, location: Location, levels: Sequence[Location], zarr_format: int,
                error: BaseException, *, existing: bool, ndim: int) -> None:
        """After a failed save of the node at ``location`` (whose level arrays are ``levels``,
        ``ndim``-D):
        a new node's leftovers removed (levels without a group document that ``repair`` would
        otherwise publish as an image of zeros, or an image of none of the pixels saved); an
        existing one, whose previous pixels are gone, marked incomplete with the reason, so that
        a reader and ``repair`` say what happened (neither makes an image of what its levels
        hold) and the next save writes it. The parent groups stay: another writer may be
        creating a sibling in them. Never raises: the save's own error is the one to raise."""
        with contextlib.suppress(Exception):
            if not existing:
                self.discard(location, levels, zarr_format=zarr_format, ndim=ndim)
            elif not self.documents.mark_array(location, failed_mark(error)):
                self.documents.write_group(location, zarr_format, failed_mark(error))

    def discard(self, location: Location, levels: Sequence[Location], *, zarr_format: int, ndim: int) -> None:
        """Remove what a failed save of a new node at ``location`` wrote: its level arrays
        (every key under each, and its folder where local), then its own documents (no node
        was there before it), then the node's folder if that left it empty. Nothing else: the
        node's folder may hold others' files (the store's root holds everything), and a failed
        save must not take them with it. The levels go first: a writer killed here leaves an
        image whose level is missing (load and ``repair`` say so), never levels without their
        group (which ``repair`` would publish as an image)."""
        keys = self.documents.keys(location)
        for level in levels:
            folder = None if level.remote else os.path.join(level.store, level.node)
            delete_leftovers(keys, level.node, folder, zarr_format=zarr_format, ndim=ndim)
        for name in (".zattrs", ".zgroup", "zarr.json"):
            keys.delete(join_key(location.node, name))
        if location.node and not location.remote:
            with contextlib.suppress(OSError):  # not empty: others' files stay
                os.rmdir(os.path.join(location.store, location.node))

    def local_keys(self, location: Location) -> KeyStore | None:
        """The store's plain keys where its planes are written as files (local stores; on object
        storage zarrs puts chunks concurrently, which a request-bound store needs)."""
        return None if location.remote else self.documents.keys(location)

    def mark_incomplete(self, location: Location, zarr_format: int, *, array: bool = False,
                        mark: dict[str, Any] = INCOMPLETE) -> None:
        """Mark the node at ``location`` as being rewritten, then clear its data (chunks, levels).

        The mark goes where the node stays valid in both Zarr formats (a v2 group document
        beside ``.zarray`` would make it a group and an array at once): an array's own
        attributes, a group's document. Where the node is to become an image (not ``array``),
        a marked array is then made a marked group (v2: ``.zarray`` removed before ``.zgroup``
        is written; a writer killed between the two leaves no node, never both).
        """
        if self.documents.mark_array(location, mark):
            self._clear(location, keep_own=True)
            if not array:
                self.documents.keys(location).delete(join_key(location.node, ".zarray"))
                self.documents.write_group(location, zarr_format, mark)
            return
        named = self._named_levels(location, zarr_format)  # read before the mark replaces them
        # kept in the mark until they are cleared: a writer killed before leaves them named there
        self.documents.write_group(location, zarr_format,
                                   {"polystore": {**mark["polystore"], "levels": named}} if named else mark)
        self._clear(location, keep_own=True, levels=named)

    def _named_levels(self, location: Location, zarr_format: int) -> list[str]:
        """The level paths the image at ``location`` lists that are not named as polystore
        names levels (``s0``, ``s1`` of another tool's image; ``0``, ``1`` are zarr entries,
        cleared anyway): its levels all the same, whose pixels a replacing save clears. Also
        those the mark of a replacement killed before clearing them names."""
        try:
            attributes = self.documents.attributes(location, zarr_format)
            paths = ngff.multiscale_paths(attributes) if attributes else []
            marker = (attributes or {}).get("polystore")
            paths += list(marker.get("levels") or []) if isinstance(marker, dict) else []
        except (CorruptDataError, KeyError, TypeError, AttributeError):
            return []  # a damaged document lists nothing to trust
        return [path for path in paths if isinstance(path, str) and not zarr_entry(path)
                and all(part not in ("", ".", "..") for part in path.split("/"))]

    def _clear(self, location: Location, *, keep_own: bool = False, levels: Sequence[str] = ()) -> None:
        """Remove the data of the node at ``location``: its chunks and its levels' folders,
        with all below them (``levels``: those of other names its image listed), its OME-NGFF
        ``labels`` group (labels of the pixels replaced: kept, a viewer would lay them over the
        new image), and its own documents unless ``keep_own``. Nothing else its folder holds: a
        user's files kept there, or another node (``zarr_entry``); a save that replaces the
        node, or fails doing so, must not take them with it."""
        keys = self.documents.keys(location)
        prefix = location.node + "/" if location.node else ""
        for key in list(keys.list(prefix)):
            relative = key[len(prefix):]
            first, below, _ = relative.partition("/")
            own_document = not below and not keep_own and first in METADATA_DOCUMENTS
            named_level = any(relative.startswith(level + "/") for level in levels)
            if zarr_entry(first) or first == _LABELS or own_document or named_level:
                keys.delete(key)
        if not location.remote:  # the emptied level folders: a chunk of the new node may be named so
            folder = os.path.join(location.store, location.node)
            with contextlib.suppress(OSError), os.scandir(folder) as found:
                for entry in [entry for entry in found if entry.is_dir(follow_symlinks=False)
                              and (zarr_entry(entry.name) or entry.name == _LABELS)]:
                    shutil.rmtree(entry.path, ignore_errors=True)
            for level in levels:
                shutil.rmtree(os.path.join(folder, *level.split("/")), ignore_errors=True)


_LABELS = "labels"
"""An OME-NGFF image's label images, in a group of this name inside it."""
