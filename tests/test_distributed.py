"""polystore.distributed on a real dask.distributed LocalCluster (worker processes, spawned).

A plate from a TIFF folder to local disk and to the S3 server on 127.0.0.1, checked by
ome-zarr-models and equal to the single-process result; a scan of every key the workers
wrote (a recording store) shows each written once, shards spanning several planes included,
and no lock objects; a worker killed in the middle of a field (SIGKILL), or while tearing a
shard, has its task rerun by dask, and a task dask gives up on is reported by its field; the
workers run the zarr settings asked for (a restarted one too); relative paths are the
client's, not each worker's; a whole job killed is finished by ``resume=True`` with the same
bytes; a worker with a memory limit writes an image several times that limit, pyramid
included. Conversions without a cluster: tests/test_distributed_local.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("tifffile")

import dask.array as da
import zarr
from distributed import Client, Future, LocalCluster, get_task_stream
from distributed_helpers import (
    AT_GATE,
    GATE,
    KILL_AT,
    RECORD,
    TORN,
    RecordingBackend,
    gated,
    graph_sizes,
    peak_rss_bytes,
    record_graph_sizes,
    recorded_writes,
    tile_values,
    tiles,
)
from ngff_helpers import ngff_models
from plate_helpers import PlateItem, write_plate_tree

from polystore.atomic import LOCK_SUFFIX, LOCKS_FOLDER_SUFFIX
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.location import Location
from polystore.backends.zarr.pipeline import DEFAULT_PIPELINE, PIPELINE_PATH, zarrs_installed
from polystore.distributed import (
    ClusterError,
    ConversionError,
    DestinationExistsError,
    convert,
    save_batch,
)
from polystore.distributed.cluster import local_cluster
from polystore.distributed.journal import journal_location
from polystore.exceptions import CorruptDataError, UnsupportedDataError

PLANE = (48, 40)
QUIET = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}
"""No dashboard; the scheduler's HTTP endpoints on a free port (8787 may be another cluster's)."""
PLATE = {"wells": ("A01", "B03", "C12"), "fields": 2, "channels": 2, "z": 2}
SHARDED = {"chunks": (1, 1, 24, 20), "shards": (2, 2, 48, 40)}
"""A shard spans both channels and both planes of a field: 4 planes written into each."""


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **QUIET) as cluster, \
            Client(cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def threads_client() -> Iterator[Client]:
    """A cluster whose worker runs in this process (what the client and its futures do, not
    worker processes): a test can hold its tasks at a gate (distributed_helpers.GATE)."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, **QUIET) as cluster, \
            Client(cluster) as connected:
        yield connected


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[PlateItem]]:
    items = write_plate_tree(tmp_path / "tiffs", "imagexpress", shape=PLANE, **PLATE)  # type: ignore[arg-type]
    return tmp_path / "tiffs", items


def store_bytes(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def lock_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((LOCK_SUFFIX, LOCKS_FOLDER_SUFFIX))]


def assert_plate(store: Any, items: list[PlateItem], levels: int = 2) -> None:
    """Valid NGFF (ome-zarr-models), and every image where its name says, at every level."""
    group = zarr.open_group(store, mode="r")
    models = ngff_models(3)
    models.HCS.from_zarr(group)
    for item in items:
        c = item.components
        models.Well.from_zarr(group[f"{c.row}/{c.column}"])
        image = group[f"{c.row}/{c.column}/{c.field}"]
        models.Image.from_zarr(image)
        for level in range(levels):
            plane = image[str(level)][c.channel, c.z or 0]
            assert plane.shape == (PLANE[0] >> level, PLANE[1] >> level)
            assert np.all(plane == item.value), (item.path, level)


def reference(tmp_path: Path, folder: Path, **layout: Any) -> dict[str, bytes]:
    """The single-process result: the same conversion on local threads, no cluster."""
    convert(folder, tmp_path / "reference" / "plate.zarr", levels=2, workers=2, **layout)
    return store_bytes(tmp_path / "reference" / "plate.zarr")


