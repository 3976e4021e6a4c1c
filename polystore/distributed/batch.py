"""``FileManager.save_batch(..., client=...)`` (:func:`save_batch`): a batch of in-memory
planes of a zarr plate written on a dask cluster, one task per field, the planes scattered to
the workers; the backend then records the fields in the wells' and plate's metadata once, as
its ``save_batch`` does on threads. The backend knows nothing of dask: this module gives its
``save_batch`` the function that writes the fields (``write_fields``), so the dependency runs
one way (polystore.distributed on the zarr backend, never back).

Not the conversion's plate job (:mod:`polystore.distributed.plate_job`): that one plans the
whole plate from files, creates every field first and owns every key without locks, which
needs the plate's shape before a pixel is read. A batch may add to a plate that exists and
grow its fields, so each task writes its field as ``save_batch`` does in one process (the
plate writer's ``save_batch_field``, under its field lock): the same bytes, on the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.addresses import FieldPlanes, PlaneAddress
from polystore.backends.zarr.image import ImageSpec
from polystore.base import PathLike
from polystore.distributed.runner import run
from polystore.distributed.tasks import Failure, Outcome, Target, portable
from polystore.exceptions import BatchError, BatchFailure, InvalidOptionError
from polystore.lazy import optional_import


def write_planes(target: Target, name: str, planes: list[tuple[PlaneAddress, Any]], spec: ImageSpec,
                 cast: bool) -> Outcome:
    """On a worker: one field's planes written into its image (created or grown)."""
    try:
        backend = target.backend()
        backend.plates.save_batch_field(target.store, planes, target.config, spec, cast=cast)
    except Exception as error:  # reported with the others by the client, as save_batch does
        return Failure(name, portable(error))
    return Outcome(name)


def save_fields(client: Any, backend: ZarrBackend, fields: Sequence[FieldPlanes], spec: ImageSpec, cast: bool,
                progress: bool, written: dict[str, list[tuple[str, str, int]]]) -> None:
    """Write ``fields`` on ``client``'s cluster, adding each field written to ``written``
    (store: [(row, column, field)], for the caller to commit). Raises BatchError naming
    every field that failed (as save_batch on threads does), after the others are written."""
    delayed = optional_import("dask", extra="distributed", purpose="save_batch(client=...)").delayed
    from polystore.distributed.worker import set_up_workers  # imports distributed: there now

    set_up_workers(client, backend.config)
    tasks = []
    for index, ((store, _field_path), planes) in enumerate(fields):
        target = Target(store, backend.config, backend.storage_options, type(backend))
        # the planes go to the cluster as data of their own, not pickled into the task graph,
        # under keys of their own: keys from the planes' content (scatter's default) race
        # with the release of the same planes scattered by an earlier batch, whose data the
        # scheduler then forgets under this batch's tasks ("lost dependencies")
        scattered = client.scatter([data for _address, data in planes], hash=False)
        pairs = [(address, future) for (address, _data), future in zip(planes, scattered, strict=True)]
        task = delayed(write_planes, pure=False)(
            delayed(target, traverse=False), str(index), pairs, delayed(spec, traverse=False), cast)
        tasks.append((str(index), task))
    outcomes = {int(o.task): o for o in run(tasks, client, progress=progress, what="fields")}
    failures: list[BatchFailure] = []
    for index, ((store, field_path), planes) in enumerate(fields):
        error = outcomes[index].error
        if error is None:
            first = planes[0][0]
            written.setdefault(store, []).append((first.row, first.column, first.field))
        else:
            failures.append(BatchFailure(index, field_path, error))
    if failures:
        raise BatchError("save_batch", failures, len(fields)) from failures[0].error


def save_batch(backend: Any, data_list: Sequence[Any], paths: Sequence[PathLike], *, client: Any,
               **kwargs: Any) -> None:
    """``backend.save_batch(data_list, paths, **kwargs)`` with a zarr plate's fields written on
    ``client``'s cluster (what ``FileManager.save_batch(..., client=...)`` runs); items that are
    not plate planes are saved here. Raises BatchError naming every field that failed, after
    the others are written and recorded in the plate."""
    if not isinstance(backend, ZarrBackend):
        raise InvalidOptionError(
            f"save_batch(client=...) writes a zarr plate's fields on a dask cluster; the "
            f"{type(backend).__name__} backend has none. Save with the zarr backend, or without client=."
        )
    backend.save_batch(data_list, paths, write_fields=partial(save_fields, client, backend), **kwargs)
