"""Naming conventions: how instruments and pipelines name a plate's images, as a table of data.

Each :class:`Convention` is a named regular expression whose named groups map to components
(``plate``, ``well`` or ``row`` + ``column``, ``field``/``site``, ``channel``, ``z``, ``t``; any
other group becomes an extra), plus from what each index counts (``base``) and how many
values it may take (``limits``). A pattern matches the *last components* of a path
(``TimePoint_1/ZStep_2/A01_s1_w1.tif`` in ``run/plate1/TimePoint_1/ZStep_2/A01_s1_w1.tif``);
the folder above what it matched names the plate when the name itself does not.

Conventions are tried in order: user conventions (:func:`register_convention`) first, then
:data:`BUILTIN`. A name is never guessed: two conventions that read it differently, or an
index outside a convention's range (ImageXpress ``w0``, ``s0``, ``w30000``), raise
:class:`PlateNameError`; a name no convention reads gives None (or, with ``strict=True``, an
error listing the conventions tried).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from polystore.plates.components import INDEX_NAMES, Components
from polystore.plates.errors import PlateNameError
from polystore.plates.wells import normalise_row, row_number, split_well

COMPONENT_GROUPS = frozenset({"plate", "well", "row", "column", *INDEX_NAMES, "site"})
DEFAULT_BASE: Mapping[str, int] = MappingProxyType({"field": 1, "channel": 1, "z": 1, "t": 1})
"""What a convention counts from unless it says: 1, as most instruments do."""
DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {"field": 10_000, "channel": 100, "z": 10_000, "t": 100_000}
)
"""How many values an index may take. Beyond, a name is refused, not stored: ``w30000`` would
make a zarr field of 30 000 channels."""

_COUNTED_GROUP = re.compile(r"(field|site|channel|z|t)([01])")
"""A group named ``channel0`` (or ``site1``, ...) says from what that index counts."""
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_EXTENSION = r"(?:\.[A-Za-z0-9]+){0,2}"  # .tif, .TIF, .ome.tif, .roi.zip, or none
_WELL = r"[A-Z]{1,2}\d{1,3}"
_WELL_NAME = re.compile(r"[A-Za-z]{1,2}\d{1,3}")


@dataclass(frozen=True, eq=False)
class Convention:
    """One naming convention: a pattern and how its groups become :class:`Components`."""

    name: str
    pattern: str
    """Regular expression matched (whole) against the last components of a path."""
    base: Mapping[str, int] = field(default_factory=lambda: DEFAULT_BASE)
    """From what each index counts in names of this convention (ImageXpress s1 = field 0)."""
    limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LIMITS)
    """How many values each index may take; an index at or above is refused."""
    groups: Mapping[str, str] = field(default_factory=dict)
    """Groups named otherwise than their component: ``{"zstep": "z"}``; ``""`` drops a group."""
    skip: Mapping[str, str] = field(default_factory=dict)
    """Group -> reason: a name where this group matched is not a plate image (thumbnails)."""
    title: str = ""
    """The instruments or software that write it (for messages and docs)."""
    example: str = ""
    flags: int = 0
    anchored: bool = True
    """True: the pattern must match whole last components of a path (an extension may follow);
    False: it is searched anywhere in the path (as a user's pattern is)."""
    writes: tuple[str, ...] = ()
    """How the convention writes a name, part by part (:func:`format_name`): a part is left out
    when none of its values is known; ``{row_number}``/``{column_number}`` are 1-based."""
    channel_label: str = "c{}"
    """How a channel is shown (a layer's or a window's name), numbered as the instrument counts."""

    def __post_init__(self) -> None:
        # Checked when the convention is made, naming it (not at the first name it reads).
        try:
            compiled = re.compile(self.pattern, self.flags)
            flags, body = _split_flags(self.pattern)
            # One search finds the longest matching tail: the leftmost start after a "/".
            tail = re.compile(
                rf"{flags}(?:^|/)(?:{body}){_EXTENSION}\Z" if self.anchored else self.pattern, self.flags
            )
        except re.error as error:
            raise PlateNameError(
                f"convention {self.name!r}: its pattern is not a regular expression ({error})"
            ) from error
        # what each group is, worked out once (names are read for every frame a stream sends):
        # (group, component, from what it counts when the group's name says so)
        plan: list[tuple[str, str, int | None]] = []
        for group in compiled.groupindex:
            component = self.groups.get(group, group)
            if component == "":
                continue
            counted = _COUNTED_GROUP.fullmatch(component)
            component = counted[1] if counted else component
            component = "field" if component == "site" else component
            plan.append((group, component, int(counted[2]) if counted else None))
        mapped = {component for _, component, _ in plan}
        if "well" not in mapped and not {"row", "column"} <= mapped:
            raise PlateNameError(
                f"convention {self.name!r}: its pattern needs a named group 'well' (e.g. "
                "(?P<well>[A-Z]\\d{2})) or the two groups 'row' and 'column'"
            )
        for table in ("base", "limits"):
            unknown = set(getattr(self, table)) - set(INDEX_NAMES) - {"site"}
            if unknown:
                raise PlateNameError(
                    f"convention {self.name!r}: {table} names {sorted(unknown)}; "
                    f"indices are {list(INDEX_NAMES)}"
                )
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "match", tail.search)  # the hot path: no Python frame between
        object.__setattr__(self, "_plan", tuple(plan))

    @property
    def regex(self) -> re.Pattern[str]:
        """What :meth:`match` searches a path with."""
        tail: re.Pattern[str] = self.__dict__["_tail"]
        return tail

    def counts_from(self, index: str) -> int:
        return self.base.get(index, self.base.get("site", 1) if index == "field" else 1)

    def match(self, path: str) -> re.Match[str] | None:  # replaced by the compiled search itself
        """Where the pattern matches ``path`` (the longest tail of whole components), or None."""
        return self.regex.search(path)

    def read(self, path: str, found: re.Match[str]) -> Components:
        """The components of ``path``, which this convention matched as ``found``."""
        return self._read(path, found)[0]

    def _read(self, path: str, found: re.Match[str]) -> tuple[Components, frozenset[str]]:
        """The components, and which of them the name states (not defaults or folders)."""
        values: dict[str, str] = {}
        extras: dict[str, str] = {}
        bases: dict[str, int] = {}
        texts = found.groupdict()
        plan: tuple[tuple[str, str, int | None], ...] = self.__dict__["_plan"]
        for group, component, base in plan:
            text = texts[group]
            if text is None:
                continue
            if base is not None:  # "channel0": a channel counted from 0, said in the pattern itself
                bases[component] = base
            if component not in COMPONENT_GROUPS:
                extras[component] = text
            elif component in values and not _same(values[component], text):
                raise PlateNameError(f"{path!r}: {component} is written twice, differently "
                                     f"({values[component]!r} and {text!r}; convention {self.name!r})")
            else:
                values[component] = text
        try:
            if "well" in values:
                row, column = split_well(values["well"])
            else:
                row, column = normalise_row(values["row"]), values["column"]
            indices = {name: self._index(path, name, values[name], bases.get(name))
                       for name in INDEX_NAMES if name in values}
            plate = values.get("plate") or _folder_plate(path[: found.start()], row + column)
            components = Components(row, column, plate=plate, extras=extras, convention=self.name, **indices)
        except PlateNameError as error:
            if str(error).startswith(repr(path)):
                raise
            raise PlateNameError(f"{path!r} (convention {self.name!r}): {error}") from error
        stated = {"well", *(k for k in values if k in ("plate", *INDEX_NAMES))}
        return components, frozenset(stated)

    def _index(self, path: str, name: str, text: str, base: int | None = None) -> int:
        base = self.counts_from(name) if base is None else base
        limit = self.limits.get(name, DEFAULT_LIMITS[name])
        value = int(text) - base
        if not 0 <= value < limit:
            raise PlateNameError(
                f"{path!r}: {name} written as {text} is out of range for convention {self.name!r} "
                f"({self.title or self.name} counts {name}s from {base}, at most {limit} of them: "
                f"{base}..{base + limit - 1}). Rename the file, or read it with a convention of "
                "your own (polystore.register_convention(name, pattern, base={...}))."
            )
        return value

    def describe(self) -> str:
        return f"{self.name} ({self.title})" if self.title else self.name


