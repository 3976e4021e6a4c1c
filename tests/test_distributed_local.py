"""polystore.distributed without a cluster (local threads): what a conversion refuses before it
writes, how it resumes and when it refuses to, what a reader sees of a field not written yet,
source blocks that fail, progress kept per node, relative paths, the formats' checks, and
memory bounded with the default settings (a subprocess measures its own peak).
Conversions on a LocalCluster: tests/test_distributed.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("tifffile")

import dask.array as da
import tifffile
import zarr
from plate_helpers import PlateItem, write_plate_tree

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.location import Location
from polystore.distributed import (
    ChunkingError,
    ConversionError,
    DestinationExistsError,
    convert,
    plan_plate,
)
from polystore.distributed.journal import digest, journal_location
from polystore.distributed.regions import Grid
from polystore.exceptions import (
    CorruptDataError,
    InvalidOptionError,
    InvalidPathError,
    NotADirectoryStorageError,
    UnsupportedDataError,
)
from polystore.plates import PlateNameError

PLANE = (32, 32)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[PlateItem]]:
    items = write_plate_tree(tmp_path / "tiffs", "imagexpress", shape=PLANE, channels=2)
    return tmp_path / "tiffs", items


def store_bytes(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def listed_levels(store: Path) -> list[str]:
    """Every level of every image the plate lists (what a reader such as ome-zarr-py opens)."""
    group = zarr.open_group(store, mode="r")
    levels = []
    for well in group.attrs["ome"]["plate"]["wells"]:
        for image in group[well["path"]].attrs["ome"]["well"]["images"]:
            node = f"{well['path']}/{image['path']}"
            levels += [f"{node}/{d['path']}" for d in group[node].attrs["ome"]["multiscales"][0]["datasets"]]
    return levels


def break_file(path: Path) -> bytes:
    good = path.read_bytes()
    path.write_bytes(b"II*\x00 this is not a TIFF")
    return good


# -- refused before anything is written ------------------------------------------------------------


@pytest.mark.parametrize(("source", "layout", "match"), [
    ("image", {"chunks": (16, 16), "shards": (24, 32)}, "whole multiples"),
    ("image", {"shards": (1536, 1536)}, "chunks= too"),  # the default chunk (1024) does not tile them
    ("image", {"chunks": (1, 16, 16), "shards": (1, 32, 32)}, "2 axes"),
    ("plate", {"chunks": (16, 16), "shards": (32, 32)}, "3 axes"),
    ("plate", {"shards": (2, 16, 16)}, "whole chunks"),  # a plane's chunk is the whole plane
    ("plate", {"chunks": (0, 16, 16)}, "1 or more"),
    ("image", {"chunks": (32, 32), "shards": (64, 64), "region_bytes": 4 * 2**10}, "region_bytes"),
], ids=["not multiples", "shards without chunks", "3-D chunks of a 2-D image", "2-D chunks of a 3-D field",
        "shards of plane chunks", "a zero chunk", "shards larger than a task may hold"])
def test_chunks_and_shards_that_do_not_fit_are_refused_before_anything_is_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], source: str, layout: dict[str, Any], match: str
) -> None:
    data: Any = np.zeros((64, 64), np.uint16) if source == "image" else folder[0]
    with pytest.raises(ChunkingError, match=match):
        convert(data, tmp_path / "out.zarr", **layout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]  # no store, no progress folder


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"convention": "nope"}, PlateNameError, "Unknown naming convention 'nope'"),
    ({"convention": "(?P<well>[A-P"}, PlateNameError, "pattern"),
    ({"axes": "cyx"}, InvalidOptionError, "for one image"),
    ({"channel_names": ["DAPI"]}, InvalidOptionError, "1 names, but .* 2 channels"),
], ids=["unknown convention", "pattern no regex", "axes for a plate", "a name per channel missing"])
def test_plate_options_that_cannot_apply_are_refused_once_before_anything_is_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], options: dict[str, Any], error: type[Exception],
    match: str,
) -> None:
    """An unknown convention was tried file by file (each file 'skipped' with the same error);
    axes= and channel_names= were ignored for a plate without a word."""
    with pytest.raises(error, match=match) as raised:
        convert(folder[0], tmp_path / "out.zarr", **options)
    assert str(raised.value).count("nope") <= 1 and "skipped" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]  # no store, no progress folder


def test_a_plates_channels_take_the_names_given(tmp_path: Path, folder: tuple[Path, list[PlateItem]]) -> None:
    convert(folder[0], tmp_path / "plate.zarr", channel_names=["DAPI", "GFP"])
    group = zarr.open_group(tmp_path / "plate.zarr", mode="r")
    for node in listed_levels(tmp_path / "plate.zarr"):
        image = group[node.rsplit("/", 1)[0]].attrs["ome"]
        assert [c["label"] for c in image["omero"]["channels"]] == ["DAPI", "GFP"]


def test_a_dask_array_of_unknown_size_and_a_thread_count_below_one_are_refused(tmp_path: Path) -> None:
    """A bare ValueError each ('cannot convert float NaN to integer', and the thread pool's
    'max_workers must be greater than 0'); workers=0 ran on one thread per core without a word."""
    image = da.from_array(np.arange(64, dtype=np.uint16).reshape(8, 8), chunks=(4, 8))
    with pytest.raises(UnsupportedDataError, match="compute_chunk_sizes"):
        convert(image[image[:, 0] >= 0], tmp_path / "unknown.zarr")
    for workers in (0, -1):
        with pytest.raises(InvalidOptionError, match=f"workers={workers}: give a whole number"):
            convert(image, tmp_path / "threads.zarr", workers=workers)
    assert list(tmp_path.iterdir()) == []


def test_a_plate_converted_into_its_source_folder_is_one_skipped_store_the_next_time(
    folder: tuple[Path, list[PlateItem]]
) -> None:
    """The next conversion of the folder walked the store key by key (each opened to read its
    first bytes), every chunk and document listed as a skipped file."""
    source, items = folder
    convert(source, source / "plate.zarr")
    plan = plan_plate(source)
    assert [str(s) for s in plan.skipped] == ["plate.zarr/: a zarr store, not image files"]
    assert sum(len(f.planes) for f in plan.fields) == len(items)
    report = convert(source, source / "plate.zarr", overwrite=True)
    assert len(report.written) == len(plan.fields) and len(report.skipped_files) == 1


def test_a_file_where_the_store_goes_is_named_and_nothing_is_made(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]]
) -> None:
    """A bare FileExistsError before, and a progress folder left beside the file that a second
    try took for a stopped conversion."""
    (tmp_path / "out.zarr").write_text("not a store")
    for _attempt in range(2):
        with pytest.raises(NotADirectoryStorageError, match="is a file, not a zarr store"):
            convert(folder[0], tmp_path / "out.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "tiffs"]
    assert (tmp_path / "out.zarr").read_text() == "not a store"


def test_a_source_inside_the_destination_is_refused_and_kept(tmp_path: Path) -> None:
    """overwrite=True deleted the store, and the source files in it, before a field was read
    (every field then failed 'No such file'); the same store as source and destination too."""
    items = write_plate_tree(tmp_path / "plate.zarr" / "tiffs", "imagexpress", shape=PLANE)
    tifffile.imwrite(tmp_path / "plate.zarr" / "big.tif", np.ones(PLANE, np.uint16))
    before = store_bytes(tmp_path)
    inside = tmp_path / "plate.zarr"
    for source in (inside / "tiffs", inside, [str(inside / "tiffs" / items[0].path)], inside / "big.tif"):
        with pytest.raises(InvalidPathError, match="is inside the destination"):
            convert(source, tmp_path / "plate.zarr", overwrite=True)
    assert store_bytes(tmp_path) == before  # and no progress folder beside it


def test_an_existing_destination_is_refused_unless_overwritten(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]]
) -> None:
    source, _items = folder
    convert(source, tmp_path / "plate.zarr")
    with pytest.raises(DestinationExistsError, match="overwrite"):
        convert(source, tmp_path / "plate.zarr")
    with pytest.raises(DestinationExistsError, match="Nothing to resume"):
        convert(source, tmp_path / "plate.zarr", resume=True)
    convert(source, tmp_path / "plate.zarr", overwrite=True, levels=2)
    assert len(listed_levels(tmp_path / "plate.zarr")) == 2 * 6



READS: list[str] = []


class ReadLog:
    """A backend's key I/O, logging the keys read to READS (the store's real files underneath)."""

    def __init__(self, keys: Any) -> None:
        self._keys = keys

    def get(self, key: str) -> bytes | None:
        READS.append(key)
        return self._keys.get(key)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._keys, name)


class ReadLoggingBackend(ZarrBackend):
    """The zarr backend, its metadata documents read through :class:`ReadLog` (a conversion
    makes its own backend of this class from its config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keys = self.documents.keys
        self.documents.keys = lambda location: ReadLog(keys(location))  # type: ignore[method-assign]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_new_plate_is_made_from_its_plan_without_looking_up_its_groups(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], overwrite: bool
) -> None:
    """A conversion not resumed writes into an empty store (an existing one is refused or
    removed first): the rows' and wells' groups are made from the plan, not looked for field
    by field (a request each on object storage; the store itself is looked at once, to see
    whether it exists)."""
    source, _items = folder
    if overwrite:
        convert(source, tmp_path / "plate.zarr", levels=2)
    READS.clear()
    convert(source, tmp_path / "plate.zarr", backend=ReadLoggingBackend(), levels=2, overwrite=overwrite)
    assert READS, "the reads were not logged"
    levels = [level.split("/") for level in listed_levels(tmp_path / "plate.zarr")]
    groups = {row for row, *_ in levels} | {f"{row}/{column}" for row, column, *_ in levels}
    looked_up = sorted({key.rpartition("/")[0] for key in READS} & groups)
    assert not looked_up, f"the groups of {looked_up} were read"
    assert len(listed_levels(tmp_path / "plate.zarr")) == 2 * 6

