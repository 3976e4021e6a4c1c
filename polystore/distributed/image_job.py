"""A large image's conversion: the image created (marked incomplete), then one task per block
of whole shards (or chunks) of each pyramid level, a level's blocks computed from the blocks
of the level above they cover, block by block; the image marked whole at the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from polystore.backends.zarr.documents import GroupDocument
from polystore.backends.zarr.image import ImageSpec
from polystore.distributed.images import create_image, finish_image
from polystore.distributed.job import Job, new_run_id
from polystore.distributed.journal import digest
from polystore.distributed.regions import BlockIndex, Grid, region_name, region_shape, source_region
from polystore.distributed.report import ConversionReport
from polystore.distributed.tasks import RegionTask, SourceBlock, SourceGraph, write_region
from polystore.lazy import optional_import

METADATA = "metadata"
"""The journal's task name for the image's metadata (made once per plan)."""


def image_digest(job: Job, source: Any, shape: tuple[int, ...], dtype: np.dtype[Any], axes: str,
                 spec: ImageSpec) -> tuple[str, dict[str, Any]]:
    """The digest and summary of what a resumed conversion of this image must find unchanged."""
    tokenize = optional_import("dask.base", extra="zarr", purpose="Converting images").tokenize
    summary = {"shape": list(shape), "dtype": str(dtype), "axes": axes, **job.options(),
               "labels": spec.labels, "channels": list(spec.channel_names or ()), "source": tokenize(source)}
    return digest(summary), summary


def _source_blocks(lazy: Any, block: tuple[int, ...], on_cluster: bool, run_id: str
                   ) -> Callable[[BlockIndex], Any]:
    """What a level-0 task gets for block ``index`` of the source: on a cluster, dask's own
    block (dask computes it where the task runs, and reports its failure as the task's); on
    threads, a :class:`SourceBlock` the task computes itself."""
    pieces = lazy.rechunk(block)
    if on_cluster:
        delayed_blocks = pieces.to_delayed()
        return lambda index: delayed_blocks[index]
    delayed = optional_import("dask", extra="zarr", purpose="Converting images").delayed
    graph = SourceGraph(dict(pieces.__dask_graph__()), f"{pieces.name}-{run_id}")
    return lambda index: delayed(SourceBlock(graph, (pieces.name, *index)), traverse=False,
                                 name=f"polystore-source-{'_'.join(map(str, index))}-{run_id}")


def convert_image(job: Job, source: Any, spec: ImageSpec, region_bytes: int, plan_digest: str
                  ) -> ConversionReport:
    """Write ``source`` (a dask array, or an array-like dask reads by regions) as the image at
    the job's location, level by level."""
    dask_array = optional_import("dask.array", extra="zarr", purpose="Converting images")
    delayed = optional_import("dask", extra="zarr", purpose="Converting").delayed
    config = job.target.config
    shape, dtype = tuple(int(n) for n in source.shape), np.dtype(source.dtype)
    axes = spec.axes or ""
    done = job.finished()
    if (METADATA, plan_digest) not in done:
        done = set()  # the arrays are made anew: nothing written before counts
        create_image(job.backend, job.location, shape, dtype, axes, config, spec, job.location.node)
        job.journal.mark(METADATA, plan_digest)
    level_count = max(1, spec.levels if spec.levels is not None else config.pyramid_levels)
    grids: list[Grid] = []
    for level in range(level_count):
        array = job.backend.documents.image_level_array(job.location, level, incomplete=True)
        assert array is not None  # create_image made every level
        unit = tuple(array.shards or array.chunks)
        target_bytes = region_bytes if level == 0 else max(1, region_bytes // 4)  # + the 4x block above
        grids.append(Grid(tuple(array.shape), region_shape(array.shape, unit, dtype.itemsize, target_bytes)))
    run_id = new_run_id()
    lazy = source if hasattr(source, "dask") else dask_array.from_array(
        source, chunks=grids[0].block, asarray=True, fancy=False, meta=np.empty((0,) * len(shape), dtype))
    block_of = _source_blocks(lazy, grids[0].block, job.client is not None, run_id)
    target = delayed(job.target, traverse=False)
    scheduled: dict[BlockIndex, Any] = {}
    tasks: list[tuple[str, Any]] = []
    names: list[str] = []
    already: list[str] = []
    for level, grid in enumerate(grids):
        now: dict[BlockIndex, Any] = {}
        for index in grid.indices():
            region = grid.region(index)
            name = region_name(level, region)
            names.append(name)
            token = digest(plan_digest, name)
            above: list[Any] = []
            block: Any = None
            if level == 0:
                block = block_of(index)
            else:
                wanted = source_region(region, axes, grids[level - 1].shape)
                above = [scheduled[i] for i in grids[level - 1].overlapping(wanted) if i in scheduled]
            if (name, token) in done and not above:
                already.append(name)
                continue
            task = delayed(RegionTask(job.location.node, axes, level, region, name, token, spec.labels),
                           traverse=False)
            now[index] = delayed(write_region, pure=False)(
                target, task, block, *above, dask_key_name=f"polystore-block-{name}-{run_id}")
            tasks.append((name, now[index]))
        scheduled = now
    outcomes = job.run([tasks], len(tasks), "blocks")
    if all(outcome.ok for outcome in outcomes):
        finish_image(GroupDocument.read(job.backend.documents, job.location, config.zarr_format))
    report = ConversionReport(job.location.display, "image", len(names), already_done=already,
                              shape=shape, axes=axes)
    return job.report(report, outcomes, names)
