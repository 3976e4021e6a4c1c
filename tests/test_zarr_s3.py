"""The zarr backend on object storage: ``s3://`` stores served by a real S3-protocol server.

The ``s3_bucket`` fixture (tests/conftest.py) runs moto's standalone server on 127.0.0.1 and
points the standard AWS_* variables at it; the backend reaches it through zarr's FsspecStore
and s3fs, the same path it takes to AWS or MinIO. Arrays are small: every chunk is a request.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if "polystore.testing" not in sys.modules:  # detailed assertion messages from the suite
    pytest.register_assert_rewrite("polystore.testing")

pytest.importorskip("zarr")
pytest.importorskip("s3fs")
pytest.importorskip("dask.array")

from polystore import DiskBackend, FileManager, MemoryBackend
from polystore.backends.zarr import ZarrBackend
from polystore.ome import ngff
from polystore.testing import BackendContractTests

S3_CREDENTIALS = {"key": "testing", "secret": "testing"}
"""What tests/conftest.py's s3_bucket fixture sets; moto accepts any."""


def _boto_client(endpoint: str) -> Any:
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["key"], aws_secret_access_key=S3_CREDENTIALS["secret"],
    )


def _ome_attributes(url: str, path: str = "") -> dict[str, Any]:
    """The OME-NGFF section of a group's attributes, read with zarr itself (not the backend)."""
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(url, path=path, mode="r", storage_options={"asynchronous": True})
    return ngff.ngff_section(dict(group.attrs))


def _object_keys(endpoint: str, bucket: str) -> list[str]:
    """Every key in ``bucket``, read with a separate client (what is really on the server)."""
    client = _boto_client(endpoint)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
    finally:
        client.close()


class TestZarrBackendOnS3(BackendContractTests):
    @pytest.fixture
    def backend(self, s3_bucket: str) -> ZarrBackend:
        return ZarrBackend(root=f"s3://{s3_bucket}/store.zarr")

    def test_data_is_written_to_the_bucket(
        self, backend: ZarrBackend, s3_bucket: str, s3_server: str
    ) -> None:
        backend.save(np.arange(6, dtype="uint8").reshape(2, 3), "group/image")
        keys = _object_keys(s3_server, s3_bucket)
        assert "store.zarr/zarr.json" in keys
        assert "store.zarr/group/image/zarr.json" in keys
        assert any(key.startswith("store.zarr/group/image/0/c/") for key in keys), keys


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    # no credentials file or instance metadata either: only what storage_options give
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/polystore-test-credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/polystore-test-config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_explicit_storage_options_instead_of_environment(
    s3_bucket: str, s3_server: str, no_aws_environment: None
) -> None:
    options = {"endpoint_url": s3_server, **S3_CREDENTIALS}
    backend = ZarrBackend(root=f"s3://{s3_bucket}/explicit.zarr", storage_options=options)
    data = np.arange(20, dtype="int32").reshape(4, 5)
    backend.save(data, "a/x")
    assert backend.exists("a/x") and backend.is_dir("a")
    assert backend.list_files("a") == ["a/x"]
    np.testing.assert_array_equal(backend.load("a/x"), data)
    assert "explicit.zarr/a/x/zarr.json" in _object_keys(s3_server, s3_bucket)
    # another backend given the same options reads it too
    other = ZarrBackend(root=f"s3://{s3_bucket}/explicit.zarr", storage_options=options)
    np.testing.assert_array_equal(other.load("a/x"), data)
    # the caller's options are not modified
    assert options == {"endpoint_url": s3_server, **S3_CREDENTIALS}


def test_ome_image_with_pyramid_round_trips(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    data = (np.arange(2 * 8 * 8) % 251).astype("uint16").reshape(2, 8, 8)
    backend.save(data, "image.zarr/cells", levels=2, channel_names=["dna", "actin"])
    np.testing.assert_array_equal(backend.load("image.zarr/cells"), data)
    level1 = backend.load("image.zarr/cells", level=1)
    assert level1.shape == (2, 4, 4) and level1.dtype == data.dtype
    expected = np.round(data.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))).astype("uint16")  # rounded block mean
    np.testing.assert_array_equal(level1, expected)
    with pytest.raises(ValueError, match="2 levels"):
        backend.load("image.zarr/cells", level=2)
    assert backend.is_file("image.zarr/cells") and not backend.is_dir("image.zarr/cells")
    assert backend.list_files("image.zarr") == ["image.zarr/cells"]

    attrs = _ome_attributes(f"s3://{s3_bucket}/image.zarr", "cells")
    assert ngff.multiscale_paths(attrs) == ["0", "1"]
    assert ngff.multiscale_axes(attrs) == "cyx"
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["dna", "actin"]
    # a selection reads part of the image from the object store
    np.testing.assert_array_equal(backend.load("image.zarr/cells", selection=np.s_[1, 2:4]), data[1, 2:4])


