"""``polystore convert``: a folder of plate images, named by any built-in convention, into an
OME-Zarr plate (validated by ome-zarr-models, read back by ome-zarr-py with the right wells,
fields and channels), on local threads or a LocalCluster (``--workers 2``); mixed and
unrecognised layouts refused; skipped files reported; the single-file convert kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("ome_zarr")

import tifffile
import zarr
from ngff_helpers import ngff_models
from ome_zarr.io import parse_url
from ome_zarr.reader import Plate, Reader
from plate_helpers import CONVENTIONS, PlateItem, write_plate_tree

from polystore.cli import main

WELLS = ("A01", "B03", "C12")


def polystore(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polystore", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def check_plate(store: Path, items: list[PlateItem]) -> None:
    """ome-zarr-models validates it; ome-zarr-py finds every well, field and channel in place."""
    group = zarr.open_group(store, mode="r")
    ngff_models(3).HCS.from_zarr(group)
    node = next(iter(Reader(parse_url(str(store)))()))
    plate = next(spec for spec in node.specs if isinstance(spec, Plate))
    assert plate.well_paths == ["A/01", "B/03", "C/12"]
    channels = {i.components.channel for i in items if i.components.channel is not None}
    if channels:  # named as the instrument names them (w1, ch1, C01, d0)
        assert len(node.metadata["channel_names"]) == len(channels)
    grid = np.asarray(node.data[0])  # field 0 of each well, tiled by row and column
    height, width = grid.shape[-2] // 3, grid.shape[-1] // 3
    for item in items:
        c = item.components
        well = Reader(parse_url(str(store / c.row / c.column)))
        fields = np.asarray(next(iter(well())).data[0])  # the well's fields side by side
        tile = fields[..., c.field * 4 : (c.field + 1) * 4]
        index = (0,) * (tile.ndim - 2)
        if c.channel is not None:
            position = {"t": c.t or 0, "c": c.channel, "z": c.z or 0}
            image = group[f"{c.row}/{c.column}/{c.field}"]
            axes = [a["name"] for a in image.attrs["ome"]["multiscales"][0]["axes"]]
            index = tuple(position[a] for a in axes[:-2])
        assert np.all(tile[index] == item.value), (item.path, index)
        if c.field == 0:
            row, column = WELLS.index(c.well), WELLS.index(c.well)
            on_grid = grid[index][row * height : (row + 1) * height, column * width : (column + 1) * width]
            assert np.all(on_grid == item.value)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_each_convention_converts_to_a_plate(
    tmp_path: Path, convention: str, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_plate_tree(tmp_path / "tiffs", convention)
    assert main(["convert", str(tmp_path / "tiffs"), str(tmp_path / "plate.zarr")]) == 0
    assert "6 fields written of 6" in capsys.readouterr().out
    check_plate(tmp_path / "plate.zarr", items)


def test_a_local_cluster_converts_a_folder_with_skipped_files_reported(tmp_path: Path) -> None:
    items = write_plate_tree(tmp_path / "tiffs", "imagexpress", z=2)
    tifffile.imwrite(tmp_path / "tiffs" / "P1_A01_s1_w1_z1_thumb.tif", np.zeros((2, 2), np.uint16))
    (tmp_path / "tiffs" / "P1.HTD").write_text("plate description")
    done = polystore("convert", "tiffs", "plate.zarr", "--workers", "2", "--levels", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 fields written of 6" in done.stdout and "files named as imagexpress" in done.stdout
    assert "P1.HTD: not an image file" in done.stdout and "thumbnail" in done.stdout
    group = zarr.open_group(tmp_path / "plate.zarr", mode="r")
    assert len(group["A/01/0"].attrs["ome"]["multiscales"][0]["datasets"]) == 2
    for item in items:
        c = item.components
        assert np.all(group[f"{c.row}/{c.column}/{c.field}/0"][c.channel, c.z] == item.value)


def test_mixed_and_unrecognised_layouts_are_refused(tmp_path: Path) -> None:
    write_plate_tree(tmp_path / "mixed", "imagexpress")
    write_plate_tree(tmp_path / "mixed" / "more", "yokogawa", wells=("D04",))
    refused = polystore("convert", "mixed", "plate.zarr", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "mixes file layouts" in refused.stderr
    assert "imagexpress" in refused.stderr and "yokogawa" in refused.stderr
    assert not (tmp_path / "plate.zarr").exists()
    (tmp_path / "odd").mkdir()
    tifffile.imwrite(tmp_path / "odd" / "cells_day3.tif", np.zeros((4, 4), np.uint16))
    refused = polystore("convert", "odd", "plate.zarr", cwd=tmp_path)
    assert refused.returncode == 1 and "No plate layout recognised" in refused.stderr
    assert "--convention" in refused.stderr
    # a pattern of the user's reads it
    done = polystore("convert", "odd", "plate.zarr", "--pattern", r"cells_day(?P<t>\d)", cwd=tmp_path)
    assert done.returncode == 1 and "well" in done.stderr  # a pattern must name the well


def test_a_pattern_names_the_wells(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    for well, value in (("B02", 7), ("C05", 9)):
        tifffile.imwrite(tmp_path / "odd" / f"scan-{well}-ch2.tif", np.full((4, 4), value, np.uint16))
    code = main(["convert", str(tmp_path / "odd"), str(tmp_path / "plate.zarr"),
                 "--pattern", r"scan-(?P<well>[A-P]\d\d)-ch(?P<channel>\d)"])
    assert code == 0
    group = zarr.open_group(tmp_path / "plate.zarr", mode="r")
    assert int(group["B/02/0/0"][1, 0, 0]) == 7 and int(group["C/05/0/0"][1, 0, 0]) == 9


def test_one_file_into_a_zarr_plate_by_name_is_not_a_tiff_in_a_folder(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "x.tif", np.full((8, 8), 5, np.uint16))
    assert main(["convert", str(tmp_path / "x.tif"), str(tmp_path / "plate.zarr" / "A01_s1_w1.tif")]) == 0
    assert not (tmp_path / "plate.zarr" / "A01_s1_w1.tif").exists()
    assert int(zarr.open_group(tmp_path / "plate.zarr", mode="r")["A/01/0/0"][0, 0, 0]) == 5


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path) -> None:
    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    assert polystore("convert", "tiffs", "plate.zarr", cwd=tmp_path).returncode == 0
    again = polystore("convert", "tiffs", "plate.zarr", cwd=tmp_path)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    resumed = polystore("convert", "tiffs", "plate.zarr", "--resume", cwd=tmp_path)
    assert resumed.returncode == 1 and "Nothing to resume" in resumed.stderr


def test_an_object_store_url_that_names_no_store_is_refused(tmp_path: Path) -> None:
    """Not written into a local ./images.zarr under a node named after the URL (and reported done)."""
    tifffile.imwrite(tmp_path / "x.tif", np.full((8, 8), 5, np.uint16))
    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    for source, destination in (("x.tif", "s3://bucket1/x.tif"), ("tiffs", "s3://bucket1/plate")):
        refused = polystore("convert", source, destination, cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout
        assert "component ending in .zarr" in refused.stderr and refused.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs", "x.tif"]


MEASURE_CLI = """
import re
import sys

