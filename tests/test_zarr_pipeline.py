"""The codec pipeline: zarrs (Rust) really encodes and decodes the chunks of the stores it
supports, zarr-python's own pipeline the others (no warning), and the backend works without
zarrs installed (the contract suite in a process where zarrs cannot be imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
zarrs = pytest.importorskip("zarrs", reason="the fast path needs zarrs (pip install 'polystore[zarr]')")

import zarr  # noqa: E402

from polystore.backends.zarr import ZarrBackend  # noqa: E402
from polystore.backends.zarr.pipeline import PIPELINE_PATH, ZARRS_STORES  # noqa: E402
from polystore.exceptions import MissingDependencyError  # noqa: E402

TESTS = Path(__file__).resolve().parent


def pipeline_of(array: Any) -> Any:
    """The codec pipeline zarr built for ``array`` (zarr keeps it on the async array)."""
    return array._async_array.codec_pipeline


def test_zarrs_encodes_and_decodes_the_chunks_of_a_local_plate(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    assert backend.codec_pipeline == PIPELINE_PATH == zarr.config.get("codec_pipeline.path")
    plane = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    backend.save(plane, "plate.zarr/A01_s1_w2.tif")
    backend.save_batch([plane, plane], ["plate.zarr/B01_s1_w1.tif", "plate.zarr/B01_s1_w2.tif"])
    for field in ("A/01/0", "B/01/0"):
        level = backend.node(f"plate.zarr/{field}")["0"]
        pipeline = pipeline_of(level)
        assert isinstance(pipeline, zarrs.ZarrsCodecPipeline) and pipeline.impl is not None
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w2.tif"), plane)
    # the array the writer made itself (from the metadata documents) used zarrs too, through
    # obstore's local store, whose puts are staged and renamed (tests/test_zarr_atomic.py)
    image = backend.plates.open_field(backend.locate("plate.zarr/B/01/0"))
    assert image is not None and pipeline_of(image.levels[0]).impl is not None
    store = image.levels[0].store_path.store
    assert type(store).__name__ == "ObjectStore" and type(store.store).__name__ == "LocalStore"


def test_zarrs_never_writes_a_local_store_in_place(tmp_path: Path) -> None:
    """zarrs writes the chunks of zarr's LocalStore in place: a writable one gets zarr-python's
    pipeline (temporary file, rename), a read-only one zarrs."""
    ZarrBackend(root=tmp_path)  # zarrs configured
    writable = zarr.create_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), shape=(8, 8), dtype="uint16")
    writable[...] = 5
    assert not isinstance(pipeline_of(writable), zarrs.ZarrsCodecPipeline)
    read_only = zarr.open_array(zarr.storage.LocalStore(tmp_path / "a.zarr", read_only=True), mode="r")
    assert pipeline_of(read_only).impl is not None and int(np.asarray(read_only[...]).sum()) == 5 * 64


def test_zarrs_on_object_storage(s3_bucket: str) -> None:
    backend = ZarrBackend(root=f"s3://{s3_bucket}")
    plane = np.full((32, 32), 7, np.uint16)
    backend.save(plane, "plate.zarr/A01_s1_w1.tif")
    level = backend.node("plate.zarr/A/01/0")["0"]
    assert type(level.store_path.store).__name__ in ZARRS_STORES
    assert pipeline_of(level).impl is not None
    np.testing.assert_array_equal(backend.load("plate.zarr/A01_s1_w1.tif"), plane)


def test_other_stores_get_zarr_pythons_pipeline_without_a_warning(tmp_path: Path) -> None:
    ZarrBackend(root=tmp_path)  # zarrs configured
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array = zarr.create_array(zarr.storage.MemoryStore(), shape=(8, 8), dtype="uint16")
        array[...] = 3
        assert int(np.asarray(array[...]).sum()) == 3 * 64
    assert not isinstance(pipeline_of(array), zarrs.ZarrsCodecPipeline)


def test_the_setting_chooses_zarr_pythons_pipeline(tmp_path: Path) -> None:
    try:
        backend = ZarrBackend(root=tmp_path, codec_pipeline="zarr")
        backend.save(np.ones((8, 8), np.uint8), "x.zarr/a")
        assert not isinstance(pipeline_of(backend.node("x.zarr/a")["0"]), zarrs.ZarrsCodecPipeline)
        with pytest.raises(ValueError, match="codec_pipeline='fast'"):
            ZarrBackend(root=tmp_path, codec_pipeline="fast")
    finally:
        ZarrBackend()  # back to the default for the tests after this one


def test_zarrs_required_but_missing_says_what_to_install(tmp_path: Path) -> None:
    hidden = _hide_zarrs(tmp_path)
    code = (
        "from polystore.backends.zarr import ZarrBackend\n"
        "from polystore.exceptions import MissingDependencyError\n"
        "b = ZarrBackend()\n"
        "assert b.codec_pipeline.endswith('BatchedCodecPipeline'), b.codec_pipeline\n"
        "try:\n    ZarrBackend(codec_pipeline='zarrs')\n"
        "except MissingDependencyError as e:\n    assert 'polystore[zarr]' in str(e)\n"
        "else:\n    raise SystemExit('no error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=hidden, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert issubclass(MissingDependencyError, ImportError)  # the class the subprocess checks


def _hide_zarrs(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import zarrs, as if it were not installed: a package
    of that name that refuses to import, and a distribution of that name without zarrs' entry
    point (zarr loads the codec pipelines installed packages declare)."""
    blocker = tmp_path / "hide" / "zarrs"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('zarrs hidden by the test')\n")
    metadata = tmp_path / "hide" / "zarrs-0.0.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: zarrs\nVersion: 0.0.0\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hide"), str(TESTS), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_the_contract_suite_passes_without_zarrs(tmp_path: Path) -> None:
    env = _hide_zarrs(tmp_path)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               f"{TESTS}/test_zarr.py::TestZarrBackendContract", f"{TESTS}/test_zarr_plate.py", "-k",
               "not napari"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False,
                            cwd=TESTS.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