def test_plate_from_pipeline_file_names(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    planes = {
        "plate.zarr/A01_s1_w1.tif": np.full((4, 4), 1, dtype="uint16"),
        "plate.zarr/A01_s1_w2.tif": np.full((4, 4), 2, dtype="uint16"),
        "plate.zarr/B03_s2_w1.tif": np.full((4, 4), 3, dtype="uint16"),
    }
    for path, plane in planes.items():
        backend.save(plane, path)

    field = backend.load("plate.zarr/A/01/0")
    assert field.shape == (2, 4, 4)
    np.testing.assert_array_equal(field[0], planes["plate.zarr/A01_s1_w1.tif"])
    np.testing.assert_array_equal(field[1], planes["plate.zarr/A01_s1_w2.tif"])
    for path, plane in planes.items():  # each plane reads back by its file name
        np.testing.assert_array_equal(backend.load(path), plane)
    np.testing.assert_array_equal(backend.load("plate.zarr/B/03/1")[0], planes["plate.zarr/B03_s2_w1.tif"])

    plate = _ome_attributes(f"s3://{s3_bucket}/plate.zarr")["plate"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert [c["name"] for c in plate["columns"]] == ["01", "03"]
    assert sorted(w["path"] for w in plate["wells"]) == ["A/01", "B/03"]
    well_a = _ome_attributes(f"s3://{s3_bucket}/plate.zarr", "A/01")["well"]
    well_b = _ome_attributes(f"s3://{s3_bucket}/plate.zarr", "B/03")["well"]
    assert [image["path"] for image in well_a["images"]] == ["0"]
    assert [image["path"] for image in well_b["images"]] == ["1"]
    assert backend.list_dir("plate.zarr") == ["A", "B"]
    assert backend.list_files("plate.zarr", recursive=True) == ["plate.zarr/A/01/0", "plate.zarr/B/03/1"]


def test_plate_from_field_paths(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    image = np.arange(2 * 4 * 4, dtype="uint8").reshape(2, 4, 4)
    backend.save(image, "plate.zarr/B/03/0")
    backend.save(image + 1, "plate.zarr/B/03/1")
    np.testing.assert_array_equal(backend.load("plate.zarr/B/03/1"), image + 1)
    assert backend.list_dir("plate.zarr/B/03") == ["0", "1"]
    well = _ome_attributes(f"s3://{s3_bucket}/plate.zarr", "B/03")["well"]
    assert [entry["path"] for entry in well["images"]] == ["0", "1"]
    plate = _ome_attributes(f"s3://{s3_bucket}/plate.zarr")["plate"]
    assert [w["path"] for w in plate["wells"]] == ["B/03"]
    assert plate.get("field_count") == 2


def test_lazy_load_reads_from_s3(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}/lazy.zarr")
    data = np.arange(3 * 4 * 5, dtype="float32").reshape(3, 4, 5)
    backend.save(data, "stack")
    lazy = backend.load("stack", lazy=True)
    assert type(lazy).__module__.startswith("dask")
    assert lazy.shape == data.shape and lazy.dtype == data.dtype
    np.testing.assert_array_equal(lazy[1].compute(), data[1])
    np.testing.assert_array_equal(np.asarray(lazy.compute()), data)
    # the dask array reads the store when computed, not when created
    backend.save(data + 10, "stack")
    np.testing.assert_array_equal(lazy.compute(), data + 10)


def test_store_root_delete_all_and_recreate(s3_bucket: str, s3_server: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    backend.save(np.ones((2, 2), dtype="uint8"), "gone.zarr/a")
    backend.save(np.ones((2, 2), dtype="uint8"), "kept.zarr/b")
    assert backend.is_dir("gone.zarr")
    backend.delete_all("gone.zarr")
    assert not backend.exists("gone.zarr")
    assert not backend.exists("gone.zarr/a")
    assert not any(key.startswith("gone.zarr/") for key in _object_keys(s3_server, s3_bucket))
    assert backend.exists("kept.zarr/b")
    with pytest.raises(FileNotFoundError):
        backend.list_dir("gone.zarr")
    backend.save(np.zeros((2, 2), dtype="uint8"), "gone.zarr/again")
    assert backend.list_dir("gone.zarr") == ["again"]


def test_missing_store_in_bucket(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    assert not backend.exists("absent.zarr")
    assert not backend.is_dir("absent.zarr/x")
    with pytest.raises(FileNotFoundError):
        backend.load("absent.zarr/x")
    with pytest.raises(FileNotFoundError):
        backend.list_dir("absent.zarr")


def test_move_between_stores_on_s3_and_to_local_disk(s3_bucket: str, s3_server: str, tmp_path: Path) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    data = np.arange(12, dtype="uint16").reshape(3, 4)
    backend.save(data, "one.zarr/dir/x")
    backend.move("one.zarr/dir", "two.zarr/moved")
    assert not backend.exists("one.zarr/dir")
    assert backend.list_dir("one.zarr") == []
    np.testing.assert_array_equal(backend.load("two.zarr/moved/x"), data)

    backend.move("two.zarr", "three.zarr")  # a whole store: copied, then its prefix removed
    assert not backend.exists("two.zarr")
    assert not any(key.startswith("two.zarr/") for key in _object_keys(s3_server, s3_bucket))
    np.testing.assert_array_equal(backend.load("three.zarr/moved/x"), data)

    local = tmp_path / "local.zarr"  # an absolute path names a local store, whatever the root
    backend.move("three.zarr/moved/x", f"{local}/x")
    assert not backend.exists("three.zarr/moved/x")
    np.testing.assert_array_equal(ZarrBackend(root=local).load("x"), data)


def test_changes_by_another_writer_are_seen_at_once(s3_bucket: str, s3_server: str) -> None:
    """Another client (another process, another machine) changes the store: no stale listings."""
    backend = ZarrBackend(root=f"s3://{s3_bucket}/shared.zarr")
    data = np.arange(4, dtype="uint8").reshape(2, 2)
    backend.save(data, "d/first")
    assert backend.list_dir("d") == ["first"]
    assert not backend.exists("d/second")

    other = _boto_client(s3_server)
    try:
        prefix = "shared.zarr/d/first/"
        keys = [key for key in _object_keys(s3_server, s3_bucket) if key.startswith(prefix)]
        for key in keys:  # the other writer puts a copy of the array at d/second
            other.copy_object(
                Bucket=s3_bucket, Key=key.replace("/first/", "/second/", 1),
                CopySource={"Bucket": s3_bucket, "Key": key},
            )
        assert backend.list_dir("d") == ["first", "second"]
        assert backend.is_file("d/second")
        np.testing.assert_array_equal(backend.load("d/second"), data)

        other.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": key} for key in keys]})
        assert backend.list_dir("d") == ["second"]
        assert not backend.exists("d/first")
        assert backend.list_files("d") == ["d/second"]
    finally:
        other.close()


def test_filemanager_copies_memory_to_s3_and_s3_to_disk(s3_bucket: str, tmp_path: Path) -> None:
    memory = MemoryBackend()
    zarr_s3 = ZarrBackend(root=f"s3://{s3_bucket}/copied.zarr")
    disk = DiskBackend(root=tmp_path)
    manager = FileManager({"mem": memory, "s3zarr": zarr_s3, "local": disk})
    first = np.arange(12, dtype="uint16").reshape(3, 4)
    second = np.arange(6, dtype="float32").reshape(2, 3)
    manager.save(first, "/in/a.npy", "mem")
    manager.save(second, "/in/sub/b.npy", "mem")

    manager.copy("/in", "run", "mem", dest_backend="s3zarr")
    assert manager.list_files("run", "s3zarr", recursive=True) == ["run/a.npy", "run/sub/b.npy"]
    np.testing.assert_array_equal(manager.load("run/a.npy", "s3zarr"), first)
    np.testing.assert_array_equal(manager.load("run/sub/b.npy", "s3zarr"), second)

    manager.copy("run", "out", "s3zarr", dest_backend="local")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"), first)
    loaded = np.load(tmp_path / "out" / "sub" / "b.npy")
    assert loaded.dtype == second.dtype
    np.testing.assert_array_equal(loaded, second)


# -- several processes, one plate on the object store ---------------------------------------------
S3_WELLS = [(row, column) for row in ("A", "B") for column in ("01", "02", "03", "04")]


def _fill_s3_field(url: str, field: int, barrier: Any) -> None:
    """One of four processes: field ``field`` of every well, in the same order as the others."""
    import dask.array  # noqa: F401  # imported before the start, so that all start at once

    backend = ZarrBackend()
    barrier.wait()
    for row, column in S3_WELLS:
        image = np.full((2, 8, 8), ord(row) * 100 + int(column) * 10 + field, np.uint16)
        backend.save(image, f"{url}/{row}/{column}/{field}")


@pytest.mark.slow
def test_four_processes_fill_one_plate_on_s3_and_lose_no_well_or_field(s3_bucket: str) -> None:
    """Without a lock across processes the plate's and wells' metadata would keep only the
    last writer's view (read-modify-write races); the conditional-write lock keeps them whole."""
    import multiprocessing

    url = f"s3://{s3_bucket}/plate.zarr"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_fill_s3_field, args=(url, field, barrier)) for field in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [process.exitcode for process in processes] == [0] * 4
    plate = _ome_attributes(url)["plate"]
    assert sorted((w["rowIndex"], w["columnIndex"]) for w in plate["wells"]) == [
        (r, c) for r in range(2) for c in range(4)
    ]
    assert plate["field_count"] == 4
    backend = ZarrBackend()
    for row, column in S3_WELLS:
        images = _ome_attributes(url, f"{row}/{column}")["well"]["images"]
        assert sorted(image["path"] for image in images) == ["0", "1", "2", "3"], (row, column)
        for field in range(4):
            expected = ord(row) * 100 + int(column) * 10 + field
            assert np.all(backend.load(f"{url}/{row}/{column}/{field}") == expected)
    # the lock objects are gone once every writer has finished
    keys = _object_keys(os.environ["AWS_ENDPOINT_URL"], s3_bucket)
    assert not [key for key in keys if "polystore-lock" in key]


def _lock_keys(bucket: str) -> Any:
    from polystore.backends.zarr.location import Stores

    return Stores({}).keys(f"s3://{bucket}")


def test_object_store_lock_times_out_on_a_live_holder_and_takes_over_an_expired_one(s3_bucket: str) -> None:
    import json
    import time

    from polystore.backends.zarr.locks import ObjectStoreLock

    keys = _lock_keys(s3_bucket)
    key = ".plate.zarr.polystore-lock"
    with ObjectStoreLock(keys, key, lease=60):
        contender = ObjectStoreLock(keys, key, timeout=0.5)
        with pytest.raises(TimeoutError, match=r"another writer holds it \(owner .*:\d+:"):
            contender.acquire()
    assert not keys.exists(key)  # released
    # a writer on another host that died while holding the lock: its lease has run out
    keys.put(key, json.dumps({"owner": "dead-host:1:x", "expires": time.time() - 1}).encode())
    with ObjectStoreLock(keys, key, timeout=10) as lock:
        assert json.loads(keys.get(key))["owner"] == lock.owner
    assert not keys.exists(key)


def test_a_lock_of_a_killed_process_of_this_host_is_taken_over_before_its_lease_ends(s3_bucket: str) -> None:
    import json
    import socket
    import subprocess
    import sys
    import time

    from polystore.backends.zarr.locks import ObjectStoreLock

    keys = _lock_keys(s3_bucket)
    key = ".plate.zarr.polystore-lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    owner = f"{socket.gethostname()}:{int(dead.stdout)}:x"
    keys.put(key, json.dumps({"owner": owner, "expires": time.time() + 600}).encode())
    with ObjectStoreLock(keys, key, timeout=5) as lock:  # not 600 s
        assert json.loads(keys.get(key))["owner"] == lock.owner
    live = f"{socket.gethostname()}:{os.getpid()}:x"  # this process runs: its lock holds
    keys.put(key, json.dumps({"owner": live, "expires": time.time() + 600}).encode())
    with pytest.raises(TimeoutError):
        ObjectStoreLock(keys, key, timeout=0.3).acquire()


def test_only_one_of_several_writers_takes_over_an_expired_lock(s3_bucket: str) -> None:
    import json
    import threading
    import time

    from polystore.backends.zarr.locks import ObjectStoreLock

    keys = _lock_keys(s3_bucket)
    key = ".plate.zarr.polystore-lock"
    keys.put(key, json.dumps({"owner": "dead-host:1:x", "expires": time.time() - 1}).encode())
    contenders = [ObjectStoreLock(keys, key) for _ in range(4)]
    barrier = threading.Barrier(len(contenders))
    won: list[ObjectStoreLock] = []

    def take_over(lock: ObjectStoreLock) -> None:
        barrier.wait()
        if lock._take_over_if_dead():
            won.append(lock)

    threads = [threading.Thread(target=take_over, args=(lock,)) for lock in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert json.loads(keys.get(key))["owner"] == won[0].owner
    won[0].release()
    assert not keys.exists(key)
