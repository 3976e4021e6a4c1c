"""polystore's core paths next to the plain calls they wrap, measured side by side in one run.

    python benchmarks/core.py            # full run (about half a minute on 2 cores)
    python benchmarks/core.py --quick    # fewer repeats, for a smoke check
    python benchmarks/core.py --json results.json

Sections:
  a. DiskBackend save/load of a 2048x2048 uint16 .npy against np.save / np.load, with
     DiskBackend(durable=False) and "np.save + fsync" beside them so the cost of durability
     (the fsync) is visible apart from the cost of atomicity (temp file + rename).
  b. load_batch of 64 TIFFs (uncompressed, then zlib): the default thread pool against
     max_workers=1.
  c. polystore.arrays.convert(a, "torch") against torch.from_numpy, per call.
  d. MemoryBackend save + load against a plain dict set + get, per pair.

Goals: (a) and (b) are the project's (save <= 1.10x, load <= 1.05x, batch >= 1.6x on 2 cores).
(c) and (d) have none given; the ones here (<= 2x, <= 20x) say "a fraction of a microsecond
to a microsecond or two per call on top of the bare operation".

Every time is the median of repeated samples taken after warm-ups, the cases of a row run in
turn (their order rotated each round) so that drifting machine state hits them alike. A ratio
is ours / reference (for the batch rows: serial / parallel, a speed-up). This is a script, not
a test: it reports PASS / MISS against each goal and always exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from harness import (
    Goal,
    Row,
    Settings,
    interleaved,
    medians,
    note_load,
    print_table,
    print_verdicts,
    row,
    save_figure,
    settle,
)

import polystore
from polystore import DiskBackend, MemoryBackend
from polystore.arrays import convert
from polystore.batch import default_workers

FRAME_SHAPE = (2048, 2048)  # uint16: 8 MiB, the frame size of DESIGN.md's figures
TIFF_COUNT = 64
TIFF_SHAPE = (1024, 1024)


# -- a. disk .npy ----------------------------------------------------------------------------
def _np_save_fsync(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())


def _by_hand_atomic(path: str, array: np.ndarray) -> None:
    """The syscalls a durable atomic write cannot do without, written out with nothing else."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.tmp")
    with open(temp, "xb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def bench_disk_npy(settings: Settings) -> list[Row]:
    folder = settings.directory / "npy"
    folder.mkdir()
    frame = np.random.default_rng(0).integers(0, 2**16, FRAME_SHAPE, dtype=np.uint16)
    durable, fast = DiskBackend(), DiskBackend(durable=False)
    # plain strings, as most callers pass them (a str costs DiskBackend a Path object per call)
    paths = {name: str(folder / f"{name}.npy") for name in ("ours", "ours_nd", "np", "np_fsync", "hand")}
    settle()
    saves = medians(interleaved(
        {
            "ours": lambda: durable.save(frame, paths["ours"]),
            "ours_nd": lambda: fast.save(frame, paths["ours_nd"]),
            "np": lambda: np.save(paths["np"], frame),
            "np_fsync": lambda: _np_save_fsync(paths["np_fsync"], frame),
            "hand": lambda: _by_hand_atomic(paths["hand"], frame),
        },
        repeat=settings.reps(120, 15),
        warmup=3,
    ))
    # both read the very same file, so page-cache state cannot favour either
    settle()
    loads = medians(interleaved(
        {"ours": lambda: durable.load(paths["np"]), "np": lambda: np.load(paths["np"])},
        repeat=settings.reps(400, 40),
        warmup=5,
    ))
    assert np.array_equal(durable.load(paths["ours"]), frame)
    ours = "DiskBackend.save (durable, default)"
    return [
        row("a", ours, saves["ours"], "np.save", saves["np"], Goal(1.10)),
        row("a", ours, saves["ours"], "np.save + fsync", saves["np_fsync"], Goal(1.10)),
        row("a", ours, saves["ours"], "tmp+fsync+rename, hand", saves["hand"], Goal(1.10)),
        row("a", "DiskBackend(durable=False).save", saves["ours_nd"], "np.save", saves["np"], None),
        row("a", "np.save + fsync (the cost of durability)", saves["np_fsync"], "np.save", saves["np"], None),
        row("a", "DiskBackend.load", loads["ours"], "np.load", loads["np"], Goal(1.05)),
    ]


# -- b. load_batch of TIFFs -------------------------------------------------------------------
def bench_tiff_batch(settings: Settings) -> list[Row]:
    import tifffile

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0 : TIFF_SHAPE[0], 0 : TIFF_SHAPE[1]]
    base = ((x + y) * 16).astype(np.uint16)  # a smooth image with noise: zlib has work to do
    backend = DiskBackend()
    workers = default_workers(TIFF_COUNT)
    rows = []
    for compression in (None, "zlib"):
        folder = settings.directory / f"tiff-{compression or 'raw'}"
        folder.mkdir()
        paths = []
        for index in range(TIFF_COUNT):
            path = folder / f"s{index:02d}.tif"
            image = base + rng.integers(0, 16, TIFF_SHAPE, dtype=np.uint16)
            tifffile.imwrite(path, image, compression=compression)
            paths.append(path)
        settle()
        usage = _CpuUsage(functools.partial(backend.load_batch, paths))
        times = medians(interleaved(
            {
                "parallel": usage,
                "serial": functools.partial(backend.load_batch, paths, max_workers=1),
            },
            repeat=settings.reps(9 if compression else 30, 3 if compression else 7),
            warmup=1,
        ))
        label = "uncompressed" if compression is None else compression
        rows.append(row(
            "b", f"load_batch {TIFF_COUNT} TIFF {label} ({workers} threads)", times["parallel"],
            "max_workers=1", times["serial"], Goal(1.6, at_least=True), speedup=True,
        ))
        # a speed-up needs free cores: say how many this process actually got
        print(f"  (b) {label}: the parallel runs kept {usage.cores():.2f} of {os.cpu_count()} cores busy")
    return rows


