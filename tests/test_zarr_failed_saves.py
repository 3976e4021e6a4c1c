"""Saves that fail or are killed part-way, one case at a time: what is left must be valid zarr
in both formats, refused by ``load`` with what happened and what to do, reported by
``repair``, never listed as whole, and written again by the next save. Failures are real: a
dask source that raises, a writer process killed (SIGKILL) while a source chunk it computes
blocks; nothing in the backend is mocked.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")

import zarr
from killed_writers import kill_while_writing
from ngff_helpers import ome_section

from polystore import PolystoreError
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.repair import repair_plate
from polystore.exceptions import BatchError, CorruptDataError, InvalidOptionError, UnsupportedDataError

FORMATS = pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])


def _failing(shape: tuple[int, ...], dtype: Any = np.uint16) -> Any:
    """A dask array whose computation raises (a source that fails half-way through a save)."""
    import dask.array as da
    from dask.delayed import delayed

    def fail() -> np.ndarray:
        raise OSError("the source went away")

    return da.from_delayed(delayed(fail)(), shape=shape, dtype=dtype)  # type: ignore[no-untyped-call]


def _files(node: Path) -> set[str]:
    return {p.name for p in node.iterdir() if p.is_file()}


def _assert_valid_array(node: Path, zarr_format: int) -> None:
    """One node, one kind: an array's documents and no group's (v2 ``.zgroup`` beside
    ``.zarray`` is a node both a group and an array)."""
    files = _files(node)
    if zarr_format == 2:
        assert ".zarray" in files and ".zgroup" not in files, files
    else:
        assert json.loads((node / "zarr.json").read_text())["node_type"] == "array"
    assert isinstance(zarr.open(str(node), mode="r"), zarr.Array)


# -- a bare array whose replacing save fails ------------------------------------------------------
@FORMATS
def test_a_failed_save_over_a_bare_array_leaves_a_valid_array_marked_with_the_reason(
    tmp_path: Path, zarr_format: int
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/data")  # 1-D: a bare array, not an image
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((10,)), "s.zarr/data")
    _assert_valid_array(tmp_path / "s.zarr" / "data", zarr_format)
    # v2 read it as the zeros of the cleared array; v3 as "no image"
    for lazy in (False, True):
        with pytest.raises(CorruptDataError, match=r"saving it failed \(OSError: the source went away\)"
                           r".*holds no data now\. Save it again, or delete it"):
            backend.load("s.zarr/data", lazy=lazy)
    # present, a file as listed (exists, is_file and stat raised CorruptDataError in v3)
    assert backend.list_files("s.zarr") == ["s.zarr/data"]
    assert backend.exists("s.zarr/data") and backend.is_file("s.zarr/data")
    assert not backend.is_dir("s.zarr/data") and backend.stat("s.zarr/data").kind == "file"
    report = repair_plate(str(tmp_path / "s.zarr"))  # was "nothing to repair"
    assert not report.ok and len(report.unrecoverable) == 1, report
    assert "s.zarr/data: a bare array: its save failed (OSError: the source went away)" \
        in report.unrecoverable[0], report
    with pytest.raises(CorruptDataError):  # repair leaves it marked: its data is gone
        backend.load("s.zarr/data")
    result = subprocess.run([sys.executable, "-m", "polystore", "repair", str(tmp_path / "s.zarr")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "NOT RECOVERABLE" in result.stdout, result.stdout + result.stderr
    backend.save(np.full(10, 4, np.uint16), "s.zarr/data")  # the next save writes it
    np.testing.assert_array_equal(backend.load("s.zarr/data"), np.full(10, 4, np.uint16))
    assert repair_plate(str(tmp_path / "s.zarr")).ok
    _assert_valid_array(tmp_path / "s.zarr" / "data", zarr_format)


@FORMATS
def test_naparis_reader_refuses_a_marked_bare_array(tmp_path: Path, zarr_format: int) -> None:
    """The napari plugin reads a store through the backend: a marked array is an error there,
    not a layer of the cleared array's zeros (v2 before)."""
    reader = pytest.importorskip("polystore_napari._reader")
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/data")
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((10,)), "s.zarr/data")
    path = str(tmp_path / "s.zarr" / "data")
    for layers in (lambda: reader.read_zarr(ZarrBackend(zarr_format=zarr_format), path),
                   lambda: [np.asarray(data) for data, *_ in reader.read(path)]):
        with pytest.raises(CorruptDataError, match="saving it failed"):
            layers()


