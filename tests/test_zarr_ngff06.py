"""OME-NGFF 0.6 on request (ngff_version="0.6"): RFC-5 coordinate systems and transformations,
no version of their own on plates and wells; images and plates validate with ome-zarr-models'
0.6 models and round-trip; 0.5 stays the default and 0.4 is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
v06 = pytest.importorskip("ome_zarr_models.v06", reason="NGFF 0.6 needs ome-zarr-models >= 1.8")

import zarr  # noqa: E402
from ngff_helpers import ome_section  # noqa: E402

from polystore.backends.zarr import ZarrBackend  # noqa: E402
from polystore.backends.zarr.repair import repair_plate  # noqa: E402
from polystore.ome import ngff  # noqa: E402

# ome-zarr-models 1.8 models 0.6 as its last draft and warns that it reads "0.6" as "0.6.dev4"
pytestmark = pytest.mark.filterwarnings("ignore:Version number is '0.6':UserWarning")


def test_an_image_in_ngff_0_6_has_a_coordinate_system_and_round_trips(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, ngff_version="0.6")
    image = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    backend.save(image, "cells.zarr", axes="cyx", levels=2, scale=[1, 0.5, 0.5], channel_names=["a", "b"])
    group = zarr.open_group(tmp_path / "cells.zarr", mode="r")
    v06.Image.from_zarr(group)  # ome-zarr-models' 0.6 model, levels included
    ome = ome_section(group)
    assert ome["version"] == "0.6"
    multiscale = ome["multiscales"][0]
    assert "axes" not in multiscale
    assert [a["name"] for a in multiscale["coordinateSystems"][0]["axes"]] == ["c", "y", "x"]
    level1 = multiscale["datasets"][1]["coordinateTransformations"][0]
    assert level1["input"] == {"path": "1"} and level1["output"] == {"name": "physical"}
    assert level1["scale"] == [1, 1.0, 1.0]
    np.testing.assert_array_equal(backend.load("cells.zarr"), image)
    assert backend.load("cells.zarr", level=1).shape == (2, 16, 16)
    assert ngff.multiscale_axes(dict(group.attrs)) == "cyx"


def test_a_translation_in_ngff_0_6_is_a_sequence_after_the_scale(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, ngff_version="0.6")
    image = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    backend.save(image, "img.zarr", levels=2, scale=[0.5, 0.25], translation=[10, 20])
    group = zarr.open_group(tmp_path / "img.zarr", mode="r")
    v06.Image.from_zarr(group)  # ome-zarr-models' 0.6 model, levels included
    datasets = ome_section(group)["multiscales"][0]["datasets"]
    # RFC-5: one transformation from each level to the coordinate system, a sequence of two
    (level1,) = datasets[1]["coordinateTransformations"]
    assert level1["type"] == "sequence"
    assert level1["input"] == {"path": "1"} and level1["output"] == {"name": "physical"}
    assert level1["transformations"] == [{"type": "scale", "scale": [1.0, 0.5]},
                                         {"type": "translation", "translation": [10.25, 20.125]}]
    assert datasets[0]["coordinateTransformations"][0]["transformations"][1]["translation"] == [10, 20]
    np.testing.assert_array_equal(backend.load("img.zarr"), image)


def test_a_plate_in_ngff_0_6_validates_and_grows(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, ngff_version="0.6")
    for channel in (1, 2):
        backend.save(np.full((16, 16), channel, np.uint16), f"plate.zarr/B03_s1_w{channel}.tif")
    ones = [np.ones((16, 16), np.uint16)] * 2
    backend.save_batch(ones, ["plate.zarr/A01_s2_w1.tif", "plate.zarr/A01_s2_w2.tif"])
    store = tmp_path / "plate.zarr"
    plate = ome_section(zarr.open_group(store, mode="r"))
    assert plate["version"] == "0.6" and "version" not in plate["plate"]
    well = ome_section(zarr.open_group(store, path="B/03", mode="r"))
    assert well["version"] == "0.6" and "version" not in well["well"]
    for path in ("B/03", "A/01"):
        v06.Well.from_zarr(zarr.open_group(store, path=path, mode="r"))  # the well and its images
    # ome-zarr-models 1.8's 0.6 plate model still wants the plate's own version: given it here
    v06.hcs.HCSAttrs.model_validate({**plate, "plate": {**plate["plate"], "version": "0.6"}})
    field = backend.load("plate.zarr/B/03/0")
    assert field.shape == (2, 16, 16) and field[1].max() == 2
    assert repair_plate(str(store)).changed == []  # nothing to repair, version kept


@pytest.mark.parametrize(("options", "version"), [({}, "0.5"), ({"zarr_format": 2}, "0.4")])
def test_0_5_stays_the_default_and_0_4_is_unchanged(
    tmp_path: Path, options: dict[str, Any], version: str
) -> None:
    backend = ZarrBackend(root=tmp_path, **options)
    backend.save(np.ones((8, 8), np.uint8), "plate.zarr/A01_s1_w1.tif")
    attributes = dict(zarr.open_group(tmp_path / "plate.zarr", path="A/01/0", mode="r").attrs)
    section = ngff.ngff_section(attributes)
    found = section.get("version") or section["multiscales"][0].get("version")
    assert found == version
    assert "axes" in section["multiscales"][0]


def test_0_6_needs_zarr_v3() -> None:
    with pytest.raises(ValueError, match=r"0\.6 on Zarr v3"):
        ZarrBackend(ngff_version="0.6", zarr_format=2)
