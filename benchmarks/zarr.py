"""ZarrBackend next to zarr-python and tensorstore writing and reading the same plate, side by side.

    python benchmarks/zarr.py              # full run: a 24-well plate (about 2-3 minutes on 2 cores)
    python benchmarks/zarr.py --quick      # 4 wells, fewer repeats, for a smoke check
    python benchmarks/zarr.py --defaults   # the compressor table that justifies ZarrConfig's defaults
    python benchmarks/zarr.py --s3-defaults   # the same question on the S3 server: codecs, shards
    python benchmarks/zarr.py --json results.json

The data: a screening plate of 24 wells x 4 fields x 3 channels of 1024x1024 uint16 planes
(576 MiB), microscopy-like (camera offset + Poisson shot noise on a dim background, Gaussian
nuclei / cell bodies / spots per channel), so compressors face what they face in practice, not
incompressible random noise. It is generated once and reused by every case.

Sections:
  1. Writing the plate, zstd (ZarrConfig's default codec): ZarrBackend.save_batch of pipeline
     file names ('plate.zarr/A01_s1_w1.tif': well A01, field 1, channel 1) and ZarrBackend.save
     of whole field images ('plate.zarr/A/01/0', shape (3, 1024, 1024)), against zarr-python
     writing the same arrays directly (zarr.create_array per field, chunks (1, 1024, 1024), the
     codecs ZarrConfig().compressors(dtype) gives) and tensorstore (same chunks, same codecs).
     save_batch is one call for the plate, so its samples are whole plates; the lone saves go
     field by field with every writer in turn (as the reads in 2), into fresh folders.
  2. Reading the plate back: ZarrBackend.load of every field against zarr-python and tensorstore
     reading the same arrays from the same files (just written, so from the page cache: this
     measures decoding and per-call overhead, not the disk). Each field is read by every reader
     in turn (rotated order) and a sample is a reader's total over the plate: whole-plate
     samples one after the other drifted 0.5-1.45x between rounds here, field by field 0.97-1.00x.
  3. Reading one plane (one channel of one field) against reading its whole well (all fields, all
     channels): with one chunk per plane, a plane should cost about 1/12 of the well.
  4. (--defaults, instead of 1-3) Compressors on the same kind of data (2 wells, 48 MiB), written
     and read through zarr-python with the codecs ZarrConfig gives for each setting: write MB/s,
     read MB/s, compression ratio; the configured default (zstd 1 + shuffle) is marked. This is
     how the defaults are justified: measured, not guessed.

  6. (--s3-defaults, instead of 1-5) The settings on the S3 server (2 wells): codec, level,
     shuffle, a shard per field image (one object per field: fewer PUTs): save_batch of the plate,
     lone saves of one well plane by plane, every field loaded, one plane loaded; objects stored.

  5. The same plate (2 wells of it: moto's server is slow Python) to an S3 server on 127.0.0.1:
     ours (obstore, zarrs) against zarr-python's FsspecStore over s3fs (its default pipeline),
     writing (save_batch) and reading field by field. No goal: the ratio is printed.

Goals (issue 13): ours at or below tensorstore's time (<= 1.00x), writing and reading, with
tensorstore writing the same chunks and codecs as ours (read from our own output's metadata);
and at least 2x faster than zarr-python through its default codec pipeline (<= 0.50x).
Sections 3 and 4 carry no goal: they are there to be read.

ZarrBackend adds OME-NGFF metadata (multiscales, well, plate) that the bare zarr-python and
tensorstore writes do not: that overhead is inside the goals. Every time is the median
of repeated samples after a warm-up; in each round every case runs once, in rotated order, so
that drifting machine state (page cache, writeback, other processes) hits them alike. Each
write goes to a fresh folder, kept until the run ends and written to disk after the sample
(not timed; ``Scratch`` says why it is not removed then). This is a
script, not a test: it reports PASS / MISS against each goal and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# imported before this folder comes off sys.path (below)
import harness
from harness import (
    Goal,
    Row,
    cores,
    interleaved,
    interleaved_items,
    median,
    note_load,
    paired_row,
    print_table,
    print_verdicts,
    run_summary,
    version,
)

# This file is named zarr.py: run as a script, its folder comes first on sys.path and
# `import zarr` would import this file again. Take the folder off before anything imports zarr.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import numpy as np

import polystore
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrCompressor, ZarrConfig

WELLS = 24
ROWS = "ABCDEFGH"
COLUMNS_PER_ROW = 6
FIELDS = 4
CHANNELS = 3
PLANE = (1024, 1024)
DTYPE = np.dtype(np.uint16)
VARIANTS = 4  # distinct synthetic planes per channel; each plane of the plate is one of them, shifted
DEFAULTS_WELLS = 2  # --defaults writes this many wells per compressor (gzip 6 is slow)

FieldKey = tuple[str, str, int]  # (row, column, 0-based field)

DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"  # zarr-python's own, by config name
ZARR_DEFAULT = "zarr-python (default pipeline)"
ZARR_GOAL = Goal(0.50)  # at least 2x faster than zarr-python's default pipeline
TS_GOAL = Goal(1.00)  # at or below tensorstore's time


# -- data --------------------------------------------------------------------------------------
def _add_blobs(
    image: np.ndarray, rng: np.random.Generator, count: int, sigma: tuple[float, float],
    peak: tuple[float, float],
) -> None:
    """Add ``count`` Gaussian blobs (random centre, width and brightness) to ``image``."""
    height, width = image.shape
    for _ in range(count):
        s = rng.uniform(*sigma)
        radius = int(3 * s) + 1
        profile = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * s * s)).astype(np.float32)
        patch = rng.uniform(*peak) * np.outer(profile, profile)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, height)
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, width)
        image[y0:y1, x0:x1] += patch[y0 - cy + radius : y1 - cy + radius, x0 - cx + radius : x1 - cx + radius]


def synthetic_planes(rng: np.random.Generator) -> list[list[np.ndarray]]:
    """``VARIANTS`` microscopy-like planes for each channel: [channel][variant] -> uint16 (y, x)."""
    y, x = np.mgrid[0 : PLANE[0], 0 : PLANE[1]].astype(np.float32)
    r2 = ((y - PLANE[0] / 2) ** 2 + (x - PLANE[1] / 2) ** 2) / (PLANE[0] ** 2 / 2)
    vignette = 1.0 - 0.3 * r2  # illumination falls off towards the corners
    # (count, sigma range, peak range, background) per channel: nuclei, cell bodies, spots
    looks = [(180, (5.0, 9.0), (600.0, 2500.0), 30.0), (140, (12.0, 22.0), (150.0, 500.0), 60.0),
             (900, (1.0, 2.5), (300.0, 3000.0), 20.0)]
    planes = []
    for count, sigma, peak, background in looks:
        variants = []
        for _ in range(VARIANTS):
            signal = np.full(PLANE, background, dtype=np.float32)
            _add_blobs(signal, rng, count, sigma, peak)
            photons = rng.poisson(signal * vignette)  # shot noise
            variants.append(np.clip(photons + 100, 0, np.iinfo(DTYPE).max).astype(DTYPE))  # + camera offset
        planes.append(variants)
    return planes


def make_plate(wells: int, seed: int = 0) -> dict[FieldKey, np.ndarray]:
    """Field images (channels, y, x) of the first ``wells`` wells (A01..A06, B01.. row by row)."""
    rng = np.random.default_rng(seed)
    pool = synthetic_planes(rng)
    plate: dict[FieldKey, np.ndarray] = {}
    for index in range(wells):
        row, column = ROWS[index // COLUMNS_PER_ROW], f"{index % COLUMNS_PER_ROW + 1:02d}"
        for field_index in range(FIELDS):
            stack = np.empty((CHANNELS, *PLANE), dtype=DTYPE)
            for channel in range(CHANNELS):
                # a shifted copy: every stored chunk differs, the statistics stay those of the data
                shift = (int(rng.integers(0, PLANE[0])), int(rng.integers(0, PLANE[1])))
                stack[channel] = np.roll(pool[channel][int(rng.integers(0, VARIANTS))], shift, axis=(0, 1))
            plate[(row, column, field_index)] = stack
    return plate


def plane_names(plate: dict[FieldKey, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """The plate as pipeline files: planes and 'plate.zarr/A01_s1_w1.tif'-style names (1-based)."""
    planes, names = [], []
    for (row, column, field_index), stack in plate.items():
        for channel in range(stack.shape[0]):
            planes.append(stack[channel])
            names.append(f"plate.zarr/{row}{column}_s{field_index + 1}_w{channel + 1}.tif")
    return planes, names


def subset(plate: dict[FieldKey, np.ndarray], wells: int) -> dict[FieldKey, np.ndarray]:
    keys = sorted({(r, c) for r, c, _ in plate}, key=lambda w: (ROWS.index(w[0]), w[1]))[:wells]
    return {k: v for k, v in plate.items() if k[:2] in keys}


def raw_bytes(plate: dict[FieldKey, np.ndarray]) -> int:
    return sum(stack.nbytes for stack in plate.values())


def stored_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file())


# -- writers and readers -------------------------------------------------------------------------
def array_path(key: FieldKey) -> str:
    """Where the full-resolution array of a field lies in the store (ZarrBackend's layout)."""
    row, column, field_index = key
    return f"{row}/{column}/{field_index}/0"


class ZarrDirect:
    """zarr-python with nothing around it, with the chunks and codecs ZarrBackend uses, through
    zarr-python's default codec pipeline (whatever the backend configured for the process)."""

    def __init__(self, config: ZarrConfig) -> None:
        import zarr

        self.zarr = zarr
        self.config = config
        self.compressors = config.compressors(DTYPE)

    def _default_pipeline(self) -> Any:
        return self.zarr.config.set({"codec_pipeline.path": DEFAULT_PIPELINE})

    def write(self, store_path: Path | Any, plate: dict[FieldKey, np.ndarray]) -> None:
        store = self.zarr.storage.LocalStore(store_path) if isinstance(store_path, Path) else store_path
        for key, stack in plate.items():
            self.write_field(store, key, stack)

    def write_field(self, store: Any, key: FieldKey, stack: np.ndarray) -> None:
        with self._default_pipeline():
            target = self.zarr.create_array(
                store, name=array_path(key), shape=stack.shape, dtype=stack.dtype,
                chunks=(1, *stack.shape[1:]), compressors=self.compressors,
                zarr_format=self.config.zarr_format,
            )
            target[...] = stack

    def read(self, store_path: Path, keys: list[FieldKey]) -> list[np.ndarray]:
        store = self.zarr.storage.LocalStore(store_path, read_only=True)
        return [self.read_field(store, k) for k in keys]

    def read_field(self, store: Any, key: FieldKey) -> np.ndarray:
        """One field from an opened store (ZarrBackend keeps its stores open too)."""
        with self._default_pipeline():
            return np.asarray(self.zarr.open_array(store, path=array_path(key), mode="r")[...])

    def read_plane(self, store_path: Path, key: FieldKey, channel: int) -> np.ndarray:
        store = self.zarr.storage.LocalStore(store_path, read_only=True)
        with self._default_pipeline():
            return np.asarray(self.zarr.open_array(store, path=array_path(key), mode="r")[channel])


class TensorStoreDirect:
    """tensorstore's zarr3 driver with the very codecs zarr-python writes for ZarrConfig(),
    every open sharing one Context as tensorstore's documentation asks ("to share resources,
    you must use the same Context instance": its thread pools and caches; a context per open
    would make new ones every call)."""

    def __init__(self, ts: Any, codecs: list[dict[str, Any]]) -> None:
        self.ts = ts
        self.codecs = codecs
        self.context = ts.Context()

    @classmethod
    def like_ours(cls, ts: Any, scratch: Path) -> TensorStoreDirect:
        """The chunk grid and codecs from the metadata of a field ZarrBackend wrote (so both
        write the same chunks with the same codecs, shards included where configured)."""
        probe = scratch / "codec-probe"
        probe.mkdir()
        ZarrBackend(probe).save(np.zeros((CHANNELS, *PLANE), DTYPE), "plate.zarr/A/01/0")
        meta = json.loads((probe / "plate.zarr" / array_path(("A", "01", 0)) / "zarr.json")
                          .read_text(encoding="utf-8"))
        shutil.rmtree(probe)
        made = cls(ts, meta["codecs"])
        made.chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"][1:]
        return made

    chunk_shape: list[int] | None = None
    """Chunks of a field's y and x (after the channel axis) as ours writes them."""

    def _spec(self, path: Path) -> dict[str, Any]:
        return {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/"}}

    def write(self, store_path: Path, plate: dict[FieldKey, np.ndarray]) -> None:
        for key, stack in plate.items():
            self.write_field(store_path, key, stack)

    def write_field(self, store_path: Path, key: FieldKey, stack: np.ndarray) -> None:
        spec = self._spec(store_path / array_path(key))
        spec["metadata"] = {
            "shape": list(stack.shape), "data_type": stack.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {
                "chunk_shape": [1, *(self.chunk_shape or stack.shape[1:])]}},
            "codecs": self.codecs,
        }
        self.ts.open(spec, create=True, context=self.context).result().write(stack).result()

    def read(self, store_path: Path, keys: list[FieldKey]) -> list[np.ndarray]:
        return [self.read_field(store_path, k) for k in keys]

    def read_field(self, store_path: Path, key: FieldKey) -> np.ndarray:
        spec = self._spec(store_path / array_path(key))
        opened = self.ts.open(spec, read=True, context=self.context).result()
        return np.asarray(opened.read().result())


class ChunksOnly:
    """The floor under every writer and reader of this plate: a field's three chunks encoded
    with the default codec (numcodecs' Blosc, zarr's own codec library; zarr turns Blosc's
    internal threads off) and written whole (a temporary file renamed over the chunk), or read
    and decoded into the array returned, at the keys ZarrBackend uses; no metadata, no locks,
    no zarr. One plane after the other on the calling thread, or (``threads``) the planes on a
    pool of that many threads, the calling thread waiting: the codec and the files on every
    core. A row against it says how much of a writer's or reader's time is the codec and the
    files, which no implementation with these codecs avoids."""

    def __init__(self, threads: int = 0) -> None:
        import numcodecs

        codec = ZarrConfig().compressors(DTYPE).to_dict()["configuration"]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec["shuffle"]]
        self.codec = numcodecs.Blosc(cname=codec["cname"], clevel=codec["clevel"], shuffle=shuffle,
                                     blocksize=codec["blocksize"], typesize=codec["typesize"])
        self.pool = ThreadPoolExecutor(threads) if threads else None

    def _each(self, work: Callable[[int], None], count: int) -> None:
        if self.pool is None:
            for index in range(count):
                work(index)
        else:
            for _ in self.pool.map(work, range(count)):
                pass

    @staticmethod
    def chunk(store: Path, key: FieldKey, channel: int) -> Path:
        return store / array_path(key) / "c" / str(channel) / "0" / "0"

    def write_field(self, store: Path, key: FieldKey, stack: np.ndarray) -> None:
        def write(channel: int) -> None:
            path = self.chunk(store, key, channel)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{channel}.tmp")
            temporary.write_bytes(self.codec.encode(stack[channel]))
            os.replace(temporary, path)

        self._each(write, len(stack))

    def read_field(self, store: Path, key: FieldKey) -> np.ndarray:
        out = np.empty((CHANNELS, *PLANE), DTYPE)

        def read(channel: int) -> None:
            self.codec.decode(self.chunk(store, key, channel).read_bytes(), out=out[channel])

        self._each(read, CHANNELS)
        return out


