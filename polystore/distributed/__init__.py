"""Plates and large images into OME-Zarr on dask.distributed: a plan, owned writes, one commit.

:func:`convert` plans on the client (plate layout from file names, shapes, chunks, shards,
pyramid levels), writes every array's metadata and the plate's, then runs one task per field
(plates) or per block of whole shards (images, level by level) on a dask cluster or local
threads; each task owns its keys (no locks), leaves a done-marker, and ``resume=True`` skips
what a stopped run finished. See ``docs/distributed.md``.

Also exported as ``polystore.convert_to_zarr`` (``polystore.convert`` converts arrays between
frameworks: another job, kept as it is).
"""

from __future__ import annotations

from polystore.distributed.convert import (
    DEFAULT_REGION_BYTES,
    ConversionError,
    ConversionReport,
    DestinationExistsError,
    convert,
)
from polystore.distributed.plan import ChunkingError, LayoutError, PlatePlan, Skipped, plan_plate

convert_to_zarr = convert
"""``polystore.convert_to_zarr``: the same function under the name the package exports."""

__all__ = [
    "DEFAULT_REGION_BYTES",
    "ChunkingError",
    "ConversionError",
    "ConversionReport",
    "DestinationExistsError",
    "LayoutError",
    "PlatePlan",
    "Skipped",
    "convert",
    "convert_to_zarr",
    "plan_plate",
]