from polystore.cli import main


def peak() -> int:  # VmHWM starts anew at exec (ru_maxrss would carry the parent's peak)
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s*(\\d+) kB", status.read()).group(1)) * 1024

if __name__ == "__main__":
    source, small, destination = sys.argv[1:]
    assert main(["convert", small, destination + ".warm.zarr"]) == 0  # imports and first use
    before = peak()
    assert main(["convert", source, destination]) == 0
    print(before, peak())
"""


def test_one_large_tiff_converts_with_bounded_memory(tmp_path: Path) -> None:
    """`polystore convert big.tif out.zarr`, no options: read region by region, as a folder is;
    it was loaded whole (the process's peak grew by the image)."""
    shape = (8192, 32768)  # 512 MiB of uint16, a few MiB on disk
    image = np.broadcast_to((np.arange(shape[1], dtype=np.uint16) % 4093)[None, :], shape)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(512, 512), compression="zlib",
                     compressionargs={"level": 1})
    tifffile.imwrite(tmp_path / "small.tif", np.ones((2048, 2048), np.uint16))
    (tmp_path / "measure.py").write_text(textwrap.dedent(MEASURE_CLI))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(tmp_path / "measure.py"), str(tmp_path / "big.tif"),
                           str(tmp_path / "small.tif"), str(tmp_path / "big.zarr")],
                          capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split()[-2:])
    growth = after - before
    assert growth < 192 * 2**20, f"peak grew {growth / 2**20:.0f} MiB, image {image.nbytes / 2**20:.0f} MiB"
    group = zarr.open_group(tmp_path / "big.zarr", mode="r")
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
    assert np.array_equal(group["0"][4000:4100, 29000:29500], image[4000:4100, 29000:29500])