def _split_flags(pattern: str) -> tuple[str, str]:
    """A pattern's leading global flags ``(?i)`` apart from its body (flags must stay first)."""
    found = re.match(r"\(\?[aiLmsux]+\)", pattern)
    return (found.group(), pattern[found.end():]) if found else ("", pattern)


def _formatted(convention: Convention, components: Components) -> str:
    if not convention.writes:
        raise PlateNameError(f"convention {convention.name!r} does not say how it writes names")
    given = {name: value + convention.counts_from(name) for name, value in components.indices.items()}
    values: dict[str, Any] = {
        "plate": components.plate, "well": components.well, "row": components.row,
        "column": components.column, "row_number": row_number(components.row),
        "column_number": int(components.column), **dict(components.extras), **given,
    }
    unsaid = [n for n in given if n != "field" and not any("{" + n in part for part in convention.writes)]
    if unsaid:
        raise PlateNameError(f"convention {convention.name!r} cannot write {', '.join(unsaid)} in a name")
    parts: list[str] = []
    for part in convention.writes:
        names = [n for _, n, _, _ in string.Formatter().parse(part) if n]
        if names and all(values.get(n) is None for n in names):
            continue  # nothing of this part is known: the convention leaves it out
        # what a name must always say (Phenix's plane) is the first one when not known
        filled = {n: values.get(n) if values.get(n) is not None else convention.counts_from(n) for n in names}
        parts.append(part.format(**filled))
    return "".join(parts)