def incomplete(store: Path, field: str) -> bool:
    """Whether a field image says it is not written yet (polystore's mark beside its NGFF metadata)."""
    attributes = zarr.open_group(store / field, mode="r").attrs.asdict()
    return bool(attributes.get("polystore", {}).get("incomplete"))


# -- a plate on the cluster --------------------------------------------------------------------


def test_plate_from_a_tiff_folder_equals_the_single_process_result(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    source, items = folder
    report = convert(source, tmp_path / "out" / "plate.zarr", client=client, levels=2)
    assert report.kind == "plate" and report.convention == "imagexpress"
    assert len(report.written) == report.tasks == 6 and not report.failures
    assert report.axes == "czyx" and report.shape == (2, 2, *PLANE)
    assert_plate(tmp_path / "out" / "plate.zarr", items)
    assert store_bytes(tmp_path / "out" / "plate.zarr") == reference(tmp_path, source)
    # and the pixels the plain single-process writer (save_batch) gives for the same planes
    backend = ZarrBackend(root=tmp_path / "batch", pyramid_levels=2)
    import tifffile

    names = [item.path.split("/")[-1].removeprefix("P1_") for item in items]
    planes = [tifffile.imread(source / item.path) for item in items]
    backend.save_batch(planes, [f"plate.zarr/{n}" for n in names])
    for item in items:
        c = item.components
        for level in range(2):
            node = f"plate.zarr/{c.row}/{c.column}/{c.field}/{level}"
            ours, theirs = (zarr.open_array(tmp_path / where / node) for where in ("out", "batch"))
            assert np.array_equal(ours[...], theirs[...])
    assert not lock_files(tmp_path / "out")  # (the single-process writer leaves its lock files)
    assert not Path(journal_location(str(tmp_path / "out" / "plate.zarr"))).exists()  # done: markers gone


def test_a_plate_is_one_dask_task_per_field(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    """No task but the fields' (a task per argument would be one more key a worker fetches
    from another before it starts)."""
    source, _ = folder
    with get_task_stream(client) as stream:
        report = convert(source, tmp_path / "out" / "plate.zarr", client=client, levels=2)
    keys = sorted(str(task["key"]) for task in stream.data)
    assert len(report.written) == 6 and len(keys) == 6
    assert all(key.startswith("polystore-field-") for key in keys)


def test_the_fields_go_to_the_workers_in_growing_batches(tmp_path: Path) -> None:
    """The first tasks are sent once the first fields' images exist, a few: enough for each of
    two workers to start, while the client creates the other images (with one well's fields
    sent first, they waited for all the others' images), and few graphs after (each is CPU the
    client and the scheduler take from the workers)."""
    items = write_plate_tree(tmp_path / "tiffs", "imagexpress", shape=PLANE,
                             wells=tuple(f"B{n:02d}" for n in range(1, 13)), fields=2, channels=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **QUIET) as cluster, \
            Client(cluster) as fresh:
        record_graph_sizes(fresh)
        report = convert(tmp_path / "tiffs", tmp_path / "plate.zarr", client=fresh)
        sizes = graph_sizes(fresh)
    assert len(report.written) == len(items) == 24
    assert sum(sizes) == 24 and 2 <= sizes[0] <= 4, sizes
    assert len(sizes) <= 3 and sizes[1] > sizes[0], sizes


def test_the_client_fetches_no_result_of_a_field_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    """A success says no more than its task's name: its result stays on the worker (dask tells
    the client the result's type as the task ends); a failure's is fetched, for its error."""
    def sent() -> int:
        return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_count_total).values())

    source, _ = folder
    before = sent()
    report = convert(source, tmp_path / "out" / "plate.zarr", client=client, levels=2)
    assert len(report.written) == 6 and sent() == before
    bad = source / "P1_B03_s1_w1_z1.tif"
    bad.write_bytes(b"II*\x00 this is not a TIFF")
    with pytest.raises(ConversionError) as raised:
        convert(source, tmp_path / "again" / "plate.zarr", client=client, levels=2)
    assert [f.path for f in raised.value.failures] == [f"B/03/0 ({bad})"]
    assert sent() > before  # the failure's result, with its error


