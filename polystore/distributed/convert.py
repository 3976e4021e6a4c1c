"""``convert``: a folder of plate images, or an image larger than memory, into OME-Zarr, on a
dask cluster or local threads. A plan, then owned writes, then done.

1. **Plan** (client): the plate layout from the files' names (or the image's shape), every
   field image's shape, the chunks, shards and pyramid levels; shards the chunks do not
   tile are refused.
2. **Metadata** (client): every array's and image's metadata, then the wells' and plate's
   (one commit, no lock: nothing else writes them). From here on a reader sees a valid plate
   or image whose pixels read as 0 until written: a live viewer watches it fill.
3. **Owned writes** (cluster): one task per field of a plate, or per block of whole shards of
   each pyramid level of an image (a level's blocks computed from the level above, block by
   block, so memory per task is bounded by the block). A task writes only its own keys: no
   locks, no leases, nothing read-modify-written by two tasks.
4. **Done**: each task leaves a done-marker beside the store; a conversion resumed with
   ``resume=True`` skips the tasks marked done and redoes the others, producing the bytes an
   uninterrupted run would. The markers go when every task succeeded.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from polystore.arrays import as_plain_array
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.image import ImageSpec, is_lazy
from polystore.backends.zarr.location import Location
from polystore.distributed.journal import Journal
from polystore.distributed.plan import (
    FieldPlan,
    PlatePlan,
    Region,
    Skipped,
    check_tiling,
    digest,
    overlapping,
    plan_plate,
    region_name,
    region_shape,
    regions,
    source_region,
)
from polystore.distributed.runner import run
from polystore.distributed.sources import read_image
from polystore.distributed.tasks import FieldTask, Outcome, RegionTask, Target, write_field, write_region
from polystore.exceptions import BatchError, BatchFailure, PolystoreError, UnsupportedDataError
from polystore.lazy import optional_import
from polystore.ome import ngff

DEFAULT_REGION_BYTES = 32 * 2**20
"""About how many bytes of an image one task writes at full resolution (whole shards, or whole
chunks): with the block of the level above it reads for a pyramid level, what bounds a
worker's memory (a few times this)."""

PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class DestinationExistsError(PolystoreError, FileExistsError):
    """The destination of a conversion exists (finished, or stopped half way)."""


@dataclass
class ConversionReport:
    """What a conversion did."""

    destination: str
    kind: Literal["plate", "image"]
    tasks: int
    """Fields (plate) or blocks (image, every level) the conversion has in all."""
    written: list[str] = field(default_factory=list)
    """The fields or blocks written by this run."""
    already_done: list[str] = field(default_factory=list)
    """Those a stopped run had finished, skipped by ``resume=True``."""
    skipped_files: list[Skipped] = field(default_factory=list)
    """Files of the source folder left out, and why (not images, thumbnails, names no convention reads)."""
    failures: list[BatchFailure] = field(default_factory=list)
    convention: str | None = None
    shape: tuple[int, ...] = ()
    """The shape of the image, or of each field image of the plate."""
    axes: str = ""

    def summary(self) -> str:
        """A few lines for a person: what was written, what was skipped and why."""
        what = "fields" if self.kind == "plate" else "blocks"
        lines = [f"{self.destination}: {len(self.written)} {what} written"
                 + (f", {len(self.already_done)} finished before (resumed)" if self.already_done else "")
                 + f" of {self.tasks}; {self.kind} {self.axes} {self.shape}"
                 + (f", files named as {self.convention}" if self.convention else "")]
        if self.skipped_files:
            lines.append(f"{len(self.skipped_files)} files skipped:")
            lines += [f"  {s}" for s in self.skipped_files]
        if self.failures:
            lines.append(f"{len(self.failures)} {what} failed:")
            lines += [f"  {f.path}: {type(f.error).__name__}: {f.error}" for f in self.failures]
        return "\n".join(lines)


