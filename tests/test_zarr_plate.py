"""ZarrBackend HCS plates: OME-NGFF plate and well metadata kept right as wells arrive (from
field paths, pipeline file names, batches, several processes at once, 1536-well plates),
checked by ome-zarr-models and read by ome-zarr-py's reader; one plane read reads one chunk.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr_models")

import zarr
from ngff_helpers import ngff_models, ome_section

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.addresses import address_of
from polystore.backends.zarr.config import ZarrConfig
from polystore.exceptions import BatchError, CorruptDataError, UnsupportedDataError
from polystore.plates import row_sort_key

ROWS_24 = ["A", "B", "C", "D"]
COLUMNS_24 = ["01", "02", "03", "04", "05", "06"]
WELLS_24 = [(r, c) for r in ROWS_24 for c in COLUMNS_24]




def plate_meta(store: Path) -> dict[str, Any]:
    plate: dict[str, Any] = ome_section(zarr.open_group(store, mode="r"))["plate"]
    return plate


def well_fields(store: Path, well: str) -> list[str]:
    return [image["path"] for image in ome_section(zarr.open_group(store / well, mode="r"))["well"]["images"]]


def assert_plate_consistent(store: Path, wells: list[tuple[str, str]]) -> None:
    """Rows, columns and wells listed exactly once, sorted, with indices that point at them."""
    plate = plate_meta(store)
    rows = [r["name"] for r in plate["rows"]]
    columns = [c["name"] for c in plate["columns"]]
    assert rows == sorted({r for r, _ in wells}, key=row_sort_key)
    assert columns == sorted({c for _, c in wells}, key=int)
    listed = [(w["path"], rows[w["rowIndex"]], columns[w["columnIndex"]]) for w in plate["wells"]]
    assert sorted(listed) == sorted((f"{r}/{c}", r, c) for r, c in wells)


def well_value(row: str, column: str, field: int, channel: int) -> int:
    """A distinct pixel value per (well, field, channel)."""
    return (ord(row) - ord("A")) * 1000 + int(column) * 10 + field * 5 + channel


# -- field paths -------------------------------------------------------------------------------
@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_field_paths_keep_plate_and_well_metadata_right_as_wells_arrive(
    tmp_path: Path, zarr_format: int
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    store = tmp_path / "plate.zarr"
    arrived: list[tuple[str, str]] = []
    arrivals = [("B", "03", 0), ("A", "10", 0), ("B", "03", 1), ("A", "02", 0), ("C", "10", 2)]
    for row, column, field in arrivals:
        image = np.full((2, 16, 16), well_value(row, column, field, 0), dtype=np.uint16)
        backend.save(image, f"plate.zarr/{row}/{column}/{field}")
        if (row, column) not in arrived:
            arrived.append((row, column))
        assert_plate_consistent(store, arrived)  # right after every arrival
        assert str(field) in well_fields(store, f"{row}/{column}")

    plate = plate_meta(store)
    assert [r["name"] for r in plate["rows"]] == ["A", "B", "C"]
    assert [c["name"] for c in plate["columns"]] == ["02", "03", "10"]  # numeric order, kept as written
    assert plate["field_count"] == 3 and plate["name"] == "plate"
    assert plate["version"] == ("0.5" if zarr_format == 3 else "0.4")
    assert well_fields(store, "B/03") == ["0", "1"]
    assert well_fields(store, "C/10") == ["2"]

    models = ngff_models(zarr_format)
    group = zarr.open_group(store, mode="r")
    models.HCS.from_zarr(group)  # raises if the plate metadata is invalid
    models.Well.from_zarr(group["B/03"])
    models.Image.from_zarr(group["B/03/1"])
    expected = np.full((2, 16, 16), well_value("B", "03", 1, 0))
    np.testing.assert_array_equal(backend.load("plate.zarr/B/03/1"), expected)
    assert backend.list_files("plate.zarr/B/03") == ["plate.zarr/B/03/0", "plate.zarr/B/03/1"]

    backend.save(np.zeros((2, 16, 16), np.uint16), "plate.zarr/B/03/0")  # saving again lists nothing twice
    assert well_fields(store, "B/03") == ["0", "1"]
    assert len(plate_meta(store)["wells"]) == 4


# -- pipeline file names -------------------------------------------------------------------------
def test_file_names_in_a_batch_become_field_images(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    store = tmp_path / "plate.zarr"
    names, planes = [], []
    for site in (1, 2):
        for wavelength in (2, 1, 3):  # out of order
            names.append(f"plate.zarr/A01_s{site}_w{wavelength}.tif")
            planes.append(np.full((8, 12), well_value("A", "01", site - 1, wavelength - 1), np.uint16))
    backend.save_batch(planes, names)

    assert sorted(zarr.open_group(store / "A/01", mode="r").group_keys()) == ["0", "1"]
    for site in (1, 2):
        field = backend.load(f"plate.zarr/A/01/{site - 1}")
        assert field.shape == (3, 8, 12)
        assert field[:, 0, 0].tolist() == [well_value("A", "01", site - 1, c) for c in range(3)]
    # each file name reads back its own plane
    for name, plane in zip(names, planes, strict=True):
        np.testing.assert_array_equal(backend.load(name), plane)
        assert backend.exists(name) and backend.is_file(name)

    field_attrs = ome_section(zarr.open_group(store / "A/01/0", mode="r"))
    assert [a["name"] for a in field_attrs["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert [c["label"] for c in field_attrs["omero"]["channels"]] == ["w1", "w2", "w3"]
    assert plate_meta(store)["field_count"] == 2 and well_fields(store, "A/01") == ["0", "1"]
    ngff_models(3).HCS.from_zarr(zarr.open_group(store, mode="r"))

    # a later channel grows the field image without losing the others
    backend.save(np.full((8, 12), 77, np.uint16), "plate.zarr/A01_s1_w5.tif")
    grown = backend.load("plate.zarr/A/01/0")
    assert grown.shape == (5, 8, 12)
    assert grown[:, 0, 0].tolist() == [*(well_value("A", "01", 0, c) for c in range(3)), 0, 77]
    assert len(ome_section(zarr.open_group(store / "A/01/0", mode="r"))["omero"]["channels"]) == 5
    ngff_models(3).Image.from_zarr(zarr.open_group(store / "A/01/0", mode="r"))


def test_file_names_with_z_and_t_and_single_saves(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=2)
    for t in (1, 2):
        for z in (1, 2, 3):
            backend.save(np.full((4, 4), 10 * t + z, np.uint8), f"p.zarr/B02_s1_w1_z{z}_t{t}.tif")
    field = backend.load("p.zarr/B/02/0")
    assert field.shape == (2, 1, 3, 4, 4)  # t, c, z, y, x
    assert int(field[1, 0, 2, 0, 0]) == 23
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    axes = [a["name"] for a in ome_section(group["B/02/0"])["multiscales"][0]["axes"]]
    assert axes == ["t", "c", "z", "y", "x"]
    ngff_models(2).HCS.from_zarr(group)
    ngff_models(2).Image.from_zarr(group["B/02/0"])


@pytest.mark.parametrize(
    ("suffixes", "axes", "shape"),
    [(["_w1", "_w2", "_w3"], "cyx", (3, 4, 4)), (["_t2", "_t1"], "tyx", (2, 4, 4)),
     (["_w2_z1", "_w1_z2", "_w2_z2"], "czyx", (2, 2, 4, 4))],
)
def test_planes_saved_one_by_one_accumulate(
    tmp_path: Path, suffixes: list[str], axes: str, shape: tuple[int, ...]
) -> None:
    backend = ZarrBackend(root=tmp_path)
    for value, suffix in enumerate(suffixes, start=1):
        backend.save(np.full((4, 4), value, np.uint8), f"p.zarr/D05_s1{suffix}.tif")
    for value, suffix in enumerate(suffixes, start=1):  # none lost as the field image grew
        assert np.all(backend.load(f"p.zarr/D05_s1{suffix}.tif") == value), suffix
    assert backend.load("p.zarr/D/05/0").shape == shape
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    assert "".join(a["name"] for a in ome_section(group["D/05/0"])["multiscales"][0]["axes"]) == axes
    ngff_models(3).Image.from_zarr(group["D/05/0"])


def test_file_name_without_a_plane_index_is_the_whole_field(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    image = np.arange(2 * 6 * 6, dtype=np.uint16).reshape(2, 6, 6)
    backend.save(image, "p.zarr/C07_s2.tif")
    np.testing.assert_array_equal(backend.load("p.zarr/C/07/1"), image)
    np.testing.assert_array_equal(backend.load("p.zarr/C07_s2.tif"), image)
    assert well_fields(tmp_path / "p.zarr", "C/07") == ["1"]
    assert sorted(zarr.open_group(tmp_path / "p.zarr", mode="r").group_keys()) == ["C"]  # no stray node
    ngff_models(3).HCS.from_zarr(zarr.open_group(tmp_path / "p.zarr", mode="r"))


# -- 1536-well plates ----------------------------------------------------------------------------
def test_1536_well_rows_sort_after_z_and_validate(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    wells = [("AF", "48"), ("A", "01"), ("AA", "01"), ("Z", "12"), ("AB", "07"), ("P", "24")]
    names = [f"hts.zarr/{row}{column}_s1_w1.tif" for row, column in wells]
    backend.save_batch([np.full((4, 4), i, np.uint8) for i in range(len(wells))], names)
    backend.save(np.full((4, 4), 99, np.uint8), "hts.zarr/ae/33/0")  # a field path, lower case

    store = tmp_path / "hts.zarr"
    all_wells = [*wells, ("AE", "33")]
    assert_plate_consistent(store, all_wells)
    plate = plate_meta(store)
    assert [r["name"] for r in plate["rows"]] == ["A", "P", "Z", "AA", "AB", "AE", "AF"]
    assert [c["name"] for c in plate["columns"]] == ["01", "07", "12", "24", "33", "48"]
    ngff_models(3).HCS.from_zarr(zarr.open_group(store, mode="r"))
    assert int(backend.load("hts.zarr/AF48_s1_w1.tif")[0, 0]) == 0
    assert int(backend.load("hts.zarr/AA/01/0")[0, 0, 0]) == 2
    assert int(backend.load("hts.zarr/ae/33/0")[0, 0]) == 99
    assert (store / "AE" / "33" / "0").is_dir()  # where the metadata points, whatever the case given
    address = address_of("AF48_s1_w2.tif", ZarrConfig())
    assert address is not None and (address.well_path, address.channel) == ("AF/48", 1)


# -- ome-zarr-py's reader ------------------------------------------------------------------------
@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_ome_zarr_py_reads_the_plate_layout(tmp_path: Path, zarr_format: int) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader

    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    wells = [(r, c) for r in ("A", "B") for c in ("01", "02", "03")]
    for row, column in wells:
        image = np.full((2, 16, 16), well_value(row, column, 0, 0), np.uint16)
        backend.save(image, f"plate.zarr/{row}/{column}/0")

    location = parse_url(str(tmp_path / "plate.zarr"))
    assert location is not None
    node = next(iter(Reader(location)()))
    assert any(isinstance(spec, Plate) for spec in node.specs)
    grid = np.asarray(node.data[0])
    assert grid.shape == (2, 2 * 16, 3 * 16)  # wells stitched row by row, column by column
    for row_index, row in enumerate(("A", "B")):
        for column_index, column in enumerate(("01", "02", "03")):
            tile = grid[:, row_index * 16 : (row_index + 1) * 16, column_index * 16 : (column_index + 1) * 16]
            assert np.all(tile == well_value(row, column, 0, 0)), (row, column)


# -- concurrency ---------------------------------------------------------------------------------
def _channels(row: str, column: str, field: int) -> np.ndarray:
    return np.stack([np.full((16, 16), well_value(row, column, field, c), np.uint16) for c in range(2)])


def _fill_field(store: str, field: int, barrier: Any) -> None:
    """One of four processes filling a 24-well plate: field ``field`` of every well, in well order.

    All four go through the wells in the same order, so each well's metadata gets its fields
    from four processes at about the same time. Each writes its own way: whole field images by
    path (fields 0 and 3), planes by file name one at a time (1) or in batches (2).
    """
    import dask.array  # noqa: F401  # imported before the start, so that all start at once
    import ome_zarr_models.v05  # noqa: F401

    # a writer once died of SIGABRT here in a full-suite run, silently: if it happens again,
    # every thread's Python stack goes to stderr, which the test's failure report shows
    faulthandler.enable()
    backend = ZarrBackend()
    barrier.wait()
    if field == 2:
        for start in range(0, len(WELLS_24), 6):
            names, planes = [], []
            for row, column in WELLS_24[start : start + 6]:
                for c, plane in enumerate(_channels(row, column, field)):
                    names.append(f"{store}/{row}{column}_s{field + 1}_w{c + 1}.tif")
                    planes.append(plane)
            backend.save_batch(planes, names)
        return
    for row, column in WELLS_24:
        if field == 1:
            for c, plane in enumerate(_channels(row, column, field)):
                backend.save(plane, f"{store}/{row}{column}_s{field + 1}_w{c + 1}.tif")
        else:
            backend.save(_channels(row, column, field), f"{store}/{row}/{column}/{field}")


@pytest.mark.slow
def test_four_processes_fill_a_24_well_plate(tmp_path: Path) -> None:
    store = tmp_path / "plate.zarr"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_fill_field, args=(str(store), field, barrier)) for field in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [process.exitcode for process in processes] == [0] * 4

    assert_plate_consistent(store, WELLS_24)
    plate = plate_meta(store)
    assert len(plate["wells"]) == 24 and plate["field_count"] == 4
    backend = ZarrBackend()
    for row, column in WELLS_24:
        assert well_fields(store, f"{row}/{column}") == ["0", "1", "2", "3"], (row, column)
        for field in range(4):
            np.testing.assert_array_equal(
                backend.load(f"{store}/{row}/{column}/{field}"), _channels(row, column, field),
                err_msg=f"{row}{column} field {field}",
            )
    group = zarr.open_group(store, mode="r")
    ngff_models(3).HCS.from_zarr(group)
    for row, column in WELLS_24:
        ngff_models(3).Well.from_zarr(group[f"{row}/{column}"])


# -- bad input -----------------------------------------------------------------------------------
def test_batch_planes_of_different_shapes_are_refused(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    # a batch attempts every field and reports the failures together, like every backend's
    with pytest.raises(BatchError, match="differ in shape") as caught:
        backend.save_batch([np.zeros((4, 4)), np.zeros((5, 5))], ["p.zarr/A01_w1.tif", "p.zarr/A01_w2.tif"])
    assert isinstance(caught.value.failures[0].error, UnsupportedDataError)
    assert not backend.exists("p.zarr/A/01/0")


def test_a_file_name_plane_must_be_2d(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(UnsupportedDataError, match="one plane"):
        backend.save(np.zeros((2, 4, 4)), "p.zarr/A01_s1_w1.tif")
    with pytest.raises(BatchError, match="one plane"):
        backend.save_batch([np.zeros((2, 4, 4))] * 2, ["p.zarr/A02_w1.tif", "p.zarr/A02_w2.tif"])
    assert not backend.exists("p.zarr/A/01/0") and not backend.exists("p.zarr/A/02/0")


def test_mixing_naming_styles_on_one_field_is_refused_not_erased(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    whole = np.full((8, 8), 7, np.uint16)
    backend.save(whole, "plate.zarr/A01_s1.tif")  # the whole field, a yx image
    with pytest.raises(UnsupportedDataError, match="one naming style"):
        backend.save(np.ones((8, 8), np.uint16), "plate.zarr/A01_s1_w2.tif")  # a plane of cyx
    np.testing.assert_array_equal(backend.load("plate.zarr/A/01/0"), whole)  # nothing was lost


def test_a_plane_of_another_shape_than_its_field_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A larger plane grew the field's y and x (the planes there padded with zeros); a smaller one
    raised a bare IndexError from the codec pipeline after the field had gained its channel."""
    backend = ZarrBackend(root=tmp_path)
    first = np.full((16, 16), 1, np.uint16)
    backend.save(first, "plate.zarr/A01_s1_w1.tif", levels=2)
    for shape in ((32, 32), (8, 8), (16, 8)):
        plane = np.full(shape, 2, np.uint16)
        with pytest.raises(UnsupportedDataError, match=r"\(16, 16\)"):
            backend.save(plane, "plate.zarr/A01_s1_w2.tif")
        with pytest.raises(BatchError, match=r"\(16, 16\)"):
            backend.save_batch([plane], ["plate.zarr/A01_s1_w2.tif"])
        with pytest.raises(UnsupportedDataError, match=r"\(16, 16\)"):
            backend.plates.write_planes(str(tmp_path / "plate.zarr"), "A/01/0", {(1,): plane})
    assert backend.load("plate.zarr/A/01/0").shape == (1, 16, 16)  # neither grown nor given a channel
    assert backend.load("plate.zarr/A/01/0", level=1).shape == (1, 8, 8)
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w1.tif"), first)
    attrs: dict[str, Any] = dict(zarr.open_group(tmp_path / "plate.zarr/A/01/0", mode="r").attrs)
    assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["w1"]


