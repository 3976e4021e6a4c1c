"""Zarr plates that survive kill -9: writers in real processes killed at random moments, then
``repair_plate`` (and ``polystore repair``), locally and on the S3 server; damaged fields
written again by the next save; planes of another dtype refused; huge indices not allocated;
missing S3 credentials named.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr_models")

import zarr
from ngff_helpers import ngff_models, ome_section

from polystore import PolystoreError
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.repair import repair_plate
from polystore.exceptions import UnsupportedDataError

WELLS = ["A01", "A02", "B01", "B02"]
FIELDS, CHANNELS, SIZE = 2, 3, 32


def value_of(well: str, field: int, channel: int) -> int:
    return WELLS.index(well) * 100 + field * 10 + channel + 1


def _writer(root: str, seed: int, errors: str, saves: Any) -> None:
    """Fill the plate with planes (lone saves and batches) until killed; errors to a file."""
    backend = ZarrBackend(root=root)
    rng = random.Random(seed)
    while True:
        saves.value += 1  # started a save (the killer waits for the first)
        try:
            if rng.random() < 0.3:
                well, field = rng.choice(WELLS), rng.randrange(FIELDS)
                channels = rng.sample(range(CHANNELS), rng.randint(1, CHANNELS))
                backend.save_batch(
                    [np.full((SIZE, SIZE), value_of(well, field, c), np.uint16) for c in channels],
                    [f"plate.zarr/{well}_s{field + 1}_w{c + 1}.tif" for c in channels],
                )
            else:
                well, field, channel = rng.choice(WELLS), rng.randrange(FIELDS), rng.randrange(CHANNELS)
                plane = np.full((SIZE, SIZE), value_of(well, field, channel), np.uint16)
                backend.save(plane, f"plate.zarr/{well}_s{field + 1}_w{channel + 1}.tif")
        except Exception:
            with open(errors, "a", encoding="utf-8") as out:
                out.write(traceback.format_exc() + "\n")
            raise


def _kill_writers_at_random(root: str, tmp_path: Path, kills: int, writers: int = 3) -> None:
    context = multiprocessing.get_context("spawn")
    errors = str(tmp_path / "writer-errors.txt")
    rng = random.Random(1234)
    seeds = iter(range(10_000))

    def start() -> tuple[Any, Any]:
        saves = context.Value("i", 0)
        process = context.Process(target=_writer, args=(root, next(seeds), errors, saves), daemon=True)
        process.start()
        return process, saves

    running = [start() for _ in range(writers)]
    try:
        for _ in range(kills):
            victim = rng.randrange(len(running))
            process, saves = running[victim]
            deadline = time.monotonic() + 60
            while saves.value < 2 and time.monotonic() < deadline:  # past its imports, writing
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))  # then at a random moment of its saves
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
            running[victim] = start()
        time.sleep(2.0)
    finally:
        for process, _saves in running:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
            process.join(10)
    if Path(errors).exists():
        pytest.fail("a writer failed:\n" + Path(errors).read_text(encoding="utf-8")[-6000:])


def _check_plate_after_repair(backend: ZarrBackend, store_url: str, open_group: Any) -> list[str]:
    """Every field present is listed, validates, and reads back right; the fields' paths."""
    plate_group = open_group("")
    ngff_models(3).HCS.from_zarr(plate_group)  # the plate, its wells and images, by ome-zarr-models
    plate = ome_section(plate_group)["plate"]
    listed_wells = {w["path"] for w in plate["wells"]}
    present: list[str] = []
    for well in WELLS:
        well_path = f"{well[0]}/{well[1:]}"
        for field in range(FIELDS):
            field_path = f"{well_path}/{field}"
            if not backend.is_file(f"{store_url}/{field_path}"):
                continue
            present.append(field_path)
            assert well_path in listed_wells, field_path
            images = [i["path"] for i in ome_section(open_group(well_path))["well"]["images"]]
            assert str(field) in images, field_path
            image = backend.load(f"{store_url}/{field_path}")
            channels = ome_section(open_group(field_path))["omero"]["channels"]
            assert len(channels) == image.shape[0]
            for channel in range(image.shape[0]):
                values = np.unique(image[channel])
                assert len(values) == 1 and values[0] in (0, value_of(well, field, channel)), \
                    (field_path, channel, values)
    assert present, "no field was written before the kills"
    return present