@FORMATS
def test_a_bare_array_replaced_by_an_image_and_back_stays_one_kind_of_node(
    tmp_path: Path, zarr_format: int
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    node = tmp_path / "s.zarr" / "x"
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/x")
    backend.save(np.ones((8, 8), np.uint16), "s.zarr/x")  # an image now
    assert isinstance(zarr.open(str(node), mode="r"), zarr.Group)
    assert ".zarray" not in _files(node)
    assert backend.load("s.zarr/x").sum() == 64
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((8, 8)), "s.zarr/x")  # a failed save over the image: a marked group
    backend.save(np.arange(3, dtype=np.uint16), "s.zarr/x")  # and a bare array again
    _assert_valid_array(node, zarr_format)
    np.testing.assert_array_equal(backend.load("s.zarr/x"), np.arange(3, dtype=np.uint16))


def test_an_earlier_versions_v2_mark_beside_an_array_is_refused_and_repaired(tmp_path: Path) -> None:
    """What the previous version left after a failed save over a v2 bare array: ``.zgroup`` and
    its failed mark in ``.zattrs`` beside the ``.zarray`` (zarr reads the node as the array)."""
    backend = ZarrBackend(root=tmp_path, zarr_format=2)
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/data")
    node = tmp_path / "s.zarr" / "data"
    (node / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    mark = {"polystore": {"incomplete": True, "failed": "OSError: the source went away"}}
    (node / ".zattrs").write_text(json.dumps(mark))
    with pytest.raises(CorruptDataError, match=r"saving it failed \(OSError: the source went away\)"):
        backend.load("s.zarr/data")  # the array's zeros before
    dry = repair_plate(str(node.parent), dry_run=True)
    assert (node / ".zgroup").exists() and dry.changed
    report = repair_plate(str(node.parent))
    assert any("group document beside its .zarray" in line for line in report.changed), report
    assert not report.ok and "a bare array: its save failed" in report.unrecoverable[0], report
    _assert_valid_array(node, 2)


def test_an_earlier_versions_v3_mark_of_a_bare_array_is_reported_by_repair(tmp_path: Path) -> None:
    """The previous version marked a v3 bare array by replacing its document with a group's: a
    group with no levels, which repair did not look at ("nothing to repair")."""
    store = tmp_path / "s.zarr"
    ZarrBackend(root=tmp_path).save(np.arange(10, dtype=np.uint16), "s.zarr/data")
    mark = {"polystore": {"incomplete": True, "failed": "OSError: the source went away"}}
    (store / "data" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": mark}))
    report = repair_plate(str(store))
    assert not report.ok and "data: it holds no pixels: its save failed" in report.unrecoverable[0], report


# -- writers killed part-way ------------------------------------------------------------------------
@FORMATS
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_a_bare_array_whose_writer_is_killed_is_refused_not_read_as_data(
    tmp_path: Path, zarr_format: int, existing: bool
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    if existing:
        backend.save(np.arange(16, dtype=np.uint16), "s.zarr/data")
    else:
        backend.ensure_directory("s.zarr")
    kill_while_writing(tmp_path, "s.zarr/data", zarr_format)
    # the array's document was written before its chunks, unmarked: read as 7s and 0s
    with pytest.raises(CorruptDataError, match=r"was being written when its writer stopped.*"
                                               r"Save it again, or delete it"):
        backend.load("s.zarr/data")
    _assert_valid_array(tmp_path / "s.zarr" / "data", zarr_format)
    report = repair_plate(str(tmp_path / "s.zarr"))
    assert not report.ok and "its save was stopped part-way" in report.unrecoverable[0], report
    backend.save(np.full(16, 5, np.uint16), "s.zarr/data")
    np.testing.assert_array_equal(backend.load("s.zarr/data"), np.full(16, 5, np.uint16))
    assert repair_plate(str(tmp_path / "s.zarr")).ok



# -- a plane save into a new field, failing part-way ------------------------------------------------
_FULL_DISK_WRITER = """
import resource, signal, sys
import numpy as np
from polystore import PolystoreError
from polystore.backends.zarr import ZarrBackend

root, zarr_format, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
backend = ZarrBackend(root=root, zarr_format=zarr_format)
# a file may not grow past 64 KiB from here (a quota, a full disk): the documents fit, the
# chunk of an incompressible 256 x 256 uint16 plane (128 KiB) does not
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
noise = np.random.default_rng(0).integers(0, 65535, (256, 256), dtype=np.uint16)
try:
    if mode in ("save", "damaged"):
        backend.save(noise, "p.zarr/B02_s1_w2.tif" if mode == "save" else "p.zarr/A01_s1_w2.tif")
    else:  # a batch: new fields given in part (B/02/0: grown) and whole (B/03/0, A/01/1) fail,
        # C/01/0 (a plane that compresses to a few bytes) is written
        backend.save_batch([noise, noise, noise, np.full((256, 256), 7, np.uint16)],
                           ["p.zarr/B02_s1_w2.tif", "p.zarr/B03_s1_w1.tif", "p.zarr/A01_s2_w1.tif",
                            "p.zarr/C01_s1_w1.tif"])
except Exception as error:
    print(type(error).__name__, error)
    sys.exit(3)
"""


def _save_on_a_full_disk(tmp_path: Path, zarr_format: int, mode: str) -> str:
    result = subprocess.run([sys.executable, "-c", _FULL_DISK_WRITER, str(tmp_path), str(zarr_format), mode],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3, result.stdout + result.stderr  # the save failed, with an error
    return result.stdout


@FORMATS
@pytest.mark.parametrize("mode", ["save", "save_batch"])
def test_a_plane_save_that_fails_in_a_new_field_leaves_no_field(
    tmp_path: Path, zarr_format: int, mode: str
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((256, 256), np.uint16), "p.zarr/A01_s1_w1.tif")  # a plate, one field
    output = _save_on_a_full_disk(tmp_path, zarr_format, mode)
    # our error, naming what failed (a raw OSError "[Errno 27] File too large" before)
    expected = "p.zarr/B02_s1_w2.tif'" if mode == "save" else "p.zarr/B/02/0'"
    assert f"Cannot save '{tmp_path}/{expected}: File too large" in output or \
        f"Cannot save '{expected}: File too large" in output, output
    assert output.startswith("StorageIOError" if mode == "save" else "BatchError"), output
    store = tmp_path / "p.zarr"
    # the failed plane read as 0 from a field its save created and left, unlisted
    for name in ("p.zarr/B02_s1_w2.tif", "p.zarr/B/02/0", "p.zarr/B03_s1_w1.tif", "p.zarr/A/01/1"):
        assert not backend.exists(name), name
    assert not (store / "B" / "02" / "0").exists()
    report = repair_plate(str(store), dry_run=True)  # it would have listed the field of zeros
    assert report.ok and not report.changed, report
    wells = [w["path"] for w in ome_section(zarr.open_group(str(store), mode="r"))["plate"]["wells"]]
    assert wells == (["A/01", "C/01"] if mode == "save_batch" else ["A/01"])
    if mode == "save_batch":  # the field of the batch that was written is there and listed
        assert backend.load("p.zarr/C01_s1_w1.tif").max() == 7
        well = ome_section(zarr.open_group(str(store / "A" / "01"), mode="r"))
        assert [i["path"] for i in well["well"]["images"]] == ["0"]
    np.testing.assert_array_equal(backend.load("p.zarr/A01_s1_w1.tif"), np.ones((256, 256), np.uint16))
    backend.save(np.full((256, 256), 2, np.uint16), "p.zarr/B02_s1_w2.tif")  # the next save works
    assert backend.load("p.zarr/B02_s1_w2.tif").max() == 2 and backend.load("p.zarr/B02_s1_w1.tif").max() == 0


@FORMATS
def test_a_plane_save_that_fails_rewriting_a_damaged_field_leaves_it_marked(
    tmp_path: Path, zarr_format: int
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((256, 256), np.uint16), "p.zarr/A01_s1_w1.tif")
    field = tmp_path / "p.zarr" / "A" / "01" / "0"
    mark = {"polystore": {"incomplete": True}}  # a writer killed while replacing it
    if zarr_format == 3:
        group = {"zarr_format": 3, "node_type": "group", "attributes": mark}
        (field / "zarr.json").write_text(json.dumps(group))
    else:
        (field / ".zattrs").write_text(json.dumps(mark))
    _save_on_a_full_disk(tmp_path, zarr_format, "damaged")
    # the field was made again (an image of zeros, listed by its well) before its plane failed
    with pytest.raises(CorruptDataError, match=r"saving it failed \(OSError: \[Errno 27\] File too large\)"):
        backend.load("p.zarr/A01_s1_w1.tif")
    report = repair_plate(str(tmp_path / "p.zarr"))
    assert not report.ok and "A/01/0: it holds no pixels: its save failed" in report.unrecoverable[0], report
    backend.save(np.full((256, 256), 3, np.uint16), "p.zarr/A01_s1_w2.tif")
    assert backend.load("p.zarr/A01_s1_w2.tif").max() == 3


# -- on object storage (the moto S3 server of tests/conftest.py) ------------------------------------
@FORMATS
def test_failed_saves_on_s3_leave_nothing_new_and_a_valid_marked_array(
    s3_bucket: str, s3_server: str, zarr_format: int
) -> None:
    boto3 = pytest.importorskip("boto3")

    backend = ZarrBackend(root=f"s3://{s3_bucket}", zarr_format=zarr_format)
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/data")
    backend.save(np.ones((2, 8, 8), np.uint16), "s.zarr/A/01/0", axes="cyx")

    def keys() -> list[str]:
        client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            found = client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
            return sorted(item["Key"] for item in found if "polystore-lock" not in item["Key"])
        finally:
            client.close()

    before = keys()
    for path, shape, axes in (("s.zarr/new", (10,), None), ("s.zarr/image", (2, 8, 8), "cyx"),
                              ("s.zarr/B/02/0", (2, 8, 8), "cyx")):
        with pytest.raises(OSError, match="the source went away"):
            backend.save(_failing(shape), path, axes=axes)
    # the new nodes' levels and documents all removed; the parent groups a save made stay
    # (another writer may be filling a sibling)
    left = set(keys()) - set(before)
    assert {key.rsplit("/", 1)[0] for key in left} <= {"s.zarr/B", "s.zarr/B/02"}, left
    assert not [key for key in left if key.rsplit("/", 1)[-1] not in ("zarr.json", ".zgroup")], left
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((10,)), "s.zarr/data")
    documents = {key.rsplit("/", 1)[-1] for key in keys() if key.startswith("s.zarr/data/")}
    assert documents == ({".zarray", ".zattrs"} if zarr_format == 2 else {"zarr.json"}), documents
    with pytest.raises(CorruptDataError, match=r"saving it failed \(OSError: the source went away\)"):
        backend.load("s.zarr/data")
    report = repair_plate(f"s3://{s3_bucket}/s.zarr")
    assert not report.ok and "a bare array: its save failed" in report.unrecoverable[0], report
    backend.save(np.full(10, 2, np.uint16), "s.zarr/data")
    np.testing.assert_array_equal(backend.load("s.zarr/data"), np.full(10, 2, np.uint16))


# -- a new node's folder that already holds the user's files ----------------------------------------
@FORMATS
@pytest.mark.parametrize("data", ["array", "image"])
def test_saving_a_new_node_keeps_the_users_files_in_its_folder(
    tmp_path: Path, zarr_format: int, data: str
) -> None:
    """A folder with no node documents is not a node: a save there writes beside the files in
    it (a bare array's save removed the whole folder; an image's, its level folders'), and
    removes only what zarr writes (chunks an interrupted save left)."""
    folder = tmp_path / "s.zarr" / "notes"
    folder.mkdir(parents=True)
    (folder / "readme.txt").write_text("mine")
    mine = [folder / "readme.txt"]
    if not (data == "array" and zarr_format == 2):  # there, "0" is the array's one chunk
        (folder / "0").mkdir()
        (folder / "0" / "keep.txt").write_text("mine too")  # where an image's level 0 goes
        mine.append(folder / "0" / "keep.txt")
    chunk = "c/5" if zarr_format == 3 else "5"  # a chunk the new array does not write
    if data == "image":  # one of the 2-D level's: a v2 chunk key has an index per axis
        chunk += "/0"
    leftover = folder / chunk if data == "array" else folder / "0" / chunk
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"a chunk an interrupted save left")
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    value = np.arange(10, dtype=np.uint16) if data == "array" else np.ones((8, 8), np.uint16)
    backend.save(value, "s.zarr/notes")
    np.testing.assert_array_equal(backend.load("s.zarr/notes"), value)
    assert all(path.exists() for path in mine)
    assert not leftover.exists()  # zarr's leftovers do not come back as data
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing(value.shape), "s.zarr/other")
    (tmp_path / "s.zarr" / "other").mkdir()
    (tmp_path / "s.zarr" / "other" / "readme.txt").write_text("mine")
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing(value.shape), "s.zarr/other")
    assert (tmp_path / "s.zarr" / "other" / "readme.txt").read_text() == "mine"


