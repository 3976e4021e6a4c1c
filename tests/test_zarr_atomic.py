"""A chunk being overwritten when its writer is killed (SIGKILL, in the middle of writing that
chunk's bytes) reads back as the old plane or the new one: never torn, never zeros.

The killer watches the chunk's folder and kills the writer while a file there is shorter than
a whole chunk (uncompressed, so a whole chunk has a known size): a chunk written in place is
caught torn; a chunk staged in a temporary file and renamed is caught before the rename.
Whole planes of local stores are written by polystore itself (``planes.py``), other chunks
by zarrs through obstore: both stage and rename, and both kinds of leftovers are repaired.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")

from polystore.atomic import TEMP_SUFFIX
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.repair import repair_plate

SIZE = 2048  # one 8 MiB chunk: its write takes long enough to be caught in the middle
NAME = "plate.zarr/A01_s1_w1.tif"
CHUNK_BYTES = SIZE * SIZE * 2


def planes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return tuple(rng.integers(1, 60000, (SIZE, SIZE), dtype=np.uint16) for _ in range(2))  # type: ignore[return-value]


def _overwrite_forever(root: str, started: Any) -> None:
    backend = ZarrBackend(root=root, compressor="none")
    old, new = planes()
    while True:
        for plane in (new, old):
            started.value += 1
            backend.save(plane, NAME)


def _files_being_written(folder: Path, settled: set[str]) -> bool:
    """Whether a file in ``folder`` (other than those left by earlier kills) is short of a chunk."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return False
    for entry in entries:
        try:
            size = entry.stat().st_size
        except FileNotFoundError:
            continue
        if size < CHUNK_BYTES and entry.name not in settled:
            return True
    return False


@pytest.mark.slow
def test_a_chunk_overwritten_by_a_writer_killed_mid_write_reads_old_or_new(tmp_path: Path) -> None:
    old, new = planes()
    backend = ZarrBackend(root=tmp_path, compressor="none")
    backend.save(old, NAME)
    folder = tmp_path / "plate.zarr" / "A" / "01" / "0" / "0" / "c" / "0" / "0"
    assert (folder / "0").stat().st_size == CHUNK_BYTES  # uncompressed: a whole chunk's size is known
    context = multiprocessing.get_context("spawn")
    caught = 0
    for _ in range(6):
        settled = {entry.name for entry in os.scandir(folder) if entry.name != "0"}
        started = context.Value("i", 0)
        writer = context.Process(target=_overwrite_forever, args=(str(tmp_path), started), daemon=True)
        writer.start()
        assert writer.pid is not None
        try:
            deadline = time.monotonic() + 60
            while started.value < 2 and time.monotonic() < deadline:  # past its imports, saving
                time.sleep(0.005)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if _files_being_written(folder, settled):
                    caught += 1
                    break
        finally:
            os.kill(writer.pid, signal.SIGKILL)  # mid-write, or after 10 s at a random moment
            writer.join(10)
        plane = backend.load(NAME)
        assert np.array_equal(plane, old) or np.array_equal(plane, new), "a torn plane"
    assert caught >= 3, f"the killer caught a write in progress only {caught} time(s) of 6"
    # what the killed writers left: chunks staged and never renamed, which no reader sees.
    # A whole plane is staged as polystore's temporary file, named with its writer's process
    # (".0.<pid>.<...>.tmp": repair removes it once that process is gone); a chunk zarrs put
    # through obstore as "0#<n>", which names no owner: repair leaves it while a live writer
    # could still be writing it ...
    staged = [path for path in folder.iterdir() if path.name != "0"]
    owned = [path for path in staged if path.name.startswith(".0.") and path.name.endswith(TEMP_SUFFIX)]
    anonymous = [path for path in staged if path.name.startswith("0#")]
    assert staged and len(owned) + len(anonymous) == len(staged), staged
    store = str(tmp_path / "plate.zarr")
    report = repair_plate(store)
    assert report.ok and len(report.changed) == len(owned), str(report)
    # ... and removes it once untouched for a lock's lease (a dead writer's)
    an_hour_ago = time.time() - 3600
    for path in anonymous:
        os.utime(path, (an_hour_ago, an_hour_ago))
    report = repair_plate(store)
    assert report.ok and len(report.changed) == len(anonymous), str(report)
    assert [path.name for path in folder.iterdir()] == ["0"]
    assert np.array_equal(backend.load(NAME), old) or np.array_equal(backend.load(NAME), new)
