"""The dask cluster a conversion starts on this machine (``polystore convert --workers N``):
worker processes of one thread each, with no dashboard and without dask's diagnostics that
only a dashboard shows, which take CPU from the workers on a small machine.

Every dask server polls on a timer whether or not anyone looks: the worker's statistical
profiler samples its task threads' stacks every 10 ms (``distributed.worker.profile``),
each server checks every 20 ms that its event loop is not blocked
(``distributed.admin.tick``) and every 500 ms asks psutil for its CPU, memory, disk and
network figures (``distributed.admin.system-monitor``). With the scheduler and one nanny per
worker in the client's process, an idle 2-worker cluster spent about 120 ms of CPU a second
that way on a 2-core machine (polls of its memory limit, which dask acts on, are left as they
are). What a cluster someone else started does is theirs to set.
"""

from __future__ import annotations

from typing import Any

from polystore.exceptions import PolystoreError
from polystore.lazy import optional_import


class ClusterError(PolystoreError, ConnectionError):
    """The dask cluster cannot be used: its client is closed, or its scheduler does not answer."""

CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",  # what dask's own tests set for their clusters
    "distributed.admin.system-monitor.interval": "2s",
}
"""dask's settings for the cluster's scheduler, nannies and workers (given to them as they
start: the worker processes get the nanny's copy)."""

QUIET_CLUSTER: dict[str, Any] = {
    "dashboard_address": None,
    # the scheduler's HTTP endpoints on a free local port: 8787 may be another cluster's
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}


def local_cluster(workers: int, **options: Any) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` worker processes of one thread each (the
    conversion's tasks are single-threaded; zarr's codec threads follow the worker's count),
    set as :data:`CLUSTER_CONFIG` says; ``options`` go to LocalCluster (``memory_limit=``)."""
    dask = optional_import("dask", extra="distributed", purpose="Starting a local cluster")
    distributed = optional_import("distributed", extra="distributed", purpose="Starting a local cluster")
    with dask.config.set(CLUSTER_CONFIG):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        **{**QUIET_CLUSTER, **options})
