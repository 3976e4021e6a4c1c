"""What only a whole plate's names say: indices given as text, and projections beside a stack.

One name cannot say which channel Incucyte's ``phase`` is, or which time point ``00d04h00m``:
among a plate's names it can (the channels seen, in the convention's order; the time stamps, in
time order). Nor can one name say that MetaXpress's image in the acquisition folder is the
projection of the Z stack in its ``ZStep_N`` folders, written under the same name: beside the
stack's planes it is. :func:`number_plate` is for what sees every name at once (a converter);
a stream, name by name, keeps such names as text (a viewer stacks them as they come).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from polystore.plates.components import INDEX_NAMES, NAME_SUFFIX, PROJECTION, Components
from polystore.plates.conventions import find_convention

__all__ = ["name_sort_key", "natural_key", "number_plate"]

NameKey = Callable[[str], tuple[Any, ...]]


def natural_key(text: str) -> tuple[Any, ...]:
    """Text with its runs of digits compared as numbers (``00d12h`` after ``00d4h``; a
    date ``2019y01m23d_12h00m`` in time order).

    Only decimal digits count as numbers (what ``int()`` reads): ``str.isdigit`` is also true
    of ``"²"``, which ``int()`` refuses."""
    parts = (part for part in re.split(r"(\d+)", text) if part)
    return tuple((0, int(part), "") if part.isdecimal() else (1, 0, part) for part in parts)


def name_sort_key(convention: str | None, index: str) -> NameKey:
    """How the names ``convention`` gives ``index`` (channel, z or t) as text sort: its own
    order of names first (Incucyte's phase, green, red), any other name after those, in
    natural order (:func:`natural_key`). The one naming order of the plate model: a
    converter numbering a plate and a viewer stacking names as they come use it alike."""
    found = find_convention(convention) if convention else None
    listed = found.name_order.get(index, ()) if found is not None else ()
    rank = {name.lower(): position for position, name in enumerate(listed)}
    return lambda name: (rank.get(name.lower(), len(rank)), natural_key(name))


def number_plate(components: Sequence[Components]) -> list[Components]:
    """``components`` (the images of one plate, in any order) with what only all of them say.

    * An index given as text (the extra ``<index>_name``: Incucyte's ``channel_name`` and
      ``t_name``) is numbered among the names seen: by the convention's ``name_order`` (phase,
      green, red, ...), names it does not list after those in natural order; an image that
      gives no name comes first. The name stays in ``extras``: how the index is shown.
    * An image without a z beside images of the same position (plate, well, field, channel, t,
      extras) with one is the projection of their stack (MetaXpress writes its projection in
      the acquisition folder, the planes in ``ZStep_N`` folders, under the same names): it is
      marked with the extra ``projection``, which no plate store places
      (:meth:`Components.unplaced`).

    The result is in the order given; an image nothing changes is returned as it was.
    """
    numbered = list(components)
    for index in INDEX_NAMES:
        key = index + NAME_SUFFIX
        names = {c.extras.get(key) for c in numbered if getattr(c, index) is None}
        if not names - {None}:
            continue
        order = name_sort_key(_convention_naming(numbered, index), index)
        ranked = sorted(names, key=lambda n: (0,) if n is None else (1, *order(n)))
        numbers = {name: position for position, name in enumerate(ranked)}
        numbered = [c if getattr(c, index) is not None else
                    c.replace(**{index: numbers[c.extras.get(key)], "extras": c.extras})
                    for c in numbered]
    return _mark_projections(numbered)


def _convention_naming(components: Iterable[Components], index: str) -> str | None:
    """The convention of the first image whose convention orders ``index``'s names, if any."""
    for one in components:
        convention = find_convention(one.convention) if one.convention else None
        if convention is not None and index in convention.name_order:
            return one.convention
    return None


def _mark_projections(components: list[Components]) -> list[Components]:
    def position(c: Components) -> Hashable:
        return (c.plate, c.well, c.field, c.channel, c.t, tuple(sorted(c.extras.items())))

    stacked = {position(c) for c in components if c.z is not None}
    if not stacked:
        return components
    return [c.replace(extras={**c.extras, PROJECTION: "z"}) if c.z is None and position(c) in stacked else c
            for c in components]
