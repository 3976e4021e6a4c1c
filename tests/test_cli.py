"""The `polystore` command, run as users run it: `python -m polystore ...` in a subprocess, on
real files, real zarr plates, an s3:// URL on the moto server, real viewers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polystore import FileManager
from polystore.atomic import TEMP_SUFFIX

PLANES = [f"{well}_s{site}_w{channel}.tif"
          for well in ("A01", "B02") for site in (1, 2) for channel in (1, 2)]


def polystore(*args: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polystore", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def ok(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = polystore(*args, cwd=cwd, env=env)
    assert result.returncode == 0, f"polystore {' '.join(args)}: {result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed, checked to be one line with exit status 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polystore: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Plane files as a pipeline writes them (raw/A01_s1_w1.tif ...), the same as a zarr plate,
    a CSV table and an .npy array."""
    tifffile = pytest.importorskip("tifffile")
    fm = FileManager()
    planes = [np.full((32, 48), 10 * index, np.uint16) for index in range(len(PLANES))]
    (tmp_path / "raw").mkdir()
    for name, plane in zip(PLANES, planes, strict=True):
        tifffile.imwrite(tmp_path / "raw" / name, plane)
    fm.save_batch(planes, [str(tmp_path / "plate.zarr" / name) for name in PLANES], backend="zarr")
    (tmp_path / "table.csv").write_text("well,cells\n" + "".join(f"W{i},{i * 3}\n" for i in range(30)))
    np.save(tmp_path / "array.npy", np.arange(12, dtype=np.uint16).reshape(3, 4))
    return tmp_path


def test_version_and_help(tmp_path: Path) -> None:
    assert ok("--version", cwd=tmp_path).strip() == "polystore 0.1.0"
    help_text = ok("--help", cwd=tmp_path)
    for command in ("ls", "tree", "info", "cat", "head", "cp", "rm", "view", "stream", "convert"):
        assert f"    {command} " in help_text


def test_backends_lists_builtins_and_entry_point_addons(tmp_path: Path) -> None:
    names = {line.split()[0] for line in ok("backends", cwd=tmp_path).splitlines()}
    assert {"disk", "memory", "zarr", "streaming", "napari", "fiji"} <= names


def test_formats_lists_each_format_once_with_its_options(tmp_path: Path) -> None:
    lines = ok("formats", cwd=tmp_path).splitlines()
    assert sum(line.startswith(".npy") for line in lines) == 1
    assert any(line.startswith(".roi.zip") for line in lines)
    assert any("mmap_mode" in line for line in lines)


def test_ls_shows_folders_and_plates_with_wells_and_fields(folder: Path) -> None:
    listing = ok("ls", cwd=folder).splitlines()
    assert "raw/" in listing and "table.csv" in listing and "array.npy" in listing
    plate_line = next(line for line in listing if line.startswith("plate.zarr/"))
    assert "OME-Zarr plate" in plate_line and "2 well(s)" in plate_line
    plate = ok("ls", "plate.zarr", cwd=folder).splitlines()
    assert "2 row(s) x 2 column(s), 2 well(s)" in plate[0]
    assert plate[1:] == ["A/01/  fields 0 1", "B/02/  fields 0 1"]
    assert ok("ls", "plate.zarr/A/01", cwd=folder).strip() == "plate.zarr/A/01: well, fields 0 1"
    assert ok("ls", "raw", "-e", ".tif", "-p", "A01_*", cwd=folder).split() == [
        f"raw/{name}" for name in PLANES if name.startswith("A01")]


def test_tree_enters_zarr_stores_by_their_nodes(folder: Path) -> None:
    lines = ok("tree", ".", cwd=folder).splitlines()
    assert lines[0] == "./"
    text = "\n".join(lines)
    assert "plate.zarr/" in text and "│   ├── A/" in text and "│   │   └── 01/" in text
    assert "zarr.json" not in text and "c/" not in text  # nodes, not the store's files
    assert "A01_s1_w1.tif" in text
    assert "01/" not in "\n".join(ok("tree", "-L", "1", ".", cwd=folder).splitlines())


