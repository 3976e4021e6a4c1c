"""What runs on the workers: one task per plate field, one per region of an image's level.

A task owns its keys: a field task writes the chunks of its own field image (every level),
its image's group (to say it is whole) and its done-marker; a region task the chunks of one
block of whole shards (or chunks) of one level and its marker. No task writes what another
writes, takes a lock or reads another task's keys, except a level's task reading the
finished block of the level above (its dependency). Every write unit (a shard, else a chunk)
is written whole, once: the planes of a field that share a shard are assembled first, so a
task never reads back a unit it writes, and a rerun after a worker died mid-write replaces
what it left, whatever that is.

A task does not raise for what went wrong with its data: it returns an :class:`Outcome`
naming the file and the error, so every other field is still written and the client reports
all failures together (as ``BatchError`` does); a worker that dies is another matter, and
dask reruns its tasks elsewhere.
"""

from __future__ import annotations

import itertools
import math
import pickle
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.documents import GroupDocument
from polystore.backends.zarr.image import downsample_plane
from polystore.backends.zarr.location import Location
from polystore.backends.zarr.plate import checked_plane
from polystore.distributed.images import finish_image
from polystore.distributed.journal import Journal, digest
from polystore.distributed.layout import FieldPlan
from polystore.distributed.regions import Region, source_region
from polystore.distributed.sources import SourceFile, read_plane
from polystore.exceptions import CorruptDataError, PolystoreError, UnsupportedDataError
from polystore.ome import ngff


class TaskError(PolystoreError, RuntimeError):
    """A task did not finish: its worker died, a block it needs failed, or its error could not
    travel back from the worker as it was."""


@dataclass(frozen=True)
class Target:
    """Where a conversion writes, as a worker rebuilds it: the backend's class, its config and
    storage options, the store and the node converted ('' for a whole store)."""

    store: str
    config: ZarrConfig
    storage_options: dict[str, Any] = field(default_factory=dict)
    backend_class: type[ZarrBackend] = ZarrBackend
    node: str = ""

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
        return Journal(self.backend().stores, self.store, self.node)


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


@dataclass(frozen=True)
class Failure(Outcome):
    """An outcome with its error, a class of its own: dask tells the client the type of a
    task's result as the task ends, so the client fetches only failures (a success says no
    more than the task's name)."""


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives the trip back to the client, else a TaskError saying the same."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return TaskError(f"{type(error).__name__}: {error}")
    return error


def _missing_image(target: Target, node: str) -> CorruptDataError:
    return CorruptDataError(
        f"'{target.store}/{node}' has no image here (worker {socket.gethostname()}): the client wrote its "
        "metadata before the tasks started, so this worker does not see the store the client wrote. "
        "Every worker must reach the same store: an object store URL, or a path on a filesystem every "
        "machine mounts at the same place."
    )


# -- plate fields ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldTask:
    """One field of a plate: its plan and what the field images look like."""

    field: FieldPlan
    named: str
    """The leading axes the files' names index ('' when each file is a whole field image)."""
    token: str
    labels: bool = False
    cast: bool = False


PlaneFile = tuple[tuple[int, ...], SourceFile]
"""A plane's index in its field image, and the file it comes from."""