@FORMATS
def test_a_users_files_named_like_no_key_of_the_array_survive_its_save_and_its_failure(
    tmp_path: Path, zarr_format: int
) -> None:
    """Only the keys the array's own format and shape give its chunks are zarr's: a user's
    ``17``, ``0.1``, ``c.1`` (and, beside a v3 array, ``2024/05``) were taken for chunks and
    deleted, by the save and by a failed save's cleanup, though neither writes them."""
    folder = tmp_path / "s.zarr" / "run"
    names = ["17", "0.1", "c.1", "1.2.3", ".notes.create", "notes.txt"]
    if zarr_format == 3:
        names.append("2024/05")  # nested digits: a v2 2-D array's own chunk key
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("mine")
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format, ome_zarr_metadata=False)
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing((4, 4)), "s.zarr/run")
    assert sorted(name for name in names if not (folder / name).exists()) == []
    backend.save(np.ones((4, 4), np.uint16), "s.zarr/run")
    np.testing.assert_array_equal(backend.load("s.zarr/run"), np.ones((4, 4), np.uint16))
    assert sorted(name for name in names if not (folder / name).exists()) == []


@FORMATS
@pytest.mark.parametrize("data", ["array", "image"])
def test_replacing_a_node_keeps_the_users_files_in_its_folder_even_when_it_fails(
    tmp_path: Path, zarr_format: int, data: str
) -> None:
    """Replacing a node clears its chunks and levels, not the rest of its folder: a replacing
    save (one that failed too) deleted every file under the node, its user's among them."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    value = np.arange(10, dtype=np.uint16) if data == "array" else np.ones((8, 8), np.uint16)
    backend.save(value, "s.zarr/node", axes=None if data == "array" else "yx")
    folder = tmp_path / "s.zarr" / "node"
    mine = [folder / "notes.txt", folder / "extra" / "a.txt"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    with pytest.raises(OSError, match="the source went away"):
        backend.save(_failing(value.shape), "s.zarr/node")
    with pytest.raises(CorruptDataError):
        backend.load("s.zarr/node")  # cleared and marked: never read as data
    assert all(path.read_text() == "mine" for path in mine)
    backend.save(value + 1, "s.zarr/node")
    np.testing.assert_array_equal(backend.load("s.zarr/node"), value + 1)
    assert all(path.read_text() == "mine" for path in mine)


@FORMATS
def test_replacing_an_image_clears_its_labels(tmp_path: Path, zarr_format: int) -> None:
    """An image's OME-NGFF labels group (written beside its levels by another tool) labels the
    pixels replaced: kept, a viewer would lay the old labels over the new image."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((8, 8), np.uint16), "s.zarr/image", axes="yx")
    labels = zarr.open_group(str(tmp_path / "s.zarr" / "image" / "labels"), mode="w",
                             zarr_format=zarr_format)  # type: ignore[arg-type]
    labels.create_array("cells", shape=(8, 8), dtype="uint8")[:] = 1
    notes = tmp_path / "s.zarr" / "image" / "notes.txt"
    notes.write_text("mine")
    backend.save(np.zeros((4, 4), np.uint16), "s.zarr/image", axes="yx")
    assert not (tmp_path / "s.zarr" / "image" / "labels").exists()
    assert notes.read_text() == "mine"
    np.testing.assert_array_equal(backend.load("s.zarr/image"), np.zeros((4, 4), np.uint16))


