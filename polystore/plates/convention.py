"""One naming convention: a named regular expression and how its groups become Components.

A pattern matches the *last components* of a path (``TimePoint_1/ZStep_2/A01_s1_w1.tif`` in
``run/plate1/TimePoint_1/ZStep_2/A01_s1_w1.tif``); the folder above what it matched names the
plate when the name itself does not. Its named groups map to components (``plate``, ``well``
or ``row`` + ``column``, ``field``/``site``, ``channel``, ``z``, ``t``; any other group becomes
an extra); ``base`` says from what each index counts and ``limits`` how many values it may take.
"""

from __future__ import annotations

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
GUID_PATTERN = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
EXTENSION_PATTERN = r"(?:\.[A-Za-z0-9]+){0,2}"  # .tif, .TIF, .ome.tif, .roi.zip, or none
WELL_PATTERN = r"[A-Z]{1,2}\d{1,3}"
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
            anchored = rf"{flags}(?:^|/)(?:{body}){EXTENSION_PATTERN}\Z"
            tail = re.compile(anchored if self.anchored else self.pattern, self.flags)
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


def formatted_name(convention: Convention, components: Components) -> str:
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
