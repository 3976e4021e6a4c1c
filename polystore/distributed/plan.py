"""The plan of a conversion, made on the client before anything is written: for a plate,
which file goes to which well, field and plane, and the one shape every field image has;
for an image, the regions each task owns at each pyramid level.

Files are read by the plate model (:func:`polystore.plates.recognise`): any naming
convention it knows, or the one (or the pattern) given. A folder whose files are named by
two conventions, that holds several plates, or where two files name the same plane is
refused with what was found, not guessed at.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from polystore.distributed.sources import SourceFile, read_header, reader_for, walk_files
from polystore.exceptions import PolystoreError
from polystore.ome import ngff
from polystore.plates import Components, PlateNameError, number_plate, recognise
from polystore.plates import channel_names as plate_channel_names
from polystore.plates.wells import column_sort_key, row_sort_key

PLANE_AXES = "tcz"
"""The plate indices that become axes of a field image, in OME-NGFF's order."""


class LayoutError(PolystoreError, ValueError):
    """The files given do not make one plate: none recognised, two naming conventions, several
    plates, two files for one plane, or images that are not planes where names say they are."""


class ChunkingError(PolystoreError, ValueError):
    """Chunks and shards that do not tile each other (a task could not own its keys)."""


def digest(*parts: Any) -> str:
    """A short, stable hash of JSON-able ``parts`` (what a done-marker is checked against)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- plates --------------------------------------------------------------------------------------


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

    def field_digest(self, field: FieldPlan, options: Any) -> str:
        """What a field's done-marker must hold for the field to count as written."""
        return digest(self.axes, self.shape, self.dtype, self.channel_names, options, asdict(field))


def _entries(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(name read by the conventions, file path) of every file of a folder or list."""
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        return [(relative, os.path.join(folder, relative)) for relative in walk_files(folder)]
    return [(os.fspath(path).replace("\\", "/"), os.fspath(path)) for path in source]


def plan_plate(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], convention: str | None = None,
) -> PlatePlan:
    """Plan the plate a folder (recursively) or a list of image files makes.

    ``convention``: a registered convention's name, or a regular expression with named groups;
    None tries every convention. Raises :class:`LayoutError` when the files do not make one plate.
    """
    skipped: list[Skipped] = []
    found: list[tuple[Components, SourceFile]] = []
    names: list[str] = []
    entries = _entries(source)
    for name, path in entries:
        if reader_for(path) is None:
            skipped.append(Skipped(name, "not an image file this converter reads (.tif, .tiff, .npy)"))
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


def _layout(found: list[tuple[Components, SourceFile]], skipped: list[Skipped]) -> PlatePlan:
    named = "".join(a for a in PLANE_AXES if any(_index_of(c, a) is not None for c, _ in found))
    fields: dict[tuple[str, str, int], dict[tuple[int, ...], SourceFile]] = {}
    for components, file in found:
        index = tuple(_index_of(components, a) or 0 for a in named)
        planes = fields.setdefault((components.row, components.column, components.field), {})
        if index in planes:
            raise LayoutError(
                f"Two files name the same image (well {components.well}, field {components.field}"
                f"{_plane_text(named, index)}): '{planes[index].path}' and '{file.path}'. Remove "
                "one, or give a convention that tells them apart."
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
    return PlatePlan(plans, named + own_axes, named, sizes + header.shape, str(np.dtype(header.dtype)),
                     found[0][0].convention, channel_names, tuple(skipped))


def _index_of(components: Components, axis: str) -> int | None:
    value: int | None = {"t": components.t, "c": components.channel, "z": components.z}[axis]
    return value


def _plane_text(axes: str, index: tuple[int, ...]) -> str:
    names = {"t": "time point", "c": "channel", "z": "plane"}
    return "".join(f", {names[a]} {i}" for a, i in zip(axes, index, strict=True))


# -- chunks, shards and regions ----------------------------------------------------------------


def check_tiling(chunks: Sequence[int] | None, shards: Sequence[int] | None) -> None:
    """Refuse shards that are not whole multiples of the chunks (zarr would store chunks across
    shard boundaries, and a task writing one shard would touch its neighbours')."""
    if chunks is None or shards is None:
        return
    if len(chunks) != len(shards):
        raise ChunkingError(f"chunks {tuple(chunks)} and shards {tuple(shards)} have different lengths.")
    bad = [i for i, (c, s) in enumerate(zip(chunks, shards, strict=True)) if c <= 0 or s % c]
    if bad:
        raise ChunkingError(
            f"shards {tuple(shards)} are not whole multiples of chunks {tuple(chunks)} (axis "
            f"{', '.join(map(str, bad))}): a shard holds whole chunks. Give shards that the chunks "
            "tile, e.g. shards = chunks x 4."
        )


Region = tuple[tuple[int, int], ...]
"""Per axis, [start, stop) of a block of an array."""


def region_shape(
    shape: Sequence[int], unit: Sequence[int], itemsize: int, target_bytes: int
) -> tuple[int, ...]:
    """A block shape made of whole write units (shards, else chunks), about ``target_bytes``:
    grown along the innermost axes first (whole rows of tiles), never past the array."""
    block = [min(u, s) if s else u for u, s in zip(unit, shape, strict=True)]
    for axis in reversed(range(len(block))):
        while block[axis] < shape[axis]:
            grown = min(block[axis] * 2, math.ceil(shape[axis] / unit[axis]) * unit[axis])
            if math.prod(block) // block[axis] * grown * itemsize > target_bytes:
                break
            block[axis] = grown
        if block[axis] < shape[axis]:
            break
    return tuple(min(b, s) if s else b for b, s in zip(block, shape, strict=True))


def regions(shape: Sequence[int], block: Sequence[int]) -> list[Region]:
    """The blocks of ``block`` shape that tile an array of ``shape``, in C order."""
    ranges = [range(0, max(s, 1), b) for s, b in zip(shape, block, strict=True)]
    return [tuple((start, min(start + b, s)) for start, b, s in zip(starts, block, shape, strict=True))
            for starts in itertools.product(*ranges)]


def source_region(region: Region, axes: str, source_shape: Sequence[int]) -> Region:
    """The block of the level above that ``region`` of a level is computed from (y, x doubled)."""
    return tuple(
        (min(2 * a, n), min(2 * b, n)) if axis in "yx" and n >= 2 else (a, b)
        for (a, b), axis, n in zip(region, axes, source_shape, strict=True)
    )


def overlapping(region: Region, candidates: Iterable[Region]) -> list[Region]:
    """The candidates that share at least one element with ``region``."""
    return [c for c in candidates
            if all(a < d and c0 < b for (a, b), (c0, d) in zip(region, c, strict=True))]


def region_name(level: int, region: Region) -> str:
    return f"{level}/" + "_".join(str(a) for a, _ in region)
