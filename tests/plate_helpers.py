"""Synthetic plates named by each built-in convention (names generated, never written by hand).

``plate_items(convention)`` gives, for a small plate, each image's path as that convention names
it, the components it stands for, and a pixel value that says where it is (so a test can check
that every image landed where its name says). ``write_plate_tree(root, convention)`` writes
them as tiny TIFFs, for tests of anything that reads folders.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polystore.plates import BUILTIN, Components, format_name, get_convention

CONVENTIONS = tuple(c.name for c in BUILTIN)
WHAT_EACH_WRITES: dict[str, tuple[str, ...]] = {
    # the indices each layout can say in a name (NGFF paths name a whole field image)
    "imagexpress": ("field", "channel", "z", "t"),
    "well-folders": ("field", "channel", "z", "t"),
    "ngff": ("field",),
    "opera-phenix": ("field", "channel", "z", "t"),
    "yokogawa": ("field", "channel", "z", "t"),
    "cellinsight": ("field", "channel"),
    "incucyte": ("field", "channel", "t"),  # channels by name (phase, green), times as stamps
}
NAMED = {"incucyte": ("channel", "t")}
"""Indices a layout writes as text: one name does not say them, a plate's names do
(``polystore.plates.number_plate``); each item's ``components`` holds the name and the index."""


def incucyte_time(t: int) -> str:
    """The time stamp Incucyte writes for scan ``t`` of a synthetic plate (every 4 h)."""
    return f"{t * 4 // 24:02d}d{t * 4 % 24:02d}h00m"


@dataclass(frozen=True)
class PlateItem:
    path: str
    components: Components
    """Where the image is: its indices, numbered as ``number_plate`` numbers a plate's names
    (and, for a layout that writes an index as text, that text in ``extras``)."""
    value: int
    """Every pixel of the image: 1 + well * 100 + field * 10 + channel (+ z*1000, t*5000)."""


def pixel_value(components: Components, wells: Sequence[str]) -> int:
    return (1 + wells.index(components.well) * 100 + components.field * 10 + (components.channel or 0)
            + (components.z or 0) * 1000 + (components.t or 0) * 5000)


def plate_items(
    convention: str,
    *,
    plate: str = "P1",
    wells: Sequence[str] = ("A01", "B03", "C12"),
    fields: int = 2,
    channels: int = 2,
    z: int = 1,
    t: int = 1,
) -> Iterator[PlateItem]:
    """The images of a small plate, named by ``convention`` (indices it cannot say are left out)."""
    says = WHAT_EACH_WRITES[convention]
    ranges = {
        "field": range(fields),
        "channel": range(channels) if "channel" in says else [None],
        "z": range(z) if "z" in says and z > 1 else [None],
        "t": range(t) if "t" in says and t > 1 else [None],
    }
    if convention == "opera-phenix":  # Phenix always writes a plane and a time point
        ranges["z"], ranges["t"] = range(max(z, 1)), range(max(t, 1))
    if convention == "yokogawa":  # and so does Yokogawa
        ranges["z"], ranges["t"] = range(max(z, 1)), range(max(t, 1))
    for well, field_, channel, z_, t_ in itertools.product(
        wells, ranges["field"], ranges["channel"], ranges["z"], ranges["t"]
    ):
        names = {}
        if convention in NAMED:
            order = get_convention(convention).name_order["channel"]
            names = {"channel_name": order[channel]} if channel is not None else {}
            names |= {"t_name": incucyte_time(t_)} if t_ is not None else {}
        components = Components.of(well, field=field_, channel=channel, z=z_, t=t_, plate=plate,
                                   convention=convention, extras=names)
        yield PlateItem(format_name(components, convention), components, pixel_value(components, list(wells)))


def write_plate_tree(
    root: Path, convention: str, shape: tuple[int, int] = (4, 4), **options: object
) -> list[PlateItem]:
    """Write the plate of :func:`plate_items` under ``root`` as tiny uint16 TIFFs."""
    import tifffile

    items = list(plate_items(convention, **options))  # type: ignore[arg-type]
    for item in items:
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(target, np.full(shape, item.value, np.uint16))
    return items