def test_info_of_a_zarr_image_and_plate(folder: Path) -> None:
    image = ok("info", "plate.zarr/A/01/0", cwd=folder)
    assert "OME-Zarr image (NGFF 0.5), axes cyx, 1 level(s)" in image
    assert "channels: w1, w2" in image
    assert "level 0: shape=(2, 32, 48) dtype=uint16 chunks=" in image
    assert "2 row(s) x 2 column(s), 2 well(s)" in ok("info", "plate.zarr", cwd=folder)


def test_info_and_head_of_a_plate_file_name(folder: Path) -> None:
    """A plate's file name is a plane to cp and cat; info printed "file" then "No such file",
    and head only the error."""
    plane = ok("info", "plate.zarr/B02_s2_w2.tif", cwd=folder)
    assert "plane c=1 of the field image plate.zarr/B/02/1" in plane
    assert "level 0: shape=(2, 32, 48) dtype=uint16 chunks=" in plane
    assert ok("head", "-n", "1", "plate.zarr/B02_s2_w2.tif", cwd=folder).strip() == ",".join(["70"] * 48)


def test_info_and_head_of_a_plate_file_name_in_wells_another_tool_spelled(tmp_path: Path) -> None:
    """A plate another tool wrote (ome-zarr-py spells column 1 '1'): info of A01_s1_w2.tif named
    the field 'A/01/0', which is not there, and failed; it is the plate's 'A/1/0'."""
    from polystore.backends.zarr import ZarrBackend

    field = np.stack([np.full((16, 16), 10, np.uint16), np.full((16, 16), 20, np.uint16)])
    ZarrBackend().save(field, str(tmp_path / "other.zarr" / "A" / "1" / "0"), axes="cyx")
    plane = ok("info", "other.zarr/A01_s1_w2.tif", cwd=tmp_path)
    assert "plane c=1 of the field image other.zarr/A/1/0" in plane
    assert "level 0: shape=(2, 16, 16) dtype=uint16" in plane
    assert ok("head", "-n", "1", "other.zarr/A01_s1_w2.tif", cwd=tmp_path).strip() == ",".join(["20"] * 16)


def test_info_reads_metadata_only(folder: Path) -> None:
    # A 20 GB .npy whose data was never written (a sparse file): loading it would need 20 GB
    header = {"descr": "<u2", "fortran_order": False, "shape": (100_000, 100_000)}
    with open(folder / "huge.npy", "wb") as stream:
        np.lib.format.write_array_header_2_0(stream, header)
        stream.truncate(stream.tell() + 100_000 * 100_000 * 2)
    assert "NumPy array: shape=(100000, 100000) dtype=uint16" in ok("info", "huge.npy", cwd=folder)
    # a zarr image whose chunks are gone: its metadata still describe it
    for chunk in (folder / "plate.zarr" / "B" / "02" / "1" / "0").rglob("c/*"):
        if chunk.is_file():
            chunk.unlink()
    assert "level 0: shape=(2, 32, 48)" in ok("info", "plate.zarr/B/02/1", cwd=folder)
    tiff = ok("info", "raw/A01_s1_w1.tif", cwd=folder)
    assert "series 0: shape=(32, 48) dtype=uint16 axes=YX" in tiff


def test_cat_and_head_of_tables(folder: Path) -> None:
    table = ok("cat", "table.csv", cwd=folder).splitlines()
    assert table[0] == "well,cells" and len(table) == 31
    assert ok("head", "-n", "2", "table.csv", cwd=folder).splitlines() == ["well,cells", "W0,0", "W1,3"]
    assert ok("head", "-n", "1", "array.npy", cwd=folder).strip() == "0,1,2,3"
    assert ok("cat", "array.npy", cwd=folder).splitlines()[-1] == "8,9,10,11"
    error = one_line_error(polystore("cat", "plate.zarr/A/01/0", cwd=folder))
    assert "not a table" in error and "polystore info" in error


