"""ZarrBackend on local stores: the spec example, the storage contract, OME-NGFF 0.4/0.5 images
checked by ome-zarr-models and read back by ome-zarr-py, configuration, lazy and partial reads.

Plates (HCS) are in tests/test_zarr_plate.py; object storage in tests/test_zarr_s3.py.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr_models")
pytest.importorskip("dask.array")

import dask.array as da
import zarr
import zarr.codecs
from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest
from zarr.storage import LocalStore, WrapperStore

if "polystore.testing" not in sys.modules:  # detailed assertion messages from the suite
    pytest.register_assert_rewrite("polystore.testing")

from ngff_helpers import ngff_models, ome_section

from polystore import DiskBackend, FileManager, MemoryBackend
from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.config import ZarrConfig
from polystore.exceptions import (
    CorruptDataError,
    InvalidOptionError,
    StorageExistsError,
    UnsupportedDataError,
)
from polystore.registry import BackendRegistry, registered_backend_classes
from polystore.testing import BackendContractTests

METADATA_KEYS = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")




# -- a real store that records what is read -----------------------------------------------------
class ReadRecordingStore(WrapperStore[Any]):
    """A zarr store around another one, recording every key read (and the byte range asked for)."""

    def __init__(self, store: Any, reads: list[tuple[str, ByteRequest | None]] | None = None) -> None:
        super().__init__(store)
        self.reads: list[tuple[str, ByteRequest | None]] = reads if reads is not None else []

    def _with_store(self, store: Any) -> ReadRecordingStore:
        return type(self)(store, self.reads)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self.reads.append((key, byte_range))
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        self.reads.extend(key_ranges)
        return await super().get_partial_values(prototype, key_ranges)


class ReadRecordingKeys:
    """The backend's plain key I/O on a store (whole planes are read through it), recording reads."""

    def __init__(self, keys: Any, reads: list[tuple[str, ByteRequest | None]]) -> None:
        self.keys = keys
        self.reads = reads

    def get(self, key: str) -> bytes | None:
        self.reads.append((key, None))
        return self.keys.get(key)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.keys, name)


class RecordingZarrBackend(ZarrBackend):
    """ZarrBackend whose reads go through a ReadRecordingStore or ReadRecordingKeys (writes go
    straight to disk)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[str, ByteRequest | None]] = []

    def _open_store(self, store: str, *, writable: bool) -> Any:
        opened = super()._open_store(store, writable=writable)
        return opened if writable else ReadRecordingStore(opened, self.reads)

    def _keys(self, store: str) -> Any:
        return ReadRecordingKeys(super()._keys(store), self.reads)

    def chunk_reads(self) -> list[str]:
        """Keys of chunks (not metadata documents) read so far."""
        return [key for key, _ in self.reads if not key.endswith(METADATA_KEYS)]


# -- registration and the spec's example --------------------------------------------------------
def test_registered_as_zarr() -> None:
    assert registered_backend_classes()["zarr"] is ZarrBackend
    assert isinstance(BackendRegistry()["zarr"], ZarrBackend)
    assert isinstance(FileManager().get_backend("zarr"), ZarrBackend)


def test_spec_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The spec saves np.random.rand(1000, 1000, 1000): 8 GB of float64, 16 GB with the loaded
    # copy, and minutes of compression on a 2-core, 24 GB test machine. Same code on a 200**3
    # array (64 MB: 2 x 2 x 2 chunks of the spec's 100**3).
    monkeypatch.chdir(tmp_path)
    backend = ZarrBackend()

    large_data = np.random.default_rng(0).random((200, 200, 200))
    backend.save(large_data, "data.zarr", chunks=(100, 100, 100))
    loaded = backend.load("data.zarr")

    assert isinstance(loaded, np.ndarray)
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, large_data)
    on_disk: Any = zarr.open_group(tmp_path / "data.zarr", mode="r")
    assert on_disk["0"].chunks == (100, 100, 100)
    assert backend.is_file("data.zarr") and not backend.is_dir("data.zarr")
    chunk_files = [p for p in (tmp_path / "data.zarr" / "0" / "c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 8


# -- the storage contract -----------------------------------------------------------------------
class TestZarrBackendContract(BackendContractTests):
    """Default config: 2-D arrays are saved as OME-Zarr images (groups that count as files)."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        return ZarrBackend(root=tmp_path / "store.zarr")

    def test_groups_are_directories_and_images_are_files(self, backend: ZarrBackend, tmp_path: Path) -> None:
        image = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
        backend.save(image, "group/image", levels=2)
        assert backend.list_dir("group") == ["image"]
        assert backend.list_files("group", recursive=True) == ["group/image"]  # not its levels
        assert backend.is_file("group/image") and not backend.is_dir("group/image")
        assert backend.is_dir("group") and not backend.is_file("group")
        with pytest.raises(NotADirectoryError):
            backend.list_dir("group/image")
        info = backend.stat("group/image")
        assert info.kind == "file" and info.size is not None and info.size > 0
        on_disk = zarr.open_group(tmp_path / "store.zarr" / "group" / "image", mode="r")
        assert sorted(on_disk.array_keys()) == ["0", "1"]


