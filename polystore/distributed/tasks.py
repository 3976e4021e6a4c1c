"""What runs on the workers: one task per plate field, one per region of an image's level.

A task owns its keys: a field task writes the chunks of its own field image (every level)
and its done-marker; a region task the chunks of one block of whole shards (or chunks) of
one level and its marker. No task writes metadata, takes a lock or reads another task's
keys, except a level's task reading the finished block of the level above (its dependency).
Run twice (a retry after a worker died), a task writes the same bytes again.

A task does not raise for what went wrong with its data: it returns an :class:`Outcome`
naming the file and the error, so every other field is still written and the client reports
all failures together (as ``BatchError`` does); a worker that dies is another matter, and
dask reruns its tasks elsewhere.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.image import downsample_plane
from polystore.backends.zarr.location import Location
from polystore.distributed.journal import Journal
from polystore.distributed.plan import FieldPlan, Region, digest, source_region
from polystore.distributed.sources import read_image
from polystore.exceptions import CorruptDataError, PolystoreError, UnsupportedDataError


class TaskError(PolystoreError, RuntimeError):
    """A task's error that could not travel back from its worker as it was (not picklable)."""


@dataclass(frozen=True)
class Target:
    """Where a conversion writes, as a worker rebuilds it: the backend's class, its config and
    storage options, and the store."""

    store: str
    config: ZarrConfig
    storage_options: dict[str, Any] = field(default_factory=dict)
    backend_class: type[ZarrBackend] = ZarrBackend

    def backend(self) -> ZarrBackend:
        """This process's backend for the target (made once: it holds the open stores)."""
        key = digest(self.backend_class.__module__, self.backend_class.__qualname__, repr(self.config),
                     self.storage_options)
        with _LOCK:
            found = _BACKENDS.get(key)
            if found is None:
                found = self.backend_class(config=self.config, storage_options=self.storage_options)
                _BACKENDS[key] = found
            return found

    def journal(self) -> Journal:
        return Journal(self.backend().stores, self.store)


_BACKENDS: dict[str, ZarrBackend] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    """What became of one task: done, or the error and the file it was at."""

    task: str
    error: BaseException | None = None
    source: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def where(self) -> str:
        return f"{self.task} ({self.source})" if self.source else self.task


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives the trip back to the client, else a TaskError saying the same."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return TaskError(f"{type(error).__name__}: {error}")
    return error


@dataclass(frozen=True)
class FieldTask:
    """One field of a plate: its plan and what the field images look like."""

    field: FieldPlan
    named: str
    """The leading axes the files' names index ('' when each file is a whole field image)."""
    token: str
    labels: bool = False
    cast: bool = False


def write_field(target: Target, task: FieldTask) -> Outcome:
    """Write every plane of a field into its image (created by the plan), at every level."""
    current: str | None = None
    plan = task.field
    try:
        backend = target.backend()
        image = backend.plates.open_field(Location(target.store, plan.path))
        if image is None or not image.levels:
            raise CorruptDataError(
                f"'{target.store}/{plan.path}' has no field image: its metadata was not written "
                "(the conversion's first step stopped). Run the conversion again."
            )
        expected = tuple(int(n) for n in image.levels[0].shape[len(task.named):])
        for index, source in plan.planes:
            current = source.path
            data = read_image(source.path)
            if data.shape != expected:
                raise UnsupportedDataError(
                    f"'{source.path}' holds a {data.shape} image; this plate's images are {expected} "
                    "(the shape of its first file). Convert images of one shape together."
                )
            planes = {index: data} if task.named else {i: data[i] for i in np.ndindex(data.shape[:-2])}
            backend.plates.write_planes(target.store, plan.path, planes, labels=task.labels, cast=task.cast,
                                        field_image=image)
        current = None
        target.journal().mark(plan.path, task.token)
    except Exception as error:  # reported with the others by the client (see the module's docstring)
        return Outcome(plan.path, _portable(error), current)
    return Outcome(plan.path)


@dataclass(frozen=True)
class RegionTask:
    """One block of whole shards (or chunks) of one level of an image."""

    node: str
    axes: str
    level: int
    region: Region
    name: str
    token: str
    labels: bool = False


def downsample_block(block: np.ndarray, labels: bool) -> np.ndarray:
    """Halve the last two axes (y, x) of ``block`` plane by plane, as the zarr writer does."""
    lead = block.shape[:-2]
    planes = [downsample_plane(block[index], labels) for index in np.ndindex(lead)]
    if not planes:
        return block
    return np.stack(planes).reshape(lead + planes[0].shape)


def write_region(target: Target, task: RegionTask, block: Any, *above: Outcome) -> Outcome:
    """Write one block of a level: level 0 from ``block`` (the source's pixels), a level
    below from the level above, read back from the store (the tasks in ``above`` wrote it)."""
    failed = next((o for o in above if not o.ok), None)
    if failed is not None:
        error = TaskError(f"not written: block {failed.task} of the level above failed ({failed.error})")
        return Outcome(task.name, error)
    try:
        backend = target.backend()
        location = Location(target.store, task.node)
        array = backend.documents.image_level_array(location, task.level, writable=True)
        if array is None:
            raise CorruptDataError(f"'{location.display}' is not an image: its metadata was not written.")
        selection = tuple(slice(a, b) for a, b in task.region)
        if task.level == 0:
            data = np.asarray(block)
        else:
            source = backend.documents.image_level_array(location, task.level - 1)
            assert source is not None  # the same image document named level - 1
            wanted = source_region(task.region, task.axes, source.shape)
            data = downsample_block(np.asarray(source[tuple(slice(a, b) for a, b in wanted)]), task.labels)
        shape = tuple(b - a for a, b in task.region)
        if data.shape != shape:
            raise UnsupportedDataError(f"block {task.name}: {data.shape} computed for a {shape} region.")
        array[selection] = data
        target.journal().mark(task.name, task.token)
    except Exception as error:  # reported with the others by the client
        return Outcome(task.name, _portable(error))
    return Outcome(task.name)

