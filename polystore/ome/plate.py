"""What remains of the plate layout here, for code that imports it from its old place.

What a path means on a plate is :mod:`polystore.plates`' (Components, well names, the naming
conventions); where an image goes in an OME-Zarr plate, and the plate's metadata, are the zarr
backend's (:mod:`polystore.backends.zarr.plate`). This module keeps ``ZarrConfig.name_pattern``'s
default and two thin aliases.
"""

from __future__ import annotations

from typing import Any

from polystore.plates.wells import column_sort_key, row_sort_key

DEFAULT_NAME_PATTERN = (
    r"^(?P<row>[A-Z]{1,2})(?P<column>\d{1,3})"
    r"(?:_s(?P<field>\d+))?(?:_w(?P<channel>\d+))?(?:_z(?P<z>\d+))?(?:_t(?P<t>\d+))?"
    r"(?:\.[A-Za-z0-9.]+)?$"
)
"""``ZarrConfig.name_pattern``'s default, which means: every naming convention of the plate
model (this pattern, ImageXpress's simplest names, is one of them). Any other pattern is
tried first, then the conventions."""

__all__ = ["DEFAULT_NAME_PATTERN", "column_sort_key", "parse_plate_path", "row_sort_key"]


def parse_plate_path(node: str, name_pattern: str = DEFAULT_NAME_PATTERN) -> Any:
    """Where node ``node`` of a zarr store goes on its plate (``B/03/0``, ``A01_s1_w2.tif``,
    ``A01/s1_w1.tif``, ``r02c03f01p01-ch1sk1fk1fl1.tiff``, ...): the zarr backend's
    ``address_of``, or None. Raises :class:`polystore.plates.PlateNameError` for a name that is
    ambiguous or out of its convention's range."""
    from polystore.backends.zarr.config import ZarrConfig
    from polystore.backends.zarr.plate import address_of

    return address_of(node, ZarrConfig(name_pattern=name_pattern))
