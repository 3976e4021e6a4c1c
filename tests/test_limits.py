"""Decompression bombs and forged sizes: a small file never costs more memory than its own
size or the limit (polystore.formats.limits), whatever it declares; the limit can be raised.

Memory is measured in a fresh subprocess as its peak resident size (VmHWM, which starts anew
at exec; ru_maxrss would carry the forking test runner's peak)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from polystore import DiskBackend
from polystore.exceptions import CorruptDataError, LimitExceededError
from polystore.formats import limits


def _zip_of_zeros(path: Path, member: str, size: int, prefix: bytes = b"") -> None:
    """A real zip whose ``member`` expands to ``size`` bytes (zeros after ``prefix``)."""
    chunk = bytes(2**20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(member, "w", force_zip64=True) as out,
    ):
        out.write(prefix)
        for _ in range((size - len(prefix)) // len(chunk)):
            out.write(chunk)


def _peak_rss_mib(code: str, cwd: Path) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter: (its peak resident MiB, its output)."""
    script = (
        code + "\nimport re\nstatus = open('/proc/self/status').read()\n"
        "print('PEAK', int(re.search(r'VmHWM:\\s*(\\d+)', status).group(1)) / 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    peak = [line for line in result.stdout.splitlines() if line.startswith("PEAK")]
    assert peak, result.stdout + result.stderr
    return float(peak[0].split()[1]), result.stdout + result.stderr


def _npy_header(length: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (length,)})
    return header.getvalue()


def test_an_npz_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    prefix = _npy_header(1200 * 2**20)
    _zip_of_zeros(tmp_path / "bomb.npz", "arr_0.npy", 1200 * 2**20 + 128, prefix)
    assert (tmp_path / "bomb.npz").stat().st_size < 8 * 2**20  # 1.2 GiB of zeros in a few MiB
    code = (
        "from polystore import DiskBackend\nfrom polystore.exceptions import LimitExceededError\n"
        "try:\n    DiskBackend(root='.').load('bomb.npz')\nexcept LimitExceededError as error:\n"
        "    print('REFUSED', error)\n"
    )
    peak, output = _peak_rss_mib(code, tmp_path)
    assert "REFUSED" in output and "max_decompressed_bytes=" in output
    assert peak < 400, f"the refused bomb still took {peak:.0f} MiB"


def _overlapping_npz(members: int, payload: int) -> tuple[bytes, int]:
    """A forged .npz of stored members, each member's data holding all the members after it
    (a 'quoted overlap' zip bomb): (its bytes, the bytes its members declare in all)."""
    names = [f"a{i:05d}.npy".encode() for i in range(members)]
    header_size = len(_npy_header(10**9))
    local_sizes = [30 + len(name) for name in names]
    lengths = [0] * members
    tail = payload
    for i in reversed(range(members)):
        lengths[i] = header_size + tail
        tail = local_sizes[i] + lengths[i]
    buffer = bytearray()
    offsets = []
    for i in range(members):
        offsets.append(len(buffer))
        buffer += bytes(local_sizes[i]) + _npy_header(lengths[i] - header_size)
    buffer += bytes(payload)
    crcs = [0] * members
    for i in reversed(range(members)):  # each member's bytes hold the later (finished) headers
        crcs[i] = zlib.crc32(memoryview(buffer)[offsets[i] + local_sizes[i]:])
        buffer[offsets[i]:offsets[i] + local_sizes[i]] = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crcs[i], lengths[i], lengths[i], len(names[i]), 0
        ) + names[i]
    directory = len(buffer)
    for i in range(members):
        buffer += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crcs[i], lengths[i], lengths[i],
            len(names[i]), 0, 0, 0, 0, 0, offsets[i],
        ) + names[i]
    buffer += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(buffer) - directory,
                          directory, 0)
    return bytes(buffer), sum(lengths)


def test_npz_members_that_overlap_are_refused_whatever_the_limit(tmp_path: Path) -> None:
    forged, declared = _overlapping_npz(1000, 2**18)
    (tmp_path / "overlap.npz").write_bytes(forged)
    assert len(forged) < 2**20 and declared > 300 * 2**20  # under 1 MiB holding 300+ MiB
    with zipfile.ZipFile(tmp_path / "overlap.npz") as archive:  # a valid zip to the standard library
        assert len(archive.infolist()) == 1000 and archive.testzip() is None
    with pytest.raises(CorruptDataError, match="overlap"):
        DiskBackend(root=tmp_path).load("overlap.npz")
    code = (
        "from polystore import DiskBackend\nfrom polystore.exceptions import CorruptDataError\n"
        "try:\n    DiskBackend(root='.').load('overlap.npz', max_decompressed_bytes=2**40)\n"
        "except CorruptDataError as error:\n    print('REFUSED', error)\n"
    )
    peak, output = _peak_rss_mib(code, tmp_path)
    assert "REFUSED" in output, output
    assert peak < 200, f"the refused archive still took {peak:.0f} MiB"


def test_a_plain_npz_larger_than_the_limit_loads(tmp_path: Path) -> None:
    """Stored members cost the file's own size: the limit is on what compressed data expands to."""
    disk = DiskBackend(root=tmp_path)
    disk.save({"a": np.arange(2**16), "b": np.ones((3, 4))}, "plain.npz")
    back = disk.load("plain.npz", max_decompressed_bytes=1024)
    np.testing.assert_array_equal(back["a"], np.arange(2**16))