def _same(a: str, b: str) -> bool:
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def _folder_plate(prefix: str, well: str) -> str | None:
    """The plate named by the folder above a match: the nearest folder that is not the well's."""
    for folder in reversed([p for p in prefix.split("/") if p]):
        if _WELL_NAME.fullmatch(folder) and _same_well(folder, well):
            continue  # plate/B03/B03_s1_w1.tif: "B03" is the well's folder, not the plate
        return folder
    return None


def _same_well(folder: str, well: str) -> bool:
    try:
        return split_well(folder) == split_well(well)
    except PlateNameError:
        return False


# -- the table -------------------------------------------------------------------------------

_METAXPRESS_FOLDERS = (
    r"(?:(?P<date>\d{4}-\d{2}-\d{2})/(?P<acquisition>\d+)/)?"
    r"(?:TimePoint_(?P<timepoint>\d+)/)?(?:ZStep_(?P<zstep>\d+)/)?"
)
_FROM_ZERO: Mapping[str, int] = MappingProxyType({"field": 0, "channel": 0, "z": 0, "t": 0})

BUILTIN: tuple[Convention, ...] = (
    Convention(
        "imagexpress",
        _METAXPRESS_FOLDERS
        + rf"(?:(?P<plate>[^/]*)_)?(?P<well>{_WELL})"
        r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?(?:_z(?P<z>\d+))?(?:_t(?P<t>\d+))?"
        # a suffix only after the wavelength: "_B03_T0001F001..." is Yokogawa's, not a suffix
        r"(?(channel)(?:_(?P<suffix>(?![Tt]humb)[A-Za-z0-9][A-Za-z0-9-]*))?)"
        rf"(?P<thumb>_[Tt]humb)?(?P<guid>{_GUID})?{_EXTENSION}",
        groups={"timepoint": "t", "zstep": "z", "date": "", "acquisition": "", "guid": "", "thumb": "thumb"},
        skip={"thumb": "a MetaXpress thumbnail (a small preview of an image stored beside it)"},
        title="ImageXpress / MetaXpress",
        example="TimePoint_1/ZStep_2/plate1_B03_s2_w1E0C7D6E0-B8B5-4A6E-9E9F-0123456789AB.tif",
        writes=("{plate}_", "{well}", "_s{field}", "_w{channel}", "_z{z}", "_t{t}", ".tif"),
        channel_label="w{}",
    ),
    Convention(
        "well-folders",
        rf"(?P<well>{_WELL})/(?:"
        r"(?:(?:site|field|s|f)(?P<field>\d+))?(?:[_-]?(?:channel|ch|w|c)(?P<channel>\d+))?"
        r"(?:[_-]?z(?P<z>\d+))?(?:[_-]?t(?P<t>\d+))?"
        # any other name is one image of the well (named in extras), unless it names a well itself
        rf"|(?P<name>(?!{_WELL}(?:[_.]|$))[^/.][^/]*?)){_EXTENSION}",
        title="one folder per well",
        example="plate1/B03/s2_w1.tif",
        writes=("{plate}/", "{well}/", "s{field}", "_w{channel}", "_z{z}", "_t{t}", ".tif"),
        channel_label="w{}",
    ),
    Convention(
        "ngff",
        r"(?P<row>[A-Za-z]{1,2})/(?P<column>\d{1,3})/(?P<field>\d+)",
        base=_FROM_ZERO,
        title="OME-NGFF plate paths",
        example="plate.zarr/B/03/0",
        writes=("{plate}/", "{row}/{column}/{field}"),
    ),
    Convention(
        "opera-phenix",
        r"(?:Images/)?r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<field>\d{1,3})p(?P<z>\d{1,3})"
        r"-ch(?P<channel>\d{1,2})(?:sk(?P<t>\d+))?(?:fk(?P<fk>\d+))?(?:fl(?P<fl>\d+))?" + _EXTENSION,
        # sk is the time point; fk and fl are 1 in every Harmony export we know of
        groups={"fk": "", "fl": ""},
        title="Opera Phenix / Operetta (Harmony)",
        example="Images/r02c03f01p01-ch1sk1fk1fl1.tiff",
        writes=("{plate}/Images/",
                "r{row_number:02d}c{column_number:02d}f{field:02d}p{z:02d}-ch{channel}sk{t}fk1fl1.tiff"),
        channel_label="ch{}",
    ),
    Convention(
        "yokogawa",
        rf"(?:(?P<plate>[^/]*)_)?(?P<well>{_WELL})_T(?P<t>\d{{4}})F(?P<field>\d{{3}})"
        r"L(?P<timeline>\d{2})A(?P<action>\d{2})Z(?P<z>\d{2})C(?P<channel>\d{2})" + _EXTENSION,
        # A (the action) changes with the channel in every CV7000/CV8000 measurement and L (the
        # timeline) with T: C is the channel and T the time point, neither is a position of its own
        groups={"action": "", "timeline": ""},
        title="Yokogawa CV7000 / CV8000",
        example="AssayPlate_Greiner_#655090_B03_T0001F001L01A01Z01C01.tif",
        writes=("{plate}_", "{well}_T{t:04d}F{field:03d}L01A01Z{z:02d}C{channel:02d}.tif"),
        channel_label="C{:02d}",
    ),
    Convention(
        "cellinsight",
        rf"(?:(?P<plate>[^/]*)_)?(?P<well>{_WELL})f(?P<field>\d{{2,3}})(?:[do](?P<channel>\d+))?{_EXTENSION}",
        base=_FROM_ZERO,
        title="Thermo CellInsight / Cellomics ArrayScan",
        example="MFGTMP_150612140001_B03f00d0.TIF",
        writes=("{plate}_", "{well}f{field:02d}d{channel}.TIF"),
        channel_label="d{}",
    ),
    Convention(
        "incucyte",
        r"(?P<plate>[^/]*?)_(?:(?P<channel_name>phase|green|red|nir|blue|orange)_)?"
        r"(?P<well>[A-Z]{1,2}\d{1,2})_(?P<field>\d+)"
        r"(?:_(?P<time>\d{4}y\d{2}m\d{2}d_\d{2}h\d{2}m|\d+d\d+h\d+m))?" + _EXTENSION,
        title="Sartorius Incucyte (time in extras: a date, not an index)",
        example="VID1_B3_1_2019y01m23d_12h00m.tif",
        writes=("{plate}_", "{row}{column_number}_{field}", "_{time}", ".tif"),
    ),
)
"""The built-in conventions, tried in this order after the user's."""