class Terminal(io.StringIO):
    """What a terminal's stderr says of itself (tqdm draws a bar only there)."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_the_fields_written_as_they_end(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stderr a terminal, a bar ticks as each field ends (dask's as_completed); without
    one, the client waits for all at once (what every other test runs)."""
    source, _ = folder
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = convert(source, tmp_path / "plate.zarr", client=client, levels=2, progress=True)
    assert len(report.written) == 6
    assert "0/6 [" in terminal.getvalue() and " fields/s" in terminal.getvalue(), terminal.getvalue()


def test_the_local_cluster_leaves_out_the_dashboards_diagnostics() -> None:
    """The cluster ``--workers N`` starts: one-thread worker processes with no statistical
    profiler (a stack sample of the task thread every 10 ms) and event-loop and system polls
    at the slower pace dask's own test clusters use."""
    with local_cluster(2) as cluster, Client(cluster) as started:
        workers = started.run(lambda dask_worker: (dask_worker.state.nthreads,
                                                   sorted(dask_worker.periodic_callbacks)))
        tick = started.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time)
        pids = started.run(os.getpid)
    assert len(workers) == 2 and len(set(pids.values()) | {os.getpid()}) == 3  # processes of their own
    for threads, callbacks in workers.values():
        assert threads == 1 and "profile" not in callbacks and "heartbeat" in callbacks
    assert tick == 500