# -- resume ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["a well's files removed", "levels 3 -> 2"])
def test_a_resume_with_another_plan_is_refused(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], change: str
) -> None:
    source, _items = folder
    break_file(source / "P1_C12_s2_w1.tif")
    with pytest.raises(ConversionError):
        convert(source, tmp_path / "plate.zarr", levels=3)
    levels = 3
    if change.startswith("a well"):
        for path in source.glob("P1_C12_*"):
            path.unlink()
    else:
        write_plate_tree(source, "imagexpress", shape=PLANE, channels=2)  # the file fixed too
        levels = 2
    with pytest.raises(DestinationExistsError, match="another plan") as refused:
        convert(source, tmp_path / "plate.zarr", levels=levels, resume=True)
    said = "C/12/0" if change.startswith("a well") else "3 -> 2"
    assert said in str(refused.value)
    assert "overwrite" in str(refused.value)
    convert(source, tmp_path / "plate.zarr", levels=levels, overwrite=True)
    convert(source, tmp_path / "reference" / "plate.zarr", levels=levels)
    assert store_bytes(tmp_path / "plate.zarr") == store_bytes(tmp_path / "reference" / "plate.zarr")


def test_a_failed_field_is_listed_but_marked_not_written(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]]
) -> None:
    source, _items = folder
    good = break_file(source / "P1_B03_s1_w2.tif")
    with pytest.raises(ConversionError):
        convert(source, tmp_path / "plate.zarr", levels=2)
    store = tmp_path / "plate.zarr"
    assert "B/03/0/0" in listed_levels(store)  # the plate is valid NGFF at every moment
    attributes = zarr.open_group(store / "B" / "03" / "0", mode="r").attrs.asdict()
    assert attributes["polystore"] == {"incomplete": True, "conversion": ""}  # not zeros as data
    assert "polystore" not in zarr.open_group(store / "A" / "01" / "0", mode="r").attrs.asdict()
    plates = ZarrBackend().plates  # polystore's plate writer takes it as damaged, to write again
    with pytest.raises(CorruptDataError, match=r"not converted yet.*--resume"):
        plates.open_field(Location(str(store), "B/03/0"))
    assert plates.open_field(Location(str(store), "A/01/0")) is not None
    # the written fields' done-markers: files of one folder (a folder per field cost more to
    # make and remove than the markers), the failed field's not among them
    done = Path(journal_location(str(store))) / "store" / "done"
    markers = sorted(path.name.rpartition(".")[0] for path in done.iterdir())
    assert all(path.is_file() for path in done.iterdir())
    assert "A%2F01%2F0" in markers and "B%2F03%2F0" not in markers
    (source / "P1_B03_s1_w2.tif").write_bytes(good)
    assert convert(source, store, levels=2, resume=True).written == ["B/03/0"]
    assert "polystore" not in zarr.open_group(store / "B" / "03" / "0", mode="r").attrs.asdict()