def cores_label() -> str:
    return f"a thread per core ({os.cpu_count() or 1})"


def ours_save_batch(target: Path, plate: dict[FieldKey, np.ndarray]) -> None:
    planes, names = plane_names(plate)
    ZarrBackend(target).save_batch(planes, names)


def ours_load_fields(backend: ZarrBackend, keys: list[FieldKey]) -> list[np.ndarray]:
    return [backend.load(f"plate.zarr/{r}/{c}/{f}") for r, c, f in keys]


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class CodecRow:
    codec: str
    default: bool
    write_mb_s: float
    read_mb_s: float
    compression_ratio: float
    write_s: float
    read_s: float


@dataclass
class Settings(harness.Settings):
    wells: int
    ts: Any  # the tensorstore module, or None where it is not installed
    notes: list[str] = field(default_factory=list)


class Scratch:
    """Fresh, numbered folders under one directory, kept until the run ends (removed with the
    directory), not removed after each sample.

    On an ext4 file system without a journal (this VM's), the kernel skips every inode freed
    in the last minute (six while its inode table block is dirty) when it allocates one,
    checking each in turn: a sample that follows the removal of the one before (thousands of
    chunk files and folders) pays for that scan at every file and folder it makes, which
    weighs on each writer by how many files it makes, not by how it writes them (see
    docs/distributed.md, "The benchmark's removals"). So a sample's folder stays, written to
    disk (``sync``, not timed) before the next sample, whose writeback it would slow.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{name}-{self.count:04d}"
        path.mkdir()
        return path

    @staticmethod
    def done(path: Path) -> None:
        """A sample's folder written: kept, its writeback done now (see the class)."""
        os.sync()