@FORMATS
def test_an_image_is_not_saved_over_a_store_root_that_holds_other_nodes(
    tmp_path: Path, zarr_format: int
) -> None:
    """The store's root may become an image while it is an empty group (a new store), not
    while it holds nodes: the save cleared them all (a plate's wells too), and a failed one
    left the store with none of them."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.arange(4, dtype=np.uint16), "s.zarr/kept")
    with pytest.raises(IsADirectoryError, match="holding other nodes"):
        backend.save(np.ones((8, 8), np.uint16), "s.zarr")
    with pytest.raises(PolystoreError):
        backend.save(_failing((8, 8)), "s.zarr")
    np.testing.assert_array_equal(backend.load("s.zarr/kept"), np.arange(4, dtype=np.uint16))
    backend.ensure_directory("empty.zarr")
    backend.save(np.ones((8, 8), np.uint16), "empty.zarr")
    np.testing.assert_array_equal(backend.load("empty.zarr"), np.ones((8, 8), np.uint16))


@FORMATS
def test_a_plane_save_into_a_field_an_unfinished_conversion_marked_is_refused(
    tmp_path: Path, zarr_format: int
) -> None:
    """A field a conversion has not finished holds only part of its pixels (the rest are in
    the conversion's sources): a plane save took it for a damaged field, cleared what the
    conversion wrote and published the field unmarked, its other planes zeros."""
    from polystore.backends.zarr.location import Location
    from polystore.backends.zarr.marks import converting

    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.full((8, 8), 7, np.uint16), "p.zarr/A01_s1_w1.tif")
    field = Location(str(tmp_path / "p.zarr"), "A/01/0")
    attributes = backend.documents.attributes(field, zarr_format)
    assert attributes is not None
    backend.documents.write_group(field, zarr_format, {**attributes, **converting("")})  # as convert marks it
    with pytest.raises(CorruptDataError, match="--resume"):
        backend.save(np.full((8, 8), 9, np.uint16), "p.zarr/A01_s1_w2.tif")
    with pytest.raises(CorruptDataError):
        backend.load("p.zarr/A01_s1_w1.tif")  # still marked: not published
    written = backend.load("p.zarr/A01_s1_w1.tif", incomplete=True)
    np.testing.assert_array_equal(written, np.full((8, 8), 7, np.uint16))  # the conversion's pixels


@pytest.mark.parametrize(
    ("store_format", "backend_format"), [(2, 3), (3, 2)], ids=["v3-into-v2", "v2-into-v3"]
)
def test_a_save_in_the_other_zarr_format_is_refused_before_it_touches_the_store(
    tmp_path: Path, store_format: int, backend_format: int
) -> None:
    """A backend of one Zarr format saving into a store of the other: a plane of an existing
    field took the field for new (looked for in its own format alone), wrote its level over the
    field's and, when that failed, removed the field's documents as its own; a new field or
    node was written under groups zarr then reads in the other format. Refused, nothing
    written, the store's data as it was."""
    ZarrBackend(root=tmp_path, zarr_format=store_format).save(
        np.full((8, 8), 7, np.uint16), "p.zarr/A01_s1_w1.tif")
    store = tmp_path / "p.zarr"
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    other = ZarrBackend(root=tmp_path, zarr_format=backend_format)
    for name in ("p.zarr/A01_s1_w2.tif", "p.zarr/B01_s1_w1.tif", "p.zarr/A/01/0", "p.zarr/image"):
        with pytest.raises(PolystoreError, match=f"zarr_format={store_format}"):
            other.save(np.full((8, 8), 9, np.uint16), name)
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) == before
    backend = ZarrBackend(root=tmp_path, zarr_format=store_format)
    np.testing.assert_array_equal(backend.load("p.zarr/A01_s1_w1.tif"), np.full((8, 8), 7, np.uint16))