def test_one_image_file_into_a_zarr_image_then_refused_unless_overwritten(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "x.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    assert main(["convert", str(tmp_path / "x.tif"), str(tmp_path / "x.zarr")]) == 0
    assert np.array_equal(zarr.open_group(tmp_path / "x.zarr", mode="r")["0"][:], np.arange(64).reshape(8, 8))
    again = polystore("convert", "x.tif", "x.zarr", cwd=tmp_path)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert polystore("convert", "x.tif", "x.zarr", "--overwrite", cwd=tmp_path).returncode == 0


def test_counts_below_one_are_refused_before_anything_runs(tmp_path: Path) -> None:
    """``--workers 0`` ran on threads without a word, ``--threads -1`` ended in a bare ValueError
    from the thread pool, and ``--workers -2`` waited forever for a cluster of no workers."""
    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    for option, value in (("--workers", "0"), ("--threads", "0"), ("--threads", "-1"), ("--workers", "-2"),
                          ("--levels", "0")):
        refused = polystore("convert", "tiffs", "plate.zarr", option, value, cwd=tmp_path)
        assert refused.returncode == 2, (option, value, refused.stderr)
        assert f"argument {option}: '{value}': give a whole number of at least 1" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]


def test_an_unknown_convention_or_a_bad_pattern_is_refused_as_such(tmp_path: Path) -> None:
    """Not read as a convention's name file by file ("No plate layout recognised in tiffs: ...:
    Unknown naming convention '('", once per file shown): a --pattern is a pattern."""
    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    for option, value, message in (("--convention", "nope", "Unknown naming convention 'nope'"),
                                   ("--pattern", "(", "is not a regular expression"),
                                   ("--pattern", r"scan-(\d+)", "needs a named group 'well'")):
        refused = polystore("convert", "tiffs", "plate.zarr", option, value, cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr.count(message) == 1 and "No plate layout" not in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]


def test_options_a_folder_does_not_take_are_refused_not_ignored(tmp_path: Path) -> None:
    """A plate's axes come from its files' names: ``--axes tczyx`` wrote cyx fields without a word
    (and ``--imagej``, a TIFF's option, was dropped the same way)."""
    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    for option in (("--axes", "tczyx"), ("--imagej",)):
        refused = polystore("convert", "tiffs", "plate.zarr", *option, cwd=tmp_path)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"{option[0]} does not apply to a folder" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]


def test_a_scheduler_that_cannot_be_reached_is_named_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed address was a bare ValueError ('missing port number'), one nobody answers
    'Timed out trying to connect' and no more."""
    import dask

    write_plate_tree(tmp_path / "tiffs", "imagexpress")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        for address in ("notanaddress", "tcp://127.0.0.1:1"):
            assert main(["convert", str(tmp_path / "tiffs"), str(tmp_path / "plate.zarr"), "--scheduler",
                         address]) == 1
            error = capsys.readouterr().err
            assert f"Cannot connect to the dask scheduler at '{address}'" in error, error
            assert "--workers N" in error and "ValueError" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]