def test_cp_disk_folder_into_a_zarr_plate_and_back(folder: Path) -> None:
    assert ok("cp", "raw", "copy.zarr", cwd=folder).strip() == "raw -> copy.zarr: 8 file(s)"
    assert ok("ls", "copy.zarr", cwd=folder).splitlines()[1:] == ["A/01/  fields 0 1", "B/02/  fields 0 1"]
    fm = FileManager()
    np.testing.assert_array_equal(fm.load(str(folder / "copy.zarr/B02_s2_w2.tif"), backend="zarr"),
                                  np.full((32, 48), 70, np.uint16))
    # zarr -> disk, one field image as a NumPy file; a file into an existing folder keeps its name
    ok("cp", "copy.zarr/B/02/1", "field.npy", cwd=folder)
    assert np.load(folder / "field.npy").shape == (2, 32, 48)
    ok("cp", "raw/A01_s1_w1.tif", "plate.zarr/C03_s1_w1.tif", cwd=folder)
    assert "C/03/" in ok("ls", "plate.zarr", cwd=folder)
    (folder / "out").mkdir()
    ok("cp", "array.npy", "out", cwd=folder)
    assert (folder / "out" / "array.npy").is_file()


def test_cp_with_explicit_backends(folder: Path) -> None:
    """--from/--to win over what the paths say: files into a folder that is named .zarr."""
    ok("cp", "raw", "tiffs.zarr", "--to", "disk", cwd=folder)
    assert sorted(p.name for p in (folder / "tiffs.zarr").iterdir()) == sorted(PLANES)
    assert ok("ls", "tiffs.zarr", "-b", "disk", cwd=folder).split() == sorted(PLANES)
    ok("cp", "tiffs.zarr", "again.zarr", "--from", "disk", cwd=folder)  # into a zarr plate
    assert "2 well(s)" in ok("info", "again.zarr", cwd=folder)