def _next_save_works(backend: ZarrBackend, store_url: str, fields: list[str]) -> None:
    for field_path in fields:
        row, column, field = field_path.split("/")
        well = f"{row}{column}"
        plane = np.full((SIZE, SIZE), value_of(well, int(field), 0), np.uint16)
        backend.save(plane, f"{store_url}/{well}_s{int(field) + 1}_w1.tif")
        np.testing.assert_array_equal(backend.load(f"{store_url}/{field_path}")[0], plane)


@pytest.mark.slow
def test_a_plate_survives_writers_killed_at_random_locally(tmp_path: Path) -> None:
    _kill_writers_at_random(str(tmp_path), tmp_path, kills=25)
    store = tmp_path / "plate.zarr"
    report = repair_plate(str(store))
    assert report.ok, str(report)
    assert repair_plate(str(store)).changed == []  # repaired once is repaired
    backend = ZarrBackend()
    fields = _check_plate_after_repair(
        backend, str(store), lambda path: zarr.open_group(store, path=path, mode="r")
    )
    _next_save_works(backend, str(store), fields)
    assert not list(store.rglob("*.polystore-tmp")) and not list(store.rglob("*.create"))


@pytest.mark.slow
def test_a_plate_on_s3_survives_writers_killed_at_random(s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}"
    _kill_writers_at_random(root, tmp_path, kills=8, writers=2)
    url = f"{root}/plate.zarr"
    report = repair_plate(url)
    assert report.ok, str(report)
    backend = ZarrBackend()
    fields = _check_plate_after_repair(
        backend, url,
        lambda path: zarr.open_group(url, path=path, mode="r", storage_options={"asynchronous": True}),
    )
    from polystore.backends.zarr.location import Stores

    keys = Stores({}).keys(root)
    assert not [key for key in keys.list() if "polystore-lock" in key]  # dead writers' locks removed
    _next_save_works(backend, url, fields)


# -- damage, one kind at a time --------------------------------------------------------------------
def _plate(tmp_path: Path) -> ZarrBackend:
    backend = ZarrBackend(root=tmp_path)
    for channel in (1, 2):
        backend.save(np.full((8, 8), channel, np.uint16), f"plate.zarr/A01_s1_w{channel}.tif")
    backend.save(np.full((8, 8), 5, np.uint16), "plate.zarr/B02_s1_w1.tif")
    return backend


def test_the_next_save_into_a_field_whose_level_is_gone_writes_it_again(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    shutil.rmtree(tmp_path / "plate.zarr" / "A" / "01" / "0" / "0")  # the level went, its group stayed
    backend.save(np.full((8, 8), 9, np.uint16), "plate.zarr/A01_s1_w2.tif")  # was a raw KeyError: '0'
    field = backend.load("plate.zarr/A/01/0")
    assert field.shape == (2, 8, 8) and field[1].max() == 9 and field[0].max() == 0


def test_the_next_save_into_a_field_marked_incomplete_writes_it_again(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    document = tmp_path / "plate.zarr" / "A" / "01" / "0" / "zarr.json"
    document.write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                    "attributes": {"polystore": {"incomplete": True}}}))
    with pytest.raises(PolystoreError, match="being written when its writer stopped"):
        backend.load("plate.zarr/A/01/0")
    backend.save(np.full((8, 8), 4, np.uint16), "plate.zarr/A01_s1_w1.tif")
    assert backend.load("plate.zarr/A01_s1_w1.tif").max() == 4


def _group_attributes(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())["attributes"])


def _write_group_attributes(path: Path, attributes: dict[str, Any]) -> None:
    path.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}))


