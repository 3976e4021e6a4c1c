"""The HCS plate writer: planes named by pipeline file names assembled into field images, and
the locks (or ownership) that let several writers fill one plate; the wells' and plate's
metadata that lists the fields is ``listing.py``'s.

Three steps, each a public method, so that a scheduler can run them apart (plan, owned
writes, one commit; see docs/zarr.md):

- ``create_field``: a field image's metadata (levels, axes, channels), no pixels;
- ``write_planes``: planes into an existing field, its chunks (no locks: the caller owns the
  field; no metadata but, into a pyramid, the field's own mark while its lower levels are
  written);
- ``commit``: the wells' and plate's metadata for the fields written, once (``PlateListing``).

``save``/``save_batch`` compose them under locks: a lock per field (creating, growing,
filling it) and one per store for the metadata read-modify-write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from polystore.arrays import framework_of, to_numpy
from polystore.backends.zarr.addresses import PlaneAddress
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import GroupDocument, MetadataDocuments
from polystore.backends.zarr.image import (
    ImageSpec,
    ImageWriter,
    channel_labels,
    downsample_plane,
    level_shape,
    rebuild_levels,
    write_planes_into,
)
from polystore.backends.zarr.listing import Field, PlateListing
from polystore.backends.zarr.location import Location, Stores
from polystore.backends.zarr.locks import field_lock
from polystore.backends.zarr.marks import (
    conversion_of,
    incomplete_error,
    is_incomplete,
    levels_pending,
    pending_levels_of,
)
from polystore.exceptions import CastRangeError, CorruptDataError, InvalidOptionError, UnsupportedDataError
from polystore.ome import ngff
from polystore.plates import channel_names

# -- the writer -----------------------------------------------------------------------------------


@dataclass
class FieldImage:
    """An existing field image: its group's attributes and its level arrays (writable)."""

    group: GroupDocument
    axes: str
    levels: list[Any]
    committed: bool = True
    """Whether its group document is written (``create_field(commit=False)``: not yet)."""