def freed_buffer_faults() -> int:
    """Minor page faults of allocating, filling and freeing an 8 MiB buffer, once reused."""
    import resource

    def fill() -> None:
        np.ones(2**22, np.uint16)

    fill()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        fill()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_a_worker_reuses_the_memory_a_task_frees(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    """dask's nanny has glibc map (and fault in, zeroed) every buffer of a chunk anew; once a
    conversion ran, a worker's freed buffers are reused (eight 8 MiB buffers mapped anew:
    thousands of faults, even in huge pages)."""
    source, _ = folder
    convert(source, tmp_path / "out" / "plate.zarr", client=client)
    faults = client.run(freed_buffer_faults)
    assert max(faults.values()) < 1000, faults


@pytest.mark.parametrize("layout", [{}, SHARDED], ids=["a chunk per plane", "shards of 4 planes"])
def test_each_key_is_written_by_one_task_and_no_lock_objects(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client, layout: dict[str, Any]
) -> None:
    source, items = folder
    record = tmp_path / "writes"
    record.mkdir()
    backend = RecordingBackend(storage_options={RECORD: str(record)})
    convert(source, tmp_path / "plate.zarr", client=client, backend=backend, levels=2, **layout)
    writes = recorded_writes(record)
    workers = set(client.run(os.getpid).values())
    task_writes = [key for pid, key in writes if pid in workers]
    assert task_writes, "the workers wrote no chunks through the store"
    counts = Counter(task_writes)
    # once: a shard of several planes is assembled first, never rewritten plane by plane
    assert max(counts.values()) == 1, [(k, n) for k, n in counts.items() if n > 1]
    fields = {f"{i.components.row}/{i.components.column}/{i.components.field}" for i in items}
    # every chunk a task wrote lies inside one field: no task wrote another's keys or a shared one
    assert all(key.rsplit("/c/", 1)[0].rsplit("/", 1)[0] in fields for key in task_writes)
    assert all("/c/" in key for key in task_writes)  # chunks only through zarr (and its own field's group)
    if layout:  # 6 fields x 2 levels, one shard each
        assert len(task_writes) == 12
    assert not lock_files(tmp_path)
    assert_plate(tmp_path / "plate.zarr", items)
    assert not any(incomplete(tmp_path / "plate.zarr", field) for field in fields)


def test_plate_to_the_s3_server(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client, s3_bucket: str, s3_server: str
) -> None:
    import boto3

    source, items = folder
    options = {"key": "testing", "secret": "testing", "endpoint_url": s3_server}
    url = f"s3://{s3_bucket}/screen/plate.zarr"
    report = convert(source, url, client=client, levels=2, storage_options=options)
    assert len(report.written) == 6
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    assert all(k.startswith("screen/plate.zarr/") for k in keys), keys  # no locks, no markers left
    written = {k.removeprefix("screen/plate.zarr/"): s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read()
               for k in keys}
    assert written == reference(tmp_path, source)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    assert_plate(store, items)


# -- failures, retries, resume ---------------------------------------------------------------------


def worker_zarr_settings() -> tuple[str, int | None]:
    """This worker's zarr codec pipeline and chunk threads (run with client.run)."""
    config = zarr.config
    return str(config.get("codec_pipeline.path")), config.get("threading.max_workers")


@pytest.mark.parametrize(("layout", "kill"), [
    ({}, {KILL_AT: "B/03/1/0/c/1/0/0/0"}),  # dies before writing a plane's chunk
    (SHARDED, {KILL_AT: "B/03/1/0/c/0/0/0/0", TORN: True}),  # dies with half a shard written
], ids=["before a chunk", "tearing a shard"])
def test_a_worker_killed_mid_field_is_replaced_and_the_plate_completes(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client, layout: dict[str, Any],
    kill: dict[str, Any],
) -> None:
    source, items = folder
    record = tmp_path / "writes"
    record.mkdir()
    backend = RecordingBackend(storage_options={RECORD: str(record), **kill})
    report = convert(source, tmp_path / "out" / "plate.zarr", client=client, backend=backend, levels=2,
                     **layout)
    assert (record / "killed").exists(), "no worker was killed"
    assert len(report.written) == 6 and not report.failures
    assert_plate(tmp_path / "out" / "plate.zarr", items)
    # the same writer (the recording store's: zarr-python's pipeline, which lays shards out as
    # zarrs does not), never killed
    (tmp_path / "reference-writes").mkdir()
    unkilled = RecordingBackend(storage_options={RECORD: str(tmp_path / "reference-writes")})
    expected = reference(tmp_path, source, backend=unkilled, **layout)
    assert store_bytes(tmp_path / "out" / "plate.zarr") == expected
    # the nanny restarts the killed worker (for the next tests too); the zarr settings reach it
    # before any task does: the plugin's, a thread per worker thread (zarr's default: every core)
    client.wait_for_workers(2, timeout=60)
    expected = (PIPELINE_PATH if zarrs_installed() else DEFAULT_PIPELINE, 1)
    assert set(client.run(worker_zarr_settings).values()) == {expected}


def test_a_task_dask_gives_up_on_is_reported_by_its_field(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    source, items = folder
    record = tmp_path / "writes"
    record.mkdir()
    backend = RecordingBackend(storage_options={RECORD: str(record), KILL_AT: "B/03/0/0/c/1/0/0/0"})

    def allow(failures: int, dask_scheduler: Any = None) -> int:
        before: int = dask_scheduler.allowed_failures
        dask_scheduler.allowed_failures = failures
        return before

    before = client.run_on_scheduler(allow, 0)  # dask gives up at the first death (default: 3)
    try:
        with pytest.raises(ConversionError) as raised:
            convert(source, tmp_path / "plate.zarr", client=client, backend=backend, levels=2)
    finally:
        client.run_on_scheduler(allow, before)
    # B/03/0, and whatever else the dead worker held (a task's inputs), each named by its field
    failed = [f.path for f in raised.value.failures]
    assert "B/03/0" in failed and all("died" in str(f.error) for f in raised.value.failures)
    assert "resume" in str(raised.value)
    fields = sorted({f"{i.components.row}/{i.components.column}/{i.components.field}" for i in items})
    assert sorted(failed + raised.value.report.written) == fields
    assert all(incomplete(tmp_path / "plate.zarr", path) for path in failed)
    assert not any(incomplete(tmp_path / "plate.zarr", path) for path in raised.value.report.written)
    client.wait_for_workers(2, timeout=60)
    report = convert(source, tmp_path / "plate.zarr", client=client, levels=2, resume=True)
    assert report.written == failed
    assert_plate(tmp_path / "plate.zarr", items)


def test_a_cancelled_task_is_reported_by_its_block_and_resumed(
    tmp_path: Path, threads_client: Client
) -> None:
    """client.cancel (or a restart of the cluster) made distributed.wait raise a bare
    FuturesCancelledError out of convert; now the block is a failure, and a resume redoes it."""
    GATE.clear()
    AT_GATE.clear()

    def cancel_the_block() -> None:  # once it runs (the scheduler has it); it ends when the gate opens
        AT_GATE.wait()
        keys = [key for key in list(threads_client.futures) if "polystore-block" in str(key)]
        threads_client.cancel([Future(key, client=threads_client) for key in keys], force=True)
        GATE.set()

    canceller = threading.Thread(target=cancel_the_block)
    canceller.start()
    try:
        with pytest.raises(ConversionError, match="cancelled it before it finished") as raised:
            convert(gated((64, 64)), tmp_path / "image.zarr", client=threads_client, chunks=(64, 64))
    finally:
        GATE.set()
        canceller.join()
    assert [f.path for f in raised.value.failures] == ["0/0_0"]
    report = convert(gated((64, 64)), tmp_path / "image.zarr", client=threads_client, chunks=(64, 64),
                     resume=True)
    assert report.written == ["0/0_0"]
    assert np.all(zarr.open_group(tmp_path / "image.zarr", mode="r")["0"][:] == 1)


def test_a_closed_client_is_refused_before_anything_is_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], threads_client: Client
) -> None:
    """A bare ClosedClientError came from the first task sent, after the plate's metadata and
    progress were written: the next try was refused as a stopped conversion."""
    closed = Client(threads_client.scheduler.address)
    convert(np.ones((8, 8), np.uint8), tmp_path / "first.zarr", client=closed)  # its plugin registered
    closed.close()
    for source in (folder[0], np.ones((8, 8), np.uint8)):
        with pytest.raises(ClusterError, match="client given is closed"):
            convert(source, tmp_path / "plate.zarr", client=closed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.zarr", "tiffs"]
    with pytest.raises(ClusterError, match="client given is closed"):
        save_batch(ZarrBackend(), [np.ones((8, 8), np.uint8)], [str(tmp_path / "b.zarr" / "A01_s1_w1.tif")],
                   client=closed)


def test_a_source_the_workers_cannot_be_sent_is_said_so(tmp_path: Path, threads_client: Client) -> None:
    """A bare TypeError from dask's serializer came out of convert before."""
    held = threading.Lock()  # what no pickle sends: a lock held in the source's graph

    def brighter(block: np.ndarray) -> np.ndarray:
        with held:
            return block + 1

    source = da.zeros((64, 64), np.uint16, chunks=(32, 64)).map_blocks(brighter, dtype=np.uint16)
    with pytest.raises(UnsupportedDataError, match="cannot be sent to the cluster's workers") as refused:
        convert(source, tmp_path / "image.zarr", client=threads_client, chunks=(32, 64))
    assert "resume=True" in str(refused.value)
    report = convert(source, tmp_path / "image.zarr", resume=True, chunks=(32, 64))  # on local threads
    assert not report.failures and report.written
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "image.zarr" / "0", mode="r")[...], 1)


