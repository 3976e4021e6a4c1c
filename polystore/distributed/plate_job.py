"""A plate's conversion: every field image created (marked incomplete), the wells' and the
plate's documents written from the plan, then one task per field."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

from polystore.backends.zarr.image import ImageSpec
from polystore.backends.zarr.listing import plate_name
from polystore.backends.zarr.location import Location
from polystore.distributed.images import create_image
from polystore.distributed.job import Job, new_run_id
from polystore.distributed.journal import digest
from polystore.distributed.layout import FieldPlan, PlatePlan
from polystore.distributed.report import ConversionReport
from polystore.distributed.runner import Call, Task
from polystore.distributed.tasks import FieldTask, write_field
from polystore.ome import ngff
from polystore.plates.wells import column_sort_key, row_sort_key

FIRST_BATCH = 2
"""Fields in the first batch of tasks: one a worker for two workers. The workers wait for it
(nothing else is theirs to run), so it is the smallest that starts both; the next batch, 4x
larger, is made while they write it."""
GROWTH = 4
"""How many times more fields each batch of tasks has than the one before."""


def plate_digest(job: Job, plan: PlatePlan, labels: bool, cast: bool) -> tuple[str, dict[str, Any]]:
    """The digest and summary of what a resumed conversion of this plate must find unchanged."""
    summary = plan.summary({**job.options(), "labels": labels, "cast": cast})
    return digest(summary), summary


def commit_plate(job: Job, plan: PlatePlan) -> None:
    """The wells' and the plate's documents, as the plan has them (written whole, not merged
    with what a stopped run wrote): the wells first, so that the plate lists only wells there."""
    config = job.target.config
    store = job.location.store
    wells: dict[tuple[str, str], list[str]] = {}
    for plan_field in plan.fields:
        wells.setdefault((plan_field.row, plan_field.column), []).append(str(plan_field.index))
    for (row, column), images in wells.items():
        job.backend.documents.write_group(Location(store, f"{row}/{column}"), config.zarr_format,
                                          ngff.well_attributes(images, version=config.ngff))
    rows = sorted({row for row, _ in wells}, key=row_sort_key)
    columns = sorted({column for _, column in wells}, key=column_sort_key)
    field_count = max(plan_field.index for plan_field in plan.fields) + 1  # as the zarr plate writer counts
    attributes = ngff.plate_attributes(rows, columns, list(wells), version=config.ngff,
                                       field_count=field_count, name=plate_name(store))
    job.backend.documents.write_group(Location(store, ""), config.zarr_format, attributes)


def make_parent_groups(job: Job, plan_field: FieldPlan, made: set[str]) -> None:
    """The plain groups above a field of a plate in a new store (the store's, its row's, its
    well's) not in ``made`` yet, as ``ensure_parent_groups`` makes them but without looking
    for them: nothing else writes into a store whose conversion has just begun. Each is added
    to ``made`` once written (threads making two fields of a well at once may both write it:
    the same bytes)."""
    zarr_format = job.target.config.zarr_format
    for node in ("", plan_field.row, f"{plan_field.row}/{plan_field.column}"):
        if node not in made:
            job.backend.documents.write_group(Location(job.location.store, node), zarr_format, {})
            made.add(node)


def convert_plate(job: Job, plan: PlatePlan, labels: bool, cast: bool) -> ConversionReport:
    config = job.target.config
    store = job.location.store
    options = (job.options(), labels, cast)
    tokens = {f.path: plan.field_digest(f, options) for f in plan.fields}
    done = job.finished()
    todo = [f for f in plan.fields if (f.path, tokens[f.path]) not in done]
    spec = ImageSpec(plan.axes, config.pyramid_levels, plan.channel_names or None, labels=labels)

    run_id = new_run_id()

    def field_task(plan_field: FieldPlan) -> Task:
        # a call, not a dask graph: nothing to build or tokenize on the client, and its
        # arguments are not walked by dask looking for collections or made tasks of their own
        task = FieldTask(plan_field, plan.named, tokens[plan_field.path], labels, cast)
        return (plan_field.path, Call(f"polystore-field-{plan_field.path}-{run_id}", write_field,
                                      (job.target, task)))

    # a conversion that is not resumed begins in an empty store (Job.start removed or refused
    # what was there): its groups are made from the plan, not looked up image by image
    new = not job.resume
    made: set[str] = set()

    def create(plan_field: FieldPlan) -> Task:
        if new:
            make_parent_groups(job, plan_field, made)
        create_image(job.backend, Location(store, plan_field.path), plan.shape, plan.dtype, plan.axes,
                     config, spec, job.location.node, new=new)
        return field_task(plan_field)

    def batches() -> Iterator[list[Task]]:
        """The fields' tasks in batches, each sent once its images exist: the first
        FIRST_BATCH fields', then batches GROWTH times larger, so that the workers have fields
        to write while the client creates the next images (a field's images take the client a
        few milliseconds, its pixels the workers tens), and few graphs are sent (each is work
        for the client and the scheduler, on the workers' cores); the wells' and plate's
        documents once every image exists."""
        # metadata documents are small writes: a request each on object storage, where threads
        # wait for them together (two fields of a well may make its group at once: exclusive
        # creates); on a local disk Python's own work, done here: threads would only contend
        # for the GIL with the client sending tasks
        threads = ThreadPoolExecutor(8, "polystore-plan") if job.location.remote else None
        with threads if threads is not None else nullcontext():
            each = threads.map if threads is not None else map
            start, size = 0, FIRST_BATCH
            while start < len(todo):
                yield list(each(create, todo[start:start + size]))
                start, size = start + size, size * GROWTH
        if config.ome_zarr_metadata:
            commit_plate(job, plan)

    outcomes = job.run(batches(), len(todo), "fields")
    pending = {f.path for f in todo}
    report = ConversionReport(
        job.location.display, "plate", len(plan.fields), skipped_files=list(plan.skipped),
        convention=plan.convention, shape=plan.shape, axes=plan.axes,
        already_done=[f.path for f in plan.fields if f.path not in pending],
    )
    return job.report(report, outcomes, [f.path for f in plan.fields])