@pytest.mark.parametrize("with_metadata", [True, False], ids=["beside-multiscales", "alone"])
def test_an_earlier_versions_mark_is_refused_by_load_and_cleared_by_repair(
    tmp_path: Path, with_metadata: bool
) -> None:
    backend = _plate(tmp_path)
    document = tmp_path / "plate.zarr" / "A" / "01" / "0" / "zarr.json"
    old_mark = {"incomplete": True}  # an earlier version's mark: at the top of the attributes
    marked = {**_group_attributes(document), **old_mark} if with_metadata else old_mark
    _write_group_attributes(document, marked)
    with pytest.raises(PolystoreError, match="being written when its writer stopped"):
        backend.load("plate.zarr/A/01/0")
    with pytest.raises(PolystoreError, match="being written when its writer stopped"):
        backend.load("plate.zarr/A01_s1_w2.tif")
    report = repair_plate(str(tmp_path / "plate.zarr"))
    assert report.ok and any("A/01/0: was marked as being written" in line for line in report.changed), report
    assert "incomplete" not in _group_attributes(document)
    ngff_models(3).Image.from_zarr(zarr.open_group(tmp_path / "plate.zarr" / "A/01/0", mode="r"))
    assert backend.load("plate.zarr/A01_s1_w2.tif").max() == 2  # the pixels were there all along


def test_an_earlier_versions_conversion_mark_is_left_for_the_conversion(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    document = tmp_path / "plate.zarr" / "A" / "01" / "0" / "zarr.json"
    _write_group_attributes(document, {**_group_attributes(document), "incomplete": True, "conversion": ""})
    with pytest.raises(PolystoreError, match=r"not converted yet.*--resume"):
        backend.load("plate.zarr/A/01/0")
    report = repair_plate(str(tmp_path / "plate.zarr"))
    assert not report.ok and report.unconverted == [f"{tmp_path}/plate.zarr/A/01/0"], report
    assert _group_attributes(document)["incomplete"] is True  # only the conversion may unmark it


def _failing(shape: tuple[int, ...]) -> Any:
    """A dask array whose computation raises (a source that fails half-way through a save)."""
    import dask.array as da
    from dask.delayed import delayed

    def fail() -> np.ndarray:
        raise OSError("the source went away")

    return da.from_delayed(delayed(fail)(), shape=shape, dtype=np.uint16)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("path", ["plate.zarr/A/03/0", "plate.zarr/images/cells"])
def test_a_failed_save_of_a_new_node_leaves_nothing_behind(tmp_path: Path, path: str) -> None:
    backend = _plate(tmp_path)
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((2, 8, 8)), path, axes="cyx")
    assert not backend.exists(path)
    assert not (tmp_path / path).exists()  # no level arrays that repair would publish as zeros
    report = repair_plate(str(tmp_path / "plate.zarr"))
    assert report.ok and not report.changed, report
    backend.save(np.ones((2, 8, 8), np.uint16), path, axes="cyx")  # and the next save works
    assert backend.load(path).sum() == 128


@pytest.mark.parametrize("path", ["data.zarr", "data.zarr/images/cells"])
def test_a_failed_save_of_a_new_node_leaves_the_files_already_in_its_folder(
    tmp_path: Path, path: str
) -> None:
    """Only what the failed save wrote goes: files of the user's in the node's folder (or in the
    store's own folder, where the node is the store) stay."""
    folder = tmp_path / path
    (folder / "notes").mkdir(parents=True)
    (folder / "readme.txt").write_text("mine")
    (folder / "notes" / "keep.txt").write_text("mine too")
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((2, 8, 8)), path, axes="cyx")
    assert (folder / "readme.txt").read_text() == "mine"
    assert (folder / "notes" / "keep.txt").read_text() == "mine too"
    assert not (folder / "0").exists()  # the level the save made is gone