def fresh_folder_cases(
    scratch: Scratch, writers: dict[str, Callable[[Path], object]]
) -> tuple[dict[str, Callable[[], object]], Callable[[str], None], Callable[[str], None]]:
    """Cases that each write into a new folder (made before, kept after, neither timed)."""
    current: dict[str, Path] = {}

    def before(name: str) -> None:
        current[name] = scratch.fresh(name)

    def after(name: str) -> None:
        scratch.done(current.pop(name))

    cases = {name: (lambda w=writer, n=name: w(current[n])) for name, writer in writers.items()}
    return cases, before, after


# -- 1. writing -----------------------------------------------------------------------------------
def bench_write(settings: Settings, plate: dict[FieldKey, np.ndarray]) -> list[Row]:
    scratch = Scratch(settings.directory)
    direct = ZarrDirect(ZarrConfig())
    small = subset(plate, 1)
    tensorstore = (
        TensorStoreDirect.like_ours(settings.ts, settings.directory) if settings.ts is not None else None
    )
    # the whole plate in one call (save_batch) against the same arrays written one by one
    writers: dict[str, Callable[[Path], object]] = {
        "batch": lambda t: ours_save_batch(t, current_plate[0]),
        "zarr": lambda t: direct.write(t / "plate.zarr", current_plate[0]),
    }
    if tensorstore is not None:
        writers["ts"] = lambda t: tensorstore.write(t / "plate.zarr", current_plate[0])
    current_plate = [small]  # the warm-up writes one well; the samples, the whole plate
    cases, before, after = fresh_folder_cases(scratch, writers)
    interleaved(cases, repeat=0, warmup=1, collect_each=True, before=before, after=after)
    current_plate[0] = plate
    samples = interleaved(
        cases, repeat=settings.reps(4, 2), warmup=0, collect_each=True, before=before, after=after
    )
    n = len(plate)
    rows = [
        paired_row("1", f"save_batch {n * CHANNELS} planes (A01_s1_w1.tif)", samples, "batch", "zarr",
            ZARR_DEFAULT, ZARR_GOAL),
    ]
    if tensorstore is not None:
        rows += [
            paired_row("1", f"save_batch {n * CHANNELS} planes", samples, "batch", "ts", "tensorstore",
                       TS_GOAL),
            paired_row("1", ZARR_DEFAULT, samples, "zarr", "ts", "tensorstore", None),
        ]

    # one lone save per field, field by field with every writer in turn (as the reads), each
    # round into fresh folders; ours keeps the well and plate metadata right after every call
    folders: dict[str, Path] = {}
    backends: dict[str, ZarrBackend] = {}
    stores: dict[str, Any] = {}

    floor, floor_cores = ChunksOnly(), ChunksOnly(os.cpu_count() or 1)

    def fresh_round() -> None:
        for name in ("fields", "zarr", "ts", "floor", "floor_cores"):
            folders[name] = scratch.fresh(f"lone-{name}")
        backends["fields"] = ZarrBackend(folders["fields"])
        stores["zarr"] = direct.zarr.storage.LocalStore(folders["zarr"] / "plate.zarr")

    def end_round() -> None:
        for folder in folders.values():
            scratch.done(folder)

    lone: dict[str, Callable[[FieldKey], object]] = {
        "fields": lambda key: backends["fields"].save(plate[key], "plate.zarr/{}/{}/{}".format(*key)),
        "zarr": lambda key: direct.write_field(stores["zarr"], key, plate[key]),
        "floor": lambda key: floor.write_field(folders["floor"] / "plate.zarr", key, plate[key]),
        "floor_cores": lambda key: floor_cores.write_field(folders["floor_cores"] / "plate.zarr", key,
                                                           plate[key]),
    }
    if tensorstore is not None:
        lone["ts"] = lambda key: tensorstore.write_field(folders["ts"] / "plate.zarr", key, plate[key])
    lone_samples = interleaved_items(
        lone, list(plate), repeat=settings.reps(3, 2), warmup=0, before_round=fresh_round,
        after_round=end_round,
    )
    rows.insert(1, paired_row("1", f"save {n} fields (A/01/0, (3,1024,1024))", lone_samples, "fields",
                              "zarr", ZARR_DEFAULT, ZARR_GOAL))
    if tensorstore is not None:
        rows += [
            paired_row("1", f"save {n} fields", lone_samples, "fields", "ts", "tensorstore", TS_GOAL),
        ]
    rows += [paired_row("1", "chunks only (codec + files)", lone_samples, "floor", "zarr", ZARR_DEFAULT,
                        None)]
    if tensorstore is not None:
        rows += [paired_row("1", "chunks only (codec + files)", lone_samples, "floor", "ts", "tensorstore",
                            None)]
    rows += [paired_row("1", f"chunks only, {cores_label()}", lone_samples, "floor_cores", "zarr",
                        ZARR_DEFAULT, None),
             paired_row("1", f"save {n} fields", lone_samples, "fields", "floor_cores",
                        f"chunks only, {cores_label()}", None)]
    return rows