def test_a_plane_under_an_image_is_refused_naming_the_image(tmp_path: Path) -> None:
    """The message named '' (the store's root) as "an array" when the store is an image."""
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.ones((8, 8), np.uint16), "image.zarr")
    with pytest.raises(NotADirectoryError, match=r"'.*image\.zarr' is an image, not a group"):
        backend.save(np.ones((8, 8), np.uint16), "image.zarr/A01_s1_w1.tif")
    assert backend.load("image.zarr").shape == (8, 8)


def test_growing_a_field_keeps_the_names_given_to_its_channels(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    backend.save_batch(
        [np.zeros((8, 8), np.uint16)] * 2,
        ["plate.zarr/A01_s1_w1.tif", "plate.zarr/A01_s1_w2.tif"],
        channel_names=["DAPI", "GFP"],
    )
    backend.save(np.ones((8, 8), np.uint16), "plate.zarr/A01_s1_w3.tif")
    attrs: dict[str, Any] = dict(zarr.open_group(tmp_path / "plate.zarr/A/01/0", mode="r").attrs)
    labels = [c["label"] for c in attrs["ome"]["omero"]["channels"]]
    assert labels == ["DAPI", "GFP", "w3"]


def _write_one_channel_everywhere(store: str, channel: int, barrier: Any) -> None:
    """Batch-save channel ``channel`` of the same new fields that three other processes fill."""
    import dask.array  # noqa: F401  # imported before the start, so that all start at once
    import ome_zarr_models.v05  # noqa: F401

    # a writer once died of SIGABRT here in a full-suite run, silently: if it happens again,
    # every thread's Python stack goes to stderr, which the test's failure report shows
    faulthandler.enable()
    backend = ZarrBackend()
    barrier.wait()
    names = [f"{store}/{row}{column}_s1_w{channel + 1}.tif" for row, column in WELLS_24[:8]]
    planes = [np.full((16, 16), 10 * (channel + 1), np.uint16) for _ in names]
    backend.save_batch(planes, names)


@pytest.mark.slow
def test_processes_batch_saving_channels_of_the_same_new_fields_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "plate.zarr"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [
        context.Process(target=_write_one_channel_everywhere, args=(str(store), channel, barrier))
        for channel in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [process.exitcode for process in processes] == [0] * 4
    backend = ZarrBackend()
    for row, column in WELLS_24[:8]:
        field = backend.load(f"{store}/{row}/{column}/0")
        assert field.shape == (4, 16, 16), (row, column)
        for channel in range(4):  # every process's channel survived the others' writes
            assert (field[channel] == 10 * (channel + 1)).all(), (row, column, channel)


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["v3", "v2"])
def test_a_lone_save_makes_every_group_above_the_image(tmp_path: Path, zarr_format: int) -> None:
    """A new image and its arrays are written as metadata documents, not through zarr's create
    calls (which make missing parents themselves): every group above it (a plate's row, well
    and the plate; the folders of an image outside a plate) must still be a zarr group that
    zarr opens, and an array in the way is refused."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    field = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    backend.save(field, "plate.zarr/B/03/0")
    store = tmp_path / "plate.zarr"
    for group_path in ("", "B", "B/03", "B/03/0"):
        group = zarr.open_group(store, path=group_path, mode="r", zarr_format=zarr_format)  # type: ignore[arg-type]
        assert group.metadata.zarr_format == zarr_format
    np.testing.assert_array_equal(zarr.open_array(store, path="B/03/0/0", mode="r")[...], field)
    assert well_fields(store, "B/03") == ["0"]
    backend.save(field, "nested.zarr/x/y/image")  # no plate: nothing else makes x and x/y
    for group_path in ("", "x", "x/y", "x/y/image"):
        zarr.open_group(tmp_path / "nested.zarr", path=group_path, mode="r",
                        zarr_format=zarr_format)  # type: ignore[arg-type]

    bare = ZarrBackend(root=tmp_path, zarr_format=zarr_format, ome_zarr_metadata=False)
    bare.save(np.zeros((4, 4), np.uint8), "other.zarr/C")  # a bare array at C
    with pytest.raises(NotADirectoryError, match="'C' is an array"):
        backend.save(field, "other.zarr/C/01/0")


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["v3", "v2"])
def test_a_writer_that_looked_before_another_made_the_well_keeps_its_fields(
    tmp_path: Path, zarr_format: int
) -> None:
    """Writer B finds well B/03 missing and is paused before writing it; writer A makes the
    well and records its field; B then goes on. B's missing parents are created only if still
    absent, so A's well metadata survives (an unconditional write emptied it)."""
    first = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    second = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    looked, first_done = threading.Event(), threading.Event()
    look = second.documents.node_kind

    def look_then_wait(location: Any) -> Any:  # B's look at the well, then A runs to the end
        kind = look(location)
        if location.node == "B/03" and not looked.is_set():
            looked.set()
            first_done.wait(30)
        return kind

    second.documents.node_kind = look_then_wait  # type: ignore[method-assign]
    field = np.ones((2, 16, 16), np.uint16)
    writer = threading.Thread(target=lambda: second.save(field, "plate.zarr/B/03/1"))
    writer.start()
    assert looked.wait(30)
    first.save(field, "plate.zarr/B/03/0")
    first_done.set()
    writer.join(60)
    assert well_fields(tmp_path / "plate.zarr", "B/03") == ["0", "1"]
    assert_plate_consistent(tmp_path / "plate.zarr", [("B", "03")])


def test_parents_are_made_again_after_a_move_or_another_backend_deleted_them(tmp_path: Path) -> None:
    image = np.ones((8, 8), np.uint8)
    backend = ZarrBackend(root=tmp_path)
    backend.save(image, "s.zarr/a/b/first")
    backend.move("s.zarr/a/b", "s.zarr/c")
    backend.save(image, "s.zarr/a/b/second")
    other = ZarrBackend(root=tmp_path)  # another process's backend
    other.delete_all("s.zarr")
    backend.save(image, "s.zarr/a/b/third")
    for group_path in ("", "a", "a/b", "a/b/third"):
        zarr.open_group(tmp_path / "s.zarr", path=group_path, mode="r")
    assert backend.list_files("s.zarr", recursive=True) == ["s.zarr/a/b/third"]


def test_chunks_left_without_metadata_do_not_come_back(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    for channel in (1, 2, 3):
        backend.save(np.full((16, 16), 7, np.uint8), f"p.zarr/A01_s1_w{channel}.tif")
    for document in (tmp_path / "p.zarr" / "A" / "01" / "0").rglob("zarr.json"):
        document.unlink()  # an interrupted delete: the metadata went, the chunks stayed
    backend.save(np.full((16, 16), 1, np.uint8), "p.zarr/A01_s1_w1.tif")
    backend.save(np.full((16, 16), 3, np.uint8), "p.zarr/A01_s1_w3.tif")
    field = backend.load("p.zarr/A/01/0")
    assert [int(np.unique(field[c])[0]) for c in range(3)] == [1, 0, 3]  # w2 was never written again


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["v3", "v2"])
def test_a_damaged_or_missing_level_is_named_when_its_image_is_read(tmp_path: Path, zarr_format: int) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((8, 8), np.uint8), "img.zarr/cells")
    level = tmp_path / "img.zarr" / "cells" / "0"
    (level / ("zarr.json" if zarr_format == 3 else ".zarray")).write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=r"cells/0'.*not valid JSON"):
        backend.load("img.zarr/cells")
    shutil.rmtree(level)
    with pytest.raises(CorruptDataError, match="level '0' is missing"):
        backend.load("img.zarr/cells")
    with pytest.raises(CorruptDataError):
        backend.save(np.ones((8, 8), np.uint8), "img.zarr/cells", overwrite=False)  # not replaced silently