def test_a_users_own_incomplete_attribute_is_not_a_mark() -> None:
    from polystore.backends.zarr.marks import conversion_of, is_incomplete

    assert not is_incomplete({"incomplete": True, "note": "imaging stopped early"})
    assert is_incomplete({"incomplete": True})  # an earlier version's writer's mark
    assert conversion_of({"incomplete": True, "conversion": "", "ome": {}}) == ""  # and a conversion's
    assert is_incomplete({"polystore": {"incomplete": True}})


def test_a_failed_save_over_an_image_leaves_it_marked_with_the_reason(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((2, 8, 8)), "plate.zarr/A/01/0", axes="cyx")
    # its previous pixels were cleared before the failure: a reader is told, not given zeros
    with pytest.raises(PolystoreError, match=r"saving it failed \(OSError: the source went away\)"):
        backend.load("plate.zarr/A/01/0")
    report = repair_plate(str(tmp_path / "plate.zarr"))
    assert not report.ok and len(report.unrecoverable) == 1, report
    assert "A/01/0: it holds no pixels: its save failed (OSError: the source went away)" \
        in report.unrecoverable[0], report
    backend.save(np.full((8, 8), 3, np.uint16), "plate.zarr/A01_s1_w1.tif")  # the next save writes it
    assert backend.load("plate.zarr/A/01/0").max() == 3


def test_repair_lists_fields_the_metadata_lost_and_drops_those_gone(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    store = tmp_path / "plate.zarr"
    # a writer killed between writing its field and recording it: well and plate do not list B/02
    for path, section in (("B/02", "well"), ("", "plate")):
        document = store / path / "zarr.json"
        content = json.loads(document.read_text())
        if section == "well":
            content["attributes"]["ome"]["well"]["images"] = []
        else:
            content["attributes"]["ome"]["plate"]["wells"] = [
                w for w in content["attributes"]["ome"]["plate"]["wells"] if w["path"] != "B/02"
            ]
        document.write_text(json.dumps(content))
    # a growth killed half way: level 0 lists 2 channels, the image's channels say 1
    image = store / "A" / "01" / "0" / "zarr.json"
    content = json.loads(image.read_text())
    content["attributes"]["ome"]["omero"]["channels"] = content["attributes"]["ome"]["omero"]["channels"][:1]
    image.write_text(json.dumps(content))
    dry = repair_plate(str(store), dry_run=True)
    assert dry.changed and repair_plate(str(store), dry_run=True).changed == dry.changed  # nothing written
    report = repair_plate(str(store))
    text = "\n".join(report.changed)
    assert "B/02" in text and "A/01/0" in text and report.ok
    assert [i["path"] for i in ome_section(zarr.open_group(store, path="B/02", mode="r"))["well"]["images"]] \
        == ["0"]
    plate = ome_section(zarr.open_group(store, mode="r"))["plate"]
    assert sorted(w["path"] for w in plate["wells"]) == ["A/01", "B/02"]
    ngff_models(3).HCS.from_zarr(zarr.open_group(store, mode="r"))
    # a field whose level 0 is damaged cannot be saved: reported, left out of the metadata
    (store / "B" / "02" / "0" / "0" / "zarr.json").write_text("{not json")
    report = repair_plate(str(store))
    assert not report.ok and "B/02/0" in report.unrecoverable[0]
    wells = ome_section(zarr.open_group(store, mode="r"))["plate"]["wells"]
    assert sorted(w["path"] for w in wells) == ["A/01"]
    backend.save(np.full((8, 8), 6, np.uint16), "plate.zarr/B02_s1_w1.tif")  # written again
    assert backend.load("plate.zarr/B02_s1_w1.tif").max() == 6


@pytest.mark.parametrize("ngff_version", ["0.5", "0.6"])
def test_a_rebuilt_image_keeps_its_placement_units_and_label_mark(tmp_path: Path, ngff_version: str) -> None:
    backend = ZarrBackend(tmp_path, ngff_version=ngff_version)
    cells = np.zeros((16, 16), np.uint32)
    cells[2:6, 3:9] = 70000
    backend.save(cells, "cells.zarr", levels=2, labels=True, scale=(0.5, 0.25), translation=(10.0, 20.0),
                 units={"y": "nanometer", "x": "nanometer"})
    document = tmp_path / "cells.zarr" / "zarr.json"
    written = json.loads(document.read_text())["attributes"]["ome"]
    # a writer killed while the image's pyramid grew: its document lists level 0 only
    damaged = json.loads(document.read_text())
    damaged["attributes"]["ome"]["multiscales"][0]["datasets"] = written["multiscales"][0]["datasets"][:1]
    document.write_text(json.dumps(damaged))
    report = repair_plate(str(tmp_path / "cells.zarr"), ngff_version=ngff_version)
    assert report.ok and "multiscales rebuilt" in "\n".join(report.changed)
    repaired = json.loads(document.read_text())["attributes"]["ome"]
    assert repaired["multiscales"] == written["multiscales"]  # scale, translation, units: as written
    assert "image-label" in repaired
    np.testing.assert_array_equal(backend.load("cells.zarr"), cells)


def test_a_torn_chunk_is_named_on_load_and_removed_by_repair(tmp_path: Path) -> None:
    """A chunk cut short (damage, or another tool killed while writing it in place; polystore's
    own writes are whole, tests/test_zarr_atomic.py) is named on load and removed by repair."""
    backend = ZarrBackend(root=tmp_path)
    noise = np.random.default_rng(0).integers(0, 4000, (64, 64), dtype=np.uint16)
    for channel in (1, 2):
        backend.save(noise, f"plate.zarr/A01_s1_w{channel}.tif")
    chunk = tmp_path / "plate.zarr" / "A" / "01" / "0" / "0" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])  # cut short
    with pytest.raises(PolystoreError, match=r"cannot be decoded.*polystore repair"):
        backend.load("plate.zarr/A01_s1_w2.tif")  # was a raw RuntimeError from the codec
    report = repair_plate(str(tmp_path / "plate.zarr"))
    assert report.ok and any("c/1/0/0" in line for line in report.changed), str(report)
    assert backend.load("plate.zarr/A01_s1_w2.tif").max() == 0  # the torn plane reads as unwritten
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w1.tif"), noise)
    backend.save(noise, "plate.zarr/A01_s1_w2.tif")
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w2.tif"), noise)