def shard_groups(planes: Iterable[PlaneFile], unit: tuple[int, ...]
                 ) -> dict[tuple[int, ...], list[PlaneFile]]:
    """A field's planes by the write unit (shard, else chunk) of the plane axes they fall in."""
    groups: dict[tuple[int, ...], list[PlaneFile]] = {}
    for index, source in planes:
        groups.setdefault(tuple(i // u for i, u in zip(index, unit, strict=True)), []).append((index, source))
    return groups


def write_field(target: Target, task: FieldTask) -> Outcome:
    """Write every plane of a field into its image (created by the plan), at every level, each
    write unit once: the planes that share one are read and assembled, then written together."""
    reading: list[str] = []  # the file being read, if any (named in the outcome)
    plan = task.field
    try:
        backend = target.backend()
        location = Location(target.store, plan.path)
        group, levels = _image(backend, location, target.config.zarr_format)
        if group is None or not levels:
            raise _missing_image(target, plan.path)
        full = tuple(int(n) for n in levels[0].shape)
        unit = tuple(levels[0].shards or levels[0].chunks)[: len(task.named)]
        for group_index, members in sorted(shard_groups(plan.planes, unit).items()):
            start = tuple(g * u for g, u in zip(group_index, unit, strict=True))
            stop = tuple(min(s + u, n) for s, u, n in zip(start, unit, full[: len(unit)], strict=True))
            block = _assemble(members, start, stop, full[len(unit):], np.dtype(levels[0].dtype),
                              f"{target.store}/{plan.path}", task.cast, reading)
            reading.clear()
            planes = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            for level, array in enumerate(levels):
                if level:
                    block = downsample_block(block, task.labels)
                whole = planes + tuple(slice(0, n) for n in array.shape[len(planes):])
                write_units(backend, target.store, array, whole, block)
        finish_image(group)
        target.journal().mark(plan.path, task.token)
    except Exception as error:  # reported with the others by the client (see the module's docstring)
        return Failure(plan.path, portable(error), reading[-1] if reading else None)
    return Outcome(plan.path)


def _assemble(members: list[PlaneFile], start: tuple[int, ...], stop: tuple[int, ...],
              plane_shape: tuple[int, ...], dtype: np.dtype[Any], where: str, cast: bool,
              reading: list[str]) -> np.ndarray:
    """The block of one write unit: its planes read and put in place (missing ones 0); a unit
    that one file fills is that file's array, not a copy."""
    extent = tuple(b - a for a, b in zip(start, stop, strict=True))
    block = None if len(members) == 1 and math.prod(extent) == 1 else np.zeros(extent + plane_shape, dtype)
    for index, source in members:
        reading.append(source.path)
        data = read_plane(source.path)
        if data.shape != plane_shape:
            raise UnsupportedDataError(
                f"'{source.path}' holds a {data.shape} image; this plate's images are {plane_shape} "
                "(the shape of its first file). Convert images of one shape together."
            )
        if block is None:
            if data.dtype == dtype:
                return data.reshape(extent + plane_shape)
            block = np.zeros(extent + plane_shape, dtype)
        offset = tuple(i - s for i, s in zip(index, start, strict=True))
        for inner in np.ndindex(data.shape[:-2]):  # a whole field image: each of its planes
            block[offset + inner] = checked_plane(data[inner], dtype, where, cast)
    assert block is not None  # a unit has a file
    return block


def write_units(backend: ZarrBackend, store: str, array: Any, selection: tuple[slice, ...], data: np.ndarray
                ) -> None:
    """``array[selection] = data``, ``selection`` being whole write units this task owns. A unit
    left torn by a writer that died in the middle of writing it (on a store without atomic
    writes) is removed and written again: zarr-python reads a shard back even to replace it
    whole, and would fail on it."""
    try:
        array[selection] = data
    except Exception:
        unit = tuple(array.shards or array.chunks)
        spans = [range(s.start // u, -(-s.stop // u)) for s, u in zip(selection, unit, strict=True)]
        keys = backend.documents.keys(Location(store, ""))
        for coords in itertools.product(*spans):
            keys.delete(f"{array.path}/{array.metadata.encode_chunk_key(coords)}")
        array[selection] = data


def _image(backend: ZarrBackend, location: Location, zarr_format: int
           ) -> tuple[GroupDocument | None, list[Any]]:
    """The image's group document and its level arrays (writable); (None, []) if no image is
    there. One read of the group, however many levels (a request each on object storage)."""
    group = GroupDocument.read(backend.documents, location, zarr_format)
    if group is None or not ngff.is_multiscale_image(group.attributes):
        return None, []
    paths = ngff.multiscale_paths(group.attributes)
    return group, [backend.documents.open_array(location.child(path), zarr_format, writable=True)
                   for path in paths]


def downsample_block(block: np.ndarray, labels: bool) -> np.ndarray:
    """Halve the last two axes (y, x) of ``block`` plane by plane, as the zarr writer does."""
    lead = block.shape[:-2]
    if math.prod(lead) == 1:  # one plane: no stacking copy
        plane = downsample_plane(block.reshape(block.shape[-2:]), labels)
        return plane.reshape(lead + plane.shape)
    planes = [downsample_plane(block[index], labels) for index in np.ndindex(lead)]
    if not planes:
        return block
    return np.stack(planes).reshape(lead + planes[0].shape)


# -- regions of a large image ---------------------------------------------------------------------


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


class SourceGraph:
    """A dask array's graph, materialized once on the client and shared by the tasks (threads:
    by reference, never copied) that compute its blocks: a block computed inside the task that
    writes it fails that task alone, where dask's local scheduler would stop every task at the
    first error."""

    def __init__(self, graph: Mapping[Any, Any], name: str) -> None:
        from dask.core import get_dependencies

        self.graph = graph
        self.name = name
        self.dependencies = {key: frozenset(get_dependencies(graph, key)) for key in graph}

    def __dask_tokenize__(self) -> str:  # dask would otherwise hash the whole graph, for each block
        return self.name

    def compute(self, key: Any) -> np.ndarray:
        """The block at ``key``, computed from the keys it needs alone."""
        from dask.local import get_sync

        needed: set[Any] = set()
        stack = [key]
        while stack:
            current = stack.pop()
            if current not in needed:
                needed.add(current)
                stack.extend(self.dependencies.get(current, ()))
        return np.asarray(get_sync({k: self.graph[k] for k in needed}, key))


@dataclass(frozen=True)
class SourceBlock:
    """One block of a :class:`SourceGraph`, for the task that writes it."""

    graph: SourceGraph
    key: Any

    def compute(self) -> np.ndarray:
        return self.graph.compute(self.key)


def write_region(target: Target, task: RegionTask, block: Any, *above: Outcome) -> Outcome:
    """Write one block of a level: level 0 from ``block`` (the source's pixels), a level
    below from the level above, read back from the store (the tasks in ``above`` wrote it)."""
    failed = next((o for o in above if not o.ok), None)
    if failed is not None:
        error = TaskError(f"not written: block {failed.task} of the level above failed ({failed.error})")
        return Failure(task.name, error)
    try:
        backend = target.backend()
        location = Location(target.store, task.node)
        array = backend.documents.image_level_array(location, task.level, writable=True, incomplete=True)
        if array is None:
            raise _missing_image(target, task.node)
        selection = tuple(slice(a, b) for a, b in task.region)
        if task.level == 0:
            data = block.compute() if isinstance(block, SourceBlock) else np.asarray(block)
        else:
            source = backend.documents.image_level_array(location, task.level - 1, incomplete=True)
            assert source is not None  # the same image document named level - 1
            wanted = source_region(task.region, task.axes, source.shape)
            data = downsample_block(np.asarray(source[tuple(slice(a, b) for a, b in wanted)]), task.labels)
        shape = tuple(b - a for a, b in task.region)
        if data.shape != shape:
            raise UnsupportedDataError(f"block {task.name}: {data.shape} computed for a {shape} region.")
        write_units(backend, target.store, array, selection, data)
        target.journal().mark(task.name, task.token)
    except Exception as error:  # reported with the others by the client
        return Failure(task.name, portable(error))
    return Outcome(task.name)

