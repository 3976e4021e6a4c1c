"""napari finds the plugin's manifest from an editable install and from a wheel.

No viewer here: npe2 reads and validates the manifest, and the wheel is built and opened.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("npe2", reason="npe2 comes with napari (pip install 'polystore[napari]')")

REPO = Path(__file__).resolve().parents[1]


def test_npe2_validates_the_installed_plugin_and_its_imports() -> None:
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "polystore", "--imports"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_the_wheel_ships_the_root_manifest_and_its_entry_point(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("polystore-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        # the link polystore_napari/napari.yaml -> ../napari.yaml becomes the file itself
        shipped = archive.read("polystore_napari/napari.yaml")
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        declared = archive.read(entry_points).decode()
    assert shipped == (REPO / "napari.yaml").read_bytes()
    assert "[napari.manifest]\npolystore = polystore_napari:napari.yaml" in declared
    assert "napari = polystore_napari.backend:NapariStreamingBackend" in declared
