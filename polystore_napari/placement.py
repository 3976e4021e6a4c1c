"""Where a stream item goes: its layer and its position on a series' stacked axes.

What an item's path means on a plate is the plate model's (:mod:`polystore.plates`): the
components the sender put in the header (``Components.to_header``), or, with a convention or a
pattern chosen in the dock, the path read again here. This module only decides how napari
shows them: one layer per channel (or a channel axis), stacked axes for well, site, t, z and
any other component, and how each value reads on its slider ("B03", ImageXpress ``s2`` as
"2").
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from polystore.exceptions import InvalidOptionError
from polystore.plates import Components, components_of, index_label, recognise
from polystore.plates.components import NAME_SUFFIX, named_index
from polystore.streaming.protocol import StreamItem
from polystore_napari.stacking import axis_rank

ChannelMode = Literal["layers", "axis"]
OVERLAY_KINDS = frozenset({"shapes", "points", "roi_set"})
"""Kinds drawn over a field: they follow the series' axes but not its channels."""
CHANNEL_NAME = "channel" + NAME_SUFFIX
"""A channel named rather than numbered (Incucyte's ``phase``, or ``metadata={"channel_name": ...}``)."""


@dataclass(frozen=True)
class Placement:
    """Where one item goes: its layer (kind, series, channel) and its position on the stacked axes."""

    kind: str
    series: str
    channel: Hashable | None
    channel_label: str | None
    components: tuple[tuple[str, Hashable], ...]
    """(axis, value) pairs of the stacked axes this item has, in stacking order."""
    texts: tuple[tuple[str, str], ...] = ()
    """(axis, how the value reads) for the sliders."""
    plate: Components | None = None
    """The item's place on its plate (None: the path has no plate meaning)."""

    @property
    def layer_key(self) -> tuple[str, str, Hashable | None]:
        kind = "shapes" if self.kind == "roi_set" else self.kind
        return (kind, self.series, self.channel)

    @property
    def plane_key(self) -> tuple[object, ...]:
        """Items with the same plane key replace each other (newest wins)."""
        return (*self.layer_key, self.components)


def series_of(components: Components) -> str:
    """The series a plate image belongs to: the path above what its convention read, and the
    plate its name states (``run/P1`` for ``run/P1_A01_s1_w1.tif``; ``plate1`` for
    ``plate1/A01/s1_w1.tif``); "" when neither says (``A01/s1_w1.tif``: one plate all the same)."""
    folder, plate = components.folder, components.plate or ""
    if not plate or folder.rpartition("/")[2] == plate:
        return folder or plate
    return f"{folder}/{plate}" if folder else plate


class ComponentParser:
    """Places items by the plate model.

    ``convention``: None reads the components from the item's header (the sender parsed its
    path), or from its path when the header has none; a convention's name
    (``"opera-phenix"``) or a regular expression with named groups reads every path with it
    (:func:`polystore.plates.components_of`). ``channel_mode="axis"`` stacks channels on an
    axis of one layer instead of one layer per channel. A convention or pattern that cannot
    work raises :class:`polystore.plates.PlateNameError` here, not at the first item.
    """

    def __init__(self, convention: str | None = None, channel_mode: ChannelMode = "layers") -> None:
        if channel_mode not in ("layers", "axis"):
            raise InvalidOptionError(f"channel_mode must be 'layers' or 'axis', got {channel_mode!r}")
        self.convention = convention or None
        if self.convention is not None:
            recognise("", self.convention)  # an unknown name or a broken pattern fails now
        self.channel_mode: ChannelMode = channel_mode

    def components(self, item: StreamItem) -> Components | None:
        return components_of(item.path, item.metadata, self.convention)

    def place(self, item: StreamItem) -> Placement:
        components = self.components(item)
        if components is None:  # no plate meaning: one layer per path, each frame replaces the last
            return Placement(item.kind, item.path, None, None, ())
        axes: dict[str, Hashable] = {"well": components.well, "site": components.field}
        texts = {"well": components.well, "site": index_label(components, "field")}
        for index in ("t", "z"):
            # an index given as text (Incucyte's time stamp) sits on its axis by that text
            value = getattr(components, index)
            value = components.extras.get(index + NAME_SUFFIX) if value is None else value
            if value is not None:
                axes[index] = value
                texts[index] = index_label(components, index) or str(value)
        named = item.metadata.get(CHANNEL_NAME) or components.extras.get(CHANNEL_NAME)
        name = named if isinstance(named, str) and named else None
        channel: Hashable | None = None
        label: str | None = None
        if item.kind not in OVERLAY_KINDS:
            number = components.channel
            if self.channel_mode == "axis" and (number is not None or name is not None):
                axes["channel"] = number if number is not None else name
                texts["channel"] = name or index_label(components, "channel")
            elif number is not None:
                channel, label = number, name or index_label(components, "channel")
            elif name is not None:
                channel, label = name, name
        for extra, value in components.extras.items():
            if named_index(extra) is None:  # an index's name is shown on that index's axis
                axes[extra] = texts[extra] = value
        ranked = sorted(axes, key=axis_rank)
        stacked = tuple((a, axes[a]) for a in ranked)
        return Placement(item.kind, series_of(components), channel, label, stacked,
                         tuple((a, texts[a]) for a in ranked), components)
