"""The layout of a plate to convert, planned on the client before anything is written: which
file goes to which well, field and plane, and the one shape every field image has.

Files are read by the plate model (:func:`polystore.plates.recognise`): any naming
convention it knows, or the one (or the pattern) given. A folder whose files are named by
two conventions, that holds several plates, or where two files name the same plane is
refused with what was found, not guessed at.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polystore.backends.zarr.addresses import PlaneAddress
from polystore.distributed.journal import digest
from polystore.distributed.sources import SourceFile, image_format, known_formats, read_header, walk_files
from polystore.exceptions import PolystoreError
from polystore.ome import ngff
from polystore.plates import Components, PlateNameError, named_convention, number_plate, recognise
from polystore.plates import channel_names as plate_channel_names
from polystore.plates.wells import column_sort_key, row_sort_key

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

ALL_PLANE_AXES = PlaneAddress("A", "01", 0, channel=0, z=0, t=0).plane_axes
"""Every plate index that can become an axis of a field image, in the zarr plate writer's order."""


class LayoutError(PolystoreError, ValueError):
    """The files given do not make one plate: none recognised, two naming conventions, several
    plates, two files for one plane, or images that are not planes where names say they are."""


@dataclass(frozen=True)
class Skipped:
    """A file the conversion left out, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class FieldPlan:
    """One field image of the plate and the files its planes come from (plane index -> file)."""

    row: str
    column: str
    index: int
    planes: tuple[tuple[tuple[int, ...], SourceFile], ...]

    @property
    def path(self) -> str:
        return f"{self.row}/{self.column}/{self.index}"

    def record(self) -> dict[str, Any]:
        """The field as ``dataclasses.asdict`` gives it (what its digest hashes), made directly:
        asdict deep-copies every value on its way, and a plate has a field per well and site."""
        planes = [(index, {"path": file.path, "size": file.size, "mtime_ns": file.mtime_ns})
                  for index, file in self.planes]
        return {"row": self.row, "column": self.column, "index": self.index, "planes": planes}


@dataclass(frozen=True)
class PlatePlan:
    """A whole plate: every field, the one shape and dtype of its field images, and the files left out."""

    fields: tuple[FieldPlan, ...]
    axes: str
    """Axes of every field image: the plane axes the names state ('tcz' subset), then the image's own."""
    named: str
    """The leading axes the file names index ('' when each file is a whole field image)."""
    shape: tuple[int, ...]
    dtype: str
    convention: str
    channel_names: tuple[str, ...]
    skipped: tuple[Skipped, ...]

    def field_digest(self, field: FieldPlan, options: object) -> str:
        """What a field's done-marker must hold for the field to count as written: its files
        (paths, sizes, times) and everything that decides its bytes."""
        return digest(self.axes, self.shape, self.dtype, self.channel_names, options, field.record())

    def summary(self, options: dict[str, Any]) -> dict[str, Any]:
        """What a resumed conversion must find unchanged (its files' contents may change: a
        changed file only redoes its field), with the options that decide the bytes."""
        return {"fields": [f.path for f in self.fields], "axes": self.axes, "shape": list(self.shape),
                "dtype": self.dtype, "channels": list(self.channel_names), **options}


def _entries(source: PathOrPaths, stores: list[str]) -> list[tuple[str, str]]:
    """(name read by the conventions, absolute file path) of every file of a folder or list:
    the names as given (relative to the folder), the paths absolute, so that workers find the
    files whatever folder they run in, and a plan is the same however its folder is spelled.
    The zarr stores of a folder, not walked, are added to ``stores``."""
    if isinstance(source, (str, os.PathLike)):
        folder = os.path.abspath(source)
        return [(relative, os.path.join(folder, relative)) for relative in walk_files(folder, stores)]
    return [(os.fspath(path).replace("\\", "/"), os.path.abspath(path)) for path in source]


def plan_plate(source: PathOrPaths, convention: str | None = None) -> PlatePlan:
    """Plan the plate a folder (recursively) or a list of image files makes.

    ``convention``: a registered convention's name, or a regular expression with named groups;
    None tries every convention. Raises :class:`LayoutError` when the files do not make one plate,
    :class:`PlateNameError` for an unknown convention or a pattern that cannot read a plate.
    """
    if convention is not None:
        named_convention(convention)  # once: file by file, it would read as no convention's name
    skipped: list[Skipped] = []
    found: list[tuple[Components, SourceFile]] = []
    names: list[str] = []
    stores: list[str] = []
    entries = _entries(source, stores)
    skipped += [Skipped(f"{store}/", "a zarr store, not image files") for store in stores]
    for name, path in entries:
        if image_format(path) is None:
            skipped.append(Skipped(name, f"not an image file this converter reads ({known_formats()})"))
            continue
        try:
            recognition = recognise(name, convention)
        except PlateNameError as error:
            skipped.append(Skipped(name, str(error)))
            continue
        if recognition.components is None:
            reason = f"skipped, {recognition.skipped}" if recognition.skipped else (
                f"no naming convention reads it (tried: {', '.join(recognition.tried)})")
            skipped.append(Skipped(name, reason))
            continue
        found.append((recognition.components, SourceFile.stat(path)))
        names.append(name)
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"the {len(entries)} files given"
    if not found:
        examples = "; ".join(str(s) for s in skipped[:3]) or "no files at all"
        raise LayoutError(
            f"No plate layout recognised in {where}: {examples}. Give the naming convention "
            "(--convention NAME, or convention= in Python) or a pattern with named groups "
            "(--pattern '(?P<well>[A-P]\\d{2})_(?P<site>\\d+)'); see docs/plates.md."
        )
    _refuse_mixed(found, where)
    return _layout(_whole_plate(found, names, skipped, where), skipped)