_KILLED_PLANE_WRITER = """
import resource, signal, sys
import numpy as np
from polystore.backends.zarr import ZarrBackend

root, zarr_format = sys.argv[1], int(sys.argv[2])
backend = ZarrBackend(root=root, zarr_format=zarr_format)
# a file may not grow past 64 KiB, and SIGXFSZ has its default action (Python ignores it): the
# kernel kills the writer as it writes the plane's chunk (128 KiB of noise), after the field's
# documents
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
backend.save(np.random.default_rng(0).integers(0, 65535, (256, 256), dtype=np.uint16), "p.zarr/B02_s1_w1.tif")
"""


@FORMATS
def test_a_plane_save_killed_in_a_new_field_leaves_no_field_repair_publishes(
    tmp_path: Path, zarr_format: int
) -> None:
    """A new field's group document is its commit, written once its planes are: a writer of
    its first plane killed before that (here by the kernel, SIGXFSZ) left an unlisted field
    whose plane read as 0, which `repair` listed in its well and the plate as whole."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((256, 256), np.uint16), "p.zarr/A01_s1_w1.tif")
    result = subprocess.run([sys.executable, "-c", _KILLED_PLANE_WRITER, str(tmp_path), str(zarr_format)],
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGXFSZ, result
    store = tmp_path / "p.zarr"
    assert not backend.exists("p.zarr/B02_s1_w1.tif")
    report = repair_plate(str(store))
    assert any("B/02/0" in line for line in report.unfinished), report
    assert all("temporary file of a writer that is gone" in line for line in report.changed), report
    wells = [w["path"] for w in ome_section(zarr.open_group(str(store), mode="r"))["plate"]["wells"]]
    assert wells == ["A/01"]
    backend.save(np.full((256, 256), 2, np.uint16), "p.zarr/B02_s1_w1.tif")  # the next save writes it
    np.testing.assert_array_equal(backend.load("p.zarr/B02_s1_w1.tif"), np.full((256, 256), 2, np.uint16))


# -- a new image whose writer is killed before its group document -----------------------------------
@FORMATS
@pytest.mark.parametrize("path", ["s.zarr/image", "s.zarr/A/01/0"], ids=["image", "plate-field"])
def test_repair_does_not_publish_an_image_whose_first_save_was_killed(
    tmp_path: Path, zarr_format: int, path: str
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((8, 8), np.uint16), "s.zarr/B/02/0")  # a plate with one whole field
    kill_while_writing(tmp_path, path, zarr_format, "image")  # levels written, no group document
    assert not backend.exists(path)  # never committed: not there for readers
    report = repair_plate(str(tmp_path / "s.zarr"))
    # it was published as an image (and, as a field, listed by its well and the plate), its
    # unwritten chunks reading as 0
    assert not backend.exists(path)
    assert report.unfinished and path.split("/", 1)[1] in report.unfinished[0], report
    assert "never finished" in str(report) and not report.changed, report
    plate = ome_section(zarr.open_group(str(tmp_path / "s.zarr"), mode="r"))["plate"]
    assert [w["path"] for w in plate["wells"]] == ["B/02"]
    backend.save(np.full((4, 8), 3, np.uint16), path)  # the next save writes it, clearing them
    assert backend.load(path).max() == 3
    assert not repair_plate(str(tmp_path / "s.zarr")).unfinished


@FORMATS
@pytest.mark.parametrize("path", ["s.zarr/image", "s.zarr/A/01/0"], ids=["image", "plate-field"])
def test_an_image_whose_replacing_save_was_killed_is_not_published_by_repair(
    tmp_path: Path, zarr_format: int, path: str
) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.full((4, 8), 9, np.uint16), path)
    kill_while_writing(tmp_path, path, zarr_format, "image")  # old pixels cleared, new in part
    with pytest.raises(CorruptDataError, match=r"was being replaced when its writer stopped.*Save it again"):
        backend.load(path)
    report = repair_plate(str(tmp_path / "s.zarr"))
    # repair rebuilt its metadata and published the new pixels written so far, zeros for the rest
    assert not report.ok and "stopped while replacing it" in report.unrecoverable[0], report
    with pytest.raises(CorruptDataError, match="was being replaced"):
        backend.load(path)
    if path.startswith("s.zarr/A/"):  # its well (whose only field it is) left out of the plate
        plate = ome_section(zarr.open_group(str(tmp_path / "s.zarr"), mode="r"))["plate"]
        assert plate["wells"] == []
    backend.save(np.full((4, 8), 3, np.uint16), path)  # the next save writes it
    assert backend.load(path).max() == 3
    assert repair_plate(str(tmp_path / "s.zarr")).ok


@FORMATS
def test_a_dtype_zarr_cannot_store_is_refused_with_our_error_before_anything_changes(
    tmp_path: Path, zarr_format: int
) -> None:
    """A structured dtype was zarr's bare TypeError ("a bytes-like object is required")."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.arange(10, dtype=np.uint16), "s.zarr/data")
    structured = np.zeros((8, 8), dtype=[("a", "u1", (300,))])
    for path in ("s.zarr/data", "s.zarr/new", "s.zarr/A01_s1_w1.tif"):
        with pytest.raises(PolystoreError, match=r"cannot store an array of dtype.*nothing was written"):
            backend.save(structured, path)
    np.testing.assert_array_equal(backend.load("s.zarr/data"), np.arange(10, dtype=np.uint16))
    assert not backend.exists("s.zarr/new") and not backend.exists("s.zarr/A/01/0")


