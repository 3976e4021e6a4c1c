"""Atomic writes under real concurrency: many processes, readers racing writers, SIGKILL mid-write.

Every process here is a real OS process (multiprocessing 'spawn' / 'forkserver'), writing to a
real directory through :class:`DiskBackend`. Arrays are filled with one writer-specific value
and are megabytes large, so a torn or interleaved file (which a plain ``np.save`` over the
same path produces readily under this load) would show as a wrong shape, a load error, or a
mix of values.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend, StorageFileNotFoundError
from polystore.atomic import TEMP_SUFFIX, atomic_update_json, atomic_write, sweep_stale_temp_files

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform == "win32", reason="needs POSIX: rename over an open file, SIGKILL, a fork server"
    ),
]

# -- a. concurrent writers and readers ----------------------------------------------------------
WRITERS = 8
READERS = 2
WRITES_EACH = 12
SHAPE = (1024, 1024)  # uint16: 2 MiB per file
WRITER_VALUES = tuple(1000 + 111 * i for i in range(WRITERS))  # never 0: holes would show


def _temp_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(TEMP_SUFFIX))


def _whole_and_uniform(array: Any, shape: tuple[int, ...], dtype: Any) -> int | None:
    """The single value filling ``array``, or None if it is the wrong shape/dtype or mixed."""
    if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
        return None
    first = array.flat[0]
    return int(first) if bool(np.all(array == first)) else None


def _writer(path: str, value: int, count: int, barrier: Any) -> None:
    backend = DiskBackend()
    array = np.full(SHAPE, value, dtype=np.uint16)
    barrier.wait(timeout=120)
    for _ in range(count):
        backend.save(array, path)


def _reader(path: str, stop: Any, barrier: Any, results: Any) -> None:
    backend = DiskBackend()
    reads = 0
    seen: set[int] = set()
    problems: list[str] = []
    barrier.wait(timeout=120)
    while True:
        last_round = stop.is_set()  # read once more after the writers are done
        try:
            array = backend.load(path)
        except StorageFileNotFoundError:
            if reads:  # it existed once: a rename must never make it vanish
                problems.append("the file vanished after it had been read whole")
        except Exception as error:  # any other failure is a torn or half-written file
            problems.append(f"load failed: {error!r}")
        else:
            value = _whole_and_uniform(array, SHAPE, np.uint16)
            if value is None or value not in WRITER_VALUES:
                problems.append(
                    f"torn read: shape={getattr(array, 'shape', None)} "
                    f"values={np.unique(array)[:8].tolist() if isinstance(array, np.ndarray) else array!r}"
                )
            else:
                seen.add(value)
                reads += 1
        if last_round:
            break
    results.put((reads, sorted(seen), len(problems), problems[:5]))


def test_concurrent_writers_and_readers_never_see_a_torn_npy(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    target = tmp_path / "shared.npy"
    barrier = ctx.Barrier(WRITERS + READERS)
    stop = ctx.Event()
    results = ctx.Queue()
    writers = [
        ctx.Process(target=_writer, args=(str(target), value, WRITES_EACH, barrier))
        for value in WRITER_VALUES
    ]
    readers = [
        ctx.Process(target=_reader, args=(str(target), stop, barrier, results)) for _ in range(READERS)
    ]
    for process in writers + readers:
        process.start()
    try:
        for process in writers:
            process.join(timeout=120)
            assert process.exitcode == 0, f"a writer failed (exit code {process.exitcode})"
        stop.set()
        outcomes = [results.get(timeout=120) for _ in readers]
        for process in readers:
            process.join(timeout=60)
            assert process.exitcode == 0
    finally:
        for process in writers + readers:
            if process.is_alive():
                process.kill()
                process.join()

    for reads, seen, n_problems, examples in outcomes:
        assert n_problems == 0, f"{n_problems} bad reads, e.g. {examples}"
        assert reads > 0, "a reader never saw the file"
        assert set(seen) <= set(WRITER_VALUES)
    # the readers really raced many writers, not only the last one
    assert len({value for _, seen, _, _ in outcomes for value in seen}) >= 2

    final = DiskBackend().load(target)
    assert _whole_and_uniform(final, SHAPE, np.uint16) in WRITER_VALUES
    assert _temp_files(tmp_path) == []
    assert os.listdir(tmp_path) == ["shared.npy"]


# -- b. SIGKILL in the middle of a large write --------------------------------------------------
BIG_SHAPE = (64, 1024, 1024)  # uint8: 64 MiB
KILLS = 20


def _write_big(root: str, name: str, value: int, ready: Any) -> None:
    array = np.full(BIG_SHAPE, value, dtype=np.uint8)
    backend = DiskBackend(root)
    ready.set()
    backend.save(array, name)
    time.sleep(60)  # done: wait to be killed like the others


def _forkserver_context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # each kill victim then starts in milliseconds (a module that fails to preload is skipped)
        ctx.set_forkserver_preload(["numpy", "polystore", __name__])
        return ctx
    return multiprocessing.get_context("spawn")


def test_sigkill_mid_write_leaves_old_or_new_file_and_sweep_cleans_up(tmp_path: Path) -> None:
    ctx = _forkserver_context()
    backend = DiskBackend(tmp_path)
    name = "big.npy"
    current = 1
    backend.save(np.full(BIG_SHAPE, current, dtype=np.uint8), name)

    # how long one write takes here, so that the random kill times span it
    started = time.perf_counter()
    backend.save(np.full(BIG_SHAPE, current, dtype=np.uint8), name)
    window = 1.5 * (time.perf_counter() - started)

    rng = random.Random(20240611)
    outcomes = {"old": 0, "new": 0}
    for iteration in range(KILLS):
        new = current + 1 + iteration % 2  # differs from the old value whichever won before
        ready = ctx.Event()
        process = ctx.Process(target=_write_big, args=(str(tmp_path), name, new, ready))
        process.start()
        try:
            assert ready.wait(timeout=60), "the writer never started"
            time.sleep(rng.uniform(0, window))
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.join(timeout=60)  # reaped: sweep_stale_temp_files sees it as dead
        assert process.exitcode == -signal.SIGKILL

        value = _whole_and_uniform(backend.load(name), BIG_SHAPE, np.uint8)
        assert value in (current, new), (
            f"kill {iteration}: target holds {value!r}, neither the old ({current}) nor the new "
            f"({new}) complete array"
        )
        outcomes["old" if value == current else "new"] += 1
        current = value

        # listings never show the dead writers' temp files, even before any sweep
        assert backend.list_dir(".") == [name]
        assert backend.list_files(".") == [name]
        assert backend.list_files(".", recursive=True) == [name]

    leftovers = _temp_files(tmp_path)
    # the kills did land mid-write (temp files left behind) as well as after it
    assert leftovers, f"no kill interrupted a write: {outcomes}"
    assert all(name_.startswith(".") for name_ in leftovers)

    removed = sweep_stale_temp_files(tmp_path)
    assert sorted(path.name for path in removed) == leftovers
    assert _temp_files(tmp_path) == []
    assert os.listdir(tmp_path) == [name]
    assert _whole_and_uniform(backend.load(name), BIG_SHAPE, np.uint8) == current


def _hold_open_write(path: str, ready: Any) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(b"half of a file")
        handle.flush()
        ready.set()
        time.sleep(60)  # a write in progress, until killed


def test_sweep_keeps_the_temp_file_of_a_live_writer(tmp_path: Path) -> None:
    ctx = _forkserver_context()
    ready = ctx.Event()
    process = ctx.Process(target=_hold_open_write, args=(str(tmp_path / "slow.bin"), ready))
    process.start()
    try:
        assert ready.wait(timeout=60)
        live_temps = _temp_files(tmp_path)
        assert len(live_temps) == 1
        assert sweep_stale_temp_files(tmp_path) == []  # its writer still runs
        assert _temp_files(tmp_path) == live_temps
        assert DiskBackend(tmp_path).list_dir(".") == []
    finally:
        process.kill()
        process.join(timeout=60)
    assert [path.name for path in sweep_stale_temp_files(tmp_path)] == live_temps
    assert _temp_files(tmp_path) == []
    assert not (tmp_path / "slow.bin").exists()


# -- c. read-modify-write under the lock ---------------------------------------------------------
INCREMENTERS = 4
INCREMENTS_EACH = 50


def _increment(path: str, times: int, barrier: Any) -> None:
    barrier.wait(timeout=120)
    for _ in range(times):
        atomic_update_json(path, lambda data: {"count": data["count"] + 1}, default={"count": 0})


def test_atomic_update_json_from_many_processes_loses_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    target = tmp_path / "counter.json"
    barrier = ctx.Barrier(INCREMENTERS)
    processes = [
        ctx.Process(target=_increment, args=(str(target), INCREMENTS_EACH, barrier))
        for _ in range(INCREMENTERS)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    assert atomic_update_json(target, lambda data: data) == {"count": INCREMENTERS * INCREMENTS_EACH}
    assert _temp_files(tmp_path) == []


def test_sweep_leaves_names_it_did_not_make(tmp_path: Path) -> None:
    odd = [TEMP_SUFFIX, f".x{TEMP_SUFFIX}", f"..{TEMP_SUFFIX}", f".a.b{TEMP_SUFFIX}"]
    for name in odd:
        (tmp_path / name).write_bytes(b"")
    stale = tmp_path / f".f.npy.{2**31 - 2}.abcd{TEMP_SUFFIX}"  # a pid no process has
    stale.write_bytes(b"")
    assert sweep_stale_temp_files(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(odd)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_a_file_replaced_keeps_its_permissions_and_a_copy_its_sources(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    disk.save({"token": "old"}, "secret.json")
    os.chmod(tmp_path / "secret.json", 0o600)
    disk.save({"token": "new"}, "secret.json")
    assert (tmp_path / "secret.json").stat().st_mode & 0o777 == 0o600  # was widened to 0o644
    disk.copy("secret.json", "copy.json")  # a new copy: as private as its source
    assert (tmp_path / "copy.json").stat().st_mode & 0o777 == 0o600
    disk.save(np.arange(2), "shared.npy")
    os.chmod(tmp_path / "shared.npy", 0o664)
    disk.save(np.arange(3), "shared.npy")
    assert (tmp_path / "shared.npy").stat().st_mode & 0o777 == 0o664  # not narrowed by the umask
    (tmp_path / "plain.txt").write_text("x")
    os.chmod(tmp_path / "plain.txt", 0o640)
    with atomic_write(tmp_path / "plain.txt") as handle:
        handle.write("y")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    os.umask(umask)
    disk.save(np.arange(2), "new.npy")
    assert (tmp_path / "new.npy").stat().st_mode & 0o777 == 0o666 & ~umask
