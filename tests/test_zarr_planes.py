"""Whole planes read and written straight as their chunks (polystore/backends/zarr/planes.py):
the same arrays as zarr reads, for every codec, format, dtype and layout the backend writes
(what planes.py writes read back through zarr and zarrs); chunks never written read as the fill
value, and a plane of the fill value alone is not stored, as zarr does; a chunk of the wrong
size or damaged is named; layouts it does not read or write go through zarr; the planes' pool
works in a child forked after it started, even while another thread held its lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")

import numcodecs
import zarr

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.planes import plane_chunks
from polystore.exceptions import CorruptDataError

SETTINGS = [
    {"compressor": "zstd"}, {"compressor": "zstd", "shuffle": False}, {"compressor": "blosc-lz4"},
    {"compressor": "gzip"}, {"compressor": "none"},
    {"zarr_format": 2}, {"zarr_format": 2, "compressor": "zstd", "shuffle": False},
    {"zarr_format": 2, "compressor": "gzip"}, {"zarr_format": 2, "compressor": "none"},
]
DTYPES = ["uint8", "uint16", "int32", "float32", "float64", "bool", "complex64"]


def data(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    values = np.random.default_rng(3).integers(0, 200, shape)
    return (values % 2 == 0) if dtype == "bool" else values.astype(dtype)


def zarr_reads(backend: ZarrBackend, path: str, **kwargs: Any) -> np.ndarray:
    """What zarr itself reads at ``path`` (the image's full-resolution level)."""
    array = backend.documents.image_level_array(backend.locate(path), 0)
    assert array is not None
    index = kwargs.get("selection", ...)
    return np.asarray(array[index])


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_planes_read_as_zarr_reads_them(tmp_path: Path, settings: dict[str, Any], dtype: str) -> None:
    backend = ZarrBackend(root=tmp_path, **settings)
    stack = data((2, 3, 24, 40), dtype)
    backend.save(stack, "s.zarr/image", axes="tcyx")
    level = backend.documents.image_level_array(backend.locate("s.zarr/image"), 0)
    assert plane_chunks(level, ()) is not None  # the layout the backend writes qualifies
    assert plane_chunks(level, (), write=True) is not None  # and it wrote these chunks itself
    whole = backend.load("s.zarr/image")
    assert whole.dtype == stack.dtype and whole.flags.c_contiguous
    np.testing.assert_array_equal(whole, stack)
    np.testing.assert_array_equal(whole, zarr_reads(backend, "s.zarr/image"))
    for selection in (1, (1, 2), (0, 0)):
        np.testing.assert_array_equal(backend.load("s.zarr/image", selection=selection), stack[selection])


def test_a_plate_plane_and_a_field_read_only_their_chunks(tmp_path: Path) -> None:
    from test_zarr import RecordingZarrBackend

    planes = [np.full((32, 32), channel, np.uint16) for channel in (1, 2, 3)]
    ZarrBackend(root=tmp_path).save_batch(planes, [f"plate.zarr/B03_s2_w{c}.tif" for c in (1, 2, 3)])
    backend = RecordingZarrBackend(root=tmp_path)
    np.testing.assert_array_equal(backend.load("plate.zarr/B03_s2_w2.tif"), planes[1])
    assert backend.chunk_reads() == ["B/03/1/0/c/1/0/0"]  # read as a key, not through zarr
    backend.reads.clear()
    np.testing.assert_array_equal(backend.load("plate.zarr/B/03/1"), np.stack(planes))
    assert sorted(backend.chunk_reads()) == [f"B/03/1/0/c/{c}/0/0" for c in range(3)]  # any order


def test_planes_never_written_read_as_the_fill_value(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    plane = np.full((16, 16), 9, np.uint16)
    backend.save(plane, "plate.zarr/A01_s1_w3.tif")  # channels 1 and 2 of the field never written
    field = backend.load("plate.zarr/A/01/0")
    assert field.shape == (3, 16, 16)
    np.testing.assert_array_equal(field, zarr_reads(backend, "plate.zarr/A/01/0"))
    assert not field[:2].any() and (field[2] == 9).all()
    assert not backend.load("plate.zarr/A01_s1_w1.tif").any()
    # an all-zero plane is not stored (a chunk of fill value, as zarr writes it: the chunk
    # there is removed) and still reads back
    chunks = tmp_path / "plate.zarr" / "A" / "01" / "0" / "0" / "c"
    assert [p.relative_to(chunks).as_posix() for p in chunks.rglob("*") if p.is_file()] == ["2/0/0"]
    backend.save(np.zeros((16, 16), np.uint16), "plate.zarr/A01_s1_w3.tif")
    assert not [p for p in chunks.rglob("*") if p.is_file()]
    assert not backend.load("plate.zarr/A/01/0").any()
    backend.save(np.zeros((2, 16, 16), np.uint16), "s.zarr/zeros", axes="cyx")
    assert not (tmp_path / "s.zarr" / "zeros" / "0" / "c").exists()


@pytest.mark.parametrize(
    ("compressor", "wrong"),
    [("zstd", lambda: numcodecs.Blosc(cname="zstd", shuffle=1).encode(np.ones((8, 16), np.uint16))),
     ("zstd", lambda: b"\x02\x01" + bytes(30)),
     ("none", lambda: bytes(100)),
     ("gzip", lambda: numcodecs.GZip().encode(np.ones((8, 16), np.uint16)))],
    ids=["blosc-smaller-plane", "blosc-garbage", "raw-short", "gzip-smaller-plane"],
)
def test_a_chunk_of_the_wrong_size_or_damaged_is_named(tmp_path: Path, compressor: str, wrong: Any) -> None:
    backend = ZarrBackend(root=tmp_path, compressor=compressor)
    backend.save(np.ones((2, 16, 16), np.uint16), "s.zarr/image", axes="cyx")
    chunk = tmp_path / "s.zarr" / "image" / "0" / "c" / "1" / "0" / "0"
    chunk.write_bytes(wrong())
    with pytest.raises(CorruptDataError, match=r"c/1/0/0' cannot be decoded.*polystore repair"):
        backend.load("s.zarr/image")
    np.testing.assert_array_equal(backend.load("s.zarr/image", selection=0), np.ones((16, 16)))


def test_other_layouts_go_through_zarr(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    stack = data((3, 32, 32), "uint16")
    backend.save(stack, "s.zarr/tiles", axes="cyx", chunks=(1, 16, 16))  # planes split in tiles
    backend.save(stack, "s.zarr/sharded", axes="cyx", shards=(3, 32, 32))
    big_endian = zarr.create_array(tmp_path / "s.zarr", name="big", shape=(3, 32, 32), dtype=">u2",
                                   chunks=(1, 32, 32), zarr_format=2)
    big_endian[...] = stack
    for name in ("tiles", "sharded"):
        level = backend.documents.image_level_array(backend.locate(f"s.zarr/{name}"), 0)
        assert plane_chunks(level, ()) is None
        np.testing.assert_array_equal(backend.load(f"s.zarr/{name}"), stack)
        np.testing.assert_array_equal(backend.load(f"s.zarr/{name}", selection=np.s_[1, 3:9]), stack[1, 3:9])
    assert plane_chunks(zarr.open_array(tmp_path / "s.zarr", path="big", mode="r"), ()) is None
    np.testing.assert_array_equal(backend.load("s.zarr/big"), stack)
    level = backend.documents.image_level_array(backend.locate("s.zarr/tiles"), 0)
    assert plane_chunks(level, (5,)) is None  # out of range: zarr's error, not ours


FORKED_CHILD = """
import os, sys
import numpy as np
from polystore.backends.zarr import ZarrBackend

root = sys.argv[1]
stack = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
ZarrBackend(root=root).save(stack, "s.zarr/image", axes="cyx")
ZarrBackend(root=root).load("s.zarr/image")  # the pool's threads run in this process now
pid = os.fork()
if pid == 0:  # the parent's pool threads do not run here: the child must make its own
    try:
        child = ZarrBackend(root=root)
        ok = int(child.load("s.zarr/image").sum()) == int(stack.sum())
        child.save(stack + 1, "s.zarr/other", axes="cyx")
        ok = ok and int(child.load("s.zarr/other").sum()) == int((stack + 1).sum())
    except BaseException:
        ok = False
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_after_the_planes_pool_started_reads_and_writes(tmp_path: Path) -> None:
    # in a fresh interpreter: forking the test runner, which has JAX's threads by now, warns
    # (an error under this suite's warning filters) whatever polystore does
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORKED_CHILD, str(tmp_path)], timeout=120,
                          capture_output=True, text=True)  # a hang fails by timeout
    assert done.returncode == 0, done.stderr[-2000:]


FORKED_WHILE_LOCKED = """
import os, sys, threading, time
import numpy as np
from polystore.backends.zarr import ZarrBackend, planes

root = sys.argv[1]
stack = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
ZarrBackend(root=root).save(stack, "s.zarr/image", axes="cyx")
held, release = threading.Event(), threading.Event()

def hold() -> None:  # another thread of the parent, inside the pool's lock at the fork
    with planes._POOL_LOCK:
        held.set()
        release.wait()

holder = threading.Thread(target=hold)
holder.start()
held.wait()
pid = os.fork()
if pid == 0:  # the holder does not run here: a lock it held would never be released
    ok = int(ZarrBackend(root=root).load("s.zarr/image").sum()) == int(stack.sum())
    os._exit(0 if ok else 1)
release.set()
holder.join()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
sys.exit("the forked child hung on the planes' pool lock")
"""


def test_a_child_forked_while_another_thread_holds_the_pools_lock_reads(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORKED_WHILE_LOCKED, str(tmp_path)], timeout=180,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


ONE_THREAD = """
import sys, threading
import numpy as np
from polystore.backends.zarr import ZarrBackend

coded_here: list[str] = []

def record(frame, event, arg) -> None:  # the plane tasks this (the calling) thread runs
    if event == "call" and frame.f_code.co_name in ("read_plane", "write_plane"):
        coded_here.append(frame.f_code.co_name)

backend = ZarrBackend(root=sys.argv[1])
stack = np.arange(6 * 64 * 64, dtype=np.uint16).reshape(6, 64, 64)
sys.setprofile(record)
backend.save(stack, "s.zarr/image", axes="cyx")
assert np.array_equal(backend.load("s.zarr/image"), stack)
sys.setprofile(None)
pool = [t.name for t in threading.enumerate() if t.name.startswith("polystore-planes")]
print(len(coded_here), len(pool))
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_calling_thread_codes_planes_only_where_the_thread_setting_allows(
    tmp_path: Path, threads: str
) -> None:
    # one thread (a one-thread dask worker): its pool's thread codes every plane, the calling
    # thread only waits; more: the calling thread may code the planes no pool thread started
    import os
    import subprocess
    import sys

    env = {**os.environ, "ZARR_THREADING__MAX_WORKERS": threads}
    done = subprocess.run([sys.executable, "-c", ONE_THREAD, str(tmp_path)], timeout=120, env=env,
                          capture_output=True, text=True, check=True)
    coded_here, pool = (int(n) for n in done.stdout.split())
    assert pool == int(threads)
    if threads == "1":
        assert coded_here == 0


def test_a_plane_starting_with_the_fill_value_is_stored_whole(tmp_path: Path) -> None:
    """A plane is told from one of the fill value alone by its first value first: one whose
    first values are the fill value, and whose data comes later, is still stored."""
    backend = ZarrBackend(root=tmp_path)
    plane = np.zeros((16, 16), np.uint16)
    plane[15, 15] = 3  # the fill value (0) everywhere but the last pixel
    backend.save(plane, "plate.zarr/A01_s1_w1.tif")
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w1.tif"), plane)
    chunks = tmp_path / "plate.zarr" / "A" / "01" / "0" / "0" / "c"
    assert [p.relative_to(chunks).as_posix() for p in chunks.rglob("*") if p.is_file()] == ["0/0/0"]


@pytest.mark.parametrize("shape, name", [
    ((0, 16), "plate.zarr/A01_s1_w1.tif"),  # a plate plane
    ((0, 16), "image.zarr"),  # the store's image
    ((3, 0, 8), "store.zarr/stack"),  # an image inside a store
    ((0,), "store.zarr/values"),  # a bare array
])
def test_an_array_without_elements_is_refused_before_anything_is_written(
        tmp_path: Path, shape: tuple[int, ...], name: str) -> None:
    from polystore.exceptions import BatchError, UnsupportedDataError

    backend = ZarrBackend(tmp_path)
    # its chunks have an element on every axis: (0, 16) was stored, and read back, as (1, 16)
    with pytest.raises(UnsupportedDataError, match="has no elements"):
        backend.save(np.zeros(shape, np.uint16), name)
    # a batch's planes are refused as a whole; its other items each, reported by the BatchError
    with pytest.raises((UnsupportedDataError, BatchError), match="has no elements"):
        backend.save_batch([np.zeros(shape, np.uint16)], [name])
    assert list(tmp_path.iterdir()) == []