@FORMATS
def test_ml_dtypes_zarr_has_no_type_for_are_refused_before_anything_is_written(
    tmp_path: Path, zarr_format: int
) -> None:
    """bfloat16, float8 and int4 (what JAX and torch hand over) were zarr's bare ValueError, and
    a plate plane left its well's groups behind (a well in no plate's list)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.arange(64, dtype=np.uint16).reshape(8, 8), "s.zarr/data")
    for dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.int4):
        plane = np.ones((8, 8), dtype)
        for path in ("s.zarr/data", "s.zarr/new", "p.zarr/A01_s1_w1.tif"):
            with pytest.raises(UnsupportedDataError, match=r"no data type for .*astype\(np\.float32\)"):
                backend.save(plane, path)
        with pytest.raises(BatchError) as caught:
            backend.save_batch([plane, plane], ["q.zarr/A01_s1_w1.tif", "q.zarr/A01_s1_w2.tif"])
        assert all(isinstance(f.error, UnsupportedDataError) for f in caught.value.failures)
    np.testing.assert_array_equal(backend.load("s.zarr/data"), np.arange(64, dtype=np.uint16).reshape(8, 8))
    assert not (tmp_path / "s.zarr" / "new").exists()
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "q.zarr").exists()
    # cast=True casts a plane to its field's dtype, which zarr stores
    backend.save(np.zeros((8, 8), np.uint16), "p.zarr/A01_s1_w1.tif")
    backend.save(np.full((8, 8), 3, ml_dtypes.bfloat16), "p.zarr/A01_s1_w2.tif", cast=True)
    assert backend.load("p.zarr/A01_s1_w2.tif").dtype == np.uint16
    assert int(backend.load("p.zarr/A01_s1_w2.tif")[0, 0]) == 3


def test_a_jax_bfloat16_array_is_refused_with_our_error(tmp_path: Path) -> None:
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(UnsupportedDataError, match="no data type for bfloat16"):
        ZarrBackend(root=tmp_path).save(jnp.ones((8, 8), jnp.bfloat16), "s.zarr/image")
    assert not (tmp_path / "s.zarr").exists()


def test_an_os_error_of_the_callers_own_source_is_not_reported_as_the_stores(tmp_path: Path) -> None:
    """A lazy source that cannot read its own file: its error names that file, not the node
    saved to (from_os_error would make it "no such file: <the node>")."""
    import dask.array as da
    from dask.delayed import delayed

    def read() -> np.ndarray:
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/source.tif")

    source = da.from_delayed(delayed(read)(), shape=(8, 8), dtype=np.uint16)  # type: ignore[no-untyped-call]
    with pytest.raises(FileNotFoundError, match=r"/nowhere/source\.tif"):
        ZarrBackend(root=tmp_path).save(source, "s.zarr/image")
    assert not (tmp_path / "s.zarr" / "image").exists()


@pytest.mark.parametrize("node", ["", "/image", "/A01_s1_w1.tif"])
def test_a_file_where_the_store_goes_is_named_not_a_bare_os_error(tmp_path: Path, node: str) -> None:
    """A file named like the store (``plate.zarr``, a file): obstore's bare 'File exists (os error
    17)' (an OSError without errno), or os.makedirs' bare FileExistsError for a plate's plane."""
    (tmp_path / "plate.zarr").write_text("not a store")
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(PolystoreError, match=r"plate\.zarr' is a file, not a zarr store") as caught:
        backend.save(np.ones((4, 4), np.uint16), f"plate.zarr{node}")
    assert isinstance(caught.value, NotADirectoryError)
    assert (tmp_path / "plate.zarr").read_text() == "not a store"


