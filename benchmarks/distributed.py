"""polystore.distributed converting a plate of TIFFs to OME-Zarr on a dask LocalCluster: 1 against
2 worker processes, and against ome-zarr-py's dask write path on the same cluster.

    python benchmarks/distributed.py            # 16 wells x 2 fields x 2 channels of 1024x1024 uint16
    python benchmarks/distributed.py --quick    # 4 wells, fewer rounds (a smoke run)
    python benchmarks/distributed.py --ours-only --rounds 9   # 1 against 2 workers alone (A/B runs)
    python benchmarks/distributed.py --big      # one image larger than this machine's RAM (not in make bench)
    python benchmarks/distributed.py --big --big-gib 4   # ... or of the size given

Rows:
  1. ours with 2 worker processes against ours with 1 (each worker one thread; the same plate,
     the same code): the speed-up. Goal (issue 14): >= 1.7x on local disk.
  2. ours against ome-zarr-py on the same 2-worker cluster: ``write_plate_metadata``,
     ``write_well_metadata`` and ``write_image(dask array, compute=False)`` per field (the
     TIFFs read by the graph, 2 levels by local mean, the same chunks and codec), computed by
     ``client.compute``. Goal: at least as fast (>= 1.0x).

The clusters (one of 1 worker, one of 2: those ``polystore convert --workers N`` starts, alike
but for the worker count) are started once; every round runs each case once in rotated order,
into a fresh folder, moved aside after the sample and written to disk (``sync``, not timed), and
removed when the run ends. Not removed sooner: on an ext4 file system without a journal (this
VM's), the kernel skips every inode freed in the last minute (six while its inode table block
is dirty) when it allocates one, and scans them one by one each time, so a sample that followed
the removal of the one before (some 500 files and folders) paid for that scan at every file and
folder it made: perf put ``recently_deleted`` at the top of the client's profile, and removing
after each sample doubled the workers' CPU time. Times are medians. The CPU time of
the worker processes and of this process (the client, the schedulers, the nannies) per
conversion is printed too, with the bound it sets on the speed-up: on 2 cores the client's
work competes with the 2 workers, where 1 worker leaves it the other core.
``--big`` writes an image of ramps (computed block by block on the workers, never whole)
with a 3-level pyramid through one worker with a memory limit, and prints the peak memory of
the worker: what memory per worker the conversion needs, whatever the image's size.

The machine is shared: run it as ``flock /tmp/polystore-bench.lock python benchmarks/distributed.py``.
A script, not a test: it prints PASS / MISS against each goal and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# This script has the dask package's name: with its folder on sys.path, `import distributed` (here,
# and in the spawned workers, which get this sys.path) would import the script. The folder goes,
# and the harness beside it is loaded by its path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_spec = importlib.util.spec_from_file_location("harness", _HERE / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = sys.modules["harness"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
Goal, Row = harness.Goal, harness.Row

CHANNELS = 2
FIELDS = 2
PLANE = (1024, 1024)
LEVELS = 2
SCALING_GOAL = Goal(1.7, at_least=True)
OME_ZARR_GOAL = Goal(1.0, at_least=True)
WARMUP = 1


def well_names(count: int) -> list[str]:
    return [f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}" for i in range(count)]


def write_tiffs(folder: Path, wells: int) -> list[tuple[str, int, list[Path]]]:
    """The plate as ImageXpress names it; (well, field, its channels' files) per field."""
    import tifffile

    rng = np.random.default_rng(0)
    fields = []
    for well in well_names(wells):
        for field in range(FIELDS):
            paths = []
            for channel in range(CHANNELS):
                # microscopy-like: an offset, shot noise, smooth structure (compressible, not random)
                y, x = np.ogrid[: PLANE[0], : PLANE[1]]
                signal = 200 + 150 * np.sin(y / (37 + channel)) * np.cos(x / (53 + field))
                plane = rng.poisson(np.clip(signal, 1, None)).astype(np.uint16)
                path = folder / f"{well}_s{field + 1}_w{channel + 1}.tif"
                tifffile.imwrite(path, plane)
                paths.append(path)
            fields.append((well, field, paths))
    return fields


def ours(client: Any, folder: Path, destination: Path) -> None:
    from polystore.distributed import convert

    convert(folder, destination, client=client, levels=LEVELS, chunks=(1, *PLANE))


def ome_zarr_py(client: Any, fields: list[tuple[str, int, list[Path]]], destination: Path) -> None:
    """ome-zarr-py's dask path: metadata eagerly, then one compute of every field's levels."""
    import dask
    import dask.array as da
    import tifffile
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    from polystore.backends.zarr.config import ZarrConfig

    compressors = ZarrConfig().compressors(np.dtype(np.uint16))
    root = zarr.open_group(destination, mode="w")
    wells = sorted({w for w, _, _ in fields})
    rows, columns = sorted({w[0] for w in wells}), sorted({w[1:] for w in wells})
    write_plate_metadata(root, rows, columns, [f"{w[0]}/{w[1:]}" for w in wells], field_count=FIELDS)
    delayed: list[Any] = []
    for well in wells:
        group = root.require_group(f"{well[0]}/{well[1:]}")
        write_well_metadata(group, [str(f) for f in range(FIELDS)])
        for name, field, paths in fields:
            if name != well:
                continue
            planes = [da.from_delayed(dask.delayed(tifffile.imread)(p), PLANE, np.uint16) for p in paths]
            image = da.stack(planes)
            delayed += write_image(image, group.require_group(str(field)), scale_factors=(2,),
                                   method=Methods.LOCAL_MEAN, axes="cyx", compute=False,
                                   storage_options={"chunks": (1, *PLANE), "compressors": compressors})
    client.gather(client.compute(delayed))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux's /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The CPU time each sample takes: of its cluster's worker processes, and of this process
    (the client, and both clusters' schedulers and nannies, which LocalCluster runs here)."""

    def __init__(self, workers: dict[str, list[int]]) -> None:
        self.workers = workers
        self.started: tuple[float, float] = (0.0, 0.0)
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in workers}

    def now(self, name: str) -> tuple[float, float]:
        return sum(map(cpu_seconds, self.workers[name])), cpu_seconds(os.getpid())

    def start(self, name: str) -> None:
        self.started = self.now(name)

    def stop(self, name: str) -> None:
        workers, client = self.now(name)
        self.samples[name].append((workers - self.started[0], client - self.started[1]))

    def median(self, name: str, skip: int) -> tuple[float, float]:
        """(workers, client process) CPU seconds of a sample: medians, the first ``skip`` (the
        warm-up) left out."""
        timed = self.samples[name][skip:]
        return harness.median([w for w, _ in timed]), harness.median([c for _, c in timed])


def peak_rss() -> int:
    """A worker's peak resident memory: VmHWM starts anew at exec (ru_maxrss would carry the
    peak of the process that spawned it)."""
    import re

    with open("/proc/self/status") as status:
        found = re.search(r"VmHWM:\s*(\d+) kB", status.read())
    assert found is not None
    return int(found.group(1)) * 1024


def _ramp(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1, dtype=np.uint32)[:, None]
    x = np.arange(x0, x1, dtype=np.uint32)[None, :]
    return ((y * 7 + x * 3) % 4093).astype(np.uint16)


def big(gib: float | None, directory: Path) -> None:
    import dask.array as da
    from distributed import Client

    from polystore.distributed import convert
    from polystore.distributed.cluster import local_cluster

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = int((gib * 2**30) if gib else ram * 1.1)
    side = int(np.sqrt(size / 2)) // 4096 * 4096
    shape = (side, side)
    image = da.zeros(shape, dtype=np.uint16, chunks=(4096, 4096)).map_blocks(_ramp, dtype=np.uint16)
    limit = 1 * 2**30
    print(f"--big: a {shape[0]}x{shape[1]} uint16 image ({image.nbytes / 2**30:.1f} GiB; this machine's RAM "
          f"{ram / 2**30:.1f} GiB), 3 levels, one worker limited to {limit / 2**30:.1f} GiB")
    load = harness.note_load(harness.cores())
    start = time.perf_counter()
    with local_cluster(1, memory_limit=limit) as cluster, Client(cluster) as client:
        report = convert(image, directory / "big.zarr", client=client, levels=3, chunks=(1024, 1024),
                         shards=(4096, 4096), progress=True)
        peaks = client.run(peak_rss)
    elapsed = time.perf_counter() - start
    print(f"  {len(report.written)} blocks in {elapsed:.0f} s ({image.nbytes / 2**20 / elapsed:.0f} MiB/s)")
    for worker, peak in peaks.items():
        print(f"  peak memory of worker {worker}: {peak / 2**20:.0f} MiB "
              f"({image.nbytes / peak:.0f}x less than the image)")
    print(f"  {harness.run_summary(elapsed, load)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 wells and fewer rounds (a smoke run)")
    parser.add_argument("--wells", type=int, default=None, help="wells of the plate (default 16; --quick 4)")
    parser.add_argument("--big", action="store_true", help="only the image larger than RAM")
    parser.add_argument("--big-gib", type=float, default=None, help="its size in GiB (default: 1.1x RAM)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; --quick 2)")
    parser.add_argument("--ours-only", action="store_true",
                        help="1 against 2 workers only: no ome-zarr-py row, no figure (A/B runs)")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="polystore-bench-", dir=args.dir))
    try:
        if args.big:
            big(args.big_gib, directory)
            return 0
        return plate(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def cpu_bound(meter: CpuMeter, medians: dict[str, float]) -> None:
    """What the CPU time says, whatever else runs: the 1-worker conversion takes at least its
    worker's CPU time (one process, one thread at a time); the 2-worker one at least its workers'
    and this process's CPU time shared by 2 cores (the client, the scheduler and the nannies
    compete with the workers there, where the 1-worker run leaves them the other core)."""
    one_workers, one_client = meter.median("ours-1", WARMUP)
    two_workers, two_client = meter.median("ours-2", WARMUP)
    two_bound = (two_workers + two_client) / 2
    print(f"CPU per conversion (medians): 1 worker: {one_workers:.3f} s of the worker, {one_client:.3f} s "
          f"of the client process; 2 workers: {two_workers:.3f} s of the workers, {two_client:.3f} s of the "
          "client process")
    print(f"  2 workers take at least {two_bound:.3f} s on 2 cores (measured {medians['ours-2']:.3f} s), "
          f"1 worker at least {one_workers:.3f} s (measured {medians['ours-1']:.3f} s): the CPU's bound on "
          f"the speed-up, with no other load and no start-up or end, is {one_workers / two_bound:.2f}x")


def plate(args: argparse.Namespace, directory: Path) -> int:
    from distributed import Client

    from polystore.distributed.cluster import local_cluster

    wells = args.wells or (4 if args.quick else 16)
    repeat = args.rounds or (2 if args.quick else 5)
    (directory / "tiffs").mkdir()
    fields = write_tiffs(directory / "tiffs", wells)
    megabytes = wells * FIELDS * CHANNELS * PLANE[0] * PLANE[1] * 2 / 2**20
    print(f"plate: {wells} wells x {FIELDS} fields x {CHANNELS} channels of {PLANE[0]}x{PLANE[1]} uint16 "
          f"({megabytes:.0f} MiB of TIFFs), {LEVELS} levels; {repeat} rounds on {harness.cores()}")
    load = harness.note_load(harness.cores())
    start = time.perf_counter()
    # the clusters `polystore convert --workers N` starts, alike but for the worker count
    with local_cluster(1) as one_cluster, Client(one_cluster) as one, \
            local_cluster(2) as two_cluster, Client(two_cluster) as two:
        cases = {
            "ours-1": lambda: ours(one, directory / "tiffs", directory / "out-ours-1" / "plate.zarr"),
            "ours-2": lambda: ours(two, directory / "tiffs", directory / "out-ours-2" / "plate.zarr"),
            "ome-zarr-2": lambda: ome_zarr_py(two, fields, directory / "out-ome-zarr-2" / "plate.zarr"),
        }
        if args.ours_only:
            del cases["ome-zarr-2"]
        pids = {name: list(client.run(os.getpid).values()) for name, client in
                (("ours-1", one), ("ours-2", two), ("ome-zarr-2", two)) if name in cases}
        meter = CpuMeter(pids)

        def before(name: str) -> None:
            (directory / f"out-{name}").mkdir()
            meter.start(name)

        kept = directory / "kept"  # the samples' outputs, removed with `directory` (see the docstring)
        kept.mkdir()
        count = itertools.count()

        def after(name: str) -> None:
            meter.stop(name)
            (directory / f"out-{name}").rename(kept / f"{name}-{next(count)}")  # a rename frees no inode
            os.sync()  # its writeback done before the next sample, not during it

        samples = harness.interleaved(cases, repeat=repeat, warmup=WARMUP, before=before, after=after)
    elapsed = time.perf_counter() - start
    medians = harness.medians(samples)
    scaling = [a / b for a, b in zip(samples["ours-1"], samples["ours-2"], strict=True)]
    rows: list[Any] = [
        harness.row("1", "plate, 2 workers (ours)", medians["ours-2"], "1 worker (ours)", medians["ours-1"],
                    SCALING_GOAL, speedup=True, round_ratios=scaling, samples=samples),
    ]
    if "ome-zarr-2" in samples:
        versus = [a / b for a, b in zip(samples["ome-zarr-2"], samples["ours-2"], strict=True)]
        rows.append(harness.row("2", "plate, 2 workers (ours)", medians["ours-2"], "ome-zarr-py, 2 workers",
                                medians["ome-zarr-2"], OME_ZARR_GOAL, speedup=True, round_ratios=versus))
    harness.print_table(rows, case_width=26, per_round=True)
    print("ratio: how many times faster ours with 2 workers is than the reference (per round: the")
    print(f"lowest and highest within one round); {megabytes / medians['ours-2']:.0f} MiB/s with 2 workers")
    cpu_bound(meter, medians)
    harness.print_verdicts(rows, elapsed, load)
    if args.ours_only:
        return 0
    harness.save_figure("distributed", rows, title="distributed convert: plate to OME-Zarr "
                        "(benchmarks/distributed.py)", load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
