"""Reading OME-NGFF metadata back in tests, for either version."""

from __future__ import annotations

import importlib
from typing import Any


def ngff_models(zarr_format: int) -> Any:
    """ome-zarr-models for the NGFF version a Zarr format carries (0.5 on v3, 0.4 on v2)."""
    return importlib.import_module("ome_zarr_models.v05" if zarr_format == 3 else "ome_zarr_models.v04")


def ome_section(group: Any) -> dict[str, Any]:
    """The OME attributes of a group: under "ome" in NGFF 0.5, at the top level in 0.4."""
    attrs = dict(group.attrs)
    ome: dict[str, Any] = attrs.get("ome", attrs)
    return ome
