"""One naming convention: a named regular expression and how its groups become Components.

A pattern matches the *last components* of a path (``TimePoint_1/ZStep_2/A01_s1_w1.tif`` in
``run/plate1/TimePoint_1/ZStep_2/A01_s1_w1.tif``); the folder above what it matched names the
plate when the name itself does not. Its named groups map to components (``plate``, ``well``
or ``row`` + ``column``, ``field``/``site``, ``channel``, ``z``, ``t``; any other group becomes
an extra); ``base`` says from what each index counts and ``limits`` how many values it may take.

Two group names say more than a value: ``<index>_name`` (``channel_name``) is an index written
as text, kept as that extra until a plate's names are numbered; ``<index>_tag`` (``channel_tag``)
is how the name writes the index's prefix (``w``, ``ch``, ``c``), which is how it is shown.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from polystore.plates.components import DEFAULT_LIMITS, INDEX_NAMES, LABEL_FORMAT, NAME_SUFFIX, Components
from polystore.plates.errors import PlateNameError
from polystore.plates.wells import normalise_column, normalise_row, row_number, split_well

COMPONENT_GROUPS = frozenset({"plate", "well", "row", "column", *INDEX_NAMES, "site"})
DEFAULT_BASE: Mapping[str, int] = MappingProxyType({"field": 1, "channel": 1, "z": 1, "t": 1})
"""What a convention counts from unless it says: 1, as most instruments do."""
TAG_SUFFIX = "_tag"

_COUNTED_GROUP = re.compile(r"(field|site|channel|z|t)([01])")
"""A group named ``channel0`` (or ``site1``, ...) says from what that index counts."""
GUID_PATTERN = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
EXTENSION_PATTERN = r"(?:\.[A-Za-z0-9]+){0,2}"  # .tif, .TIF, .ome.tif, .roi.zip, or none
WELL_PATTERN = r"[A-Z]{1,2}\d{1,3}"
_WELL_NAME = re.compile(r"[A-Za-z]{1,2}\d{1,3}")

Plan = tuple[tuple[str, str, int | None], ...]
"""(group, component, from what it counts when the group's name says so), per named group."""


@dataclass(frozen=True, eq=False)
class Convention:
    """One naming convention: a pattern and how its groups become :class:`Components`."""

    name: str
    pattern: str
    """Regular expression matched (whole) against the last components of a path."""
    base: Mapping[str, int] = field(default_factory=lambda: DEFAULT_BASE)
    """From what each index counts in names of this convention (ImageXpress s1 = field 0);
    ``site`` is accepted for ``field``."""
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
    name_order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Index -> the names it is given as text, in the order they are numbered (Incucyte's
    channels: phase first); names not listed follow, in natural order."""
    regex: re.Pattern[str] = field(init=False, repr=False)
    """What :attr:`match` searches a path with."""
    match: Callable[[str], re.Match[str] | None] = field(init=False, repr=False)
    """Where the pattern matches a path (the longest tail of whole components), or None: the
    compiled search itself (a stream reads a path for every frame it sends)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: checked and worked out once, here
        # Checked when the convention is made, naming it (not at the first name it reads).
        try:
            compiled = re.compile(self.pattern, self.flags)
            flags, body = _split_flags(self.pattern)
            # One search finds the longest matching tail: the leftmost start after a "/".
            anchored = rf"{flags}(?:^|/)(?:{body}){EXTENSION_PATTERN}\Z"
            regex = re.compile(anchored if self.anchored else self.pattern, self.flags)
        except re.error as error:
            raise PlateNameError(
                f"convention {self.name!r}: its pattern is not a regular expression ({error})"
            ) from error
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
            given = dict(getattr(self, table))
            if "site" in given:  # the same index as field, as everywhere
                if "field" in given and given["field"] != given["site"]:
                    raise PlateNameError(
                        f"convention {self.name!r}: {table} gives field and site differently")
                given["field"] = given.pop("site")
            unknown = set(given) - set(INDEX_NAMES)
            if unknown:
                raise PlateNameError(
                    f"convention {self.name!r}: {table} names {sorted(unknown)}; "
                    f"indices are {list(INDEX_NAMES)} (site is field)"
                )
            defaults = DEFAULT_BASE if table == "base" else DEFAULT_LIMITS
            set_(self, table, MappingProxyType({**defaults, **given}))
        if not LABEL_FORMAT.fullmatch(self.channel_label):
            raise PlateNameError(f"convention {self.name!r}: channel_label {self.channel_label!r} is a short "
                                 "prefix and '{}' (or '{:02d}'), e.g. 'w{}'")
        set_(self, "regex", regex)
        set_(self, "match", regex.search)
        set_(self, "_plan", tuple(plan))

    def counts_from(self, index: str) -> int:
        """From what ``index`` counts in this convention's names."""
        return self.base.get(index, 1)

    def read(self, path: str, found: re.Match[str]) -> Components | None:
        """The components of ``path``, which this convention matched as ``found``; None when
        what it read as the well is no well of a plate (``CD45`` in ``markers/CD45.tif``)."""
        reading = self._read(path, found)
        return None if reading is None else reading[0]

    def _read(self, path: str, found: re.Match[str]) -> tuple[Components, frozenset[str]] | None:
        """The components, and which of them the name states (not defaults or folders)."""
        values: dict[str, str] = {}
        extras: dict[str, str] = {}
        bases: dict[str, int] = {}
        labels: dict[str, str] = {}
        texts = found.groupdict()
        plan: Plan = self.__dict__["_plan"]
        for group, component, base in plan:
            text = texts[group]
            if text is None:
                continue
            if base is not None:  # "channel0": a channel counted from 0, said in the pattern itself
                bases[component] = base
            tagged = component.removesuffix(TAG_SUFFIX)
            if tagged != component and tagged in INDEX_NAMES:
                labels[tagged] = text + "{}"
            elif component not in COMPONENT_GROUPS:
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
                row, column = normalise_row(values["row"]), normalise_column(values["column"])
        except PlateNameError:
            return None  # a well outside a plate is no well: "stain_CD8.tif" is no plate image
        read = [name for name in INDEX_NAMES if name in values]
        bases = {name: bases.get(name, self.counts_from(name)) for name in read}
        if "channel" in values:
            labels.setdefault("channel", self.channel_label)
        try:
            indices = {name: self._index(path, name, values[name], bases[name]) for name in read}
            start = found.start() + found.group().startswith("/")  # an anchored match begins at a "/"
            folder = _above(path[:start], row + column)
            plate = values.get("plate") or folder.rpartition("/")[2] or None
            components = Components(row, column, plate=plate, extras=extras, convention=self.name,
                                    folder=folder, bases=bases, labels=labels, **indices)
        except PlateNameError as error:
            if str(error).startswith(repr(path)):
                raise
            raise PlateNameError(f"{path!r} (convention {self.name!r}): {error}") from error
        stated = {"well", *(k for k in values if k in ("plate", *INDEX_NAMES))}
        return components, frozenset(stated)

    def _index(self, path: str, name: str, text: str, base: int) -> int:
        limit = self.limits[name]
        # no limit has 20 digits; int() refuses 4300 or more (a stream's path comes from a socket)
        value = int(text) - base if len(text.lstrip("0")) < 20 else limit
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
    for index, order in convention.name_order.items():  # an index said by its name: Incucyte's "green"
        value = components.indices.get(index)
        if value is not None and value < len(order):
            values.setdefault(index + NAME_SUFFIX, order[value])
    written = {n for part in convention.writes for _, n, _, _ in string.Formatter().parse(part) if n}
    unsaid = [n for n in given if n != "field" and n not in written
              and not (n + NAME_SUFFIX in written and values.get(n + NAME_SUFFIX) is not None)]
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


def _above(prefix: str, well: str) -> str:
    """The folder above a match, less the folders of the image's own well (``plate/B03/`` above
    ``B03_s1_w1.tif`` is ``plate``); a searched pattern may start inside a name: that name's
    beginning is no folder."""
    parts = [p for p in prefix.split("/")[:-1] if p]  # whole folders (a pattern may start mid-name)
    while parts and _WELL_NAME.fullmatch(parts[-1]) and _same_well(parts[-1], well):
        parts.pop()
    return "/".join(parts)


def _same_well(folder: str, well: str) -> bool:
    try:
        return split_well(folder) == split_well(well)
    except PlateNameError:
        return False
