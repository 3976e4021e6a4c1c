"""``save_batch(..., client=...)`` on a real dask.distributed LocalCluster (worker processes,
spawned): in-memory planes of a zarr plate written on the workers, one task per field, with
the bytes ``save_batch`` writes in one process; a field that fails is named, the others are
written and recorded in the plate. The zarr backend is given the writer by
polystore.distributed and never imports it (no import circle).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import zarr
from distributed import Client, LocalCluster
from distributed_helpers import RECORD, RecordingBackend, recorded_writes

import polystore
from polystore import FileManager
from polystore.backends.disk import DiskBackend
from polystore.backends.zarr import ZarrBackend
from polystore.distributed import save_batch
from polystore.exceptions import BatchError, InvalidOptionError

QUIET = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **QUIET) as cluster, \
            Client(cluster) as connected:
        yield connected


def batch(store: Path) -> tuple[list[np.ndarray], list[str]]:
    """Two wells x two fields x three channels of distinct planes."""
    names = [f"{store}/{well}_s{site}_w{channel}.tif"
             for well in ("A01", "B03") for site in (1, 2) for channel in (1, 2, 3)]
    planes = [np.full((24, 32), i + 1, np.uint16) + np.arange(32, dtype=np.uint16) for i in range(len(names))]
    return planes, names


def store_bytes(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_a_batch_is_written_on_the_workers_as_in_one_process(tmp_path: Path, client: Client) -> None:
    planes, names = batch(tmp_path / "plate.zarr")
    fm = FileManager({"zarr": ZarrBackend()})
    fm.save_batch(planes, names, "zarr", client=client)
    reference, reference_names = batch(tmp_path / "reference" / "plate.zarr")
    fm.save_batch(reference, reference_names, "zarr")
    assert store_bytes(tmp_path / "plate.zarr") == store_bytes(tmp_path / "reference" / "plate.zarr")
    for plane, name in zip(planes, names, strict=True):
        assert np.array_equal(fm.load(name, "zarr"), plane)
    # every chunk was written by a worker process, none by this one
    record = tmp_path / "writes"
    record.mkdir()
    recording = RecordingBackend(storage_options={RECORD: str(record)})
    save_batch(recording, *batch(tmp_path / "recorded.zarr"), client=client)
    chunk_writers = {pid for pid, key in recorded_writes(record) if "/c/" in key}
    assert chunk_writers and os.getpid() not in chunk_writers
    assert chunk_writers <= set(client.run(os.getpid).values())


def test_the_same_planes_saved_again_at_once_are_written_again(tmp_path: Path, client: Client) -> None:
    """Planes saved again right after a batch of the same planes (a retry, a copy, blank
    planes): scattered under keys from their content, the earlier batch's release of those
    keys raced this batch's tasks, which failed with "lost dependencies" in about one batch
    in four; repeated so that the race, were it back, shows."""
    planes, _names = batch(tmp_path)
    fm = FileManager({"zarr": ZarrBackend()})
    for attempt in range(12):
        names = batch(tmp_path / f"copy{attempt}.zarr")[1]
        fm.save_batch(planes, names, "zarr", client=client)
        assert np.array_equal(fm.load(names[-1], "zarr"), planes[-1])


def plane_pool_threads() -> int:
    """Threads of this process's plane pool (the zarr backend's, for a field's planes)."""
    import threading

    return sum(thread.name.startswith("polystore-planes") for thread in threading.enumerate())


def test_a_worker_codes_planes_on_no_more_threads_than_it_has(tmp_path: Path, client: Client) -> None:
    """Two one-thread workers on one machine: each codes a field's three planes on one pool
    thread, not one per core (every worker taking every core)."""
    planes, names = batch(tmp_path / "plate.zarr")
    FileManager({"zarr": ZarrBackend()}).save_batch(planes, names, "zarr", client=client)
    threads = client.run(plane_pool_threads)
    assert set(threads.values()) <= {0, 1} and any(threads.values()), threads


def test_a_failed_field_is_named_and_the_others_are_recorded(tmp_path: Path, client: Client) -> None:
    store = tmp_path / "plate.zarr"
    backend = ZarrBackend()
    backend.save(np.zeros((24, 32), np.uint16), f"{store}/A01_s1_w1.tif")
    planes, names = batch(store)
    planes[1] = planes[1].astype(np.float64)  # into the uint16 field A/01/0: refused unless cast
    with pytest.raises(BatchError, match=r"(?s)1 of 4 items failed.*A/01/0.*cast=True") as raised:
        FileManager({"zarr": backend}).save_batch(planes, names, "zarr", client=client)
    assert [failure.path for failure in raised.value.failures] == ["A/01/0"]
    group = zarr.open_group(store, mode="r")
    wells = {well["path"] for well in group.attrs["ome"]["plate"]["wells"]}
    assert wells == {"A/01", "B/03"}
    assert [image["path"] for image in group["B/03"].attrs["ome"]["well"]["images"]] == ["0", "1"]
    assert np.array_equal(backend.load(names[-1]), planes[-1])


def test_the_backends_never_import_the_distributed_package() -> None:
    """polystore.distributed builds on the backends; a backend importing it (even inside a
    function, as save_batch's client= once did) makes an import circle."""
    backends = Path(polystore.__file__).parent / "backends"
    found = []
    for path in sorted(backends.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(backends)}: {name}" for name in names
                      if name == "polystore.distributed" or name.startswith("polystore.distributed.")]
    assert found == []


def test_a_client_goes_through_the_file_manager_or_the_distributed_package(
        tmp_path: Path, client: Client) -> None:
    """The backend's own save_batch refuses client= (it would be ignored, the batch written
    here), saying where it goes; a backend without plates refuses it too."""
    planes, names = batch(tmp_path / "plate.zarr")
    with pytest.raises(InvalidOptionError, match=r"FileManager.save_batch\(\.\.\., client=\.\.\.\)"):
        ZarrBackend().save_batch(planes, names, client=client)
    with pytest.raises(InvalidOptionError, match="the DiskBackend backend has none"):
        disk = FileManager({"disk": DiskBackend()})
        disk.save_batch(planes, [str(tmp_path / "a.npy")] * len(planes), "disk", client=client)
    assert not (tmp_path / "plate.zarr").exists() and not (tmp_path / "a.npy").exists()