class TestZarrBackendContractPlainArrays(BackendContractTests):
    """ome_zarr_metadata=False: every save is one plain zarr array."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        return ZarrBackend(root=tmp_path / "store.zarr", ome_zarr_metadata=False)

    def test_arrays_are_plain_zarr_arrays(self, backend: ZarrBackend, tmp_path: Path) -> None:
        backend.save(np.ones((4, 5), dtype=np.int16), "a/x")
        array = zarr.open_array(tmp_path / "store.zarr" / "a" / "x", mode="r")
        assert array.shape == (4, 5) and array.dtype == np.int16
        assert "ome" not in dict(array.attrs)


class TestZarrBackendContractV2(BackendContractTests):
    """Zarr v2 (OME-NGFF 0.4)."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        return ZarrBackend(root=tmp_path / "store.zarr", zarr_format=2)


def test_paths_without_a_store_go_to_the_configured_store(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, store_name="default.zarr")
    backend.save(np.eye(3), "./nested/./eye")
    assert (tmp_path / "default.zarr" / "nested" / "eye").is_dir()
    np.testing.assert_array_equal(backend.load("nested/eye"), np.eye(3))
    assert backend.list_files("nested") == ["nested/eye"]


def test_copy_keeps_layout_codecs_and_valid_metadata(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr", compressor="gzip", shards=(2, 16, 16))
    image = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    backend.save(image, "img", levels=2)
    backend.copy("img", "copies/img")
    copied: Any = zarr.open_group(tmp_path / "s.zarr" / "copies" / "img", mode="r")
    assert copied["0"].shards == (2, 16, 16) and copied["0"].chunks == (1, 16, 16)
    assert isinstance(copied["0"].compressors[0], zarr.codecs.GzipCodec)
    ngff_models(3).Image.from_zarr(copied)  # dimension names and metadata survive
    np.testing.assert_array_equal(backend.load("copies/img"), image)
    with pytest.raises(ValueError, match="itself"):
        backend.copy("img", "img")
    with pytest.raises(ValueError, match="itself"):
        backend.copy("copies", "copies/inner")
    np.testing.assert_array_equal(backend.load("img"), image)


# -- across backends ----------------------------------------------------------------------------
def test_copy_tree_memory_to_zarr_to_disk(tmp_path: Path) -> None:
    zarr_backend = ZarrBackend(root=tmp_path / "store.zarr")
    fm = FileManager(
        {"memory": MemoryBackend(), "zarr": zarr_backend, "disk": DiskBackend(root=tmp_path / "disk")}
    )
    tree: dict[str, np.ndarray] = {
        "a.npy": np.arange(12, dtype=np.uint16).reshape(3, 4),
        "line.npy": np.arange(5, dtype=np.int64),  # 1-D: a plain array, not an OME image
        "sub/b.npy": np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    }
    for relative, array in tree.items():
        fm.save(array, f"/src/{relative}", backend="memory")

    fm.copy("/src", "copied", backend="memory", dest_backend="zarr")
    assert fm.list_files("copied", backend="zarr", recursive=True) == sorted(f"copied/{r}" for r in tree)
    group: Any = zarr.open_group(tmp_path / "store.zarr" / "copied", mode="r")
    assert ome_section(group["a.npy"])["multiscales"][0]["axes"][0]["name"] == "y"
    assert group["line.npy"].shape == (5,)

    fm.copy("copied", "export", backend="zarr", dest_backend="disk")
    for relative, array in tree.items():
        exported = np.load(tmp_path / "disk" / "export" / relative)
        assert exported.dtype == array.dtype
        np.testing.assert_array_equal(exported, array)
        np.testing.assert_array_equal(fm.load(f"copied/{relative}", backend="zarr"), array)

    fm.copy("/src/a.npy", "single.npy", "memory", dest_backend="zarr")
    np.testing.assert_array_equal(zarr_backend.load("single.npy"), tree["a.npy"])


@pytest.mark.parametrize(("written", "read"), [(3, 3), (2, 2), (2, 3), (3, 2)])
def test_images_are_read_at_every_level_whichever_format_the_reader_prefers(
    tmp_path: Path, written: int, read: int
) -> None:
    """An image's levels are found from its metadata document (the image group is not opened
    as a zarr group): the same arrays, at the root of a store and inside it, in either format."""
    image = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    writer = ZarrBackend(root=tmp_path, zarr_format=written)
    writer.save(image, "root.zarr", levels=2)
    writer.save(image, "nested.zarr/A/01/0", levels=2)
    reader = ZarrBackend(root=tmp_path, zarr_format=read)
    for path in ("root.zarr", "nested.zarr/A/01/0"):
        for level in (0, 1):
            expected = zarr.open_array(tmp_path / path.split("/")[0], path="/".join(
                [*path.split("/")[1:], str(level)]), mode="r")[...]
            np.testing.assert_array_equal(reader.load(path, level=level), expected)
        assert reader.load(path, lazy=True).shape == image.shape
        with pytest.raises(ValueError, match="2 levels"):
            reader.load(path, level=2)


@pytest.mark.parametrize("node", ["cells", "cells/0"], ids=["image", "array"])
def test_a_damaged_metadata_document_is_named(tmp_path: Path, node: str) -> None:
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.ones((8, 8), np.uint8), "img.zarr/cells", levels=1)
    (tmp_path / "img.zarr" / node / "zarr.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptDataError, match=f"img.zarr/{node}'.*not valid JSON.*rewrite"):
        backend.load(f"img.zarr/{node}")


# -- OME-NGFF metadata ---------------------------------------------------------------------------
@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_ome_image_validates_with_ome_zarr_models(tmp_path: Path, zarr_format: int) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    image = np.arange(2 * 3 * 32 * 32, dtype=np.uint16).reshape(2, 3, 32, 32)
    backend.save(
        image, "img.zarr", levels=3, channel_names=["DAPI", "GFP"], scale=[1.0, 2.0, 0.5, 0.5],
        units={"z": "nanometer"},
    )
    group: Any = zarr.open_group(tmp_path / "img.zarr", mode="r")
    assert group.metadata.zarr_format == zarr_format
    validated = ngff_models(zarr_format).Image.from_zarr(group)  # raises if invalid

    attributes = validated.attributes.ome if zarr_format == 3 else validated.attributes
    multiscale = attributes.multiscales[0]
    axes = [(a.name, a.type, a.unit) for a in multiscale.axes]
    assert axes == [
        ("c", "channel", None), ("z", "space", "nanometer"), ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    scales = [list(d.coordinateTransformations[0].scale) for d in multiscale.datasets]
    assert scales == [[1.0, 2.0, 0.5, 0.5], [1.0, 2.0, 1.0, 1.0], [1.0, 2.0, 2.0, 2.0]]
    shapes = [group[d.path].shape for d in multiscale.datasets]
    assert shapes == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    np.testing.assert_array_equal(backend.load("img.zarr"), image)
    block_means = np.round(image.reshape(2, 3, 16, 2, 16, 2).mean(axis=(3, 5))).astype(np.uint16)
    np.testing.assert_array_equal(backend.load("img.zarr", level=1), block_means)
    with pytest.raises(ValueError, match="3 levels"):
        backend.load("img.zarr", level=3)

    if zarr_format == 3:
        assert ome_section(group)["version"] == "0.5"
        assert group["0"].metadata.dimension_names == ("c", "z", "y", "x")
        assert (tmp_path / "img.zarr" / "zarr.json").is_file()
    else:
        assert multiscale.version == "0.4"
        assert (tmp_path / "img.zarr" / ".zattrs").is_file()
        assert (tmp_path / "img.zarr" / "0" / "1" / "2" / "0" / "0").is_file()  # nested "/" chunk keys


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_labels_are_saved_as_an_ngff_label_image(tmp_path: Path, zarr_format: int) -> None:
    # without "image-label" viewers (napari-ome-zarr, polystore's reader) open labels as intensities
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    cells = np.zeros((16, 16), np.uint32)
    cells[2:6, 3:9] = 70000
    backend.save(cells, "cells.zarr", levels=2, labels=True)
    backend.save(cells.astype(np.uint16), "image.zarr")
    models = ngff_models(zarr_format)
    labelled: Any = zarr.open_group(tmp_path / "cells.zarr", mode="r")
    assert "image-label" in ome_section(labelled)
    models.ImageLabel.from_zarr(labelled)  # raises if the label image's metadata is invalid
    assert "image-label" not in ome_section(zarr.open_group(tmp_path / "image.zarr", mode="r"))
    np.testing.assert_array_equal(backend.load("cells.zarr"), cells)


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_a_translation_follows_the_scale_at_every_level(tmp_path: Path, zarr_format: int) -> None:
    backend = ZarrBackend(root=tmp_path, zarr_format=zarr_format)
    image = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    backend.save(image, "img.zarr", axes="cyx", levels=3, scale=[1.0, 0.5, 0.25], translation=[0, 10, -20])
    group: Any = zarr.open_group(tmp_path / "img.zarr", mode="r")
    ngff_models(zarr_format).Image.from_zarr(group)  # raises if invalid
    datasets = ome_section(group)["multiscales"][0]["datasets"]
    kinds = [[t["type"] for t in d["coordinateTransformations"]] for d in datasets]
    assert kinds == [["scale", "translation"]] * 3
    # a coarser level's pixel is the mean of 2x2 finer ones: its centre is half a finer pixel on
    translations = [d["coordinateTransformations"][1]["translation"] for d in datasets]
    assert translations == [[0, 10, -20], [0, 10.25, -19.875], [0, 10.75, -19.625]]
    np.testing.assert_array_equal(backend.load("img.zarr"), image)  # the pixels, nothing moved

    # a label image's levels pick a pixel of each block: the same centre at every level
    backend.save(np.zeros((16, 16), np.uint32), "cells.zarr", levels=2, labels=True, translation=(3, 4))
    labelled: Any = zarr.open_group(tmp_path / "cells.zarr", mode="r")
    ngff_models(zarr_format).ImageLabel.from_zarr(labelled)
    datasets = ome_section(labelled)["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][1]["translation"] for d in datasets] == [[3, 4], [3, 4]]


@pytest.mark.parametrize(
    ("translation", "wrong"),
    [([10.0, 20.0], "has 2 values"), ([0, float("nan"), 1], "is not all finite numbers"),
     ([0, float("inf"), 1], "is not all finite numbers"), (["a", 1, 2], "is not all finite numbers"),
     (5, "has 1 values")],
)
def test_a_translation_is_one_finite_offset_per_axis(tmp_path: Path, translation: Any, wrong: str) -> None:
    backend = ZarrBackend(root=tmp_path)
    message = f"{wrong} for an image of axes 'zyx': give one finite offset per axis \\(3"
    with pytest.raises(InvalidOptionError, match=message):
        backend.save(np.zeros((2, 8, 8), np.uint8), "img.zarr", translation=translation)
    assert not (tmp_path / "img.zarr").exists()  # refused before anything was written
    with pytest.raises(InvalidOptionError, match="plate, whose fields take no translation"):
        backend.save(np.zeros((8, 8), np.uint8), "plate.zarr/A01_s1_w1.tif", translation=[1.0, 2.0])


@pytest.mark.parametrize("zarr_format", [3, 2], ids=["ngff-0.5", "ngff-0.4"])
def test_ome_zarr_py_reads_the_pyramid(tmp_path: Path, zarr_format: int) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    image = np.random.default_rng(1).integers(0, 4000, size=(3, 64, 64), dtype=np.uint16)
    ZarrBackend(root=tmp_path, zarr_format=zarr_format).save(image, "img.zarr", levels=3)

    location = parse_url(str(tmp_path / "img.zarr"))
    assert location is not None
    nodes = list(Reader(location)())
    assert any(isinstance(spec, Multiscales) for spec in nodes[0].specs)
    assert [level.shape for level in nodes[0].data] == [(3, 64, 64), (3, 32, 32), (3, 16, 16)]
    assert [a["name"] for a in nodes[0].metadata["axes"]] == ["z", "y", "x"]
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), image)
    expected_level_1 = np.round(image.reshape(3, 32, 2, 32, 2).mean(axis=(2, 4))).astype(np.uint16)
    np.testing.assert_array_equal(np.asarray(nodes[0].data[1]), expected_level_1)


def test_channel_names_and_colours_in_omero(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    backend = ZarrBackend(root=tmp_path)
    backend.save(np.zeros((3, 8, 8), np.uint8), "named.zarr", channel_names=["DAPI", "GFP", "RFP"],
                 colors=["#0000ff", "00ff00", "FF0000"])
    omero = ome_section(zarr.open_group(tmp_path / "named.zarr", mode="r"))["omero"]
    assert [c["label"] for c in omero["channels"]] == ["DAPI", "GFP", "RFP"]
    assert [c["color"] for c in omero["channels"]] == ["0000FF", "00FF00", "FF0000"]
    assert all(c["active"] for c in omero["channels"])
    assert [(c["window"]["min"], c["window"]["max"]) for c in omero["channels"]] == [(0, 255)] * 3
    assert omero["rdefs"]["model"] == "color"
    axes = ome_section(zarr.open_group(tmp_path / "named.zarr", mode="r"))["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"]  # naming channels makes the first axis c

    location = parse_url(str(tmp_path / "named.zarr"))
    assert location is not None
    node = next(iter(Reader(location)()))
    assert node.metadata["channel_names"] == ["DAPI", "GFP", "RFP"]

    backend.save(np.zeros((2, 2, 8, 8), np.uint16), "default.zarr")  # czyx: default names and LUTs
    channels = ome_section(zarr.open_group(tmp_path / "default.zarr", mode="r"))["omero"]["channels"]
    assert [c["color"] for c in channels] == ["00FF00", "FF00FF"]
    assert [c["label"] for c in channels] == ["channel 0", "channel 1"]
    assert channels[0]["window"]["max"] == 65535  # the dtype's range stays the slider's range

    # the display window comes from the data (robust percentiles), not the dtype's range,
    # so a dim uint16 image does not open nearly black
    dim = np.random.default_rng(2).integers(100, 1100, size=(2, 64, 64), dtype=np.uint16)
    dim[1] += 1000
    backend.save(dim, "dim.zarr", channel_names=["a", "b"])
    windows = [
        (c["window"]["start"], c["window"]["end"])
        for c in ome_section(zarr.open_group(tmp_path / "dim.zarr", mode="r"))["omero"]["channels"]
    ]
    assert 100 <= windows[0][0] < 120 and 1080 < windows[0][1] <= 1100
    assert 1100 <= windows[1][0] < 1120 and 2080 < windows[1][1] <= 2100


def test_bad_axes_are_refused(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(ValueError, match="order"):
        backend.save(np.zeros((2, 4, 4)), "a.zarr", axes="ycx")
    with pytest.raises(ValueError, match="does not describe"):
        backend.save(np.zeros((2, 4, 4)), "a.zarr", axes="yx")


# -- configuration ------------------------------------------------------------------------------
COMPRESSOR_CODECS: dict[tuple[str, bool], tuple[type[Any], str | None, str]] = {
    # compressor, shuffle -> (v3 codec class, its Blosc cname or None), v2 numcodecs id
    ("zstd", True): (zarr.codecs.BloscCodec, "zstd", "blosc"),
    ("zstd", False): (zarr.codecs.ZstdCodec, None, "zstd"),
    ("blosc-lz4", True): (zarr.codecs.BloscCodec, "lz4", "blosc"),
    ("blosc-lz4", False): (zarr.codecs.BloscCodec, "lz4", "blosc"),
    ("blosc-zstd", False): (zarr.codecs.BloscCodec, "zstd", "blosc"),
    ("gzip", True): (zarr.codecs.GzipCodec, None, "gzip"),
}


@pytest.mark.parametrize(("compressor", "shuffle"), list(COMPRESSOR_CODECS), ids=lambda v: str(v))
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_compressors_shuffle_and_level(
    tmp_path: Path, compressor: str, shuffle: bool, zarr_format: int
) -> None:
    backend = ZarrBackend(
        root=tmp_path / "c.zarr", compressor=compressor, shuffle=shuffle, compression_level=5,
        zarr_format=zarr_format,
    )
    data = np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    backend.save(data, "x")
    np.testing.assert_array_equal(backend.load("x"), data)
    codec: Any
    (codec,) = zarr.open_array(tmp_path / "c.zarr" / "x" / "0", mode="r").compressors
    v3_class, blosc_name, v2_id = COMPRESSOR_CODECS[(compressor, shuffle)]
    if zarr_format == 3:
        assert isinstance(codec, v3_class)
        if blosc_name is not None:
            assert codec.cname.value == blosc_name
            assert codec.clevel == 5
            assert codec.shuffle.value == ("shuffle" if shuffle else "noshuffle")
        else:
            assert codec.level == 5
    else:
        config = codec.get_config()
        assert config["id"] == v2_id
        assert config.get("clevel", config.get("level")) == 5
        if v2_id == "blosc":
            assert config["cname"] == blosc_name
            assert config["shuffle"] == (1 if shuffle else 0)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_no_compression_stores_raw_bytes(tmp_path: Path, zarr_format: int) -> None:
    backend = ZarrBackend(root=tmp_path / "c.zarr", compressor="none", zarr_format=zarr_format,
                          ome_zarr_metadata=False, chunk_strategy="single")
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    backend.save(data, "raw")
    assert zarr.open_array(tmp_path / "c.zarr" / "raw", mode="r").compressors == ()
    stored = (tmp_path / "c.zarr" / "raw").rglob("*")
    chunks = [p for p in stored if p.is_file() and p.name not in METADATA_KEYS]
    assert [chunk.read_bytes() for chunk in chunks] == [data.tobytes()]  # uncompressed: the array's own bytes


def test_chunk_strategies_and_explicit_chunks(tmp_path: Path) -> None:
    data = np.zeros((3, 4, 40, 50), dtype=np.uint8)

    def chunks_of(**options: Any) -> tuple[int, ...]:
        chunk_shape = options.pop("chunks", None)
        backend = ZarrBackend(root=tmp_path / "s.zarr", **options)
        backend.save(data, "x", chunks=chunk_shape)
        return tuple(zarr.open_array(tmp_path / "s.zarr" / "x" / "0", mode="r").chunks)

    assert chunks_of() == (1, 1, 40, 50)  # default: one chunk per plane
    assert chunks_of(chunk_strategy="plane") == (1, 1, 40, 50)
    assert chunks_of(chunk_strategy="single") == (3, 4, 40, 50)
    expected_auto = zarr.create_array(zarr.storage.MemoryStore(), shape=data.shape, dtype=data.dtype).chunks
    assert chunks_of(chunk_strategy="auto") == expected_auto
    assert chunks_of(chunk_strategy="single", chunks=(1, 2, 20, 25)) == (1, 2, 20, 25)  # explicit wins
    assert chunks_of(config=ZarrConfig(chunks=(3, 1, 64, 64))) == (3, 1, 40, 50)  # clipped to the shape
    with pytest.raises(ValueError, match="diagonal"):
        ZarrBackend(chunk_strategy="diagonal").save(data, str(tmp_path / "bad.zarr"))


@pytest.mark.parametrize(("options", "shape"), [
    ({"chunks": (1, 64, 64)}, (128, 128)),
    ({"chunks": (64, 64)}, (2, 128, 128)),
    ({"chunks": (1, 64, 64), "shards": (128, 128)}, (2, 128, 128)),
], ids=["more chunk sizes than axes", "fewer chunk sizes than axes", "fewer shard sizes than axes"])
def test_chunks_or_shards_not_one_per_axis_are_refused_before_anything_changes(
    tmp_path: Path, options: dict[str, Any], shape: tuple[int, ...]
) -> None:
    """More sizes than axes were cut to the first ones ((1, 64) for a 2-D image); fewer were
    zarr's bare ValueError, after the image saved there was cleared."""
    ZarrBackend().save(np.ones(shape, np.uint8), str(tmp_path / "x.zarr" / "img"))
    with pytest.raises(InvalidOptionError, match=f"{len(shape)}-D array.*one size per axis"):
        ZarrBackend(**options).save(np.zeros(shape, np.uint8), str(tmp_path / "x.zarr" / "img"))
    assert np.array_equal(ZarrBackend().load(str(tmp_path / "x.zarr" / "img")), np.ones(shape, np.uint8))


def test_sharding_on_zarr_v3(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr", shards=(4, 32, 32))
    data = np.arange(8 * 32 * 32, dtype=np.uint16).reshape(8, 32, 32)
    backend.save(data, "sharded")
    array = zarr.open_array(tmp_path / "s.zarr" / "sharded" / "0", mode="r")
    assert array.shards == (4, 32, 32) and array.chunks == (1, 32, 32)
    stored = [p for p in (tmp_path / "s.zarr" / "sharded" / "0" / "c").rglob("*") if p.is_file()]
    assert len(stored) == 2  # 8 chunks in 2 stored objects
    np.testing.assert_array_equal(backend.load("sharded"), data)
    np.testing.assert_array_equal(backend.load("sharded", selection=np.s_[5]), data[5])

    with pytest.raises(ValueError, match="Zarr v3"):
        ZarrBackend(root=tmp_path / "v2.zarr", zarr_format=2, shards=(4, 32, 32)).save(data, "x")


def test_overwrite_false_refuses_and_keeps_the_data(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr", overwrite=False)
    first = np.ones((4, 4), dtype=np.uint8)
    backend.save(first, "kept")
    with pytest.raises(FileExistsError, match="overwrite=False") as refused:
        backend.save(first * 2, "kept")
    assert isinstance(refused.value, StorageExistsError)  # a PolystoreError, saying what to do
    assert "overwrite=True" in str(refused.value)
    np.testing.assert_array_equal(backend.load("kept"), first)
    backend.save(first * 3, "kept", overwrite=True)  # per-call override
    np.testing.assert_array_equal(backend.load("kept"), first * 3)
    assert ZarrBackend(root=tmp_path / "t.zarr").config.overwrite  # the default replaces


def test_config_overrides_per_backend_and_per_call(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr", config=ZarrConfig(compressor="gzip"), pyramid_levels=2)
    assert backend.config.compressor == "gzip" and backend.config.pyramid_levels == 2
    backend.save(np.zeros((16, 16), np.uint8), "a")
    backend.save(np.zeros((16, 16), np.uint8), "b", compressor="none", pyramid_levels=1)
    root: Any = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert sorted(root["a"].array_keys()) == ["0", "1"]
    assert isinstance(root["a/0"].compressors[0], zarr.codecs.GzipCodec)
    assert sorted(root["b"].array_keys()) == ["0"] and root["b/0"].compressors == ()
    with pytest.raises(TypeError, match="compresor"):
        ZarrBackend(compresor="gzip")


# -- reading ------------------------------------------------------------------------------------
def test_load_returns_numpy_or_the_asked_framework(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr")
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    backend.save(data, "x")
    loaded = backend.load("x")
    assert type(loaded) is np.ndarray and loaded.dtype == np.float32
    torch = pytest.importorskip("torch")
    tensor = backend.load("x", framework="torch")
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_array_equal(tensor.numpy(), data)
    backend.save(torch.ones(2, 3, dtype=torch.int16), "from_torch")  # other frameworks in, too
    assert backend.load("from_torch").dtype == np.int16


def test_lazy_load_returns_dask_and_reads_no_chunk(tmp_path: Path) -> None:
    data = np.arange(4 * 3 * 16 * 16, dtype=np.uint16).reshape(4, 3, 16, 16)
    RecordingZarrBackend(root=tmp_path / "s.zarr").save(data, "stack")
    backend = RecordingZarrBackend(root=tmp_path / "s.zarr")

    lazy = backend.load("stack", lazy=True)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == data.shape and lazy.dtype == data.dtype
    assert backend.chunk_reads() == []  # metadata only

    np.testing.assert_array_equal(lazy[2, 1].compute(), data[2, 1])
    assert backend.chunk_reads() == ["stack/0/c/2/1/0/0"]  # the one plane asked for
    np.testing.assert_array_equal(backend.load("stack", lazy=True, selection=np.s_[1]).compute(), data[1])


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_a_selection_outside_the_array_is_our_index_error(tmp_path: Path, lazy: bool) -> None:
    """zarr's BoundsCheckError (an IndexError naming one dimension's length) reached the user;
    it is our error, still an IndexError, naming the shape the file has and the selection."""
    backend = ZarrBackend(root=tmp_path)
    backend.save(np.zeros((2, 16, 16), np.uint16), "s.zarr/stack")
    backend.save(np.zeros((16, 16), np.uint16), "s.zarr/A01_s1_w2.tif")  # a plane of a (2, 16, 16) field
    stack = r"\(2, 16, 16\)"
    cases = [("s.zarr/stack", np.s_[5], stack), ("s.zarr/stack", np.s_[0, 3, 20], stack),
             ("s.zarr/stack", np.s_[0, 0, 0, 0], stack), ("s.zarr/stack", 1.5, stack),
             ("s.zarr/A01_s1_w2.tif", np.s_[0, 20], r"\(16, 16\)")]
    for path, selection, shape in cases:
        with pytest.raises(IndexError, match=rf"selection={re.escape(repr(selection))} does not index "
                                             rf"'{re.escape(path)}', an array of shape {shape}") as caught:
            result = backend.load(path, selection=selection, lazy=lazy)
            if lazy:
                result.compute()
        assert isinstance(caught.value, InvalidOptionError)  # as the TIFF format's key= past its pages


@pytest.mark.parametrize(("zarr_format", "chunk_key"), [(3, "B/03/1/0/c/2/0/0"), (2, "B/03/1/0/2/0/0")])
def test_reading_one_plane_of_a_plate_reads_only_its_chunk(
    tmp_path: Path, zarr_format: int, chunk_key: str
) -> None:
    planes = {(site, wavelength): np.full((32, 32), 10 * site + wavelength, np.uint16)
              for site in (1, 2) for wavelength in (1, 2, 3)}
    ZarrBackend(root=tmp_path, zarr_format=zarr_format).save_batch(
        list(planes.values()), [f"plate.zarr/B03_s{s}_w{w}.tif" for s, w in planes]
    )
    backend = RecordingZarrBackend(root=tmp_path, zarr_format=zarr_format)

    np.testing.assert_array_equal(backend.load("plate.zarr/B03_s2_w3.tif"), planes[(2, 3)])
    assert backend.chunk_reads() == [chunk_key]

    backend.reads.clear()  # the same plane through the field image's path and a selection
    np.testing.assert_array_equal(backend.load("plate.zarr/B/03/1", selection=np.s_[2]), planes[(2, 3)])
    assert backend.chunk_reads() == [chunk_key]

    backend.reads.clear()
    lazy = backend.load("plate.zarr/B03_s2_w3.tif", lazy=True)
    assert backend.chunk_reads() == []
    np.testing.assert_array_equal(lazy.compute(), planes[(2, 3)])
    assert backend.chunk_reads() == [chunk_key]


def test_reading_one_plane_of_a_sharded_plate_reads_byte_ranges_of_one_shard(tmp_path: Path) -> None:
    planes = [np.full((32, 32), w, np.uint16) for w in range(1, 7)]
    ZarrBackend(root=tmp_path, shards=(3, 32, 32)).save_batch(
        planes, [f"plate.zarr/C04_s1_w{w}.tif" for w in range(1, 7)]
    )
    backend = RecordingZarrBackend(root=tmp_path)
    np.testing.assert_array_equal(backend.load("plate.zarr/C04_s1_w5.tif"), planes[4])
    chunk_reads = [(key, byte_range) for key, byte_range in backend.reads if not key.endswith(METADATA_KEYS)]
    assert {key for key, _ in chunk_reads} == {"C/04/0/0/c/1/0/0"}  # the second shard only
    assert all(byte_range is not None for _, byte_range in chunk_reads)  # its index and one chunk, not all


def test_dask_arrays_are_saved_with_their_pyramid(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr")
    source = da.arange(6 * 32 * 32, dtype=np.int32, chunks=6 * 32 * 32).reshape(6, 32, 32)
    backend.save(source, "from_dask", levels=2)
    np.testing.assert_array_equal(backend.load("from_dask"), source.compute())
    assert backend.load("from_dask", level=1).shape == (6, 16, 16)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [np.array([{"a": 1}, None], dtype=object), {"a": 1}, [1, "x", None]],
    ids=["objects", "dict", "mixed"],
)
def test_non_numeric_data_is_refused(tmp_path: Path, data: Any) -> None:
    backend = ZarrBackend(root=tmp_path / "s.zarr")
    with pytest.raises(UnsupportedDataError, match="numeric arrays"):
        backend.save(data, "bad")
    assert not backend.exists("bad")


@pytest.mark.parametrize("path", ["s.zarr/a/../../x", "s.zarr/..", "loose/../../x"])
def test_dot_dot_cannot_leave_the_store(tmp_path: Path, path: str) -> None:
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(ValueError, match=r"'\.\.' cannot climb out"):
        backend.save(np.zeros((2, 2)), path)
    with pytest.raises(ValueError, match=r"'\.\.' cannot climb out"):
        backend.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_nodes_and_stores_raise_file_not_found(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(FileNotFoundError):
        backend.load("absent.zarr")
    backend.save(np.zeros((2, 2)), "s.zarr/x")
    with pytest.raises(FileNotFoundError):
        backend.load("s.zarr/y")
    assert json.loads((tmp_path / "s.zarr" / "x" / "zarr.json").read_text())["node_type"] == "group"


def test_read_recorder_is_a_pass_through_store(tmp_path: Path) -> None:
    # the recording store is a real pass-through: same data as the plain LocalStore
    backend = ZarrBackend(root=tmp_path / "s.zarr")
    backend.save(np.arange(6, dtype=np.uint8).reshape(2, 3), "x")
    recorder = ReadRecordingStore(LocalStore(tmp_path / "s.zarr", read_only=True))
    np.testing.assert_array_equal(zarr.open_array(recorder, path="x/0", mode="r")[...], backend.load("x"))
    assert ("x/0/c/0/0", None) in recorder.reads


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"compressor": "lzma"}, "compressor='lzma': choose one of zstd"),
        ({"chunk_strategy": "diagonal"}, "chunk_strategy='diagonal': choose one of plane"),
        ({"zarr_format": 4}, "zarr_format=4"),
        ({"pyramid_levels": 0}, "pyramid_levels=0"),
    ],
)
def test_bad_config_fails_where_it_is_made(option: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ZarrBackend(**option)


def test_node_and_attributes_expose_what_polystore_does_not_wrap(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    image = np.zeros((2, 16, 16), np.uint16)
    backend.save(image, "images.zarr/cells", levels=2, channel_names=["dna", "actin"])
    node = backend.node("images.zarr/cells")
    assert sorted(node.keys()) == ["0", "1"]
    attributes = backend.attributes("images.zarr/cells")
    assert "ome" in attributes or "multiscales" in attributes
    with pytest.raises(FileNotFoundError):
        backend.attributes("images.zarr/missing")


def test_a_group_deleted_and_written_again_as_an_array_refuses_children(tmp_path: Path) -> None:
    """The backend remembers which parents are groups (one look per well, not per save), and
    forgets it when it deletes something."""
    backend = ZarrBackend(root=tmp_path, write_plate_metadata=False)
    backend.save(np.zeros((4, 4), np.uint8), "s.zarr/a/b/x")
    backend.save(np.ones((4, 4), np.uint8), "s.zarr/a/b/y")  # 'a/b' known to be a group now
    backend.delete_all("s.zarr/a/b")
    backend.save(np.zeros((4, 4), np.uint8), "s.zarr/a/b")  # now an image
    with pytest.raises(NotADirectoryError, match="'a/b' is an array"):
        backend.save(np.zeros((4, 4), np.uint8), "s.zarr/a/b/z")