class ConversionError(BatchError):
    """Some fields or blocks failed (each named, with the file and the error); the others are
    written. Fix the files and run again with ``resume=True``: only those are redone."""

    def __init__(self, report: ConversionReport) -> None:
        super().__init__("convert", report.failures, report.tasks)
        self.report = report

    def __str__(self) -> str:
        return (super().__str__() + "\nThe rest is written; fix these and run again with resume=True "
                "(--resume): only what failed is redone.")

    def __reduce__(self) -> tuple[type[ConversionError], tuple[ConversionReport]]:
        return (type(self), (self.report,))


def convert(
    source: PathOrPaths | Any,
    destination: str | os.PathLike[str],
    *,
    client: Any = None,
    backend: ZarrBackend | None = None,
    convention: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    levels: int | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    axes: str | None = None,
    channel_names: Sequence[str] | None = None,
    labels: bool = False,
    cast: bool = False,
    workers: int | None = None,
    progress: bool = False,
    region_bytes: int = DEFAULT_REGION_BYTES,
    storage_options: dict[str, Any] | None = None,
    **zarr_options: Any,
) -> ConversionReport:
    """Convert a plate's image files, or one large image, to OME-Zarr: planned on the client,
    written by tasks that each own their keys, on a dask cluster (``client``) or on local
    threads (``client=None``: ``workers`` threads).

    ``source``: a folder of image files (recursively; any naming convention of the plate
    model, or ``convention=`` a name or a pattern with named groups), a list of image files,
    an image file, or an array (NumPy, any framework, or a dask array larger than memory).
    ``destination``: a store (``plate.zarr``, ``s3://bucket/plate.zarr``) or, for an image,
    a node in one. ``levels`` pyramid levels, ``chunks``/``shards`` (shards must be whole
    multiples of chunks), and any ``ZarrConfig`` option (``compressor="blosc-lz4"``) or a
    ``backend`` to take them from. ``resume=True`` finishes a conversion that was stopped;
    ``overwrite=True`` replaces the destination.

    Returns a :class:`ConversionReport`; raises :class:`ConversionError` (a ``BatchError``)
    naming each field or block that failed, with the file and why, after writing all others.
    """
    target_backend = backend if backend is not None else ZarrBackend(storage_options=storage_options)
    config = target_backend.config.replace(**zarr_options)
    changes: dict[str, Any] = {}
    if levels is not None:
        changes["pyramid_levels"] = levels
    if chunks is not None:
        changes["chunks"] = tuple(chunks)
    if shards is not None:
        changes["shards"] = tuple(shards)
    config = config.replace(**changes) if changes else config
    check_tiling(config.chunks, config.shards)
    options = {**target_backend.storage_options, **(storage_options or {})}
    location = target_backend.locate(destination)
    target = Target(location.store, config, options, type(target_backend))
    writer_backend = target.backend()  # the client's own, with the same stores and config as the workers'
    journal = target.journal()
    _prepare(writer_backend, location, journal, resume=resume, overwrite=overwrite)
    if client is not None:
        from polystore.distributed.worker import ZarrWorkerSetup

        client.register_plugin(ZarrWorkerSetup(config.codec_pipeline, config.threads))
    common = _Job(target, writer_backend, journal, location, client, workers, progress, resume)
    if _is_plate_source(source):
        if location.node:
            raise UnsupportedDataError(
                f"A plate is a whole store: give '{location.store}' as the destination, not a node in it."
            )
        return _convert_plate(common, plan_plate(source, convention), labels, cast)
    image = read_image(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else source
    spec = ImageSpec(axes, config.pyramid_levels, channel_names, labels=labels)
    return _convert_image(common, image, spec, region_bytes)


def _is_plate_source(source: Any) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return os.path.isdir(source)
    return isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in source)


