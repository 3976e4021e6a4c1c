"""Doubts a review of the zarr backend raised about killed and failed writes, each shown on real
files (and real processes where a kill matters), then fixed: leftovers read back as data, an
image's levels of another tool's naming kept by a save replacing it, a pyramid whose levels
disagree with nothing saying so, a well listing a field ``repair`` left out, a field whose
creation failed left behind, an error of a sibling folder's file taken for the store's.
"""

from __future__ import annotations

import errno
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

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.image import ImageSpec
from polystore.backends.zarr.repair import repair_plate
from polystore.exceptions import CorruptDataError, PolystoreError

FORMATS = pytest.mark.parametrize("zarr_format", [2, 3], ids=["v2", "v3"])


def _failing_source(error: OSError) -> Any:
    """A dask array whose computation raises ``error`` (a source file that cannot be read)."""
    import dask.array as da
    from dask.delayed import delayed

    def read() -> np.ndarray:
        raise error

    return da.from_delayed(delayed(read)(), shape=(8, 8), dtype=np.uint16)  # type: ignore[no-untyped-call]


# -- an OS error of a file beside the store -------------------------------------------------------
def test_a_source_error_in_a_sibling_folder_named_like_the_store_is_not_the_stores(tmp_path: Path) -> None:
    """``s.zarr2`` begins with ``s.zarr`` but is not inside it: its file's permission error is
    the source's, not "Cannot save 's.zarr/image'" (a prefix test of the paths said it was)."""
    sibling = tmp_path / "s.zarr2" / "source.tif"
    source = _failing_source(PermissionError(errno.EACCES, "Permission denied", str(sibling)))
    with pytest.raises(PermissionError, match=r"s\.zarr2/source\.tif") as raised:
        ZarrBackend(root=tmp_path).save(source, "s.zarr/image")
    assert not isinstance(raised.value, PolystoreError), raised.value
    inside = tmp_path / "s.zarr" / "image" / "0" / "c"  # a file of the store: the store's error
    source = _failing_source(PermissionError(errno.EACCES, "Permission denied", str(inside)))
    with pytest.raises(PolystoreError, match=r"Cannot save 's\.zarr/image'"):
        ZarrBackend(root=tmp_path).save(source, "s.zarr/image")


# -- a field whose creation fails part-way --------------------------------------------------------
_FIELD_CREATOR = """
import resource, signal, sys
import numpy as np
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.image import ImageSpec
from polystore.backends.zarr.repair import repair_plate

root, zarr_format = sys.argv[1], int(sys.argv[2])
backend = ZarrBackend(root=root, zarr_format=zarr_format, pyramid_levels=2)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
# a file may not grow past 64 KiB (a quota): the levels' documents fit, the group document
# listing 2000 channels does not
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    backend.plates.create_field(f"{root}/p.zarr", "B/02/0", (2000, 8, 8), np.uint16, "cyx", backend.config)
except OSError as error:
    print(type(error).__name__, error)
    sys.exit(3)
"""