class PlateWriter:
    """Writes plate fields, planes and the plate's metadata into the stores of one backend."""

    def __init__(self, stores: Stores, documents: MetadataDocuments, images: ImageWriter) -> None:
        self.stores = stores
        self.documents = documents
        self.images = images
        self.listing = PlateListing(stores, documents)

    # -- the three steps (no locks) -------------------------------------------------------------
    def create_field(
        self, store: str, field_path: str, shape: tuple[int, ...], dtype: Any, axes: str,
        config: ZarrConfig, spec: ImageSpec | None = None, *, commit: bool = True,
    ) -> FieldImage:
        """Create an empty field image (every level's metadata, the image group last).

        Nothing the size of the field is allocated or written: unwritten chunks read as 0.
        The caller owns ``field_path`` (holds its lock, or is the one task writing it).
        ``commit=False``: the image group's document is not written (the caller writes it,
        ``write_group`` with the returned group's attributes, once its planes are: until then
        the levels are not an image, which ``repair`` leaves unpublished). The metadata is made
        (and a spec NGFF refuses, refused) before anything is written; a write that fails
        part-way removes what this call wrote (``ImageWriter.discard``) and raises.
        """
        location = Location(store, field_path)
        dtype = np.dtype(dtype)
        spec = spec or ImageSpec()
        level_count = field_level_count(spec, config)
        names = spec.channel_names or channel_labels(shape, axes)
        spec = ImageSpec(axes, level_count, names, spec.colors, spec.scale, spec.units, spec.labels)
        attrs = self.images.attributes(location, axes, shape, dtype, config, spec, level_count)
        # a dtype zarr cannot store refused before the well's groups are made (left, they were
        # a well in no plate's list)
        self.images.check_levels(location, axes, shape, dtype, config, level_count)
        self.documents.ensure_parent_groups(location, config.zarr_format)
        try:
            levels = self.images.create_levels(location, axes, shape, dtype, config, level_count)
            if commit:
                self.documents.write_group(location, config.zarr_format, attrs)
        except BaseException:
            # levels without their group: an unfinished image that no one is writing any more
            # (`repair` would report it); the parent groups stay, other fields share them
            with contextlib.suppress(Exception):
                self.images.discard(location, [location.child(str(level)) for level in range(level_count)],
                                    zarr_format=config.zarr_format, ndim=len(shape))
            raise
        if not commit:
            document = attrs if config.zarr_format == 2 else {"zarr_format": 3, "node_type": "group",
                                                              "attributes": attrs}
            unwritten = GroupDocument(self.documents, location, config.zarr_format, document)
            return FieldImage(unwritten, axes, levels, committed=False)
        group = GroupDocument.read(self.documents, location, config.zarr_format)
        assert group is not None
        return FieldImage(group, axes, levels)

    def write_planes(
        self, store: str, field_path: str, planes: Mapping[tuple[int, ...], Any], *,
        labels: bool = False, cast: bool = False, field_image: FieldImage | None = None,
    ) -> None:
        """Write 2-D planes (by their (t, c, z)-subset index) into an existing field image, at
        every level. Writes chunks only, and, into a pyramid, the mark that its levels below
        level 0 are being written (``marks.levels_pending``: a writer stopped between levels
        leaves them older than level 0, which the next plane save or ``repair`` makes again
        from it). The caller owns the field."""
        image = field_image or self.open_field(Location(store, field_path))
        if image is None:
            raise CorruptDataError(f"'{store}/{field_path}' is not a field image; create_field first.")
        dtype = image.levels[0].dtype
        keys = self.images.local_keys(Location(store, field_path))
        shape = tuple(image.levels[0].shape[-2:])
        checked = {index: checked_plane(plane, dtype, f"{store}/{field_path}", cast, shape)
                   for index, plane in planes.items()}
        left = pending_levels_of(image.group.attributes)  # a writer stopped between levels
        # a field whose group document is not written yet is no image: nothing to mark
        pyramid = len(image.levels) > 1 and bool(checked) and image.committed
        if pyramid and left is None:
            image.group.update(levels_pending(labels))
        for index, source in checked.items():
            for level, array in enumerate(image.levels):
                if level:
                    source = downsample_plane(source, labels)
                write_planes_into(array, index, source, keys)
        if pyramid:
            if left is not None:
                rebuild_levels(image.levels, left)
            image.group.put({k: v for k, v in image.group.attributes.items() if k != "polystore"})

    def commit(self, store: str, fields: Iterable[Field], config: ZarrConfig, *, lock: bool = True) -> None:
        """Add fields ((row, column, field index)) to their wells' and the plate's metadata
        (``PlateListing.commit``)."""
        self.listing.commit(store, fields, config, lock=lock)

    # -- reading a field back -------------------------------------------------------------------
    def open_field(self, location: Location) -> FieldImage | None:
        """The field image at ``location``; None if nothing is there; CorruptDataError if it is
        damaged (written partly: marked incomplete, or a level missing or unreadable)."""
        zarr_format = self.documents.preferred_format
        group = GroupDocument.read(self.documents, location, zarr_format)
        if group is None:
            # in either format: a field of the other is there (and not new: a failed save of a
            # new field removes what it wrote), refused before anything is written over it
            found = self.documents.kind_and_format(location)
            if found is not None and found[0] == "array":
                raise UnsupportedDataError(
                    f"'{location.display}' is a bare array, not a field image; delete it first."
                )
            if found is not None:
                raise InvalidOptionError(
                    f"Cannot write '{location.display}' in Zarr v{zarr_format}: it is a Zarr "
                    f"v{found[1]} image. Open the backend with zarr_format={found[1]} to write into it."
                )
            return None
        attributes = group.attributes
        if is_incomplete(attributes):
            raise incomplete_error(location, attributes)
        if not ngff.is_multiscale_image(attributes):
            return FieldImage(group, "", [])
        levels = []
        for level in range(len(ngff.multiscale_paths(attributes))):
            level_array = self.documents.image_level_array(location, level, writable=True)
            levels.append(level_array)
        return FieldImage(group, ngff.multiscale_axes(attributes), levels)

    # -- the locked compositions ----------------------------------------------------------------
    def save_planes(
        self, store: str, address: PlaneAddress, planes: Mapping[tuple[int, ...], np.ndarray],
        config: ZarrConfig, spec: ImageSpec, *, cast: bool = False,
    ) -> None:
        """Put planes (of one field) into their field image under the field's lock, creating or
        growing it as needed; then record the field in the well's and plate's metadata."""
        with field_lock(self.stores, store, address.field_path):
            self._grow_and_write(store, address, planes, config, spec, cast)
        self.commit(store, [(address.row, address.column, address.field)], config)

    def _grow_and_write(
        self, store: str, address: PlaneAddress, planes: Mapping[tuple[int, ...], np.ndarray],
        config: ZarrConfig, spec: ImageSpec, cast: bool,
    ) -> None:
        location = Location(store, address.field_path)
        axes = address.plane_axes + "yx"
        first = next(iter(planes.values()))
        needed = tuple(max(index[i] for index in planes) + 1 for i in range(len(address.plane_index)))
        needed += first.shape
        damaged = False
        try:
            image = self.open_field(location)
        except CorruptDataError:
            if self._converting(location):  # only that conversion, resumed, may write it
                raise
            image = None  # damaged by a writer that stopped: written again from these planes
            self.images.mark_incomplete(location, config.zarr_format)
            damaged = True
        if image is None:
            if "c" in axes and not spec.channel_names:
                spec = replace(spec, channel_names=address.channel_names(needed[axes.index("c")]))
            level_count = field_level_count(spec, config)
            try:
                image = self.create_field(store, address.field_path, needed, first.dtype, axes, config, spec,
                                          commit=False)
                self._write_into(image, store, address, planes, config, spec, cast)
                # the commit, once its planes are: a writer killed before it leaves levels that
                # are no image (or the damaged field's mark), never a field of zeros
                self.documents.write_group(location, config.zarr_format, image.group.attributes)
            except BaseException as error:
                # the field this save made holds none of its planes: a new one is removed (left,
                # unlisted, its planes would read as 0 and `repair` would list it), one written
                # again over damage is marked with the reason
                levels = [location.child(str(level)) for level in range(level_count)]
                self.images.abandon(location, levels, config.zarr_format, error, existing=damaged,
                                    ndim=len(needed))
                raise
            return
        if image.axes != axes:
            raise UnsupportedDataError(
                f"Field {address.field_path} holds a '{image.axes}' image; this name addresses a "
                f"plane of a '{axes}' image. Use one naming style per field (e.g. A01_s1_w1.tif, "
                f"A01_s1_w2.tif), or delete the field first (delete_all('{address.field_path}'))."
            )
        self._write_into(image, store, address, planes, config, spec, cast)

    def _converting(self, location: Location) -> bool:
        """Whether the field at ``location`` is an unfinished conversion's (``marks.py``): its
        pixels not written yet are in the conversion's source files, not here, so a plane save
        must not clear it and write it again (that published it, the rest of it zeros)."""
        try:
            group = GroupDocument.read(self.documents, location, self.documents.preferred_format)
        except CorruptDataError:
            return False
        return group is not None and conversion_of(group.attributes) is not None

    def _write_into(
        self, image: FieldImage, store: str, address: PlaneAddress,
        planes: Mapping[tuple[int, ...], np.ndarray], config: ZarrConfig, spec: ImageSpec, cast: bool,
    ) -> None:
        """Grow the field image to hold ``planes`` and write them (the caller holds its lock)."""
        if image.levels:  # refused before the field grows for a plane that will not go in
            where = f"{store}/{address.field_path}"
            dtype, shape = image.levels[0].dtype, tuple(image.levels[0].shape[-2:])
            planes = {i: checked_plane(p, dtype, where, cast, shape) for i, p in planes.items()}
        first = next(iter(planes.values()))
        needed = tuple(max(index[i] for index in planes) + 1 for i in range(len(address.plane_index)))
        self._grow(image, needed + first.shape, config, address)
        self.write_planes(store, address.field_path, planes, labels=spec.labels, cast=cast, field_image=image)

    def _grow(self, image: FieldImage, needed: tuple[int, ...], config: ZarrConfig,
              address: PlaneAddress | None = None) -> None:
        """Grow every level to hold ``needed`` (metadata only), each level looked at on its own
        so that a growth a killed writer left half done is finished here."""
        grown = tuple(max(a, b) for a, b in zip(image.levels[0].shape, needed, strict=True))
        for level, array in enumerate(image.levels):
            wanted = level_shape(grown, image.axes, level)
            if tuple(array.shape) != wanted:
                array.resize(wanted)
        if "c" in image.axes:
            count = grown[image.axes.index("c")]
            section = ngff.ngff_section(image.group.attributes)
            known = (section.get("omero") or {}).get("channels", [])
            if len(known) != count:
                self._update_channels(image, count, config, address)

    def _update_channels(self, image: FieldImage, count: int, config: ZarrConfig,
                         address: PlaneAddress | None = None) -> None:
        attributes = image.group.attributes
        section = ngff.ngff_section(attributes)
        multiscale = section["multiscales"][0]
        scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
        known = (section.get("omero") or {}).get("channels", [])[:count]
        names = address.channel_names(count) if address is not None else channel_names(count)
        labels = [c.get("label") for c in known] + names[len(known):]
        colors = [c.get("color") for c in known if c.get("color")]
        windows = [(c["window"]["start"], c["window"]["end"]) for c in known if c.get("window")]
        dtype = np.dtype(image.levels[0].dtype)
        channels = ngff.channel_infos(count, dtype, labels, colors or None, windows or None)
        kept = {k: v for k, v in attributes.items() if k == "polystore"}  # a levels_pending mark
        image.group.put({**ngff.image_attributes(
            image.axes, scales, version=config.ngff, channels=channels, dtype=dtype,
            name=multiscale.get("name"),
        ), **kept})

    def save_field(self, location: Location, address: PlaneAddress, array: Any, config: ZarrConfig,
                   spec: ImageSpec) -> None:
        """A whole field image (``B/03/0``), under the field's lock, then its metadata."""
        with field_lock(self.stores, location.store, address.field_path):
            existing = self.documents.node_kind(location) is not None
            self.images.write(location, array, config, spec, existing=existing)
        self.commit(location.store, [(address.row, address.column, address.field)], config)

    def save_batch_field(
        self, store: str, planes: Sequence[tuple[PlaneAddress, Any]], config: ZarrConfig, spec: ImageSpec,
        *, cast: bool = False,
    ) -> None:
        """The planes of one field from a batch: a new field is written whole (every level,
        channel windows from the data) when every plane of it is given, else created empty and
        filled; an existing one is grown and filled. The caller commits the metadata."""
        first_address = planes[0][0]
        arrays = assemble_planes(planes, cast)
        axes = first_address.plane_axes + "yx"
        with field_lock(self.stores, store, first_address.field_path):
            location = Location(store, first_address.field_path)
            shape = tuple(max(i[k] for i in arrays) + 1 for k in range(len(first_address.plane_index)))
            complete = len(arrays) == int(np.prod(shape))
            if complete and self.documents.node_kind(location) is None:
                first = next(iter(arrays.values()))
                stack = np.empty(shape + first.shape, first.dtype)
                for index, plane in arrays.items():
                    stack[index] = plane
                count = stack.shape[axes.index("c")] if "c" in axes else 0
                names = spec.channel_names or first_address.channel_names(count)
                whole = ImageSpec(axes, spec.levels, names, spec.colors, None, None, spec.labels)
                self.images.write(location, stack, config, whole, existing=False)
                return
            self._grow_and_write(store, first_address, arrays, config, spec, cast)