def _prepare(
    backend: ZarrBackend, location: Location, journal: Journal, *, resume: bool, overwrite: bool
) -> None:
    """Refuse to write over an existing destination unless told how (resume or overwrite)."""
    exists = backend.documents.node_kind(location) is not None
    started = journal.exists()
    if overwrite and not resume:
        if exists:
            if location.node:
                backend.delete_all(location.display)
            else:
                backend.stores.remove(location.store)
        journal.remove()
        return
    if resume:
        if exists and not started:
            raise DestinationExistsError(
                f"Nothing to resume: '{location.display}' has no conversion in progress (it finished, "
                "or was written otherwise). overwrite=True (--overwrite) writes it again."
            )
        return
    if started:
        raise DestinationExistsError(
            f"A conversion into '{location.display}' was stopped before it finished (its progress is "
            f"in '{journal.location}'): resume=True (--resume) finishes it; overwrite=True "
            "(--overwrite) starts over."
        )
    if exists:
        raise DestinationExistsError(
            f"'{location.display}' exists: overwrite=True (--overwrite) replaces it."
        )


@dataclass(frozen=True)
class _Job:
    target: Target
    backend: ZarrBackend
    journal: Journal
    location: Location
    client: Any
    workers: int | None
    progress: bool
    resume: bool

    def finished(self) -> set[tuple[str, str]]:
        """(task, token) of the tasks a stopped run finished (none unless resuming)."""
        return self.journal.finished() if self.resume else set()

    def options(self) -> str:
        """What of the config decides the bytes written (part of every done-marker)."""
        return repr(self.target.config.replace(threads=None, codec_pipeline="auto"))

    def run(self, tasks: list[Any], what: str) -> list[Outcome]:
        return run(tasks, self.client, workers=self.workers, progress=self.progress, what=what)

    def report(self, report: ConversionReport, outcomes: list[Outcome], names: list[str]) -> ConversionReport:
        index = {name: i for i, name in enumerate(names)}
        report.written = sorted((o.task for o in outcomes if o.ok), key=index.__getitem__)
        failed = sorted((o for o in outcomes if not o.ok), key=lambda o: index[o.task])
        report.failures = [BatchFailure(index[o.task], o.where, o.error)
                           for o in failed if o.error is not None]
        if report.failures:
            raise ConversionError(report) from report.failures[0].error
        self.journal.remove()
        return report


def _run_id() -> str:
    return uuid.uuid4().hex[:12]


# -- plates --------------------------------------------------------------------------------------


def _convert_plate(job: _Job, plan: PlatePlan, labels: bool, cast: bool) -> ConversionReport:
    config = job.target.config
    store = job.location.store
    tokens = {f.path: plan.field_digest(f, (job.options(), labels, cast)) for f in plan.fields}
    done = job.finished()
    todo = [f for f in plan.fields if (f.path, tokens[f.path]) not in done]
    job.journal.mark("job", digest(tokens))  # the progress folder exists from here on
    spec = ImageSpec(plan.axes, config.pyramid_levels, plan.channel_names or None, labels=labels)
    writer = job.backend.plates

    def create(fields: list[FieldPlan]) -> None:  # one well's fields, in order (their parents once)
        for plan_field in fields:
            writer.create_field(store, plan_field.path, plan.shape, plan.dtype, plan.axes, config, spec)

    wells: dict[tuple[str, str], list[FieldPlan]] = {}
    for plan_field in todo:
        wells.setdefault((plan_field.row, plan_field.column), []).append(plan_field)
    # metadata documents are small I/O-bound writes (a request each on object storage): threads
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="polystore-plan") as pool:
        list(pool.map(create, wells.values()))
    writer.commit(store, [(f.row, f.column, f.index) for f in plan.fields], config, lock=False)
    delayed = optional_import("dask", extra="zarr", purpose="Converting").delayed
    run_id = _run_id()
    # arguments as literals (traverse=False): dask would otherwise walk every dataclass field
    # of every task looking for collections (5 ms a field, on the client, before any work)
    target = delayed(job.target, traverse=False)
    tasks = [
        delayed(write_field, pure=False)(
            target, delayed(FieldTask(f, plan.named, tokens[f.path], labels, cast), traverse=False),
            dask_key_name=f"polystore-field-{f.path}-{run_id}",
        )
        for f in todo
    ]
    outcomes = job.run(tasks, "fields")
    report = ConversionReport(
        job.location.display, "plate", len(plan.fields), skipped_files=list(plan.skipped),
        convention=plan.convention, shape=plan.shape, axes=plan.axes,
        already_done=[f.path for f in plan.fields if f not in todo],
    )
    return job.report(report, outcomes, [f.path for f in plan.fields])


