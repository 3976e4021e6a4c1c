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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from polystore.plates.builtin import BUILTIN
from polystore.plates.components import DEFAULT_LIMITS, INDEX_NAMES, NAME_SUFFIX, Components
from polystore.plates.convention import DEFAULT_BASE, Convention, formatted_name
from polystore.plates.errors import PlateNameError

__all__ = [
    "BUILTIN", "DEFAULT_BASE", "DEFAULT_LIMITS", "Convention", "Recognition", "channel_names",
    "components_of", "conventions", "find_convention", "format_name", "get_convention", "index_label",
    "named_convention", "parse_components", "recognise", "register_convention", "unregister_convention",
]

_user: list[Convention] = []


def conventions() -> tuple[Convention, ...]:
    """Every convention, in the order they are tried: the user's, then :data:`BUILTIN`."""
    return (*_user, *BUILTIN)


def find_convention(name: str) -> Convention | None:
    """The convention called ``name`` in this process, or None."""
    return next((c for c in conventions() if c.name == name), None)


def get_convention(name: str) -> Convention:
    """The convention called ``name``; :class:`PlateNameError` listing the known ones if none is."""
    convention = find_convention(name)
    if convention is not None:
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
    in its name (``(?P<channel0>\\d)``: channels counted from 0). ``base`` and ``limits`` take
    ``site`` for ``field``. ``example``, if given, must parse: it is checked now.
    """
    convention = Convention(
        name, pattern, base=dict(base or {}), limits=dict(limits or {}), groups=dict(groups or {}),
        skip=dict(skip or {}), title=title, example=example, flags=flags, anchored=anchored,
    )
    clash = [c for c in conventions() if c.name == name]
    if clash and (not replace or clash[0] in BUILTIN):
        hint = "" if clash[0] in BUILTIN else " (pass replace=True to replace it)"
        raise PlateNameError(f"a naming convention called {name!r} exists already{hint}; choose another name")
    if example:
        found = convention.match(_normalise(example))
        if found is None or convention.read(_normalise(example), found) is None:
            raise PlateNameError(f"convention {name!r}: its example {example!r} does not match its pattern")
    _user[:] = [convention, *(c for c in _user if c.name != name)]
    _recognise.cache_clear()
    return convention


def format_name(components: Components, convention: str) -> str:
    """The path ``convention`` would give an image at ``components``: the inverse of
    :func:`parse_components` (for synthetic plates, tests, and renaming a plate's files)."""
    return formatted_name(get_convention(convention), components)


def index_label(components: Components, name: str) -> str:
    """How index ``name`` of ``components`` is shown to a person: numbered as the name that gave
    it counts (ImageXpress ``s2`` is field 1, shown "2"; its channel 0 is "w1"; a pattern's
    ``site0`` group counts from 0), an index given as text by that text (Incucyte's "phase");
    0-based for an index no name gave ("c0" for a channel).

    How the name counted is what ``components`` recorded (:attr:`Components.bases`,
    :attr:`Components.labels`: they travel in stream headers, so a receiver needs no copy of
    the sender's conventions), else its convention's if this process knows it."""
    value = getattr(components, name)
    if value is None:
        return ""
    named = components.extras.get(name + NAME_SUFFIX)
    if named is not None:
        return named
    convention = find_convention(components.convention) if components.convention else None
    base = components.bases.get(name)
    if base is None:
        base = convention.counts_from(name) if convention is not None else 0
    label = components.labels.get(name)
    if label is None:
        default = convention.channel_label if convention is not None else "c{}"
        label = default if name == "channel" else "{}"
    return label.format(value + base)


def channel_names(count: int, components: Iterable[Components] = ()) -> list[str]:
    """How channels ``0..count-1`` of a plate are shown (a store's channel labels, a viewer's
    layer names): as the ``components`` of that channel say (:func:`index_label`: ``w1``,
    ``ch1``, ``C01``, ``d0``, Incucyte's ``phase``), else numbered as the first of them counts,
    else ``c0``, ``c1``, ... (0-based: nothing says otherwise)."""
    by_channel: dict[int, Components] = {}
    for one in components:
        if one.channel is not None:
            by_channel.setdefault(one.channel, one)
    sample = next(iter(by_channel.values()), None)
    names = []
    for index in range(count):
        own = by_channel.get(index)
        if own is None and sample is not None:
            own = sample.replace(channel=index)
        names.append(index_label(own, "channel") if own is not None else f"c{index}")
    return names


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


def components_of(
    path: str, metadata: Mapping[str, Any] | None = None, convention: str | None = None
) -> Components | None:
    """Where a streamed item sits on its plate: what a receiver (napari, Fiji) calls.

    ``convention`` given (a name, or a pattern with named groups): ``path`` read with it, the
    receiver's choice over the sender's. Else the plate keys of the item's header
    (``metadata``, as :meth:`Components.to_header` wrote them; its convention's limits apply
    where this process knows it), else ``path`` read as a sender would
    (:func:`parse_components`). None: no plate position. Raises :class:`PlateNameError` for a
    header or name that is out of range or ambiguous."""
    if convention:
        return parse_components(path, convention)
    if metadata:
        known = find_convention(str(metadata.get("convention", "")))
        header = Components.from_header(metadata, known.limits if known is not None else DEFAULT_LIMITS)
        if header is not None:
            return header
    return parse_components(path)


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


def named_convention(convention: str) -> Convention:
    """The convention ``convention`` names: a regular expression with named groups, or a
    registered name. :class:`PlateNameError` saying what is wrong with either: check it once,
    before reading files, not file by file."""
    return _pattern_convention(convention) if "(?P<" in convention else get_convention(convention)


@functools.lru_cache(maxsize=8192)  # a stream parses each path of every frame it sends
def _recognise(path: str, convention: str | None) -> Recognition:
    groups = [tuple(_user), BUILTIN] if convention is None else [(named_convention(convention),)]
    for number, group in enumerate(groups):
        readings: list[_Reading] = []
        for candidate in group:
            found = candidate.match(path)
            if found is None:
                continue
            reason = next((why for g, why in candidate.skip.items() if found.group(g) is not None), None)
            if reason is not None:
                readings.append(_Reading(candidate, None, frozenset(), reason))
            elif (read := candidate._read(path, found)) is not None:  # None: its "well" is none
                readings.append(_Reading(candidate, *read, None))
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