def field_level_count(spec: ImageSpec, config: ZarrConfig) -> int:
    """How many resolution levels a new field image has."""
    return max(1, spec.levels if spec.levels is not None else config.pyramid_levels)


def checked_plane(
    plane: Any, dtype: np.dtype[Any], where: str, cast: bool, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """``plane`` as a NumPy 2-D array of ``dtype``: refused if its dtype differs, unless ``cast``,
    and if it is not of ``shape`` (the existing field's y, x) when given."""
    array = to_numpy(plane) if framework_of(plane) is not None else np.asarray(plane)
    if array.ndim != 2:
        raise UnsupportedDataError(
            f"'{where}' is assembled from file names that each name one plane (a 2-D image); got "
            f"{array.ndim}-D data. Save whole field images instead."
        )
    if shape is not None and array.shape != shape:
        raise UnsupportedDataError(
            f"A {array.shape} plane cannot go into field '{where}', whose planes are {shape}. Give "
            "a plane of that shape, or delete the field first to write it at another size."
        )
    if array.dtype != dtype:
        if not cast:
            raise UnsupportedDataError(
                f"A {array.dtype} plane cannot go into field '{where}', which holds {dtype}: values "
                f"would change silently. Convert it first, or pass cast=True to cast it to {dtype}."
            )
        array = cast_plane(array, np.dtype(dtype), where)
    return array


def cast_plane(array: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """``array`` cast to ``dtype`` (``cast=True``), refused where a value would not come through
    as itself: outside an integer dtype's range (NumPy wraps it), NaN or infinite into integers,
    beyond a float dtype's range (it becomes infinite), an imaginary part dropped. Fractions
    into integers are truncated, as ``astype`` does: that is the cast asked for."""
    problem = _cast_problem(array, dtype)
    if problem is not None:
        raise CastRangeError(
            f"A {array.dtype} plane cannot be cast into field '{where}', which holds {dtype}: "
            f"{problem}, so cast=True would change them silently. Scale or clip it first "
            f"({_clip_hint(dtype)}), or save it into a field of a dtype that holds it."
        )
    with np.errstate(invalid="ignore", over="ignore"):  # checked above
        return array.astype(dtype)


def _cast_problem(array: np.ndarray, dtype: np.dtype[Any]) -> str | None:
    """Why casting ``array`` to ``dtype`` would change a value (beyond truncating fractions), or None."""
    if array.dtype.kind == "V" and array.dtype.names is None:  # ml_dtypes' (bfloat16): as floats
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            return None
    if array.dtype.kind == "c" and dtype.kind != "c":
        if np.any(array.imag):
            return "it has imaginary parts"
        array = array.real
    if dtype.kind in "iu" and array.dtype.kind in "iuf":
        if array.dtype.kind in "iu" and np.can_cast(array.dtype, dtype):
            return None
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return "it holds NaN or infinite values, which integers cannot"
        info = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if np.trunc(low) < info.min or np.trunc(high) > info.max:
            return f"its values run from {low} to {high}, and {dtype} holds {info.min} to {info.max}"
    elif dtype.kind == "f" and array.dtype.kind in "iuf" and not np.can_cast(array.dtype, dtype):
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        largest = float(np.abs(finite.astype(np.float64)).max()) if finite.size else 0.0
        if largest > float(np.finfo(dtype).max):
            return f"values reach {largest:g}, beyond {dtype}'s largest {float(np.finfo(dtype).max):g}"
    return None


def _clip_hint(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"np.clip(plane, {info.min}, {info.max})"
    return f"np.clip(plane, -{float(np.finfo(dtype).max):g}, {float(np.finfo(dtype).max):g})"


def assemble_planes(
    planes: Sequence[tuple[PlaneAddress, Any]], cast: bool
) -> dict[tuple[int, ...], np.ndarray]:
    """The planes of one field by index, NumPy, one dtype and shape (the first plane's)."""
    first = np.asarray(planes[0][1]) if framework_of(planes[0][1]) is None else to_numpy(planes[0][1])
    where = planes[0][0].field_path
    found: dict[tuple[int, ...], np.ndarray] = {}
    for address, plane in planes:
        array = checked_plane(plane, first.dtype, where, cast)
        if array.shape != first.shape:
            raise UnsupportedDataError(
                f"Planes of field {where} differ in shape: {array.shape} vs {first.shape}."
            )
        found[address.plane_index] = array
    return found