# -- images --------------------------------------------------------------------------------------


def _convert_image(job: _Job, image: Any, spec: ImageSpec, region_bytes: int) -> ConversionReport:
    dask_array = optional_import("dask.array", extra="zarr", purpose="Converting images")
    dask_base = optional_import("dask.base", extra="zarr", purpose="Converting images")
    source = image if is_lazy(image) else as_plain_array(image, "Zarr")
    axes = ngff.infer_axes(source.ndim, spec.axes)
    if axes is None or not axes.endswith("yx"):
        raise UnsupportedDataError(
            f"A {source.ndim}-D array is not an OME-Zarr image (2-D to 5-D, ending in y, x); give axes=."
        )
    config = job.target.config
    shape, dtype = tuple(int(n) for n in source.shape), np.dtype(source.dtype)
    node, store = job.location.node, job.location.store
    prefix = f"{node}/" if node else ""
    image_token = digest(shape, str(dtype), axes, job.options(), dask_base.tokenize(source), spec.labels)
    done = job.finished()
    if (prefix + "metadata", image_token) not in done:
        done = set()  # the arrays are made anew: nothing written before counts
        job.journal.mark("job", image_token)
        job.backend.plates.create_field(store, node, shape, dtype, axes, config, spec)
        job.journal.mark(prefix + "metadata", image_token)
    level_count = max(1, spec.levels if spec.levels is not None else config.pyramid_levels)
    arrays: list[Any] = [job.backend.documents.image_level_array(job.location, k) for k in range(level_count)]
    grids: list[list[Region]] = []
    blocks: list[tuple[int, ...]] = []
    for level, array in enumerate(arrays):
        assert array is not None  # create_field made every level
        unit = tuple(array.shards or array.chunks)
        target_bytes = region_bytes if level == 0 else max(1, region_bytes // 4)  # + the 4x block above
        blocks.append(region_shape(array.shape, unit, dtype.itemsize, target_bytes))
        grids.append(regions(array.shape, blocks[-1]))
    lazy: Any = source if is_lazy(source) else dask_array.from_array(source, chunks=blocks[0])
    pieces = lazy.rechunk(blocks[0]).to_delayed()
    delayed = optional_import("dask", extra="zarr", purpose="Converting").delayed
    run_id = _run_id()
    target = delayed(job.target, traverse=False)
    scheduled: dict[Region, Any] = {}
    tasks: list[Any] = []
    names: list[str] = []
    already: list[str] = []
    for level, grid in enumerate(grids):
        now: dict[Region, Any] = {}
        for region in grid:
            name = prefix + region_name(level, region)
            names.append(name)
            token = digest(image_token, name)
            above: list[Any] = []
            block: Any = None
            if level == 0:
                block = pieces[tuple(a // b for (a, _), b in zip(region, blocks[0], strict=True))]
            else:
                wanted = source_region(region, axes, arrays[level - 1].shape)
                above = [scheduled[r] for r in overlapping(wanted, grids[level - 1]) if r in scheduled]
            if (name, token) in done and not above:
                already.append(name)
                continue
            task = delayed(RegionTask(node, axes, level, region, name, token, spec.labels), traverse=False)
            now[region] = delayed(write_region, pure=False)(
                target, task, block, *above, dask_key_name=f"polystore-block-{name}-{run_id}")
            tasks.append(now[region])
        scheduled = now
    outcomes = job.run(tasks, "blocks")
    report = ConversionReport(job.location.display, "image", len(names), already_done=already,
                              shape=shape, axes=axes)
    return job.report(report, outcomes, names)
