"""The `polystore` command, run as users run it: `python -m polystore ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polystore.atomic import TEMP_SUFFIX


def polystore(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polystore", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_backends_lists_builtins_and_entry_point_addons(tmp_path: Path) -> None:
    result = polystore("backends", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"disk", "memory", "zarr", "streaming", "napari", "fiji"} <= names


def test_formats_lists_each_format_once_with_its_options(tmp_path: Path) -> None:
    result = polystore("formats", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith(".npy") for line in lines) == 1
    assert any(line.startswith(".roi.zip") for line in lines)
    assert any("mmap_mode" in line for line in lines)


def test_ls_info_convert_and_sweep(tmp_path: Path) -> None:
    pytest.importorskip("tifffile", reason="tifffile is not installed (pip install 'polystore[tiff]')")
    (tmp_path / "plate").mkdir()
    np.save(tmp_path / "plate" / "A01_w1.npy", np.arange(12, dtype=np.uint16).reshape(3, 4))
    (tmp_path / "plate" / "notes.txt").write_text("hello")
    listed = polystore("ls", "plate", "-e", ".npy", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.split() == ["plate/A01_w1.npy"]
    info = polystore("info", "plate/A01_w1.npy", cwd=tmp_path)
    assert "array shape=(3, 4) dtype=uint16" in info.stdout
    converted = polystore("convert", "plate/A01_w1.npy", "plate/A01_w1.tif", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "plate" / "A01_w1.tif"),
                                  np.arange(12, dtype=np.uint16).reshape(3, 4))
    stale = tmp_path / "plate" / f".A01_w2.npy.999999999.deadbeef{TEMP_SUFFIX}"  # a pid that cannot exist
    stale.write_bytes(b"torn")
    swept = polystore("sweep", "plate", cwd=tmp_path)
    assert swept.returncode == 0 and "removed 1 stale" in swept.stdout
    assert not stale.exists()


def test_errors_print_one_line_and_exit_1(tmp_path: Path) -> None:
    result = polystore("info", "missing.npy", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("polystore: ") and len(result.stderr.strip().splitlines()) == 1
    assert "missing.npy" in result.stderr