def test_plane_names_go_to_the_wells_a_plate_spells_otherwise(tmp_path: Path) -> None:
    """A plate another tool wrote (ome-zarr-py spells column 1 '1', the plate model '01'):
    plane names load from its wells and save into them, never into a second well 'A/01'
    beside 'A/1' at the same place."""
    store = tmp_path / "other.zarr"
    backend = ZarrBackend()
    field = np.stack([np.full((16, 16), 10, np.uint16), np.full((16, 16), 20, np.uint16)])
    backend.save(field, f"{store}/A/1/0", axes="cyx")  # an NGFF path: the node as written
    assert np.array_equal(backend.load(f"{store}/A01_s1_w2.tif"), field[1])
    backend.save(np.full((16, 16), 30, np.uint16), f"{store}/A01_s1_w3.tif")
    backend.save_batch([np.full((16, 16), 40, np.uint16), np.full((16, 16), 50, np.uint16)],
                       [f"{store}/A01_s1_w4.tif", f"{store}/A01_s2_w1.tif"])
    plate = ome_section(zarr.open_group(store, mode="r"))["plate"]
    assert [w["path"] for w in plate["wells"]] == ["A/1"]
    assert [c["name"] for c in plate["columns"]] == ["1"] and [r["name"] for r in plate["rows"]] == ["A"]
    assert sorted(zarr.open_group(store / "A", mode="r").group_keys()) == ["1"]
    image = backend.load(f"{store}/A/1/0")
    assert image.shape == (4, 16, 16) and [int(image[c, 0, 0]) for c in range(4)] == [10, 20, 30, 40]
    assert int(backend.load(f"{store}/A01_s2_w1.tif")[0, 0]) == 50