def test_cp_to_and_from_s3(folder: Path, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/plate.zarr"
    ok("cp", "plate.zarr", url, cwd=folder)
    assert ok("ls", url, cwd=folder).splitlines()[1:] == ["A/01/  fields 0 1", "B/02/  fields 0 1"]
    assert "level 0: shape=(2, 32, 48)" in ok("info", f"{url}/A/01/0", cwd=folder)
    ok("cp", f"{url}/A/01/0", "from_s3.npy", cwd=folder)
    np.testing.assert_array_equal(np.load(folder / "from_s3.npy")[1], np.full((32, 48), 10, np.uint16))
    ok("cp", "raw", f"s3://{s3_bucket}/raw.zarr", cwd=folder)
    assert "2 well(s)" in ok("info", f"s3://{s3_bucket}/raw.zarr", cwd=folder)
    ok("rm", "-r", f"s3://{s3_bucket}/raw.zarr", cwd=folder)
    assert one_line_error(polystore("ls", f"s3://{s3_bucket}/raw.zarr", cwd=folder))


def test_rm(folder: Path) -> None:
    ok("rm", "array.npy", cwd=folder)
    assert not (folder / "array.npy").exists()
    error = one_line_error(polystore("rm", "raw", cwd=folder))
    assert "polystore rm -r raw" in error and (folder / "raw").is_dir()
    ok("rm", "-r", "raw", "plate.zarr/B/02", cwd=folder)
    assert not (folder / "raw").exists()
    wells = ok("ls", "plate.zarr", cwd=folder).splitlines()[1:]
    assert wells[0] == "A/01/  fields 0 1" and (len(wells) == 1 or wells[1].startswith("B/02/  missing"))


def test_convert_infers_the_destination_backend(folder: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    ok("convert", "array.npy", "array.tif", cwd=folder)
    np.testing.assert_array_equal(tifffile.imread(folder / "array.tif"), np.arange(12).reshape(3, 4))
    # a path into a .zarr store writes into the zarr plate, not a TIFF inside a folder named plate.zarr
    ok("convert", "raw/A01_s1_w1.tif", "plate.zarr/D04_s1_w1.tif", cwd=folder)
    assert not (folder / "plate.zarr" / "D04_s1_w1.tif").exists()
    assert "D/04/" in ok("ls", "plate.zarr", cwd=folder)


def test_sweep(folder: Path) -> None:
    stale = folder / "raw" / f".A01_w2.npy.999999999.deadbeef{TEMP_SUFFIX}"  # a pid that cannot exist
    stale.write_bytes(b"torn")
    assert "removed 1 stale" in ok("sweep", "raw", cwd=folder)
    assert not stale.exists()


def test_errors_are_one_line_with_what_to_do(folder: Path, s3_server: str) -> None:
    assert "missing.npy" in one_line_error(polystore("info", "missing.npy", cwd=folder))
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    assert "TIFF" in one_line_error(polystore("info", "broken.tif", cwd=folder))
    assert "TIFF" in one_line_error(polystore("cat", "broken.tif", cwd=folder))
    assert "memory" in one_line_error(polystore("cp", "array.npy", "x.npy", "--to", "memory", cwd=folder))
    # an S3 server that answers, and no credentials anywhere
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_server, AWS_SHARED_CREDENTIALS_FILE=str(folder / "none"),
               AWS_CONFIG_FILE=str(folder / "none"), AWS_EC2_METADATA_DISABLED="true")
    error = one_line_error(polystore("ls", "s3://bucket/plate.zarr", cwd=folder, env=env))
    assert "AWS_ACCESS_KEY_ID" in error
    debug = polystore("--debug", "info", "missing.npy", cwd=folder)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_stream_replays_a_folder_into_fiji_as_a_plate(folder: Path) -> None:
    pytest.importorskip("jpype", reason="the Fiji bridge needs JPype (pip install 'polystore[fiji]')")
    from polystore_fiji.client import launch_bridge

    with launch_bridge("--headless", log_path=folder / "bridge.log") as (fiji, _process):
        out = ok("stream", "raw", "--to", "fiji", "--port", str(fiji.port), "--no-launch", cwd=folder)
        assert "streamed 8 image(s): 2 well(s)" in out
        fiji.wait(handled=8)
        hyperstack = fiji.fetch_image("raw/B02")  # one image per well: fields and channels stacked
        assert hyperstack.size == 2 * 2 * 32 * 48 and hyperstack.max() == 70


def test_stream_launches_napari_and_replays_a_folder_as_a_plate(folder: Path) -> None:
    """No viewer listens: stream starts napari (in a process of its own, so this test process
    loads no OpenGL), which stacks the plate: a layer per channel, wells and fields as sliders."""
    pytest.importorskip("napari", reason="needs napari (pip install 'polystore[napari]')")
    from polystore.streaming.viewer import free_ports, request

    port = free_ports(3)
    out = ok("stream", "raw", "--to", "napari", "--port", str(port), cwd=folder)
    assert "streamed 8 image(s): 2 well(s)" in out
    pid = request("127.0.0.1", port + 2, "ping", timeout=10).header["pid"]
    try:
        deadline = time.monotonic() + 120  # napari draws on the software renderer: slow when busy
        while True:
            layers = request("127.0.0.1", port + 2, "layers", timeout=10).header["layers"]
            if len(layers) == 2 and all(layer["shape"][:2] == [2, 2] for layer in layers):
                break
            assert time.monotonic() < deadline, layers
            time.sleep(0.5)
        assert sorted(layer["name"] for layer in layers) == ["raw w1", "raw w2"]
        assert layers[0]["components"] == {"well": ["A01", "B02"], "site": [0, 1]}
    finally:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.napari
def test_view_opens_a_zarr_plate_in_napari(folder: Path) -> None:
    out = ok("view", "plate.zarr", "--screenshot", "plate.png", cwd=folder)
    layers = [line for line in out.splitlines() if line.startswith("image ")]
    assert [line.split(" shape=")[0] for line in layers] == ["image 'w1'", "image 'w2'"], out  # per channel
    from PIL import Image

    picture = np.asarray(Image.open(folder / "plate.png"))
    assert picture.shape[0] > 300 and picture.std() > 0


@pytest.mark.napari
def test_view_refuses_what_napari_cannot_open(folder: Path) -> None:
    error = one_line_error(polystore("view", "nothing.zarr", "--screenshot", "x.png", cwd=folder))
    assert "nothing.zarr" in error
