"""Where a plate's images go: a node path named by any convention of the plate model
(``B/03/0``, ``A01_s1_w2.tif``, ...) as a field image and a plane in it (:func:`address_of`),
and the shape of a batch of planes grouped by field (what :class:`FieldWriter`, a scheduler's
field writer, receives)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.image import ImageSpec
from polystore.plates import Components, PlateNameError, channel_names, parse_components


@dataclass(frozen=True)
class PlaneAddress:
    """Where one image of a plate goes: a field image, and optionally a plane inside it."""

    row: str
    column: str
    field: int
    """0-based field of view."""
    channel: int | None = None
    """0-based channel of the plane inside the field image (None: the image has no channel axis
    named by the file names)."""
    z: int | None = None
    """0-based z of the plane (None: no z axis named)."""
    t: int | None = None
    """0-based time point of the plane (None: no t axis named)."""
    components: Components | None = dataclasses.field(default=None, compare=False, repr=False)
    """What the plate model read from the name (None for an NGFF node path)."""

    def channel_names(self, count: int) -> list[str]:
        """The field's channel labels, as the plate model shows this name's channels (w1, ch1, ...)."""
        return channel_names(count, [self.components] if self.components is not None else [])

    @property
    def well_path(self) -> str:
        return f"{self.row}/{self.column}"

    @property
    def field_path(self) -> str:
        return f"{self.row}/{self.column}/{self.field}"

    @property
    def plane_axes(self) -> str:
        """The leading axes of the field image that this plane indexes ('tcz' subset)."""
        return "".join(a for a, v in (("t", self.t), ("c", self.channel), ("z", self.z)) if v is not None)

    @property
    def plane_index(self) -> tuple[int, ...]:
        return tuple(v for v in (self.t, self.channel, self.z) if v is not None)


FieldPlanes = tuple[tuple[str, str], list[tuple[PlaneAddress, Any]]]
"""((store, field path), [(plane address, data)]): one field's planes of a batch."""


class FieldWriter(Protocol):
    """What writes a batch's fields somewhere other than the backend's own threads (a dask
    cluster: ``polystore.distributed.save_batch``), adding each field written to ``written``
    (store: [(row, column, field)]) for the backend to commit to the plate."""

    def __call__(self, fields: Sequence[FieldPlanes], spec: ImageSpec, cast: bool, progress: bool,
                 written: dict[str, list[tuple[str, str, int]]]) -> None: ...


def address_of(node: str, config: ZarrConfig) -> PlaneAddress | None:
    """The plate address a node path names, or None: any naming convention of the plate model
    (``B/03/0``, ``A01_s1_w2.tif``, ``A01/s1_w1.tif``, ``r02c03f01p01-ch1sk1fk1fl1.tiff``, ...),
    a custom ``config.name_pattern`` first. Names out of a convention's range, and names with a
    part no plate position places (``A01_s1_w2_mask.tif``: it would overwrite ``A01_s1_w2.tif``),
    raise the plate model's PlateNameError."""
    if not config.write_plate_metadata or not node:
        return None
    components = None
    if config.name_pattern is not None:
        components = parse_components(node, convention=config.name_pattern)
    if components is None:
        components = parse_components(node)
    if components is None:
        return None
    unplaced = components.unplaced()
    if unplaced is not None:
        raise PlateNameError(f"{node!r} cannot go into a plate: {unplaced}.")
    if components.convention == "ngff":
        # the node is the field: its row and column as written ("A/1/0" stays A/1), so a plate
        # another tool wrote is written where it is; deeper paths are plain nodes
        parts = node.strip("/").split("/")
        if len(parts) != 3:
            return None
        return PlaneAddress(parts[0].upper(), parts[1], components.field)
    return PlaneAddress(components.row, components.column, components.field, components.channel,
                        components.z, components.t, components)