# -- 2. reading, 3. one plane against a well ----------------------------------------------------------
def bench_read(settings: Settings, plate: dict[FieldKey, np.ndarray]) -> tuple[list[Row], list[Row]]:
    folder = settings.directory / "read"
    folder.mkdir()
    ours_save_batch(folder, plate)  # every reader reads these same files
    store = folder / "plate.zarr"
    settings.notes.append(
        f"plate: {len(plate) // FIELDS} wells, {len(plate) * CHANNELS} planes, "
        f"{raw_bytes(plate) / 2**20:.0f} MiB raw, {stored_bytes(store) / 2**20:.0f} MiB stored "
        f"(compression ratio {raw_bytes(plate) / stored_bytes(store):.2f}, default codec)"
    )
    backend = ZarrBackend(folder)
    direct = ZarrDirect(ZarrConfig())
    keys = list(plate)
    sample = keys[::5]  # check that the readers give back what was written
    for got in (ours_load_fields(backend, sample), direct.read(store, sample)):
        assert all(np.array_equal(a, plate[k]) for a, k in zip(got, sample, strict=True))
    zarr_store = direct.zarr.storage.LocalStore(store, read_only=True)
    floor, floor_cores = ChunksOnly(), ChunksOnly(os.cpu_count() or 1)
    cases: dict[str, Callable[[FieldKey], object]] = {
        "ours": lambda key: backend.load("plate.zarr/{}/{}/{}".format(*key)),
        "zarr": lambda key: direct.read_field(zarr_store, key),
        "floor": lambda key: floor.read_field(store, key),
        "floor_cores": lambda key: floor_cores.read_field(store, key),
    }
    assert np.array_equal(cases["floor"](keys[0]), plate[keys[0]])  # type: ignore[arg-type]
    if settings.ts is not None:
        tensorstore = TensorStoreDirect(settings.ts, [])
        assert np.array_equal(tensorstore.read(store, keys[:1])[0], plate[keys[0]])
        cases["ts"] = lambda key: tensorstore.read_field(store, key)
    # field by field, every reader in turn (see harness.interleaved_items): whole-plate samples
    # drifted too much on this machine to tell 10% apart
    samples = interleaved_items(cases, keys, repeat=settings.reps(5, 3), warmup=1)
    n = len(keys)
    read_rows = [
        paired_row("2", f"load {n} fields", samples, "ours", "zarr", ZARR_DEFAULT, ZARR_GOAL),
    ]
    if settings.ts is not None:
        read_rows += [
            paired_row("2", f"load {n} fields", samples, "ours", "ts", "tensorstore", TS_GOAL),
            paired_row("2", ZARR_DEFAULT, samples, "zarr", "ts", "tensorstore", None),
        ]
    read_rows += [paired_row("2", "chunks only (files + codec)", samples, "floor", "zarr", ZARR_DEFAULT,
                             None)]
    if settings.ts is not None:
        read_rows += [paired_row("2", "chunks only (files + codec)", samples, "floor", "ts", "tensorstore",
                                 None)]
    read_rows += [paired_row("2", f"chunks only, {cores_label()}", samples, "floor_cores", "zarr",
                             ZARR_DEFAULT, None),
                  paired_row("2", f"load {n} fields", samples, "ours", "floor_cores",
                             f"chunks only, {cores_label()}", None)]

    # 3. one plane (pipeline name) against the whole well it belongs to, and against zarr-python
    row_, column, _ = keys[0]
    well = [k for k in keys if k[:2] == (row_, column)]
    plane_name = f"plate.zarr/{row_}{column}_s1_w1.tif"
    assert np.array_equal(backend.load(plane_name), plate[well[0]][0])
    plane_cases: dict[str, Callable[[], object]] = {
        "plane": lambda: backend.load(plane_name),
        "well": lambda: ours_load_fields(backend, well),
        "zarr_plane": lambda: direct.read_plane(store, well[0], 0),
    }
    plane_samples = interleaved(plane_cases, repeat=settings.reps(30, 10), warmup=2, collect_each=True)
    planes_in_well = len(well) * CHANNELS
    plane_rows = [
        paired_row("3", f"load one plane ({row_}{column}_s1_w1.tif)", plane_samples, "plane", "well",
            f"whole well ({planes_in_well} planes)", None),
        paired_row("3", "load one plane", plane_samples, "plane", "zarr_plane", "zarr-python [c]", None),
    ]
    settings.notes.append(
        f"section 3: one plane is 1/{planes_in_well} = {1 / planes_in_well:.3f} of the well's data"
    )
    return read_rows, plane_rows