class _CpuUsage:
    """Wraps a call and tallies the CPU time this process used against the wall time."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.cpu = 0.0
        self.wall = 0.0

    def __call__(self) -> object:
        cpu, wall = time.process_time(), time.perf_counter()
        result = self.fn()
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall
        return result

    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


# -- c. numpy -> torch ------------------------------------------------------------------------
def bench_convert(settings: Settings) -> list[Row]:
    try:
        import torch
    except ImportError:
        print("  (c) skipped: torch is not installed (pip install 'polystore[torch]')")
        return []
    frame = np.zeros(FRAME_SHAPE, dtype=np.uint16)
    assert convert(frame, "torch").data_ptr() == frame.ctypes.data  # both share memory
    times = medians(interleaved(
        {"ours": lambda: convert(frame, "torch"), "torch": lambda: torch.from_numpy(frame)},
        repeat=settings.reps(25, 7),
        number=2000,
    ))
    return [
        row("c", "convert(a, 'torch')", times["ours"], "torch.from_numpy", times["torch"],
            Goal(2.0)),
    ]


# -- d. memory backend ------------------------------------------------------------------------
def bench_memory(settings: Settings) -> list[Row]:
    frame = np.zeros(FRAME_SHAPE, dtype=np.uint16)
    backend, plain = MemoryBackend(), {}
    path = "plate/A01/s1_c2.npy"
    backend.ensure_directory("plate/A01")

    def ours() -> None:
        backend.save(frame, path)
        backend.load(path)

    def reference() -> None:
        plain[path] = frame
        plain[path]

    times = medians(interleaved({"ours": ours, "dict": reference}, repeat=settings.reps(25, 7), number=5000))
    return [
        row("d", "MemoryBackend save + load", times["ours"], "dict set + get", times["dict"],
            Goal(20.0)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--dir", type=Path, default=None,
        help="folder to write the files in (default: a new temporary folder; use a local disk, "
        "not tmpfs, or fsync costs nothing)",
    )
    parser.add_argument(
        "--only", default="abcd", help="which sections to run, e.g. 'ab' (default: abcd)"
    )
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="polystore-bench-", dir=args.dir))
    settings = Settings(quick=args.quick, directory=directory)
    sections: dict[str, Callable[[Settings], list[Row]]] = {
        "a": bench_disk_npy, "b": bench_tiff_batch, "c": bench_convert, "d": bench_memory,
    }
    print(
        f"polystore {polystore.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, files in {directory}{' (quick)' if args.quick else ''}"
    )
    load_before = note_load(f"{os.cpu_count()} cores", ", the parallel rows (b) most")
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        for key, bench in sections.items():
            if key in args.only:
                print(f"  running ({key}) {bench.__name__} ...", flush=True)
                rows.extend(bench(settings))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print_table(rows, case_width=49, reference_width=22, units=("ms", "us"))
    print("ratio = ours / reference; for load_batch rows it is the speed-up (serial / parallel).")
    print_verdicts(rows, elapsed, load_before)
    save_figure("core", rows, title="polystore core: ours / the plain call (benchmarks/core.py)"
                + (" [--quick]" if args.quick else ""), load_before=load_before)
    if args.json is not None:
        report: dict[str, Any] = {
            "polystore": polystore.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "quick": args.quick,
            "seconds": elapsed,
            "load_average_before": load_before,
            "rows": [r.to_json() for r in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