def _whole_plate(found: list[tuple[Components, SourceFile]], names: list[str], skipped: list[Skipped],
                 where: str) -> list[tuple[Components, SourceFile]]:
    """What only all of a plate's names say (:func:`polystore.plates.number_plate`): channels and
    time points named as text are numbered; a file no plate position places (a projection beside
    its Z stack, a name with a part that is no index) is skipped, with the reason."""
    kept: list[tuple[Components, SourceFile]] = []
    numbered = number_plate([components for components, _ in found])
    for (_, file), name, components in zip(found, names, numbered, strict=True):
        reason = components.unplaced()
        if reason is None:
            kept.append((components, file))
        else:
            skipped.append(Skipped(name, f"skipped, {reason}"))
    if not kept:
        raise LayoutError(f"No file of {where} is a plane of a plate: {'; '.join(map(str, skipped[:3]))}.")
    return kept


def _refuse_mixed(found: list[tuple[Components, SourceFile]], where: str) -> None:
    by_convention = Counter(c.convention for c, _ in found)
    if len(by_convention) > 1:
        parts = [f"{n} as {name} (e.g. {next(f.path for c, f in found if c.convention == name)})"
                 for name, n in by_convention.most_common()]
        raise LayoutError(
            f"{where} mixes file layouts: {'; '.join(parts)}. Convert each layout on its own "
            "(one folder each), or name the convention to use (--convention) to leave the others out."
        )
    plates = Counter(c.plate for c, _ in found if c.plate is not None)
    if len(plates) > 1:
        parts = [f"{name!r} ({n} files)" for name, n in plates.most_common()]
        raise LayoutError(
            f"{where} holds several plates: {', '.join(parts)}. Convert each plate to its own "
            "store (one folder each)."
        )


def _plane_of(components: Components) -> dict[str, int]:
    """The plane indices a file's name gives, by axis (the zarr plate writer's addressing)."""
    address = PlaneAddress(components.row, components.column, components.field, components.channel,
                           components.z, components.t, components)
    return dict(zip(address.plane_axes, address.plane_index, strict=True))


def _layout(found: list[tuple[Components, SourceFile]], skipped: list[Skipped]) -> PlatePlan:
    planes_of = [_plane_of(components) for components, _ in found]
    named = "".join(a for a in ALL_PLANE_AXES if any(a in plane for plane in planes_of))
    fields: dict[tuple[str, str, int], dict[tuple[int, ...], SourceFile]] = {}
    for (components, file), plane in zip(found, planes_of, strict=True):
        index = tuple(plane.get(a, 0) for a in named)
        planes = fields.setdefault((components.row, components.column, components.field), {})
        if index in planes:
            where = "".join(f", {a} {i}" for a, i in zip(named, index, strict=True))
            raise LayoutError(
                f"Two files name the same image (well {components.well}, field {components.field}"
                f"{where}): '{planes[index].path}' and '{file.path}'. Remove one, or give a "
                "convention that tells them apart."
            )
        planes[index] = file
    first = found[0][1]
    header = read_header(first.path)
    if named and len(header.shape) != 2:
        raise LayoutError(
            f"'{first.path}' holds a {len(header.shape)}-D image {header.shape}, but its name names one "
            f"plane ({found[0][0].convention}: a 2-D image per file). Convert whole images one by one."
        )
    own_axes = "yx" if named else ngff.infer_axes(len(header.shape))
    if own_axes is None:
        raise LayoutError(
            f"'{first.path}' holds a {len(header.shape)}-D image; OME-Zarr fields are 2-D to 5-D."
        )
    indices = [index for planes in fields.values() for index in planes]
    sizes = tuple(max(index[i] for index in indices) + 1 for i in range(len(named)))
    channel_names: tuple[str, ...] = ()
    if "c" in named:  # as the instrument names them (w1, ch1, C01, d0, Incucyte's phase)
        channel_names = tuple(plate_channel_names(sizes[named.index("c")], (c for c, _ in found)))
    ordered = sorted(fields.items(), key=lambda item: (row_sort_key(item[0][0]), column_sort_key(item[0][1]),
                                                       item[0][2]))
    plans = tuple(
        FieldPlan(row, column, index, tuple(sorted(planes.items())))
        for (row, column, index), planes in ordered
    )
    return PlatePlan(plans, named + own_axes, named, sizes + header.shape, str(header.dtype),
                     found[0][0].convention, channel_names, tuple(skipped))