KILLED_JOB = """
import sys
from distributed_helpers import KILL_AT, RECORD, RecordingBackend
from polystore.distributed import convert

if __name__ == "__main__":
    source, destination, record = sys.argv[1:]
    backend = RecordingBackend(storage_options={RECORD: record, KILL_AT: "write:14"})
    convert(source, destination, backend=backend, levels=2, workers=1)
"""


def marked_fields(store: Path) -> list[str]:
    """The field images of ``store`` that say their pixels are not all written."""
    group = zarr.open_group(store, mode="r")
    return [field for field in (level.rpartition("/")[0] for level in listed_levels(store)[::2])
            if group[field].attrs.get("polystore", {}).get("incomplete")]


@pytest.fixture
def killed_conversion(tmp_path: Path, folder: tuple[Path, list[PlateItem]]) -> tuple[Path, Path]:
    """(source folder, plate) of a conversion SIGKILLed half way: one thread, 4 chunks a field
    (2 channels x 2 levels), killed writing the 14th chunk (some fields whole, one part-written,
    some not begun)."""
    source, _items = folder
    (tmp_path / "job.py").write_text(textwrap.dedent(KILLED_JOB))
    (tmp_path / "writes").mkdir()
    store = tmp_path / "plate.zarr"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    command = [sys.executable, str(tmp_path / "job.py"), str(source), str(store), str(tmp_path / "writes")]
    job = subprocess.run(command, env=environment, capture_output=True, timeout=120)
    assert job.returncode == -9, job.stderr.decode()
    return source, store