# -- 5. the plate on an S3 server (moto, on 127.0.0.1) ---------------------------------------------
class MotoServer:
    """moto's S3 server in a subprocess on 127.0.0.1, with a bucket, and the AWS_* variables
    pointing at it (both clients find endpoint and credentials there)."""

    def __enter__(self) -> MotoServer:
        import socket
        import subprocess
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint})
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket="bench")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def bench_s3(settings: Settings, plate: dict[FieldKey, np.ndarray]) -> list[Row]:
    """save_batch and field loads through obstore (ours) against zarr-python's FsspecStore
    over s3fs (its default pipeline), each sample into a fresh prefix of one bucket."""
    import zarr

    direct = ZarrDirect(ZarrConfig())
    count = [0]
    prefixes: dict[str, str] = {}

    def fresh(name: str) -> None:
        count[0] += 1
        prefixes[name] = f"s3://bench/{name}-{count[0]:04d}/plate.zarr"

    def fsspec_store(url: str, read_only: bool = False) -> Any:
        return zarr.storage.FsspecStore.from_url(
            url, storage_options={"asynchronous": True, "endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
            read_only=read_only,
        )

    def ours_write(url: str) -> None:
        planes, names = plane_names(plate)
        ZarrBackend(url.rsplit("/", 1)[0]).save_batch(planes, names)

    writers: dict[str, Callable[[], object]] = {
        "ours": lambda: ours_write(prefixes["ours"]),
        "fsspec": lambda: direct.write(fsspec_store(prefixes["fsspec"]), plate),
    }
    samples = interleaved(writers, repeat=settings.reps(3, 2), warmup=1, collect_each=True,
                          before=fresh, after=lambda name: None)
    n = len(plate)
    rows = [paired_row("5", f"S3: save_batch {n * CHANNELS} planes", samples, "ours", "fsspec",
                       "zarr-python FsspecStore/s3fs", None)]
    url = prefixes["ours"]
    backend = ZarrBackend(url.rsplit("/", 1)[0])
    store = fsspec_store(url, read_only=True)
    keys = list(plate)
    readers: dict[str, Callable[[FieldKey], object]] = {
        "ours": lambda key: backend.load("plate.zarr/{}/{}/{}".format(*key)),
        "fsspec": lambda key: direct.read_field(store, key),
    }
    assert np.array_equal(readers["ours"](keys[0]), plate[keys[0]])  # type: ignore[arg-type]
    assert np.array_equal(readers["fsspec"](keys[0]), plate[keys[0]])  # type: ignore[arg-type]
    read = interleaved_items(readers, keys, repeat=settings.reps(3, 2), warmup=1)
    rows.append(paired_row("5", f"S3: load {n} fields", read, "ours", "fsspec",
                           "zarr-python FsspecStore/s3fs", None))
    return rows


# -- 6. the defaults on object storage ---------------------------------------------------------------
@dataclass
class S3Row:
    setting: str
    default: bool
    batch_s: float
    """save_batch of the plate (whole fields)."""
    planes_s: float
    """Lone saves of one well's planes, one call each (fields grow channel by channel)."""
    load_s: float
    """Every field loaded, one call each."""
    plane_ms: float
    """One plane loaded (median over the fields)."""
    objects: int
    """Objects the batch-written plate is stored in (a PUT each)."""
    stored_mib: float


def s3_settings() -> list[tuple[str, dict[str, Any]]]:
    """The settings compared on object storage: codec and level, shuffle, and a shard per field
    image (one object, one PUT, for the channels of a field)."""
    return [
        ("zstd 1 + shuffle", {}),
        ("zstd 1 + shuffle, field shards", {"shards": (CHANNELS, *PLANE)}),
        ("zstd 3 + shuffle", {"compression_level": 3}),
        ("zstd 1, no shuffle", {"shuffle": False}),
        ("blosc-lz4 5 + shuffle", {"compressor": ZarrCompressor.BLOSC_LZ4, "compression_level": 5}),
        ("none", {"compressor": ZarrCompressor.NONE}),
    ]


def bench_s3_defaults(settings: Settings, plate: dict[FieldKey, np.ndarray]) -> list[S3Row]:
    """Each setting writes the plate to the S3 server (save_batch), writes one well plane by
    plane (lone saves), reads every field and one plane of each; rounds rotate the settings."""
    from polystore.backends.zarr.location import Stores

    planes, names = plane_names(plate)
    one_well = subset(plate, 1)
    well_planes, well_names = plane_names(one_well)
    keys = list(plate)
    count = [0]
    urls: dict[str, str] = {}
    backends = {name: ZarrBackend(config=ZarrConfig().replace(**changes)) for name, changes in s3_settings()}
    times: dict[str, dict[str, list[float]]] = {name: {"batch": [], "planes": [], "load": [], "plane": []}
                                                for name in backends}

    def one_round(name: str, record: bool) -> None:
        backend = backends[name]
        count[0] += 1
        url = urls[name] = f"s3://bench/defaults-{count[0]:04d}/plate.zarr"
        lone_url = f"s3://bench/defaults-{count[0]:04d}-lone/plate.zarr"
        started = time.perf_counter()
        backend.save_batch(planes, [f"{url}/{n.split('/', 1)[1]}" for n in names])
        batch = time.perf_counter() - started
        started = time.perf_counter()
        for plane, plane_name in zip(well_planes, well_names, strict=True):
            backend.save(plane, f"{lone_url}/{plane_name.split('/', 1)[1]}")
        lone = time.perf_counter() - started
        started = time.perf_counter()
        for key in keys:
            backend.load("{}/{}/{}/{}".format(url, *key))
        load = time.perf_counter() - started
        plane_times = []
        for row, column, field_index in keys:
            started = time.perf_counter()
            backend.load(f"{url}/{row}{column}_s{field_index + 1}_w1.tif")
            plane_times.append(time.perf_counter() - started)
        if record:
            measured = {"batch": batch, "planes": lone, "load": load, "plane": median(plane_times)}
            for case, value in measured.items():
                times[name][case].append(value)

    names_in_order = list(backends)
    for name in names_in_order:  # warm-up: connections, imports, caches
        one_round(name, record=False)
    for round_index in range(settings.reps(3, 2)):
        shift = round_index % len(names_in_order)
        for name in names_in_order[shift:] + names_in_order[:shift]:
            one_round(name, record=True)
    settings.notes.append(
        f"section 6: {len(plate) // FIELDS} wells on the S3 server ({len(planes)} planes by save_batch), "
        f"{len(well_planes)} planes of one well by lone saves; objects and MiB of the batch-written plate"
    )
    rows = []
    stores = Stores({})
    for name, changes in s3_settings():
        objects = [meta for meta in _list_objects(stores, urls[name])]
        rows.append(S3Row(
            name, not changes, median(times[name]["batch"]), median(times[name]["planes"]),
            median(times[name]["load"]), 1e3 * median(times[name]["plane"]), len(objects),
            sum(size for size in objects) / 2**20,
        ))
    return rows


def _list_objects(stores: Any, url: str) -> list[int]:
    """The sizes of the objects under ``url`` (one per PUT that made them)."""
    import obstore

    store = stores.object_store(url)
    return [int(meta["size"]) for batch in obstore.list(store) for meta in batch]


def print_s3_table(rows: list[S3Row]) -> None:
    header = (f"{'setting (S3 server)':32} {'save_batch':>10} {'lone saves':>10} {'load':>8} "
              f"{'1 plane':>8} {'objects':>7} {'MiB':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        mark = "  <- default (ZarrConfig())" if r.default else ""
        print(f"{r.setting:32} {r.batch_s:9.3f}s {r.planes_s:9.3f}s {r.load_s:7.3f}s {r.plane_ms:6.1f}ms "
              f"{r.objects:7d} {r.stored_mib:6.1f}{mark}")


# -- 4. compressors ------------------------------------------------------------------------------
def codec_configs() -> list[tuple[str, ZarrConfig]]:
    configs = []
    for level in (1, 3, 5):
        for shuffle in (True, False):
            config = ZarrConfig(compressor=ZarrCompressor.ZSTD, compression_level=level, shuffle=shuffle)
            configs.append((f"zstd {level}{' + shuffle' if shuffle else ''}", config))
    lz4 = ZarrConfig(compressor=ZarrCompressor.BLOSC_LZ4, compression_level=5, shuffle=True)
    configs.append(("blosc-lz4 5 + shuffle", lz4))
    for level in (1, 6):
        configs.append((f"gzip {level}", ZarrConfig(compressor=ZarrCompressor.GZIP, compression_level=level)))
    configs.append(("none", ZarrConfig(compressor=ZarrCompressor.NONE)))
    return configs


def is_default(config: ZarrConfig) -> bool:
    default = ZarrConfig()
    return (ZarrCompressor(config.compressor), config.compression_level, config.shuffle) == (
        ZarrCompressor(default.compressor), default.compression_level, default.shuffle)


def bench_codecs(settings: Settings, plate: dict[FieldKey, np.ndarray]) -> list[CodecRow]:
    data = plate
    size = raw_bytes(data)
    keys = list(data)
    configs = codec_configs()
    writers = {name: ZarrDirect(config) for name, config in configs}
    scratch = Scratch(settings.directory)
    current = [dict(list(data.items())[:1])]  # the warm-up writes one field; the samples, all
    cases, before, after = fresh_folder_cases(
        scratch, {name: (lambda t, w=w: w.write(t / "plate.zarr", current[0])) for name, w in writers.items()}
    )
    interleaved(cases, repeat=0, warmup=1, collect_each=True, before=before, after=after)
    current[0] = data
    write = interleaved(
        cases, repeat=settings.reps(3, 2), warmup=0, collect_each=True, before=before, after=after
    )
    stores = {}
    for name, writer in writers.items():
        stores[name] = scratch.fresh(f"read-{name.replace(' ', '')}") / "plate.zarr"
        writer.write(stores[name], data)
    read = interleaved(
        {name: (lambda w=w, s=stores[name]: w.read(s, keys)) for name, w in writers.items()},
        repeat=settings.reps(5, 3), warmup=1, collect_each=True,
    )
    settings.notes.append(
        f"section 4: {len(data) // FIELDS} wells ({size / 2**20:.0f} MiB) per compressor; "
        "MB/s = 10^6 bytes of raw data per second"
    )
    return [
        CodecRow(name, is_default(config), size / 1e6 / median(write[name]), size / 1e6 / median(read[name]),
                 size / stored_bytes(stores[name]), median(write[name]), median(read[name]))
        for name, config in configs
    ]


# -- report ----------------------------------------------------------------------------------------
def print_codec_table(rows: list[CodecRow]) -> None:
    header = f"{'compressor':24} {'write MB/s':>10} {'read MB/s':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mark = "  <- default (ZarrConfig())" if r.default else ""
        print(f"{r.codec:24} {r.write_mb_s:10.0f} {r.read_mb_s:10.0f} {r.compression_ratio:6.2f}x{mark}")
    print("ratio = raw bytes / stored bytes.")


def _tensorstore() -> tuple[Any, str | None]:
    """The tensorstore module, or None and why not."""
    try:
        import tensorstore
    except ImportError as error:
        return None, f"tensorstore is not installed ({error}); pip install -e '.[bench]'"
    return tensorstore, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 wells and fewer repeats (a smoke run)")
    parser.add_argument("--s3-defaults", action="store_true",
                        help="measure codecs, levels, shuffle and shards on the S3 server (section 6)")
    parser.add_argument("--defaults", action="store_true",
                        help="measure the compressors instead (section 4), to justify ZarrConfig's defaults")
    parser.add_argument("--wells", type=int, default=None,
                        help=f"wells in the plate (default {WELLS}, --quick 4; with --defaults: "
                        f"{DEFAULTS_WELLS}, --quick 1)")
    parser.add_argument("--only", default="1235",
                        help="sections 1 (write), 2-3 (read), 5 (S3) to run, e.g. '1' (default: 1235)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder to write the files in (default: a new folder under the temp dir)")
    args = parser.parse_args(argv)

    if args.defaults or args.s3_defaults:
        wells = args.wells or (1 if args.quick else DEFAULTS_WELLS)
    else:
        wells = args.wells or (4 if args.quick else WELLS)
    ts, missing = _tensorstore()
    directory = Path(tempfile.mkdtemp(prefix="polystore-zarr-bench-", dir=args.dir))
    settings = Settings(quick=args.quick, directory=directory, wells=wells, ts=ts)
    print(
        f"polystore {polystore.__version__}, zarr {version('zarr')}, numcodecs {version('numcodecs')}, "
        f"tensorstore {version('tensorstore')}, numpy {np.__version__}, Python {platform.python_version()}"
    )
    print(f"{platform.platform()}, {cores()}, files in {directory}{' (quick)' if args.quick else ''}")
    if missing:
        print(f"  note: {missing}: the tensorstore rows are skipped")
    load_before = note_load()
    started = time.perf_counter()
    rows: list[Row] = []
    codec_rows: list[CodecRow] = []
    s3_rows: list[S3Row] = []
    try:
        print(f"  generating {wells} wells of synthetic data ...", flush=True)
        plate = make_plate(wells)
        if args.defaults:
            print("  running (4) compressors ...", flush=True)
            codec_rows = bench_codecs(settings, plate)
        elif args.s3_defaults:
            print(f"  running (6) settings on an S3 server on 127.0.0.1 ({wells} wells) ...", flush=True)
            with MotoServer():
                s3_rows = bench_s3_defaults(settings, plate)
        else:
            if "1" in args.only:
                print("  running (1) write ...", flush=True)
                rows.extend(bench_write(settings, plate))
            if "2" in args.only or "3" in args.only:
                print("  running (2) read, (3) one plane against a well ...", flush=True)
                read_rows, plane_rows = bench_read(settings, plate)
                rows.extend(read_rows + plane_rows)
            if "5" in args.only:
                s3_wells = min(wells, 2)
                print(f"  running (5) the plate ({s3_wells} wells) on an S3 server on 127.0.0.1 ...",
                      flush=True)
                with MotoServer():
                    rows.extend(bench_s3(settings, subset(plate, s3_wells)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    for note in settings.notes:
        print(f"  {note}")
    if rows:
        print_table(rows, units=("s", "ms"), per_round=True)
        print("ratio = median ours (left) / median reference (right); 'per round': the lowest and highest\n"
              "ratio of the two run back to back in one round (a wide spread means a noisy machine).")
        if missing:
            print(f"tensorstore rows skipped: {missing}")
        print_verdicts(rows, elapsed, load_before)
        harness.save_figure("zarr", rows, title="zarr plate: polystore / zarr-python (benchmarks/zarr.py)",
                            load_before=load_before)
    if codec_rows:
        print_codec_table(codec_rows)
        print(run_summary(elapsed, load_before))
    if s3_rows:
        print_s3_table(s3_rows)
        print(run_summary(elapsed, load_before))
    if args.json is not None:
        report: dict[str, Any] = {
            "polystore": polystore.__version__,
            "zarr": version("zarr"),
            "numcodecs": version("numcodecs"),
            "tensorstore": version("tensorstore"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "quick": args.quick,
            "wells": wells,
            "seconds": elapsed,
            "load_average_before": load_before,
            "notes": settings.notes,
            "rows": [r.to_json() for r in rows],
            "compressors": [asdict(r) for r in codec_rows],
            "s3_settings": [asdict(r) for r in s3_rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