def test_cast_refuses_values_the_fields_dtype_cannot_hold(tmp_path: Path) -> None:
    """cast=True wrapped values around without a word (70000 into uint16 was 4464, -1 was
    65535, NaN 0); it casts values the field's dtype holds, and refuses the others."""
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.zeros((8, 8), np.uint16), "p.zarr/A01_s1_w1.tif")
    refused = [(np.full((8, 8), 70000, np.int32), r"from 70000 to 70000, and uint16 holds 0 to 65535"),
               (np.full((8, 8), -1, np.int64), r"from -1 to -1"),
               (np.full((8, 8), np.nan), r"NaN or infinite"),
               (np.full((8, 8), 1e9), r"uint16 holds 0 to 65535")]
    for plane, reason in refused:
        with pytest.raises(ValueError, match=rf"cannot be cast into field .*{reason}.*np\.clip") as caught:
            backend.save(plane, "p.zarr/A01_s1_w2.tif", cast=True)
        assert isinstance(caught.value, UnsupportedDataError)  # as a plane refused without cast=True
        with pytest.raises(BatchError, match=reason):
            backend.save_batch([plane], ["p.zarr/A01_s1_w3.tif"], cast=True)
    assert backend.load("p.zarr/A/01/0").shape == (1, 8, 8)  # the field did not grow for them
    backend.save(np.full((8, 8), 65535.7), "p.zarr/A01_s1_w2.tif", cast=True)  # truncated, as astype does
    backend.save_batch([np.full((8, 8), 3, np.int64)], ["p.zarr/A01_s1_w3.tif"], cast=True)
    assert [int(backend.load(f"p.zarr/A01_s1_w{w}.tif")[0, 0]) for w in (2, 3)] == [65535, 3]
    backend.save(np.zeros((8, 8), np.float16), "p.zarr/B01_s1_w1.tif")
    with pytest.raises(ValueError, match="beyond float16's largest 65504"):
        backend.save(np.full((8, 8), 1e6), "p.zarr/B01_s1_w2.tif", cast=True)  # it would be inf
