"""Where a stream item goes: its layer and its position on a series' stacked axes.

What an item's path means on a plate is the plate model's (:mod:`polystore.plates`): the
components the sender put in the header (``Components.to_header``), or, with a convention or a
pattern chosen in the dock, the path read again here. This module only decides how napari
shows them: one layer per channel (or a channel axis), stacked axes for well, site, t, z and
any other component, and how each value reads on its slider ("B03", ImageXpress ``s2`` as
"2").
"""

from __future__ import annotations

import posixpath
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

from polystore.plates import Components, index_label, parse_components, recognise
from polystore.streaming.protocol import StreamItem
from polystore_napari.stacking import axis_rank

ChannelMode = Literal["layers", "axis"]
OVERLAY_KINDS = frozenset({"shapes", "points", "roi_set"})
"""Kinds drawn over a field: they follow the series' axes but not its channels."""
CHANNEL_NAME = "channel_name"
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


class ComponentParser:
    """Places items by the plate model.

    ``convention``: None reads the components from the item's header (the sender parsed its
    path), or from its path when the header has none; a convention's name
    (``"opera-phenix"``) or a regular expression with named groups reads every path with it.
    ``channel_mode="axis"`` stacks channels on an axis of one layer instead of one layer per
    channel. A convention or pattern that cannot work raises
    :class:`polystore.plates.PlateNameError` here, not at the first item.
    """

    def __init__(self, convention: str | None = None, channel_mode: ChannelMode = "layers") -> None:
        if channel_mode not in ("layers", "axis"):
            raise ValueError(f"channel_mode must be 'layers' or 'axis', got {channel_mode!r}")
        self.convention = convention or None
        if self.convention is not None:
            recognise("", self.convention)  # an unknown name or a broken pattern fails now
        self.channel_mode: ChannelMode = channel_mode

    def components(self, item: StreamItem) -> Components | None:
        if self.convention is not None:
            return parse_components(item.path, self.convention)
        return Components.from_header(item.metadata) or parse_components(item.path)

    def place(self, item: StreamItem) -> Placement:
        components = self.components(item)
        if components is None:  # no plate meaning: one layer per path, each frame replaces the last
            return Placement(item.kind, item.path, None, None, ())
        series = components.plate or posixpath.dirname(item.path.strip("/")) or "stream"
        axes: dict[str, Hashable] = {"well": components.well, "site": components.field}
        texts = {"well": components.well, "site": index_label(components, "field")}
        for index in ("t", "z"):
            value = getattr(components, index)
            if value is not None:
                axes[index], texts[index] = value, index_label(components, index)
        named = item.metadata.get(CHANNEL_NAME) or components.extras.get(CHANNEL_NAME)
        name = named if isinstance(named, str) and named else None
        channel: Hashable | None = None
        label: str | None = None
        if item.kind not in OVERLAY_KINDS:
            number = components.channel
            if self.channel_mode == "axis" and number is not None:
                axes["channel"], texts["channel"] = number, name or index_label(components, "channel")
            elif number is not None:
                channel, label = number, name or index_label(components, "channel")
            elif name is not None:
                channel, label = name, name
        for extra, value in components.extras.items():
            if extra != CHANNEL_NAME:
                axes[extra] = texts[extra] = value
        ranked = sorted(axes, key=axis_rank)
        return Placement(item.kind, series, channel, label, tuple((a, axes[a]) for a in ranked),
                         tuple((a, texts[a]) for a in ranked), components)
