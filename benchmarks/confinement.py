"""What confinement costs: DiskBackend(root=...) against DiskBackend() and the plain calls.

    python benchmarks/confinement.py            # about half a minute on 2 cores
    python benchmarks/confinement.py --quick

A rooted backend walks every path from the root's directory descriptor, one ``openat`` per
folder, where an unrooted one hands the path to the kernel once. The cost is per call and per
path component, so it shows on small files; these rows use a 4 KiB ``.npy`` three folders deep
(``plate/A01/f1/s.npy``), and the 8 MiB frame of benchmarks/core.py for scale.

Rows (ratio = ours / reference, medians of interleaved rounds):
  save, durable=False (no fsync: the path work is not hidden behind the disk) and durable;
  load; list_files(recursive=True) of 1,000 files in 10 folders against os.walk.
Goal: a rooted backend within 1.10x of an unrooted one for durable saves and loads of
the 8 MiB frame (what benchmarks/core.py holds to its own goals); the small-file rows are info.

Run it from the old tree (``PYTHONPATH=<old checkout> python benchmarks/confinement.py``) to see
before and after: the script uses nothing but the public API.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

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
    settle,
)

from polystore import DiskBackend

SMALL = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
FRAME = np.random.default_rng(0).integers(0, 2**16, (2048, 2048), dtype=np.uint16)
NESTED = "plate/A01/f1/s.npy"


def _hand_atomic(path: str, array: np.ndarray) -> None:
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.tmp")
    with open(temp, "xb") as handle:
        np.save(handle, array)
    os.replace(temp, path)


def bench_small(settings: Settings) -> list[Row]:
    base = settings.directory / "small"
    rooted_fast, open_fast = DiskBackend(root=base, durable=False), DiskBackend(durable=False)
    rooted, plain = DiskBackend(root=base), DiskBackend()
    for name in ("r", "o", "h", "rd", "od"):
        (base / name / os.path.dirname(NESTED)).mkdir(parents=True)
    absolute = {name: str(base / name / NESTED) for name in ("r", "o", "h", "rd", "od")}
    settle()
    saves = medians(interleaved(
        {
            "r": lambda: rooted_fast.save(SMALL, f"r/{NESTED}"),
            "o": lambda: open_fast.save(SMALL, absolute["o"]),
            "h": lambda: _hand_atomic(absolute["h"], SMALL),
        },
        repeat=settings.reps(30, 5), number=50,
    ))
    durable = medians(interleaved(
        {"rd": lambda: rooted.save(SMALL, f"rd/{NESTED}"), "od": lambda: plain.save(SMALL, absolute["od"])},
        repeat=settings.reps(30, 5), number=5,
    ))
    loads = medians(interleaved(
        {
            "r": lambda: rooted.load(f"o/{NESTED}"),
            "o": lambda: plain.load(absolute["o"]),
            "np": lambda: np.load(absolute["o"]),
        },
        repeat=settings.reps(30, 5), number=200,
    ))
    return [
        row("s", "save 4 KiB, rooted, durable=False", saves["r"], "unrooted", saves["o"], None),
        row("s", "save 4 KiB, unrooted, durable=False", saves["o"], "tmp+rename by hand", saves["h"], None),
        row("s", "save 4 KiB, rooted, durable", durable["rd"], "unrooted", durable["od"], None),
        row("s", "load 4 KiB, rooted", loads["r"], "unrooted", loads["o"], None),
        row("s", "load 4 KiB, unrooted", loads["o"], "np.load", loads["np"], None),
    ]


def bench_frame(settings: Settings) -> list[Row]:
    base = settings.directory / "frame"
    base.mkdir()
    rooted, plain = DiskBackend(root=base), DiskBackend()
    target = str(base / "plain.npy")
    settle()
    saves = medians(interleaved(
        {"r": lambda: rooted.save(FRAME, "rooted.npy"), "o": lambda: plain.save(FRAME, target)},
        repeat=settings.reps(40, 6), warmup=2,
    ))
    loads = medians(interleaved(
        {"r": lambda: rooted.load("plain.npy"), "o": lambda: plain.load(target)},
        repeat=settings.reps(100, 10), warmup=3,
    ))
    return [
        row("f", "save 8 MiB, rooted, durable", saves["r"], "unrooted", saves["o"], Goal(1.10)),
        row("f", "load 8 MiB, rooted", loads["r"], "unrooted", loads["o"], Goal(1.10)),
    ]


def bench_listing(settings: Settings) -> list[Row]:
    base = settings.directory / "tree"
    for folder in range(10):
        (base / f"w{folder}").mkdir(parents=True)
        for index in range(100):
            (base / f"w{folder}" / f"s{index}.npy").write_bytes(b"x")
    rooted, plain = DiskBackend(root=base), DiskBackend()

    def walk() -> list[str]:
        return sorted(os.path.join(d, f) for d, _, files in os.walk(base) for f in files)

    times = medians(interleaved(
        {
            "r": lambda: rooted.list_files(".", recursive=True),
            "o": lambda: plain.list_files(str(base), recursive=True),
            "walk": walk,
        },
        repeat=settings.reps(20, 4), number=3,
    ))
    return [
        row("l", "list_files 1,000 files, rooted", times["r"], "unrooted", times["o"], None),
        row("l", "list_files 1,000 files, unrooted", times["o"], "os.walk + sort", times["walk"], None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="folder for the files (a local disk, not tmpfs)"
    )
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="polystore-confinement-", dir=args.dir))
    settings = Settings(quick=args.quick, directory=directory)
    print(f"DiskBackend from {sys.modules[DiskBackend.__module__].__file__}, files in {directory}")
    load_before = note_load(f"{os.cpu_count()} cores")
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        for bench in (bench_small, bench_frame, bench_listing):
            print(f"  running {bench.__name__} ...", flush=True)
            rows.extend(bench(settings))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print()
    print_table(rows, case_width=38, reference_width=20, units=("ms", "us"))
    print("ratio = ours / reference (medians of interleaved rounds)")
    print_verdicts(rows, time.perf_counter() - started, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
