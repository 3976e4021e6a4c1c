"""A zarr writer in a process of its own, SIGKILLed while it writes: for the tests of what a
killed save leaves (tests/test_zarr_failed_saves.py, tests/test_zarr_safety.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_KILLED_WRITER = """
import sys, time, pathlib
import numpy as np, dask, dask.array as da
from polystore import PolystoreError
from polystore.backends.zarr import ZarrBackend

root, path, zarr_format, ready, kind = sys.argv[1:6]

def block():  # the source's second chunk: the writer is killed while it waits here
    pathlib.Path(ready).touch()
    time.sleep(600)
    return np.zeros(CHUNK, np.uint16)

CHUNK = 8
first = da.from_array(np.full(CHUNK, 7, np.uint16), chunks=CHUNK)
blocked = da.from_delayed(dask.delayed(block)(), shape=(CHUNK,), dtype=np.uint16)
data = da.concatenate([first, blocked])
options = {"chunks": (CHUNK,)}
if kind == "image":
    data = da.stack([data.reshape(2, CHUNK)] * 2).reshape(2 * 2, CHUNK)
    options = {"chunks": (2, CHUNK), "levels": 2}
ZarrBackend(root=root, zarr_format=int(zarr_format)).save(data, path, **options)
"""


def kill_while_writing(tmp_path: Path, path: str, zarr_format: int, kind: str = "array") -> None:
    """Run a writer saving ``path`` in a process of its own; SIGKILL it once it is writing
    (its source's second chunk blocks, after its metadata and maybe its first chunk)."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    process = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), path,
                                str(zarr_format), str(ready), kind])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        time.sleep(0.2)  # its first chunk, where its pool wrote it meanwhile
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
