"""Plates and large images into OME-Zarr on dask.distributed: a plan, owned writes, one commit.

:func:`convert` plans on the client (plate layout from file names, shapes, chunks, shards,
pyramid levels), writes every array's metadata and the plate's, then runs one task per field
(plates) or per block of whole shards (images, level by level) on a dask cluster or local
threads; each task owns its keys (no locks), leaves a done-marker, and ``resume=True`` skips
what a stopped run finished. See ``docs/distributed.md``.

The modules, one idea each: ``layout`` (a plate from its files' names), ``regions`` (an
image's blocks per level), ``chunking`` (chunks and shards checked against the plan),
``sources`` (image files through polystore's formats, lazily), ``images`` (an image marked
incomplete until written), ``journal`` (progress beside the store), ``tasks`` (what workers
run), ``runner`` (dask: a cluster or threads), ``job``/``plate_job``/``image_job`` (one
conversion), ``convert`` (the function), ``worker`` (the workers' zarr settings), ``cluster``
(the local cluster ``--workers N`` starts), ``batch`` (:func:`save_batch`, which
``FileManager.save_batch(..., client=...)`` runs: in-memory planes of a plate written on the
cluster; the zarr backend is given the function that writes them, and never imports this
package).

Also exported as ``polystore.convert_to_zarr`` (``polystore.convert`` converts arrays between
frameworks: another job, kept as it is).
"""

from __future__ import annotations

from polystore.distributed.batch import save_batch
from polystore.distributed.cluster import ClusterError
from polystore.distributed.convert import DEFAULT_REGION_BYTES, convert
from polystore.distributed.job import DestinationExistsError, PlanChangedError
from polystore.distributed.layout import LayoutError, PlatePlan, Skipped, plan_plate
from polystore.distributed.report import ConversionError, ConversionReport
from polystore.exceptions import ChunkingError

convert_to_zarr = convert
"""``polystore.convert_to_zarr``: the same function under the name the package exports."""

__all__ = [
    "DEFAULT_REGION_BYTES",
    "ChunkingError",
    "ClusterError",
    "ConversionError",
    "ConversionReport",
    "DestinationExistsError",
    "LayoutError",
    "PlanChangedError",
    "PlatePlan",
    "Skipped",
    "convert",
    "convert_to_zarr",
    "plan_plate",
    "save_batch",
]