def test_the_decompression_limit_can_be_raised_per_call_and_globally(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    disk.save({"zeros": np.zeros(2**20, np.uint8)}, "z.npz", compress=True)  # 1 MiB, compressed
    with pytest.raises(LimitExceededError, match="NPZ_DECOMPRESSED_BYTES") as caught:
        disk.load("z.npz", max_decompressed_bytes=2**19)
    assert isinstance(caught.value, ValueError)
    assert disk.load("z.npz")["zeros"].shape == (2**20,)
    original = limits.NPZ_DECOMPRESSED_BYTES
    try:
        limits.NPZ_DECOMPRESSED_BYTES = 2**19
        with pytest.raises(LimitExceededError):
            disk.load("z.npz")
        assert disk.load("z.npz", max_decompressed_bytes=2**21)["zeros"].shape == (2**20,)
    finally:
        limits.NPZ_DECOMPRESSED_BYTES = original


def test_a_roi_zip_bomb_is_refused_from_a_file_and_from_bytes(tmp_path: Path) -> None:
    pytest.importorskip("roifile")
    from polystore.formats.roi import rois_from_zip_bytes

    _zip_of_zeros(tmp_path / "bomb.roi.zip", "cell.roi", 300 * 2**20)
    disk = DiskBackend(root=tmp_path)
    with pytest.raises(LimitExceededError, match="ROI_ZIP_DECOMPRESSED_BYTES"):
        disk.load("bomb.roi.zip")
    with pytest.raises(LimitExceededError):
        rois_from_zip_bytes((tmp_path / "bomb.roi.zip").read_bytes())


def test_the_roi_zip_limit_can_be_raised_per_call_and_globally(tmp_path: Path) -> None:
    roifile = pytest.importorskip("roifile")
    from polystore.formats.roi import rois_from_zip_bytes

    disk = DiskBackend(root=tmp_path)
    rois = [roifile.ImagejRoi.frompoints(np.array([[i, 1], [3, 4], [5, i]], np.float32)) for i in range(8)]
    disk.save(rois, "cells.roi.zip")
    payload = (tmp_path / "cells.roi.zip").read_bytes()
    with pytest.raises(LimitExceededError, match="ROI_ZIP_DECOMPRESSED_BYTES"):
        disk.load("cells.roi.zip", max_decompressed_bytes=64)
    with pytest.raises(LimitExceededError):
        rois_from_zip_bytes(payload, max_decompressed_bytes=64)
    assert len(disk.load("cells.roi.zip", max_decompressed_bytes=2**20)) == 8
    original = limits.ROI_ZIP_DECOMPRESSED_BYTES
    try:
        limits.ROI_ZIP_DECOMPRESSED_BYTES = 64
        with pytest.raises(LimitExceededError):
            disk.load("cells.roi.zip")
        with pytest.raises(LimitExceededError):
            rois_from_zip_bytes(payload)
        assert len(rois_from_zip_bytes(payload, max_decompressed_bytes=2**20)) == 8
    finally:
        limits.ROI_ZIP_DECOMPRESSED_BYTES = original
    assert len(rois_from_zip_bytes(payload)) == 8


def test_a_tiff_of_compressed_zeros_is_held_to_the_limit(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    page = np.zeros((2048, 2048), np.uint8)
    tifffile.imwrite(tmp_path / "zeros.tif", (page for _ in range(32)), shape=(32, 2048, 2048),
                     dtype=np.uint8, compression="zlib", compressionargs={"level": 1})
    assert (tmp_path / "zeros.tif").stat().st_size < 2**20  # 128 MiB of pixels in under 1 MiB
    code = (
        "from polystore import DiskBackend\nfrom polystore.exceptions import LimitExceededError\n"
        "from polystore.formats import limits\ndisk = DiskBackend(root='.')\n"
        "try:\n    disk.load('zeros.tif', max_decompressed_bytes=2**25)\n"
        "except LimitExceededError as error:\n    print('REFUSED', error)\n"
        "limits.TIFF_DECODED_BYTES = 2**25\n"
        "try:\n    disk.load('zeros.tif')\nexcept LimitExceededError as error:\n    print('REFUSED', error)\n"
        "print('PAGE', disk.load('zeros.tif', key=3).shape)\n"  # one page of 4 MiB is under it
    )
    peak, output = _peak_rss_mib(code, tmp_path)
    assert output.count("REFUSED") == 2 and "TIFF_DECODED_BYTES" in output, output
    assert "PAGE (2048, 2048)" in output
    assert peak < 200, f"the refused TIFF still took {peak:.0f} MiB"
    assert DiskBackend(root=tmp_path).load("zeros.tif").shape == (32, 2048, 2048)  # under the default


def test_a_pt_of_compressed_records_is_held_to_the_limit(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save(torch.zeros(2**24, dtype=torch.uint8), tmp_path / "plain.pt")
    with (
        zipfile.ZipFile(tmp_path / "plain.pt") as plain,
        zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as deflated,
    ):
        for info in plain.infolist():  # torch reads deflated records too; torch.save never writes them
            deflated.writestr(info.filename, plain.read(info.filename))
    assert (tmp_path / "deflated.pt").stat().st_size < 2**18  # 16 MiB in under 256 KiB
    disk = DiskBackend(root=tmp_path)
    with pytest.raises(LimitExceededError, match="PT_DECOMPRESSED_BYTES"):
        disk.load("deflated.pt", max_decompressed_bytes=2**23)
    original = limits.PT_DECOMPRESSED_BYTES
    try:
        limits.PT_DECOMPRESSED_BYTES = 2**23
        with pytest.raises(LimitExceededError):
            disk.load("deflated.pt")
        assert disk.load("plain.pt").shape == (2**24,)  # stored records cost the file's own size
    finally:
        limits.PT_DECOMPRESSED_BYTES = original
    assert disk.load("deflated.pt").shape == (2**24,)
