"""Run one operation over many items: ordered results, per-item failures, optional progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from polystore.exceptions import BatchError, BatchFailure
from polystore.lazy import optional_import

_Item = TypeVar("_Item")


def default_workers(n_items: int) -> int:
    """Threads for an I/O-bound batch: the stdlib's default, never more than the items."""
    return max(1, min(n_items, 32, (os.cpu_count() or 1) + 4))


class _Progress:
    """A tqdm bar when asked for, nothing otherwise."""

    def __init__(self, enabled: bool, total: int, operation: str) -> None:
        self._bar: Any = None
        if enabled:
            tqdm = optional_import("tqdm", extra="progress", purpose="progress=True")
            self._bar = tqdm.tqdm(total=total, desc=operation, unit="item")

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_batch(
    operation: str,
    fn: Callable[[_Item], Any],
    items: Sequence[_Item],
    *,
    path_of: Callable[[_Item], str],
    parallel: bool,
    max_workers: int | None = None,
    progress: bool = False,
) -> list[Any]:
    """Apply ``fn`` to each item and return the results in the items' order.

    Every item is attempted even when some fail; the failures are then raised together as
    one :class:`BatchError` that names each failing path and its error.
    """
    results: list[Any] = [None] * len(items)
    failures: list[BatchFailure] = []
    bar = _Progress(progress, len(items), operation)
    try:
        workers = max_workers if max_workers is not None else default_workers(len(items))
        if parallel and workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="polystore") as pool:
                futures: dict[Future[Any], int] = {
                    pool.submit(fn, item): index for index, item in enumerate(items)
                }
                for future in as_completed(futures):
                    index = futures[future]
                    error = future.exception()
                    if error is None:
                        results[index] = future.result()
                    else:
                        failures.append(BatchFailure(index, path_of(items[index]), error))
                    bar.step()
        else:
            for index, item in enumerate(items):
                try:
                    results[index] = fn(item)
                except Exception as error:  # collected and re-raised as one BatchError below
                    failures.append(BatchFailure(index, path_of(item), error))
                bar.step()
    finally:
        bar.close()
    if failures:
        failures.sort(key=lambda failure: failure.index)
        raise BatchError(operation, failures, len(items), results) from failures[0].error
    return results
