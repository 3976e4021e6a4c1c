"""Where a stream item goes in Fiji: its window, and the C, Z, T of its first plane.

What a path means on a plate is the plate model's (:func:`polystore.plates.components_of`): the
components the sender put in the item's header (``Components.to_header``), or, when the bridge
is given a naming convention or a pattern (``--convention``, ``--pattern``), the path read
again here with it. This module only decides how Fiji shows them:

* every item of one well of one plate goes to one hyperstack window, titled ``plate/well``
  (``P1/B03``), or the well alone when no plate is named;
* the item's channel is the window's C, its z the Z, and its field with its t (and any other
  part the convention read, such as a stain in a pattern) the T, in order;
* an index a name gives as text (Incucyte's channel ``phase`` and time stamp ``00d04h00m``: its
  ``channel_name``, ``t_name``) takes its place by that text, after the numbered ones, in
  natural order (``4h`` before ``12h``), as a stream brings it name by name;
* an item without a plate position gets a window of its own, titled by its path without the
  extension; the header's ``channel``, ``z`` and ``t`` (0-based), when given, still place it;
* labels go to a window of their own beside the images' (``P1/B03 labels``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polystore.plates import (
    HEADER_KEYS,
    Components,
    PlateNameError,
    components_of,
    name_sort_key,
    natural_key,
    recognise,
)
from polystore.plates.components import NAME_SUFFIX, named_index

logger = logging.getLogger(__name__)

Ordinal = tuple[Any, ...]
"""A position along C, Z or T, sortable whatever it was given as: ``(0, n)`` for an index
numbered ``n``; ``(1, rank, natural key)`` for one given as text; then a step into a
multi-plane item."""
Frame = tuple[Ordinal, ...]
"""A window's T position: the field's, the t's, then any other part's ordinal, in name order."""


def numbered(index: int) -> Ordinal:
    return (0, index)


def _ordinal(components: Components, index: str) -> Ordinal:
    """Where ``components``' ``index`` (channel, z or t) goes: its number, or its name ranked by
    the convention's own order of names (Incucyte's phase, green, red) and then naturally."""
    number = getattr(components, index)
    if number is not None:
        return numbered(number)
    name = components.extras.get(index + NAME_SUFFIX)
    if not name:
        return numbered(0)
    return (1, *name_sort_key(components.convention, index)(name))


def shifted(ordinal: Ordinal, step: int) -> Ordinal:
    """The position ``step`` planes on from ``ordinal`` (a multi-plane item's further planes)."""
    if step == 0:
        return ordinal
    if ordinal[0] == 0 and len(ordinal) == 2:
        return numbered(ordinal[1] + step)
    return (*ordinal, step)  # after a named position and before the next one


@dataclass(frozen=True, order=True)
class PlaneKey:
    """Where a plane goes in its window: its channel, z and frame ordinals."""

    channel: Ordinal
    z: Ordinal
    frame: Frame

    @classmethod
    def of(cls, channel: int = 0, z: int = 0, field: int = 0, t: int = 0) -> PlaneKey:
        """The key of a plane numbered by its indices (0-based)."""
        return cls(numbered(channel), numbered(z), (numbered(field), numbered(t)))


@dataclass(frozen=True)
class Placement:
    """An item's window and the position of its first plane (further planes follow on from it)."""

    title: str
    origin: PlaneKey


KIND_TITLES: dict[str, str] = {"labels": "{title} labels"}
"""Item kind -> its window's title, from the title its images get: a well's labels have a
window of their own beside its images (one window holds one dtype and one display; a label
image in the image window would replace the plane it shares a position with)."""


@dataclass(frozen=True)
class WindowPlacer:
    """Places items by the plate model (see the module's docstring).

    ``convention``: None reads the components from the item's header (the sender parsed its
    path), or from its path when the header has none; a convention's name (``"opera-phenix"``)
    or a regular expression with named groups reads every path with it. One that cannot work
    raises :class:`polystore.plates.PlateNameError` here, not at the first item.
    """

    convention: str | None = None

    def __post_init__(self) -> None:
        if self.convention:
            recognise("", self.convention)  # an unknown name or a broken pattern fails now
        else:
            object.__setattr__(self, "convention", None)

    def components(self, path: str, metadata: Mapping[str, Any]) -> Components | None:
        """The item's place on its plate, or None."""
        if self.convention is not None:
            return components_of(path, None, self.convention)  # the user's choice: its errors are theirs
        try:
            key = _header_key(metadata)
            found = _header_components(key) if key is not None else components_of("", metadata)
            # no plate keys in the header (a sender of another kind): the path, as a sender reads it
            return found if found is not None else components_of(path)
        except (PlateNameError, TypeError, ValueError) as error:
            # a header or name that cannot be placed (a header's row given as a list reaches the
            # plate model as a TypeError): the item is still shown, by its path
            logger.info("'%s' gets a window of its own: its plate position cannot be read (%s)", path, error)
            return None

    def place(self, path: str, metadata: Mapping[str, Any], kind: str = "image") -> Placement:
        """The window of an item of ``kind`` (see :data:`KIND_TITLES`) and its first plane's key."""
        placement = self._place(path, metadata)
        titled = KIND_TITLES.get(kind)
        if titled is None:
            return placement
        return Placement(titled.format(title=placement.title), placement.origin)

    def _place(self, path: str, metadata: Mapping[str, Any]) -> Placement:
        components = self.components(path, metadata)
        if components is None:
            origin = PlaneKey.of(_given(metadata, "channel"), _given(metadata, "z"), 0, _given(metadata, "t"))
            return Placement(path_title(path), origin)
        title = f"{components.plate}/{components.well}" if components.plate else components.well
        extras = components.extras
        # parts that are no index (a pattern's stain) keep their frames apart along T
        others = tuple((1, natural_key(str(text))) for key, text in sorted(extras.items())
                       if named_index(key) is None)
        frame = (numbered(components.field), _ordinal(components, "t"), *others)
        origin = PlaneKey(_ordinal(components, "channel"), _ordinal(components, "z"), frame)
        return Placement(title, origin)

    def title(self, path: str, metadata: Mapping[str, Any], kind: str = "image") -> str:
        """The window an item of ``kind`` goes to."""
        return self.place(path, metadata, kind).title


HeaderKey = tuple[tuple[str, Any], ...]


def _header_key(metadata: Mapping[str, Any]) -> HeaderKey | None:
    """The header's plate keys as a hashable key (None when a value is no JSON scalar)."""
    try:
        key = tuple(
            (name, tuple(sorted(value.items())) if isinstance(value, Mapping) else value)
            for name in HEADER_KEYS if (value := metadata.get(name)) is not None
        )
        hash(key)
    except TypeError:
        return None
    return key


@functools.lru_cache(maxsize=4096)  # a stream repeats its headers; reading one costs 30-40 us
def _header_components(key: HeaderKey) -> Components | None:
    """What a header's plate keys say (None: no plate position in them)."""
    header = {name: dict(value) if isinstance(value, tuple) else value for name, value in key}
    return components_of("", header)


def _given(metadata: Mapping[str, Any], name: str) -> int:
    """A 0-based index the header gives for an item without a plate position (0 if none)."""
    value = metadata.get(name)
    return value if type(value) is int and value >= 0 else 0


def path_title(path: str) -> str:
    """The title of an item without a plate position: its path without the extension."""
    name = path.replace("\\", "/").strip("/")
    folder, _, leaf = name.rpartition("/")
    stem = leaf.split(".", 1)[0] or leaf
    return f"{folder}/{stem}" if folder else (stem or "image")