@FORMATS
def test_a_field_whose_creation_fails_part_way_leaves_nothing(tmp_path: Path, zarr_format: int) -> None:
    """``create_field`` (the plan step of a plate writer) that fails after writing its levels'
    documents: they stayed, levels without an image that ``repair`` reported ever after."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.ones((8, 8), np.uint16), "p.zarr/A01_s1_w1.tif")
    result = subprocess.run([sys.executable, "-c", _FIELD_CREATOR, str(tmp_path), str(zarr_format)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3 and "File too large" in result.stdout, result.stdout + result.stderr
    assert not (tmp_path / "p.zarr" / "B" / "02" / "0").exists()
    report = repair_plate(str(tmp_path / "p.zarr"))
    assert report.ok and not report.unfinished, report
    # a spec NGFF cannot say is refused with our error before anything is written
    with pytest.raises(PolystoreError, match=r"scale=\(1\.0, 2\.0\) has 2 values for an image of axes 'cyx'"):
        backend.plates.create_field(str(tmp_path / "p.zarr"), "C/02/0", (2, 8, 8), np.uint16, "cyx",
                                    backend.config, ImageSpec(scale=(1.0, 2.0)))
    assert not (tmp_path / "p.zarr" / "C" / "02" / "0").exists()
    backend.save(np.full((8, 8), 2, np.uint16), "p.zarr/B02_s1_w1.tif")  # the next save writes it
    assert backend.load("p.zarr/B02_s1_w1.tif").max() == 2


# -- repair and the wells of fields it leaves out -------------------------------------------------
@FORMATS
def test_repair_leaves_no_well_listing_a_field_it_left_out(tmp_path: Path, zarr_format: int) -> None:
    """A well whose only field was being replaced when its writer was killed: ``repair`` left the
    field out of its well (so it said) and the well out of the plate, but the well's document
    still listed the field, for any reader that opens the well."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.full((4, 8), 9, np.uint16), "s.zarr/A/01/0")
    backend.save(np.full((4, 8), 9, np.uint16), "s.zarr/B/01/0")
    backend.save(np.full((4, 8), 9, np.uint16), "s.zarr/B/01/1")
    for path in ("s.zarr/A/01/0", "s.zarr/B/01/1"):
        kill_while_writing(tmp_path, path, zarr_format, "image")  # old pixels cleared, new in part
    report = repair_plate(str(tmp_path / "s.zarr"))
    assert not report.ok and len(report.unrecoverable) == 2, report
    store = tmp_path / "s.zarr"
    plate = ome_section(zarr.open_group(str(store), mode="r"))["plate"]
    assert [w["path"] for w in plate["wells"]] == ["B/01"]
    for well, fields in (("A/01", []), ("B/01", ["0"])):
        listed = ome_section(zarr.open_group(str(store / well), mode="r"))["well"]["images"]
        assert [image["path"] for image in listed] == fields, (well, listed)
    with pytest.raises(CorruptDataError, match="was being replaced"):
        backend.load("s.zarr/A/01/0")
    assert repair_plate(str(store), dry_run=True).changed == []  # repaired once: nothing more
    for path in ("s.zarr/A/01/0", "s.zarr/B/01/1"):  # the next saves list them again
        backend.save(np.full((4, 8), 3, np.uint16), path)
    for well, fields in (("A/01", ["0"]), ("B/01", ["0", "1"])):
        listed = ome_section(zarr.open_group(str(store / well), mode="r"))["well"]["images"]
        assert [image["path"] for image in listed] == fields, (well, listed)
    assert repair_plate(str(store)).ok


# -- replacing an image whose levels another tool named -------------------------------------------
def _foreign_image(path: Path, zarr_format: int) -> None:
    """An OME-Zarr image as other tools write one: levels named ``s0``, ``s1``, a file beside."""
    image = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    for level, name in enumerate(("s0", "s1")):
        image.create_array(name, data=np.full((8 >> level, 8 >> level), 9, np.uint16))
    axes: Any = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    datasets = [{"path": name, "coordinateTransformations": [{"type": "scale", "scale": [2.0**level] * 2}]}
                for level, name in enumerate(("s0", "s1"))]
    multiscales: Any = [{"axes": axes, "datasets": datasets}]
    image.attrs.update({"ome": {"version": "0.5", "multiscales": multiscales}} if zarr_format == 3
                       else {"multiscales": [{"version": "0.4", **multiscales[0]}]})
    (path / "notes.txt").write_text("the user's")


@FORMATS
def test_replacing_an_image_clears_its_levels_of_any_name(tmp_path: Path, zarr_format: int) -> None:
    """The old levels ``s0``, ``s1`` stayed in the replaced image with the old pixels, arrays of
    its group beside the new levels (zarr, and any browser of the store, list them); the
    user's file stays."""
    _foreign_image(tmp_path / "s.zarr" / "image", zarr_format)
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    assert backend.load("s.zarr/image").max() == 9
    backend.save(np.ones((8, 8), np.uint16), "s.zarr/image", levels=2)
    folder = tmp_path / "s.zarr" / "image"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1"]
    assert (tmp_path / "s.zarr" / "image" / "notes.txt").read_text() == "the user's"
    assert backend.load("s.zarr/image").max() == 1 and backend.load("s.zarr/image", level=1).max() == 1



_KILLED_BEFORE_CLEARING = """
import os, signal, sys
import numpy as np
from polystore.backends.zarr import ZarrBackend

root, zarr_format = sys.argv[1], int(sys.argv[2])

def kill_at_clear(frame, event, arg):  # the image is marked as being replaced, not cleared yet
    if event == "call" and frame.f_code.co_name == "_clear":
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(kill_at_clear)
ZarrBackend(root=root, zarr_format=zarr_format).save(np.ones((8, 8), np.uint16), "s.zarr/image")
"""