@pytest.mark.parametrize("node", ["userfile/x", "A01_s1_w1.tif"])
def test_a_file_in_the_store_where_a_group_goes_is_named_not_a_bare_os_error(
    tmp_path: Path, node: str
) -> None:
    """A user's file inside the store where a group's folder goes ('A' of a plate's well A/01):
    os.makedirs' bare FileExistsError."""
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.ones((4, 4), np.uint16), "s.zarr/image")
    blocking = "userfile" if node.startswith("userfile") else "A"
    (tmp_path / "s.zarr" / blocking).write_text("mine")
    with pytest.raises(NotADirectoryError, match=rf"s\.zarr/{blocking}' is a file, not a group") as caught:
        backend.save(np.ones((4, 4), np.uint16), f"s.zarr/{node}")
    assert isinstance(caught.value, PolystoreError)
    assert (tmp_path / "s.zarr" / blocking).read_text() == "mine"


def test_chunks_and_shards_zarr_cannot_use_are_refused_as_options(tmp_path: Path) -> None:
    """chunks=(0, 4) was a bare ZeroDivisionError, shards smaller than a chunk zarr's ValueError."""
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(InvalidOptionError, match=r"chunks=\(0, 4\): give a whole number of 1 or more"):
        backend.save(np.ones((4, 4), np.uint16), "s.zarr/a", chunks=(0, 4))
    with pytest.raises(InvalidOptionError, match=r"shards=\(3, 3\).*multiple of its chunk size"):
        backend.save(np.ones((4, 4), np.uint16), "s.zarr/b", shards=(3, 3))
    assert not (tmp_path / "s.zarr" / "a").exists() and not (tmp_path / "s.zarr" / "b").exists()
