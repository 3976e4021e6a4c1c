"""Naming conventions: the registry (the user's first, then :data:`BUILTIN`) and reading a path.

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
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from polystore.plates.builtin import BUILTIN
from polystore.plates.components import INDEX_NAMES, Components
from polystore.plates.convention import DEFAULT_BASE, DEFAULT_LIMITS, Convention, formatted_name
from polystore.plates.errors import PlateNameError

__all__ = [
    "BUILTIN", "DEFAULT_BASE", "DEFAULT_LIMITS", "Convention", "Recognition", "conventions", "format_name",
    "get_convention", "index_label", "parse_components", "recognise", "register_convention",
    "unregister_convention",
]

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
    return formatted_name(get_convention(convention), components)


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
