"""The same fast path on every worker: zarr's codec pipeline (zarrs where installed) and its
threads, set in each worker process when it starts (and in workers that join later), and
glibc's malloc allowed to reuse the memory a task frees.

zarr's configuration is per process, so a setting made on the client does not reach the
workers; a ``WorkerPlugin`` is dask's way to run setup code in every worker, including one
that the nanny restarts after a crash.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import weakref
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from polystore.backends.zarr.config import ZarrConfig
from polystore.backends.zarr.pipeline import configure
from polystore.distributed.cluster import ClusterError

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (``<malloc.h>``)."""
REUSED_BYTES = 32 * 2**20
"""The largest allocation malloc serves from (and keeps in) its heap rather than a fresh
``mmap``: the bound glibc's own threshold grows to on a 64-bit system when nobody sets it."""


def reuse_freed_memory(limit: int = REUSED_BYTES) -> bool:
    """Let glibc's malloc keep freed blocks up to ``limit`` bytes for reuse in this process.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory
    goes back to the system; setting it also freezes glibc's mmap threshold at 128 KiB, so
    every buffer of a chunk (a TIFF plane, a zarrs encoding buffer, a pyramid level) is a new
    mapping whose pages the kernel faults in and zeroes, and unmaps when freed. A conversion
    task allocates several times its field's size that way, and the faults (system time,
    memory bandwidth) cost about as much as the encoding; two workers on one machine also
    contend for them. The thresholds set here bound what a worker keeps to ``limit`` per
    malloc arena. Returns whether they were set (False where the C library is not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): left as it is
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))


class ZarrWorkerSetup(WorkerPlugin):
    """Set zarr's codec pipeline (``"auto"``: zarrs where installed) and the threads zarrs may
    use for chunks (None: the worker's own thread count, so that workers on one machine do
    not oversubscribe its cores), and let malloc reuse freed memory
    (:func:`reuse_freed_memory`)."""

    name = "polystore-zarr"

    def __init__(self, codec_pipeline: str = "auto", threads: int | None = None) -> None:
        self.codec_pipeline = codec_pipeline
        self.threads = threads

    def setup(self, worker: Any) -> None:
        threads = self.threads if self.threads is not None else max(1, int(worker.state.nthreads))
        configure(self.codec_pipeline, threads)
        reuse_freed_memory()


_REGISTERED: weakref.WeakKeyDictionary[Any, tuple[str, int | None]] = weakref.WeakKeyDictionary()
"""The settings registered through each client (a plugin stays with the scheduler)."""
_REGISTERED_LOCK = threading.Lock()


def set_up_workers(client: Any, config: ZarrConfig) -> None:
    """Register :class:`ZarrWorkerSetup` for ``config`` on ``client``'s cluster (its workers now
    and any that join later, or that a nanny restarts), before a job sends its tasks: once per
    client and settings, not per job (each registration sets up every worker again, a round
    of messages through the scheduler, with the workers' cores busy)."""
    if client.status in ("closing", "closed"):  # before anything is written for the job
        raise ClusterError(
            f"The dask client given is {client.status} ({client}): connect a new one, Client(address) "
            "or Client(cluster), and pass it as client=."
        )
    settings = (config.codec_pipeline, config.threads)
    with _REGISTERED_LOCK:
        if _REGISTERED.get(client) == settings:
            return
        client.register_plugin(ZarrWorkerSetup(*settings))
        _REGISTERED[client] = settings