@FORMATS
def test_levels_of_any_name_are_cleared_after_a_replacement_killed_before_clearing_them(
    tmp_path: Path, zarr_format: int
) -> None:
    """The mark of the killed replacement took the place of the multiscales that named ``s0``,
    ``s1``: the next save did not know them, and they stayed."""
    _foreign_image(tmp_path / "s.zarr" / "image", zarr_format)
    result = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_CLEARING, str(tmp_path), str(zarr_format)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    with pytest.raises(CorruptDataError, match="was being replaced"):
        backend.load("s.zarr/image")
    backend.save(np.full((8, 8), 2, np.uint16), "s.zarr/image")
    folder = tmp_path / "s.zarr" / "image"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0"]
    assert backend.load("s.zarr/image").max() == 2


# -- a plane save into a pyramid stopped between its levels ---------------------------------------
_KILLED_BETWEEN_LEVELS = """
import os, signal, sys
import numpy as np
from polystore.backends.zarr import ZarrBackend

root, zarr_format = sys.argv[1], int(sys.argv[2])
backend = ZarrBackend(root=root, zarr_format=zarr_format, pyramid_levels=2)

def kill_at_level_1(frame, event, arg):  # level 0 is written when level 1's plane is made
    if event == "call" and frame.f_code.co_name == "downsample_plane":
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(kill_at_level_1)
backend.save(np.full((16, 16), 5, np.uint16), "p.zarr/A01_s1_w1.tif")
"""