def test_relative_paths_are_the_clients_not_each_workers(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, items = folder
    monkeypatch.chdir(tmp_path)  # the workers run in the folder the cluster started in
    assert os.getcwd() not in client.run(os.getcwd).values()
    report = convert(source.name, "out/plate.zarr", client=client, levels=2)
    assert len(report.written) == 6
    assert_plate(tmp_path / "out" / "plate.zarr", items)


JOB = """
import sys
from distributed_helpers import KILL_AT, RECORD, RecordingBackend
from polystore.distributed import convert

if __name__ == "__main__":
    source, destination, record, kill_at = sys.argv[1:]
    backend = RecordingBackend(storage_options={RECORD: record, KILL_AT: kill_at})
    convert(source, destination, backend=backend, levels=2, workers=1)
"""


def test_a_killed_job_resumes_to_the_same_bytes(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    source, _items = folder
    record = tmp_path / "writes"
    record.mkdir()
    (tmp_path / "job.py").write_text(textwrap.dedent(JOB))
    destination = tmp_path / "out" / "plate.zarr"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    # one thread, 8 chunks a field (2 channels x 2 planes x 2 levels): the job dies (SIGKILL) at
    # the 28th chunk, half way through its fourth field, three fields done
    command = [sys.executable, str(tmp_path / "job.py"), *map(str, (source, destination, record)), "write:28"]
    job = subprocess.run(command, env=environment, capture_output=True, timeout=120)
    assert job.returncode == -9, job.stderr.decode()
    with pytest.raises(DestinationExistsError, match="resume"):
        convert(source, destination, levels=2)
    report = convert(source, destination, client=client, levels=2, resume=True)
    assert len(report.already_done) == 3 and len(report.written) == 3
    assert store_bytes(destination) == reference(tmp_path, source)
    assert not Path(journal_location(str(destination))).exists()


def test_a_bad_file_is_reported_by_name_and_the_rest_is_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], client: Client
) -> None:
    source, items = folder
    bad = source / "P1_B03_s2_w1_z1.tif"
    good = bad.read_bytes()
    bad.write_bytes(b"II*\x00 this is not a TIFF")
    with pytest.raises(ConversionError) as raised:
        convert(source, tmp_path / "plate.zarr", client=client, levels=2)
    assert [f.path for f in raised.value.failures] == [f"B/03/1 ({bad})"]
    assert "resume" in str(raised.value)
    assert len(raised.value.report.written) == 5
    # the failed field is listed (the plate is valid) but says it is not written: never zeros as data
    assert incomplete(tmp_path / "plate.zarr", "B/03/1")
    with pytest.raises(CorruptDataError, match=r"not converted yet.*--resume"):
        ZarrBackend().plates.open_field(Location(str(tmp_path / "plate.zarr"), "B/03/1"))
    bad.write_bytes(good)
    report = convert(source, tmp_path / "plate.zarr", client=client, levels=2, resume=True)
    assert report.written == ["B/03/1"]
    assert_plate(tmp_path / "plate.zarr", items)
    assert not incomplete(tmp_path / "plate.zarr", "B/03/1")