def test_the_repair_command(tmp_path: Path) -> None:
    _plate(tmp_path)
    store = tmp_path / "plate.zarr"
    document = store / "zarr.json"
    content = json.loads(document.read_text())
    content["attributes"] = {}
    document.write_text(json.dumps(content))
    command = [sys.executable, "-m", "polystore", "repair", str(store)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "repaired" in result.stdout and "plate" in result.stdout
    assert "plate" in ome_section(zarr.open_group(store, mode="r"))


def test_a_path_that_names_no_store_is_refused_not_taken_for_images_zarr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`polystore repair other` repaired ./images.zarr (the backend's store for paths naming
    none), and left the store `other` as it was while reporting "nothing to repair"."""
    _plate(tmp_path)
    shutil.copytree(tmp_path / "plate.zarr", tmp_path / "images.zarr")
    (tmp_path / "images.zarr" / "A" / "01" / "zarr.json").unlink()  # a well's document lost
    monkeypatch.chdir(tmp_path)
    for path in ("other", str(tmp_path / "missing")):
        with pytest.raises(PolystoreError, match="names no zarr store") as caught:
            repair_plate(path)
        assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "images.zarr" / "A" / "01" / "zarr.json").exists()  # left as it was
    assert repair_plate("images.zarr").changed  # named, it is repaired


def test_repair_plate_is_part_of_the_public_api() -> None:
    import polystore

    assert "repair_plate" in polystore.__all__ and polystore.repair_plate is repair_plate


# -- planes that must not change silently ---------------------------------------------------------
def test_a_plane_of_another_dtype_is_refused_unless_cast(tmp_path: Path) -> None:
    backend = _plate(tmp_path)
    with pytest.raises(UnsupportedDataError, match=r"float64.*uint16.*cast=True"):
        backend.save(np.full((8, 8), -1.0), "plate.zarr/A01_s1_w3.tif")
    with pytest.raises(PolystoreError, match=r"float32 plane.*cast=True"):  # a BatchError naming it
        backend.save_batch([np.zeros((8, 8), np.uint16), np.zeros((8, 8), np.float32)],
                           ["plate.zarr/C01_s1_w1.tif", "plate.zarr/C01_s1_w2.tif"])
    assert backend.load("plate.zarr/A/01/0").shape == (2, 8, 8)  # nothing written
    backend.save(np.full((8, 8), 7.0), "plate.zarr/A01_s1_w3.tif", cast=True)
    assert backend.load("plate.zarr/A01_s1_w3.tif").dtype == np.uint16
    assert backend.load("plate.zarr/A01_s1_w3.tif").max() == 7


def test_a_high_channel_index_does_not_allocate_the_grown_field(tmp_path: Path) -> None:
    import tracemalloc

    backend = ZarrBackend(root=tmp_path)
    plane = np.full((512, 512), 3, np.uint16)  # 0.5 MB
    tracemalloc.start()
    try:
        backend.save(plane, "plate.zarr/A01_s1_w100.tif")  # a field of 100 channels: 50 MB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20  # the field's zeros are never made (unwritten chunks read as 0)
    assert backend.load("plate.zarr/A01_s1_w100.tif").max() == 3
    assert backend.load("plate.zarr/A01_s1_w1.tif").max() == 0
    backend.save_batch([plane, plane], ["plate.zarr/B01_s1_w1.tif", "plate.zarr/B01_s1_w100.tif"])
    assert backend.load("plate.zarr/B/01/0", selection=np.s_[50]).max() == 0  # sparse batch too


@pytest.mark.parametrize("name", ["A01_s1_w0.tif", "A01_s0_w1.tif", "A01_s1_w30000.tif"])
def test_names_out_of_their_conventions_range_are_refused(tmp_path: Path, name: str) -> None:
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(PolystoreError, match="out of range"):
        backend.save(np.zeros((8, 8), np.uint16), f"plate.zarr/{name}")
    assert not (tmp_path / "plate.zarr").exists()


@pytest.mark.parametrize(
    ("name", "field_path", "channel"),
    [
        ("A01/s2_w2.tif", "A/01/1", 1),  # a well folder
        ("r02c03f01p01-ch2sk1fk1fl1.tiff", "B/03/0", 1),  # Opera Phenix / Operetta
        ("A01_s1_w1.tif", "A/01/0", 0),  # ImageXpress
    ],
)
def test_naming_conventions_of_the_plate_model_land_in_their_field(
    tmp_path: Path, name: str, field_path: str, channel: int
) -> None:
    backend = ZarrBackend(root=tmp_path)
    plane = np.full((8, 8), 42, np.uint16)
    backend.save(plane, f"plate.zarr/{name}")
    field = backend.load(f"plate.zarr/{field_path}")
    multiscale = ome_section(backend.node(f"plate.zarr/{field_path}"))["multiscales"][0]
    axes = "".join(a["name"] for a in multiscale["axes"])
    assert field.shape[axes.index("c")] == channel + 1 and field.max() == 42
    assert np.take(field, channel, axis=axes.index("c")).max() == 42
    np.testing.assert_array_equal(backend.load(f"plate.zarr/{name}"), plane)
    ngff_models(3).HCS.from_zarr(zarr.open_group(tmp_path / "plate.zarr", mode="r"))


def test_missing_s3_credentials_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                     "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    backend = ZarrBackend()
    with pytest.raises(PolystoreError, match=r"AWS_ACCESS_KEY_ID.*storage_options") as raised:
        backend.save(np.zeros((4, 4), np.uint8), "s3://some-bucket/x.zarr/a")
    assert isinstance(raised.value, PermissionError)
