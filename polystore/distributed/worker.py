"""The same fast path on every worker: zarr's codec pipeline (zarrs where installed) and its
threads, set in each worker process when it starts (and in workers that join later).

zarr's configuration is per process, so a setting made on the client does not reach the
workers; a ``WorkerPlugin`` is dask's way to run setup code in every worker, including one
that the nanny restarts after a crash.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from polystore.backends.zarr.pipeline import configure


class ZarrWorkerSetup(WorkerPlugin):
    """Set zarr's codec pipeline (``"auto"``: zarrs where installed) and the threads zarrs may
    use for chunks (None: the worker's own thread count, so that workers on one machine do
    not oversubscribe its cores)."""

    name = "polystore-zarr"

    def __init__(self, codec_pipeline: str = "auto", threads: int | None = None) -> None:
        self.codec_pipeline = codec_pipeline
        self.threads = threads

    def setup(self, worker: Any) -> None:
        threads = self.threads if self.threads is not None else max(1, int(worker.state.nthreads))
        configure(self.codec_pipeline, threads)

