"""The images a conversion writes (a plate's fields, or one large image), as a reader sees them
while it runs: every level's metadata from the start, the image marked incomplete until its
pixels are all written.

- :func:`create_image` (client): the level arrays and the image's group, whose NGFF
  attributes describe the image whole (a live viewer shows it filling) and whose
  ``polystore`` attribute says that it is not finished, and which conversion marked it
  (polystore.backends.zarr.marks): polystore refuses to load it as data (``CorruptDataError``
  saying to resume), ``polystore repair`` leaves it marked (only the conversion knows its
  pixels), and any reader can tell it from an image of zeros. An image that a stopped run
  left is marked first, then its chunks are removed (never its level arrays: a plate that
  lists it never lists a level that is not there).
- :func:`finish_image` (its task, or the client for a large image): the mark removed, once
  every chunk is written.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import GroupDocument, array_documents, group_documents
from polystore.backends.zarr.image import ImageSpec, array_options, channel_labels, level_shape
from polystore.backends.zarr.location import Location, join_key, zarr_module
from polystore.backends.zarr.marks import INCOMPLETE, converting

DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup"})
"""The metadata documents of a zarr node (every other key under a level array is a chunk)."""


def create_image(backend: ZarrBackend, location: Location, shape: tuple[int, ...], dtype: Any, axes: str,
                 config: ZarrConfig, spec: ImageSpec, destination: str, *, new: bool = False) -> None:
    """Make the image at ``location`` empty, with every level, marked incomplete by the
    conversion into ``destination`` (a node of the store, '' the store): created, or (left by
    a stopped run, with the same plan) marked and its chunks removed. ``new``: the caller
    knows that nothing is at ``location`` and that its parent groups exist (a plate's field
    in a store the conversion has just begun, its well made first), so nothing is looked up."""
    documents, images = backend.documents, backend.images
    dtype = np.dtype(dtype)
    level_count = max(1, spec.levels if spec.levels is not None else config.pyramid_levels)
    names = spec.channel_names or channel_labels(shape, axes)
    spec = ImageSpec(axes, level_count, names, spec.colors, spec.scale, spec.units, spec.labels)
    group = _group_documents(images, location, shape, dtype, axes, config, spec, level_count, destination)
    fresh = new or documents.node_kind(location) is None
    if not fresh:
        _write(backend, location, group)  # marked before any chunk goes
    elif not new:
        documents.ensure_parent_groups(location, config.zarr_format)
    array_config = repr(zarr_module().config.get("array"))
    for level in range(level_count):
        level_documents = _level_documents(shape, dtype, axes, config, level, array_config)
        _empty_level(backend, location.child(str(level)), level_documents, fresh)
    _write(backend, location, group)


_GROUPS: dict[str, tuple[tuple[str, bytes], ...]] = {}
_GROUPS_KEPT = 64


def _group_documents(images: Any, location: Location, shape: tuple[int, ...], dtype: np.dtype[Any], axes: str,
                     config: ZarrConfig, spec: ImageSpec, level_count: int, destination: str
                     ) -> tuple[tuple[str, bytes], ...]:
    """The documents of a new image's group, marked incomplete: the same for every field image
    of a plate but for its name (the last part of its path), so made once per name and plan,
    not per field (its NGFF attributes built and checked, and encoded, for each image took
    the client more than writing them). Keyed by the repr of what decides them (the spec may
    hold lists and dicts)."""
    key = repr((type(images), location.name, shape, dtype.str, axes, config, spec, level_count, destination))
    found = _GROUPS.get(key)
    if found is None:
        attributes = {**images.attributes(location, axes, shape, dtype, config, spec, level_count),
                      **converting(destination)}
        found = tuple(group_documents(config.zarr_format, attributes).items())
        if len(_GROUPS) >= _GROUPS_KEPT:
            _GROUPS.clear()
        _GROUPS[key] = found
    return found


def _write(backend: ZarrBackend, location: Location, documents: tuple[tuple[str, bytes], ...]) -> None:
    for name, content in documents:
        backend.documents.write(location, name, content)


@lru_cache(maxsize=32)
def _level_documents(shape: tuple[int, ...], dtype: np.dtype[Any], axes: str, config: ZarrConfig, level: int,
                     array_config: str) -> tuple[tuple[str, bytes], ...]:
    """The documents of level ``level`` of a new image: the same for every field image of a
    plate, so made once per conversion, not per field (zarr's options and their repr, which
    array_documents caches by, took a quarter of the client's time per image), and anew when
    zarr's ``array`` settings (``array_config``, their repr) change what they say."""
    options = array_options(level_shape(shape, axes, level), dtype, config)
    if config.zarr_format == 3:  # as ImageWriter.create_levels makes them
        options["dimension_names"] = tuple(axes)
    _metadata, written = array_documents(config.zarr_format, options)
    return tuple(written.items())


def _empty_level(backend: ZarrBackend, location: Location, level_documents: tuple[tuple[str, bytes], ...],
                 fresh: bool) -> None:
    """Remove a level array's chunks (any left under its path, unless its image is new: no
    task writes a chunk before the image's group exists) and write its documents (again),
    never without them. The documents' bytes, not a zarr array: the client makes an image per
    field, and zarr would build a codec pipeline for each level it never writes through."""
    keys = backend.documents.keys(location)
    if not fresh:
        for key in list(keys.list(location.node + "/")):
            if key.rsplit("/", 1)[-1] not in DOCUMENTS or key.count("/") != location.node.count("/") + 1:
                keys.delete(key)
    for name, content in level_documents:
        keys.put(join_key(location.node, name), content)


def finish_image(group: GroupDocument | None) -> None:
    """Say in the image's group (as read before its pixels were written) that it is whole."""
    if group is None:
        return
    group.put({k: v for k, v in group.attributes.items() if k not in INCOMPLETE})
