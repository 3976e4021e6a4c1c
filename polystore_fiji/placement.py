"""Where a stream item goes in Fiji: its window, and the C, Z, T of its first plane.

What a path means on a plate is the plate model's (:mod:`polystore.plates`): the components
the sender put in the item's header (``Components.to_header``), or, when the bridge is given a
naming convention or a pattern (``--convention``, ``--pattern``), the path read again here with
it. This module only decides how Fiji shows them:

* every item of one well of one plate goes to one hyperstack window, titled ``plate/well``
  (``P1/B03``), or the well alone when no plate is named;
* the item's channel is the window's C, its z the Z, and its field with its t (and any other
  component the convention read, such as Incucyte's time stamp) the T, in sorted order;
* an item without a plate position gets a window of its own, titled by its path without the
  extension; the header's ``channel``, ``z`` and ``t`` (0-based), when given, still place it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polystore.plates import HEADER_KEYS, Components, PlateNameError, parse_components, recognise

logger = logging.getLogger(__name__)

Frame = tuple[Any, ...]
"""A window's T position: (field, t, then the values of any other components, in name order)."""


@dataclass(frozen=True, order=True)
class PlaneKey:
    """Where a plane goes in its window: channel, z and frame (see :data:`Frame`), all 0-based."""

    channel: int
    z: int
    frame: Frame


@dataclass(frozen=True)
class Placement:
    """An item's window and the position of its first plane (further planes follow on from it)."""

    title: str
    origin: PlaneKey
    components: Components | None
    """The item's place on its plate (None: its path has no plate meaning)."""


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
            return parse_components(path, self.convention)  # the user's choice: its errors are theirs
        from_header = _from_header(metadata)
        if from_header is not None:
            return from_header
        try:  # a sender that wrote no plate keys: read its path as the sender would have
            return parse_components(path)
        except PlateNameError as error:
            logger.info("'%s' gets a window of its own: %s", path, error)
            return None

    def place(self, path: str, metadata: Mapping[str, Any]) -> Placement:
        components = self.components(path, metadata)
        if components is None:
            origin = PlaneKey(_given(metadata, "channel"), _given(metadata, "z"), (0, _given(metadata, "t")))
            return Placement(path_title(path), origin, None)
        title = f"{components.plate}/{components.well}" if components.plate else components.well
        others = (value for _, value in sorted(components.extras.items()))
        frame = (components.field, components.t or 0, *others)
        return Placement(title, PlaneKey(components.channel or 0, components.z or 0, frame), components)

    def title(self, path: str, metadata: Mapping[str, Any]) -> str:
        """The window the item goes to."""
        return self.place(path, metadata).title


def _from_header(metadata: Mapping[str, Any]) -> Components | None:
    """``Components.from_header``, remembered for headers seen before (a stream repeats them)."""
    try:
        key = tuple(
            (name, tuple(sorted(value.items())) if isinstance(value, Mapping) else value)
            for name in HEADER_KEYS if (value := metadata.get(name)) is not None
        )
        hash(key)
    except TypeError:  # a value that is no JSON scalar: not worth remembering
        return Components.from_header(metadata)
    return _from_header_key(key)


@functools.lru_cache(maxsize=4096)
def _from_header_key(key: tuple[tuple[str, Any], ...]) -> Components | None:
    return Components.from_header({name: dict(value) if name == "extras" else value for name, value in key})


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