def test_repair_leaves_what_a_killed_conversion_did_not_write_marked(
    tmp_path: Path, killed_conversion: tuple[Path, Path]
) -> None:
    """repair made the fields a killed conversion had not written whole: valid-looking zeros."""
    from polystore.backends.zarr.repair import repair_plate

    source, store = killed_conversion
    marked = marked_fields(store)
    assert 0 < len(marked) < 6, marked
    before = store_bytes(store)
    report = repair_plate(str(store))
    assert marked_fields(store) == marked
    assert store_bytes(store) == before  # still marked, still listed: nothing claimed as data
    assert report.unconverted == [f"{store}/{field}" for field in marked]
    assert not report.ok and f"polystore convert SOURCE {store} --resume" in str(report)
    command = [sys.executable, "-m", "polystore", "repair", str(store)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "NOT CONVERTED YET" in result.stdout, result.stderr
    assert store_bytes(store) == before
    assert len(convert(source, store, levels=2, resume=True).written) == len(marked)
    convert(source, tmp_path / "reference" / "plate.zarr", levels=2)
    assert store_bytes(store) == store_bytes(tmp_path / "reference" / "plate.zarr")


def test_loading_an_image_a_killed_conversion_left_says_to_resume(
    killed_conversion: tuple[Path, Path]
) -> None:
    """Such a field loaded as zeros (or, part-written, as some channels and zeros)."""
    _source, store = killed_conversion
    marked = marked_fields(store)
    assert marked
    backend = ZarrBackend()
    for field in marked:
        for lazy in (False, True):
            with pytest.raises(CorruptDataError, match=rf"{field}' is not converted yet.*{store} --resume"):
                backend.load(str(store / field), lazy=lazy)
        with pytest.raises(CorruptDataError, match="not converted yet"):
            backend.load(str(store / field), level=1)
    whole = next(level.rpartition("/")[0] for level in listed_levels(store)
                 if level.rpartition("/")[0] not in marked)
    assert backend.load(str(store / whole)).max() > 0


def test_a_resume_never_lists_a_level_that_is_not_there(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every moment a resume removes something, a reader opening every level the plate lists finds it."""
    import shutil

    from polystore.backends.zarr import location

    source, _items = folder
    good = break_file(source / "P1_B03_s1_w2.tif")
    store = tmp_path / "plate.zarr"
    with pytest.raises(ConversionError):
        convert(source, store, levels=2)
    (source / "P1_B03_s1_w2.tif").write_bytes(good)
    missing: list[str] = []

    def look() -> None:
        for level in listed_levels(store):
            if not (store / level / "zarr.json").exists():
                missing.append(level)

    real_rmtree, real_delete = shutil.rmtree, location.LocalKeys.delete

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        real_rmtree(path, *args, **kwargs)
        look()

    def delete(self: Any, key: str) -> None:
        real_delete(self, key)
        look()

    monkeypatch.setattr(shutil, "rmtree", rmtree)  # observed, not replaced: each still removes
    monkeypatch.setattr(location.LocalKeys, "delete", delete)
    assert convert(source, store, levels=2, resume=True).written == ["B/03/0"]
    assert missing == []


def test_a_conversion_stopped_by_an_earlier_version_resumes_from_its_markers(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]]
) -> None:
    """Earlier versions marked a task done as done/<task>/<digest> (A/01/0/<digest>): a resume
    under this version skips those fields as it skips its own markers' fields."""
    source, _items = folder
    good = break_file(source / "P1_B03_s1_w2.tif")
    store = tmp_path / "plate.zarr"
    with pytest.raises(ConversionError):
        convert(source, store, levels=2)
    done = Path(journal_location(str(store))) / "store" / "done"
    for marker in list(done.iterdir()):  # as an earlier version left them
        task, _, token = marker.name.rpartition(".")
        old = done / unquote(task) / token
        old.parent.mkdir(parents=True, exist_ok=True)
        marker.rename(old)
    (source / "P1_B03_s1_w2.tif").write_bytes(good)
    report = convert(source, store, levels=2, resume=True)
    assert report.written == ["B/03/0"] and len(report.already_done) == 5
    assert not Path(journal_location(str(store))).exists()


def test_a_fields_digest_is_the_one_earlier_versions_marked(folder: tuple[Path, list[PlateItem]]) -> None:
    """A done-marker holds the field's digest, which earlier versions made from
    ``dataclasses.asdict`` of the field: a resume across versions needs the same digest."""
    source, _items = folder
    plan = plan_plate(source)
    options = ({"zarr_format": 3, "chunks": None}, False, False)
    for field in plan.fields:
        as_dict = dataclasses.asdict(field)
        earlier = digest(plan.axes, plan.shape, plan.dtype, plan.channel_names, options, as_dict)
        assert plan.field_digest(field, options) == earlier


def test_the_same_folder_spelled_otherwise_resumes(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _items = folder
    good = break_file(source / "P1_B03_s1_w2.tif")
    with pytest.raises(ConversionError):
        convert(source, tmp_path / "plate.zarr")
    (source / "P1_B03_s1_w2.tif").write_bytes(good)
    monkeypatch.chdir(tmp_path)
    report = convert("./tiffs/", "plate.zarr", resume=True)
    assert report.written == ["B/03/0"] and len(report.already_done) == 5


# -- a large image's source blocks, and progress per node ------------------------------------------------


def _fails_at_one_chunk(block: np.ndarray, flag: str = "", block_info: Any = None) -> np.ndarray:
    if block_info[None]["chunk-location"] == (1, 1) and Path(flag).exists():
        raise OSError("scanner file unreadable")
    return block


def flaky_source(flag: Path) -> Any:
    """512 x 512 ones in 256 x 256 chunks, whose chunk (1, 1) fails while ``flag`` exists
    (the same dask graph either way: a resume sees the same source)."""
    ones = da.ones((512, 512), np.uint16, chunks=(256, 256))
    return ones.map_blocks(_fails_at_one_chunk, flag=str(flag), dtype=np.uint16)


IMAGE = {"chunks": (128, 128), "levels": 2, "region_bytes": 2**15}
"""Blocks of one 128 x 128 chunk: 16 at level 0, 4 at level 1."""


def test_a_source_block_that_fails_is_that_blocks_failure(tmp_path: Path) -> None:
    flag = tmp_path / "unreadable"
    flag.touch()
    store = tmp_path / "s.zarr"
    with pytest.raises(ConversionError) as raised:
        convert(flaky_source(flag), store, **IMAGE)
    failures = {f.path: f.error for f in raised.value.failures}
    # the four blocks the failing chunk feeds, with its error, then the level-1 block they make
    assert list(failures) == ["0/256_256", "0/256_384", "0/384_256", "0/384_384", "1/128_128"]
    assert all(isinstance(failures[name], OSError) for name in list(failures)[:4])
    assert len(raised.value.report.written) == 12 + 3
    flag.unlink()
    report = convert(flaky_source(flag), store, resume=True, **IMAGE)
    assert report.written == list(failures) and len(report.already_done) == 15
    assert np.array_equal(zarr.open_array(store / "1", mode="r")[...], np.ones((256, 256), np.uint16))


def test_conversions_into_two_nodes_keep_their_own_progress(tmp_path: Path) -> None:
    flag = tmp_path / "unreadable"
    flag.touch()
    store = tmp_path / "s.zarr"
    with pytest.raises(ConversionError):
        convert(flaky_source(flag), store / "a", **IMAGE)
    # another image of the same store is not held up by a's stopped conversion, and removes
    # only its own progress when it finishes
    convert(np.ones((64, 64), np.uint16), store / "b")
    flag.unlink()
    report = convert(flaky_source(flag), store / "a", resume=True, **IMAGE)
    assert len(report.written) == 5 and len(report.already_done) == 15
    assert not Path(journal_location(str(store))).exists()


def test_block_arithmetic_finds_what_a_scan_finds() -> None:
    """The blocks of a level above that a block is computed from, found by index arithmetic."""
    for shape, block in [((37, 53), (8, 16)), ((5, 64, 64), (2, 16, 32)), ((1, 1), (1, 1))]:
        grid = Grid(shape, block)
        for region in (grid.region(index) for index in grid.indices()):
            scanned = [grid.region(i) for i in grid.indices()
                       if all(a < d and c < b for (a, b), (c, d) in zip(region, grid.region(i), strict=True))]
            assert [grid.region(i) for i in grid.overlapping(region)] == scanned
        wide = tuple((0, n) for n in shape)
        assert list(grid.overlapping(wide)) == list(grid.indices())
        assert len(list(itertools.islice(grid.indices(), 3))) == min(3, len(grid))


# -- sources through polystore's formats -------------------------------------------------------------


def test_files_are_read_through_the_formats_checks(
    tmp_path: Path, folder: tuple[Path, list[PlateItem]]
) -> None:
    source, _items = folder
    empty = source / "P1_B03_s1_w1.tif"
    with tifffile.TiffWriter(empty) as writer:  # a TIFF without any page
        del writer
    with pytest.raises(ConversionError) as raised:
        convert(source, tmp_path / "plate.zarr")
    [failure] = raised.value.failures
    assert failure.path == f"B/03/0 ({empty})" and isinstance(failure.error, CorruptDataError)
    # a .npy whose header announces more than the file holds
    forged = tmp_path / "forged.npy"
    np.save(forged, np.zeros((64, 64), np.uint16))
    forged.write_bytes(forged.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match="cut short"):
        convert(str(forged), tmp_path / "forged.zarr")


# -- memory ---------------------------------------------------------------------------------------------

MEASURE = """
import re, sys
import numpy as np
from polystore.distributed import convert

def peak():  # VmHWM starts anew at exec; ru_maxrss would carry the test runner's peak
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read()).group(1)) * 1024

if __name__ == "__main__":
    source, small, destination = sys.argv[1:]
    convert(small, destination + ".warm.zarr", workers=1)  # imports and first use, not the image
    before = peak()
    convert(source, destination, workers=1, levels=2)
    print(before, peak())
"""


def test_an_image_file_is_converted_with_bounded_memory_by_default(tmp_path: Path) -> None:
    """A TIFF many times the default region (32 MiB) converts with the default settings in a
    process whose peak grows by a few regions (about 4: a block, the blocks above a level's
    block, the pyramid's arithmetic), not by the image: read region by region, written in tiles."""
    shape = (8192, 32768)  # 512 MiB of uint16
    image = np.broadcast_to((np.arange(shape[1], dtype=np.uint16) % 4093)[None, :], shape)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(512, 512), compression="zlib",
                     compressionargs={"level": 1})
    tifffile.imwrite(tmp_path / "small.tif", np.ones((2048, 2048), np.uint16))
    (tmp_path / "measure.py").write_text(textwrap.dedent(MEASURE))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(tmp_path / "measure.py"), str(tmp_path / "big.tif"),
                           str(tmp_path / "small.tif"), str(tmp_path / "big.zarr")],
                          capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    growth = after - before
    assert growth < 192 * 2**20, f"peak grew {growth / 2**20:.0f} MiB, image {image.nbytes / 2**20:.0f} MiB"
    level = zarr.open_array(tmp_path / "big.zarr" / "0", mode="r")
    assert level.chunks == (1024, 1024)  # tiles, not the whole plane
    assert np.array_equal(level[4000:4100, 29000:29500], image[4000:4100, 29000:29500])


@pytest.mark.parametrize("kind", ["imagej", "ome"])
def test_a_hyperstack_file_converts_in_the_axes_and_sizes_it_says_it_has(tmp_path: Path, kind: str) -> None:
    # ImageJ's (and this OME-TIFF's) ZCYX: a 4-D array without axes would be taken for CZYX
    stack = np.random.default_rng(3).integers(0, 4000, (5, 2, 16, 20), dtype=np.uint16)
    source = tmp_path / ("stack.tif" if kind == "imagej" else "stack.ome.tif")
    if kind == "imagej":  # calibrated: 0.5 um pixels, 1.5 um between slices
        tifffile.imwrite(source, stack, imagej=True, resolution=(2.0, 2.0),
                         metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    else:
        tifffile.imwrite(source, stack, ome=True, metadata={
            "axes": "ZCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 1.5,
            "Channel": {"Name": ["DAPI", "GFP"]}})
    convert(str(source), str(tmp_path / "stack.zarr"), workers=1, region_bytes=2048)
    image = zarr.open_group(tmp_path / "stack.zarr", mode="r")
    ome = image.attrs["ome"]
    multiscale = ome["multiscales"][0]
    assert [(axis["name"], axis.get("unit")) for axis in multiscale["axes"]] == [
        ("c", None), ("z", "micrometer"), ("y", "micrometer"), ("x", "micrometer")]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.5, 0.5, 0.5]
    names = [channel["label"] for channel in ome["omero"]["channels"]]
    assert names == (["DAPI", "GFP"] if kind == "ome" else ["c0", "c1"])  # ImageJ's carry no names
    np.testing.assert_array_equal(image["0"][...], np.swapaxes(stack, 0, 1))


def test_an_rgb_picture_converts_as_its_colour_channels(tmp_path: Path) -> None:
    picture = np.random.default_rng(4).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "slide.tif", picture, photometric="rgb")  # YXS: samples last
    convert(str(tmp_path / "slide.tif"), str(tmp_path / "slide.zarr"), workers=1)
    image = zarr.open_group(tmp_path / "slide.zarr", mode="r")
    ome = image.attrs["ome"]
    assert [axis["name"] for axis in ome["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert [(c["label"], c["color"]) for c in ome["omero"]["channels"]] == [
        ("R", "FF0000"), ("G", "00FF00"), ("B", "0000FF")]  # what napari reopens as one RGB layer
    np.testing.assert_array_equal(image["0"][...], np.moveaxis(picture, -1, 0))
