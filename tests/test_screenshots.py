"""The pictures of the documentation, taken from the real viewers by the current code.

Each test drives a viewer the way a user would (``polystore view``, ``polystore stream``) and
writes its screenshot to ``docs/_generated/`` (not committed), which the napari and Fiji guides
and the CLI page show; ``make docs`` runs these tests first, so the site never shows a picture
of older code. A test fails if the viewer shows nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GENERATED = Path(__file__).resolve().parents[1] / "docs" / "_generated"
WELLS = ("B02", "B03", "C02")


def cells(seed: int, shape: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic field: nuclei (channel 1) and the cytoplasm around them (channel 2), uint16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    nuclei = np.zeros(shape)
    cytoplasm = np.zeros(shape)
    for cy, cx in rng.uniform(16, shape[0] - 16, size=(18, 2)):
        distance = (y - cy) ** 2 + (x - cx) ** 2
        nuclei += np.exp(-distance / (2 * 5.0**2))
        cytoplasm += np.exp(-distance / (2 * 13.0**2))
    noise = rng.poisson(60, (2, *shape))
    return ((nuclei * 3000 + noise[0]).astype(np.uint16), (cytoplasm * 1500 + noise[1]).astype(np.uint16))


def write_plate_files(folder: Path) -> list[Path]:
    """Pipeline-named planes (``B02_s1_w1.tif``...) of three wells, two fields, two channels."""
    tifffile = pytest.importorskip("tifffile")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, well in enumerate(WELLS):
        for site in (1, 2):
            for channel, plane in enumerate(cells(10 * index + site), start=1):
                path = folder / f"{well}_s{site}_w{channel}.tif"
                tifffile.imwrite(path, plane)
                written.append(path)
    return written


def fresh(name: str) -> Path:
    GENERATED.mkdir(parents=True, exist_ok=True)
    path = GENERATED / name
    path.unlink(missing_ok=True)  # a picture left from an earlier run must not pass for this one
    return path


def polystore(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "polystore", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.napari
def test_napari_picture_of_a_zarr_plate_in_the_store_browser(tmp_path: Path) -> None:
    write_plate_files(tmp_path / "screen")
    polystore("cp", "screen", "screen.zarr", cwd=tmp_path)
    picture = fresh("napari-plate.png")
    out = polystore("view", "screen.zarr", "--screenshot", str(picture), cwd=tmp_path)
    assert "image 'w1' shape=" in out and "image 'w2' shape=" in out  # a layer per channel
    from PIL import Image

    pixels = np.asarray(Image.open(picture).convert("RGB"))
    assert pixels.shape[:2] == (800, 1200) and pixels.std() > 10


def test_fiji_picture_of_a_folder_streamed_as_a_plate(tmp_path: Path) -> None:
    pytest.importorskip("jpype", reason="the Fiji bridge needs JPype (pip install 'polystore[fiji]')")
    from polystore_fiji.client import launch_bridge

    write_plate_files(tmp_path / "screen")
    picture = fresh("fiji-hyperstack.png")
    with launch_bridge(log_path=tmp_path / "bridge.log") as (fiji, _process):
        out = polystore("stream", "screen", "--to", "fiji", "--port", str(fiji.port), "--no-launch",
                        cwd=tmp_path)
        assert f"{len(WELLS) * 4} image(s): {len(WELLS)} well(s)" in out
        fiji.wait(handled=len(WELLS) * 4)
        titles = [window["title"] for window in fiji.windows()]
        assert len(titles) == len(WELLS), titles  # a hyperstack window per well
        shot = fiji.screenshot(titles[0])
    from PIL import Image

    Image.fromarray(shot).save(picture)
    assert shot.ndim == 3 and shot.shape[2] == 3 and shot.std() > 10
