"""Running a conversion's tasks: on a dask.distributed cluster (a ``Client``), or on local
threads (dask's threaded scheduler) when there is none. No scheduler of ours: dask orders the
tasks by their dependencies, and on a cluster reruns the tasks of a worker that died.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from polystore.distributed.tasks import Outcome, TaskError, portable
from polystore.exceptions import UnsupportedDataError
from polystore.lazy import optional_import


@contextmanager
def _bar(enabled: bool, total: int, what: str) -> Iterator[Any]:
    """A tqdm bar on stderr when asked for and stderr is a terminal, else None."""
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety: without tqdm the work is the same
        yield None
        return
    with tqdm(total=total, unit=f" {what}", file=sys.stderr, disable=None, leave=False) as bar:
        yield None if bar.disable else bar  # not a terminal: nothing to show, nothing to count


@dataclass(frozen=True)
class Call:
    """A task that needs no other task's result: ``function(*args)`` under the dask key
    ``key``. On a cluster, a batch of calls is sent as it is (``Client.map``: one message, no
    graph of dask collections built and tokenized on the client); a task that needs others'
    results is a dask ``Delayed``."""

    key: str
    function: Callable[..., Outcome]
    args: tuple[Any, ...]

    def __call__(self) -> Outcome:
        return self.function(*self.args)


Task = tuple[str, Any]
"""(name, a :class:`Call`, or a dask Delayed giving an Outcome)."""


def run(tasks: Sequence[Task], client: Any = None, *, workers: int | None = None,
        progress: bool = False, what: str = "tasks") -> list[Outcome]:
    """Compute ``tasks`` and return their outcomes.

    With a ``client``, on its cluster: a task whose worker died is run again by dask; one
    that dask gave up on (its workers kept dying), or whose input failed to compute, is
    reported as failed under its name. Without, on ``workers`` local threads.
    """
    return run_batches([tasks], len(tasks), client, workers=workers, progress=progress, what=what)


def run_batches(batches: Iterable[Sequence[Task]], total: int, client: Any = None, *,
                workers: int | None = None, progress: bool = False, what: str = "tasks") -> list[Outcome]:
    """:func:`run` of the tasks ``batches`` yields (``total`` in all), each batch sent to the
    cluster as soon as it is made: the workers start on the first while the client makes the
    next (what the client does to make a batch is then no longer serial before all work).
    Without a client, every batch is made first, then all run on local threads."""
    if client is None:
        tasks = [_delayed(task) for batch in batches for _, task in batch]
        return _run_threads(tasks, workers, progress, what) if tasks else []
    distributed = optional_import("distributed", extra="distributed", purpose="Converting on a cluster")
    names: dict[Any, str] = {}
    futures: list[Any] = []
    for batch in batches:
        try:
            sent = _submit(client, [task for _, task in batch])
        except TypeError as error:  # dask's "Could not serialize object of type ..."
            client.cancel(futures)
            raise UnsupportedDataError(
                f"The {what} cannot be sent to the cluster's workers: {error}. Give a source the "
                "workers can read themselves (files, a NumPy array, a dask array built from them; not "
                "one whose graph holds locks, open files or functions defined in a notebook cell), "
                "or convert on local threads (no client). What was written is kept: convert again "
                "with resume=True, or overwrite=True."
            ) from error
        names.update((future.key, name) for future, (name, _) in zip(sent, batch, strict=True))
        futures += sent
    _wait(distributed, client, futures, progress, total, what)
    # the type of a task's result comes with its end: a plain Outcome is a success, which its
    # task's name says whole; only the others are fetched, in one gather, not a request each
    # (a "lost" task ended too: its result was on a worker that died since)
    succeeded = [f for f in futures if f.status in ("finished", "lost") and f.type is Outcome]
    outcomes = [Outcome(names[future.key]) for future in succeeded]
    fetched = [future for future in futures if future.status == "finished" and future.type is not Outcome]
    if fetched:
        outcomes += client.gather(fetched)
    outcomes += [Outcome(names[f.key], _failure(f.exception())) for f in futures if f.status == "error"]
    reported = {f.key for f in succeeded} | {f.key for f in fetched}
    outcomes += [Outcome(names[f.key], _stopped(f.status)) for f in futures
                 if f.status != "error" and f.key not in reported]
    return outcomes


def _submit(client: Any, tasks: list[Any]) -> list[Any]:
    """The futures of ``tasks``, in their order: the calls in one ``Client.map``, the
    Delayed in one ``Client.compute``."""
    calls = [(i, task) for i, task in enumerate(tasks) if isinstance(task, Call)]
    graphs = [(i, task) for i, task in enumerate(tasks) if not isinstance(task, Call)]
    futures: list[Any] = [None] * len(tasks)
    if calls:
        sent = client.map(Call.__call__, [task for _, task in calls], key=[task.key for _, task in calls],
                          pure=False)
        for (i, _), future in zip(calls, sent, strict=True):
            futures[i] = future
    if graphs:
        for (i, _), future in zip(graphs, client.compute([task for _, task in graphs]), strict=True):
            futures[i] = future
    return futures


def _wait(distributed: Any, client: Any, futures: list[Any], progress: bool, total: int, what: str) -> None:
    """Until every future is done. With a bar, as each ends (dask's ``as_completed``: a
    notice from the client's event loop to this thread per task); without, in one wait
    on the event loop (per task, that thread's work alone)."""
    with _bar(progress, total, what) as bar:
        if bar is None:
            # distributed.wait waits through the current client; it raises once all are done if
            # some were cancelled: each is reported as failed by its name
            with client.as_current(), suppress(distributed.client.FuturesCancelledError):
                distributed.wait(futures)
            return
        for _future in distributed.as_completed(futures, loop=client.loop):  # no results fetched
            bar.update(1)


def _failure(error: BaseException) -> BaseException:
    """What the report says of a task dask gave up on."""
    if type(error).__name__ == "KilledWorker":
        failure = TaskError(
            "the workers running it died (killed, out of memory, or lost) as many times as dask allows "
            f"(distributed.scheduler.allowed-failures), so dask gave up on it: {error}. Resume the "
            "conversion (resume=True, --resume) once the workers have the memory it needs."
        )
        failure.__cause__ = error
        return failure
    return portable(error)


def _stopped(status: str) -> TaskError:
    """What the report says of a task that dask stopped before it ended (``status``: cancelled,
    by ``client.cancel`` or a restart of the cluster, or lost)."""
    return TaskError(
        f"dask {status} it before it finished (client.cancel, client.restart, or its cluster went "
        "away): nothing of it counts as written. Resume the conversion (resume=True, --resume) to redo it."
    )


def _delayed(task: Any) -> Any:
    """A task as dask's local scheduler runs it: a Call as a Delayed of its key."""
    if not isinstance(task, Call):
        return task
    delayed = optional_import("dask", extra="zarr", purpose="Converting").delayed
    return delayed(task, pure=False)(dask_key_name=task.key)


def _run_threads(tasks: Sequence[Any], workers: int | None, progress: bool, what: str) -> list[Outcome]:
    dask = optional_import("dask", extra="zarr", purpose="Converting")
    from dask.callbacks import Callback

    keys = {task.key for task in tasks}
    with _bar(progress, len(tasks), what) as bar:

        class Advance(Callback):
            def __init__(self) -> None:
                super().__init__()  # type: ignore[no-untyped-call]  # dask is untyped

            def _posttask(self, key: Any, *args: Any) -> None:
                if bar is not None and key in keys:
                    bar.update(1)

        with Advance():
            results = dask.compute(*tasks, scheduler="threads", num_workers=workers)
    return list(results)