# -- images larger than a worker's memory ----------------------------------------------------------

MEMORY_LIMIT = 400 * 2**20
"""A worker's whole memory (dask terminates it at 95%); about 300 MiB of it is the worker itself
with numpy, zarr, zarrs, obstore and dask imported, so tasks have about 80 MiB."""


def test_a_memory_limited_worker_writes_an_image_several_times_its_limit(tmp_path: Path) -> None:
    import dask

    shape = (16384, 40960)  # 1.25 GiB of uint16, 3x the worker's limit (its pyramid: 1/3 more)
    image = tiles(shape)
    # the limit is enforced (a worker above 95% of it is killed); spilling results to disk
    # (from 60%) and pausing (at 80%), meant for workers holding results, would only slow this
    # one down, or hide what it holds from the limit
    memory = {"distributed.worker.memory.pause": False, "distributed.worker.memory.target": False,
              "distributed.worker.memory.spill": False}
    with dask.config.set(memory), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit=MEMORY_LIMIT,
                         **QUIET) as cluster, Client(cluster) as limited:
        report = convert(image, tmp_path / "big.zarr", client=limited, levels=3, chunks=(1024, 1024),
                         shards=(2048, 2048), region_bytes=8 * 2**20)
        peak = max(limited.run(peak_rss_bytes).values())
        restarted = [log for log in limited.get_worker_logs().values() if "restart" in str(log).lower()]
    assert image.nbytes >= 3 * MEMORY_LIMIT
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.0f} MiB"
    assert not report.failures and not restarted
    group = zarr.open_group(tmp_path / "big.zarr", mode="r")
    ngff_models(3).Image.from_zarr(group)
    for rows, columns in [(slice(1000, 1100), slice(0, 2100)), (slice(16300, 16384), slice(40000, 40960))]:
        assert np.array_equal(group["0"][rows, columns], tile_values(rows, columns))
    assert np.array_equal(group["2"][:, :], tile_values(slice(0, 4096), slice(0, 10240), level=2))