_user: list[Convention] = []


def conventions() -> tuple[Convention, ...]:
    """Every convention, in the order they are tried: the user's, then :data:`BUILTIN`."""
    return (*_user, *BUILTIN)


def get_convention(name: str) -> Convention:
    for convention in conventions():
        if convention.name == name:
            return convention
    known = ", ".join(c.name for c in conventions())
    raise PlateNameError(
        f"Unknown naming convention {name!r}. Known: {known}; or give a regular expression with "
        "named groups (well or row + column, field/site, channel, z, t)."
    )


def register_convention(
    name: str,
    pattern: str,
    *,
    base: Mapping[str, int] | None = None,
    limits: Mapping[str, int] | None = None,
    groups: Mapping[str, str] | None = None,
    skip: Mapping[str, str] | None = None,
    title: str = "",
    example: str = "",
    flags: int = 0,
    anchored: bool = False,
    replace: bool = False,
) -> Convention:
    """Add a naming convention, tried before the built-in ones (and before earlier user ones).

    ``pattern`` is a regular expression with named groups (``well`` or ``row`` + ``column``;
    ``plate``, ``field`` or ``site``, ``channel``, ``z``, ``t``; others become extras),
    searched in the path (``anchored=True``: it must match whole last components of the
    path, an extension allowed after it, as the built-in patterns do). ``base`` says from
    what each index counts (default 1 for all: ``s1`` is field 0); a group may also say it
    in its name (``(?P<channel0>\\d)``: channels counted from 0). ``example``, if given, must
    parse: it is checked now.
    """
    convention = Convention(
        name, pattern, base=MappingProxyType({**DEFAULT_BASE, **(base or {})}),
        limits=MappingProxyType({**DEFAULT_LIMITS, **(limits or {})}), groups=dict(groups or {}),
        skip=dict(skip or {}), title=title, example=example, flags=flags, anchored=anchored,
    )
    clash = [c for c in conventions() if c.name == name]
    if clash and (not replace or clash[0] in BUILTIN):
        hint = "" if clash[0] in BUILTIN else " (pass replace=True to replace it)"
        raise PlateNameError(f"a naming convention called {name!r} exists already{hint}; choose another name")
    if example:
        found = convention.match(_normalise(example))
        if found is None:
            raise PlateNameError(f"convention {name!r}: its example {example!r} does not match its pattern")
        convention.read(_normalise(example), found)
    _user[:] = [convention, *(c for c in _user if c.name != name)]
    _recognise.cache_clear()
    return convention