@FORMATS
@pytest.mark.parametrize("then", ["repair", "next-save"])
def test_a_plane_save_killed_between_pyramid_levels_is_marked_and_made_whole(
    tmp_path: Path, zarr_format: int, then: str
) -> None:
    """A writer killed after level 0 of a plane and before level 1: level 1 kept the plane's
    previous pixels, nothing said so, and ``repair`` found nothing to repair."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format, pyramid_levels=2)
    backend.save(np.full((16, 16), 1, np.uint16), "p.zarr/A01_s1_w1.tif")
    result = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_LEVELS, str(tmp_path), str(zarr_format)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert backend.load("p.zarr/A01_s1_w1.tif").max() == 5  # level 0: the new plane
    # readers may read it (level 0 is whole); the mark says its levels below are not
    assert backend.attributes("p.zarr/A/01/0")["polystore"]["levels_pending"] == {"labels": False}
    if then == "repair":
        report = repair_plate(str(tmp_path / "p.zarr"))
        assert report.ok and any("made again from level 0" in line for line in report.changed), report
    else:  # the next plane save into the field makes them again
        backend.save(np.full((16, 16), 7, np.uint16), "p.zarr/A01_s1_w2.tif")
        assert backend.load("p.zarr/A01_s1_w2.tif", level=1).max() == 7
    assert backend.load("p.zarr/A01_s1_w1.tif", level=1).max() == 5
    assert "polystore" not in backend.attributes("p.zarr/A/01/0")
    assert not repair_plate(str(tmp_path / "p.zarr")).changed


def test_a_plane_save_on_s3_killed_between_pyramid_levels_is_marked_and_made_whole(
    s3_bucket: str, tmp_path: Path
) -> None:
    """The same on the S3 server: the mark is a document like any other there, and repair
    rebuilds the levels through the object store (the writer inherits the AWS_* variables)."""
    root = f"s3://{s3_bucket}"
    backend = ZarrBackend(root=root, pyramid_levels=2)
    backend.save(np.full((16, 16), 1, np.uint16), "p.zarr/A01_s1_w1.tif")
    result = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_LEVELS, root, "3"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert backend.load("p.zarr/A01_s1_w1.tif").max() == 5
    assert backend.load("p.zarr/A01_s1_w1.tif", level=1).max() == 1  # the old pixels, marked
    assert backend.attributes("p.zarr/A/01/0")["polystore"]["levels_pending"] == {"labels": False}
    report = repair_plate(f"{root}/p.zarr")
    assert report.ok and any("made again from level 0" in line for line in report.changed), report
    assert backend.load("p.zarr/A01_s1_w1.tif", level=1).max() == 5
    assert "polystore" not in backend.attributes("p.zarr/A/01/0")


# -- leftovers of an earlier store where a conversion writes ---------------------------------------
def test_a_conversion_never_reads_an_earlier_stores_leftover_chunks_as_data(tmp_path: Path) -> None:
    """A plate whose metadata was deleted by hand left its chunks; a conversion into the same
    place wrote no chunk for a plane its source lacks (B01 has no w2), so B01's w2 read back
    the earlier plate's pixels (99) as data. The backend's own saves clear such chunks
    (``delete_leftovers``); a conversion refuses the destination unless told to overwrite it."""
    tifffile = pytest.importorskip("tifffile")
    convert_to_zarr = pytest.importorskip("polystore").convert_to_zarr
    source = tmp_path / "source"
    source.mkdir()
    for name in ("A01_s1_w1", "A01_s1_w2", "B01_s1_w1"):
        tifffile.imwrite(source / f"{name}.tif", np.full((16, 16), 5, np.uint16))
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.full((16, 16), 99, np.uint16), "p.zarr/B01_s1_w2.tif")
    for document in (tmp_path / "p.zarr").rglob("zarr.json"):  # the metadata deleted by hand
        document.unlink()
    with pytest.raises(PolystoreError, match=r"holds files but no zarr node.*overwrite=True"):
        convert_to_zarr(source, str(tmp_path / "p.zarr"))
    assert (tmp_path / "p.zarr" / "B" / "01" / "0" / "0" / "c" / "1" / "0" / "0").is_file()  # untouched
    convert_to_zarr(source, str(tmp_path / "p.zarr"), overwrite=True)
    np.testing.assert_array_equal(backend.load("p.zarr/B/01/0")[:, 0, 0], [5, 0])
    # a first save over such leftovers clears them itself
    backend.save(np.full((2, 16, 16), 99, np.uint16), "p.zarr/B/02/0", axes="cyx")
    for document in (tmp_path / "p.zarr" / "B" / "02").rglob("zarr.json"):
        document.unlink()
    backend.save(np.zeros((16, 16), np.uint16), "p.zarr/B02_s1_w1.tif")
    backend.save(np.zeros((16, 16), np.uint16), "p.zarr/B02_s1_w3.tif")  # w2 never written
    assert backend.load("p.zarr/B02_s1_w2.tif").max() == 0


def test_leftover_chunks_on_s3_are_never_read_as_data(s3_bucket: str, s3_server: str, tmp_path: Path) -> None:
    """The same on object storage: a first save over chunk keys without metadata clears them,
    and a conversion there is refused unless told to overwrite."""
    boto3 = pytest.importorskip("boto3")
    tifffile = pytest.importorskip("tifffile")
    convert_to_zarr = pytest.importorskip("polystore").convert_to_zarr
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")

    def delete_documents(prefix: str) -> None:
        for item in client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix).get("Contents", []):
            if item["Key"].endswith("zarr.json"):
                client.delete_object(Bucket=s3_bucket, Key=item["Key"])

    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    backend.save(np.full((2, 16, 16), 99, np.uint16), "s.zarr/B/02/0", axes="cyx")
    delete_documents("s.zarr/B/02/")
    backend.save(np.zeros((16, 16), np.uint16), "s.zarr/B02_s1_w1.tif")
    backend.save(np.zeros((16, 16), np.uint16), "s.zarr/B02_s1_w3.tif")  # w2 never written
    assert backend.load("s.zarr/B02_s1_w2.tif").max() == 0
    source = tmp_path / "source"
    source.mkdir()
    for name in ("A01_s1_w1", "A01_s1_w2", "B01_s1_w1"):
        tifffile.imwrite(source / f"{name}.tif", np.full((16, 16), 5, np.uint16))
    backend.save(np.full((16, 16), 99, np.uint16), "p.zarr/B01_s1_w2.tif")
    delete_documents("p.zarr/")
    with pytest.raises(PolystoreError, match=r"holds files but no zarr node"):
        convert_to_zarr(source, f"s3://{s3_bucket}/p.zarr")
    convert_to_zarr(source, f"s3://{s3_bucket}/p.zarr", overwrite=True)
    np.testing.assert_array_equal(backend.load("p.zarr/B/01/0")[:, 0, 0], [5, 0])


@FORMATS
def test_an_image_saved_over_an_earlier_arrays_chunks_is_written(tmp_path: Path, zarr_format: int) -> None:
    """A 1-D v2 array's chunk files ``0``, ``1``, ... (its metadata deleted) were in the way of
    a new image's level folder ``0``: the save failed with a bare FileExistsError."""
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    backend.save(np.full((20,), 9, np.uint16), "s.zarr/data", chunks=(4,))
    for document in ("zarr.json", ".zarray", ".zattrs"):
        (tmp_path / "s.zarr" / "data" / document).unlink(missing_ok=True)
    backend.save(np.full((8, 8), 3, np.uint16), "s.zarr/data", levels=2)
    assert backend.load("s.zarr/data").max() == 3 and backend.load("s.zarr/data", level=1).max() == 3