def format_name(components: Components, convention: str) -> str:
    """The path ``convention`` would give an image at ``components``: the inverse of
    :func:`parse_components` (for synthetic plates, tests, and renaming a plate's files)."""
    return _formatted(get_convention(convention), components)


def index_label(components: Components, name: str) -> str:
    """How index ``name`` of ``components`` is shown to a person: numbered as the convention
    that read it counts (ImageXpress ``s2`` is field 1, shown "2"; its channel 0 is "w1");
    0-based for components no known convention read."""
    value = getattr(components, name)
    if value is None:
        return ""
    convention = next((c for c in conventions() if c.name == components.convention), None)
    if convention is None:
        return f"c{value}" if name == "channel" else str(value)
    shown = value + convention.counts_from(name)
    return convention.channel_label.format(shown) if name == "channel" else str(shown)


def unregister_convention(name: str) -> None:
    """Remove a user convention (built-in ones stay)."""
    _user[:] = [c for c in _user if c.name != name]
    _recognise.cache_clear()


# -- reading a path ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recognition:
    """What the conventions made of a path: its components (or None), and why."""

    path: str
    components: Components | None
    convention: str | None = None
    """The convention that read it (also when it was skipped)."""
    skipped: str | None = None
    """Why a recognised name is not a plate image (a thumbnail), else None."""
    tried: tuple[str, ...] = ()
    """The conventions tried, in order."""

    def explain(self) -> str:
        if self.components is not None:
            return f"{self.path}: {self.convention}, well {self.components.well}"
        if self.skipped:
            return f"{self.path}: skipped, {self.skipped} ({self.convention})"
        return f"{self.path}: no naming convention reads it (tried: {', '.join(self.tried)})"


def recognise(path: str, convention: str | None = None) -> Recognition:
    """What ``path`` says about its place on a plate, and which convention said it.

    ``convention``: a registered name, or a regular expression (tried alone); None tries the
    user's conventions, then the built-in ones. Raises :class:`PlateNameError` for a name two
    conventions read differently or with an index out of its convention's range.
    """
    return _recognise(_normalise(path), convention)


def parse_components(path: str, convention: str | None = None, *, strict: bool = False) -> Components | None:
    """The :class:`Components` of ``path``, or None when it has no plate meaning.

    ``strict=True`` raises :class:`PlateNameError` (naming the conventions tried) instead of
    returning None for a name no convention reads or one that is skipped (a thumbnail).
    """
    found = recognise(path, convention)
    if found.components is None and strict:
        raise PlateNameError(found.explain() + ". Give the convention (or a pattern) that names these files.")
    return found.components


def _normalise(path: str) -> str:
    text = str(path).replace("\\", "/")
    if "://" in text:
        text = text.split("://", 1)[1]
    return "/".join(p for p in text.split("/") if p not in ("", "."))


@functools.lru_cache(maxsize=8192)  # a stream parses each path of every frame it sends
def _recognise(path: str, convention: str | None) -> Recognition:
    if convention is None:
        groups = [tuple(_user), BUILTIN]
    elif "(?P<" in convention:
        groups = [(_pattern_convention(convention),)]
    else:
        groups = [(get_convention(convention),)]
    for number, group in enumerate(groups):
        readings: list[_Reading] = []
        for candidate in group:
            found = candidate.match(path)
            if found is None:
                continue
            reason = next((why for g, why in candidate.skip.items() if found.group(g) is not None), None)
            if reason is not None:
                readings.append(_Reading(candidate, None, frozenset(), reason))
            else:
                readings.append(_Reading(candidate, *candidate._read(path, found), None))
        if not readings:
            continue
        # A reading that another refines (says the same, and more) is the same reading: a file
        # in a well folder that also carries an instrument's name. The fullest one is taken.
        for i, one in enumerate(readings):
            for other in readings[i + 1 :]:
                if not one.agrees(other):
                    raise PlateNameError(
                        f"{path!r} is ambiguous: convention {one.convention.describe()} reads it as "
                        f"{_show(one.components, one.skipped)}; convention {other.convention.describe()} as "
                        f"{_show(other.components, other.skipped)}. Say which one names these files "
                        "(convention=...), or register a pattern of your own."
                    )
        # the fullest reading; of equals, the first in table order (max keeps the first)
        best = readings[0] if len(readings) == 1 else max(readings, key=lambda r: len(r.stated))
        tried = tuple(c.name for g in groups[: number + 1] for c in g)
        return Recognition(path, best.components, best.convention.name, best.skipped, tried)
    return Recognition(path, None, None, None, tuple(c.name for g in groups for c in g))


@dataclass(frozen=True)
class _Reading:
    convention: Convention
    components: Components | None
    stated: frozenset[str]
    skipped: str | None

    def agrees(self, other: _Reading) -> bool:
        if self.components is None or other.components is None:
            return self.skipped is not None and other.skipped is not None
        # one reading must refine the other: say all it says, the same way, and maybe more
        if not (self.stated <= other.stated or other.stated <= self.stated):
            return False
        mine, theirs = _position(self.components), _position(other.components)
        return all(mine[k] == theirs[k] for k in self.stated & other.stated)


@functools.lru_cache(maxsize=64)
def _pattern_convention(pattern: str) -> Convention:
    return Convention("pattern", pattern, title="the pattern given", anchored=False)


def _position(components: Components) -> dict[str, Any]:
    indices = {n: getattr(components, n) for n in INDEX_NAMES}
    return {"plate": components.plate, "well": components.well, **indices}


def _show(components: Components | None, skipped: str | None) -> str:
    if components is None:
        return f"not a plate image ({skipped})"
    parts = [f"well {components.well}"] + [f"{k} {v}" for k, v in components.indices.items()]
    if components.plate:
        parts.insert(0, f"plate {components.plate!r}")
    return ", ".join(parts)
