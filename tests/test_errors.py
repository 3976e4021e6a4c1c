"""Bad input gets a clear error: the right type (ours and the matching builtin) and a message
that names what was wrong and what to do about it."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import polystore
from polystore import (
    BackendNotFoundError,
    BackendRegistrationError,
    BackendRegistry,
    BatchError,
    DiskBackend,
    FileManager,
    IncompleteBackendError,
    MemoryBackend,
    MissingDependencyError,
    PathEscapeError,
    PolystoreError,
    ReadOnlyBackend,
    ReadOnlyBackendError,
    StorageBackend,
    StorageFileNotFoundError,
    UnsupportedDataError,
    UnsupportedFormatError,
)
from polystore.exceptions import BatchFailure
from polystore.registry import (
    registered_backend_classes,
)

pytestmark = pytest.mark.usefixtures("restore_backend_classes")


@pytest.fixture
def disk(tmp_path: Path) -> DiskBackend:
    return DiskBackend(root=tmp_path)


@pytest.fixture
def fm(tmp_path: Path) -> FileManager:
    return FileManager({"disk": DiskBackend(root=tmp_path), "memory": MemoryBackend()})


# -- missing files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.npy", "missing.npz", "missing.txt", "missing.json",
                                  "missing.csv", "missing.tif", "sub/dir/missing.npy"])
def test_loading_a_missing_file_from_disk_names_the_path(disk: DiskBackend, name: str) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        disk.load(name)
    assert isinstance(caught.value, StorageFileNotFoundError)
    assert isinstance(caught.value, PolystoreError)
    assert f"'{name}'" in str(caught.value)
    assert "disk" in str(caught.value)
    assert caught.value.filename == name


def test_missing_file_error_reads_like_the_builtin_and_survives_pickling() -> None:
    import errno
    import pickle

    error = StorageFileNotFoundError("plate/A01.tif", "disk")
    assert str(error) == "[Errno 2] No such file or directory in backend 'disk': 'plate/A01.tif'"
    assert error.errno == errno.ENOENT and error.filename == "plate/A01.tif"
    copy = pickle.loads(pickle.dumps(error))  # as it crosses from a worker process
    assert type(copy) is StorageFileNotFoundError
    assert str(copy) == str(error) and copy.backend == "disk"


@pytest.mark.parametrize(
    "error",
    [
        BackendNotFoundError("nope", ["disk", "memory"]),
        MissingDependencyError("tifffile", "tiff", "Reading TIFF files"),
        BatchError("load_batch", [BatchFailure(1, "b.npy", ValueError("bad"))], 2, [1, None]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_with_extra_arguments_survive_pickling(error: Exception) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)


def test_loading_a_missing_file_from_memory_names_the_path(fm: FileManager) -> None:
    with pytest.raises(StorageFileNotFoundError, match=r"memory.*'/nowhere/x\.npy'"):
        fm.load("/nowhere/x.npy", backend="memory")


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_other_operations_on_missing_paths_name_the_path(fm: FileManager, backend: str) -> None:
    for operation in (fm.delete, fm.delete_all, fm.list_dir, fm.list_files, fm.stat):
        with pytest.raises(FileNotFoundError, match="'ghost'"):
            operation("ghost", backend=backend)
    with pytest.raises(FileNotFoundError, match=r"'ghost\.npy'"):
        fm.copy("ghost.npy", "copy.npy", backend=backend)
    with pytest.raises(FileNotFoundError, match=r"'ghost\.npy'"):
        fm.move("ghost.npy", "moved.npy", backend=backend)


def test_missing_file_inside_a_batch_is_named_in_the_batch_error(fm: FileManager) -> None:
    fm.save(np.zeros(2), "a.npy", backend="disk")
    with pytest.raises(BatchError) as caught:
        fm.load_batch(["a.npy", "b.npy"], backend="disk")
    assert "1 of 2 items failed" in str(caught.value)
    assert "b.npy" in str(caught.value) and "a.npy" not in str(caught.value).split("failed")[1]
    [failure] = caught.value.failures
    assert failure.index == 1 and isinstance(failure.error, FileNotFoundError)
    assert caught.value.results is not None
    np.testing.assert_array_equal(caught.value.results[0], np.zeros(2))  # the good one loaded


# -- unknown formats --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.xyz", "noextension", "archive.tar.gz"])
def test_unknown_extension_lists_the_known_ones(disk: DiskBackend, tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        disk.save(np.zeros(3), name)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert f"'{name}'" in message
    known = message.split("Known extensions:")[1]
    for extension in (".npy", ".npz", ".tif", ".tiff", ".csv", ".json", ".txt", ".pt"):
        assert extension in known
    assert "format=" in message  # says how to choose one explicitly
    assert os.listdir(tmp_path) == []  # nothing written
    with pytest.raises(FileNotFoundError):  # missing: that is the problem to report first
        disk.load(name)
    (tmp_path / name).write_bytes(b"\x00\x01")
    with pytest.raises(UnsupportedFormatError, match="Known extensions"):
        disk.load(name)


def test_unknown_format_name_lists_the_known_formats(disk: DiskBackend) -> None:
    with pytest.raises(UnsupportedFormatError, match=r"Unknown format 'nope'.*Known formats:.*npy"):
        disk.save(np.zeros(3), "data.bin", format="nope")


# -- wrong data for a format ------------------------------------------------------------


def test_dict_to_npy_is_refused(disk: DiskBackend) -> None:
    with pytest.raises(UnsupportedDataError, match=r"\.npy stores numeric arrays.*dtype=object"):
        disk.save({"a": 1}, "d.npy")


def test_object_array_to_npy_is_refused_without_pickle(disk: DiskBackend) -> None:
    objects = np.array([1, "two", None], dtype=object)
    with pytest.raises(UnsupportedDataError, match="pickle") as caught:
        disk.save(objects, "o.npy")
    assert isinstance(caught.value, TypeError)


def test_array_to_txt_is_refused(disk: DiskBackend) -> None:
    with pytest.raises(UnsupportedDataError, match=r"\.txt holds text.*got ndarray.*\.npy"):
        disk.save(np.arange(3), "a.txt")


def test_four_dimensional_array_to_csv_is_refused(disk: DiskBackend) -> None:
    with pytest.raises(UnsupportedDataError, match=r"CSV cannot keep this.*it is 4-D"):
        disk.save(np.zeros((2, 2, 2, 2)), "t.csv")


def test_unserialisable_object_to_json_is_refused(disk: DiskBackend) -> None:
    with pytest.raises(UnsupportedDataError, match="JSON"):
        disk.save({"when": object()}, "c.json")


# -- failed saves leave no trace ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("a.npy", np.arange(5), np.array([1, "x", None], dtype=object)),
        ("a.json", {"ok": True}, {"bad": {1, 2}}),
        ("a.csv", np.arange(4), np.zeros((2, 2, 2))),
        ("a.txt", "old text", np.arange(3)),
    ],
)
def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(
    disk: DiskBackend, tmp_path: Path, name: str, good: Any, bad: Any
) -> None:
    disk.save(good, name)
    before = (tmp_path / name).read_bytes()
    with pytest.raises(UnsupportedDataError):
        disk.save(bad, name)
    assert (tmp_path / name).read_bytes() == before
    assert os.listdir(tmp_path) == [name]


# -- path escapes ------------------------------------------------------------------------


@pytest.fixture
def rooted(tmp_path: Path) -> DiskBackend:
    root = tmp_path / "root"
    root.mkdir()
    return DiskBackend(root=root)


def test_dotdot_cannot_leave_the_disk_root(rooted: DiskBackend, tmp_path: Path) -> None:
    with pytest.raises(PathEscapeError) as caught:
        rooted.save(np.zeros(2), "../x.npy")
    assert isinstance(caught.value, PermissionError)
    assert "'../x.npy'" in str(caught.value) and "outside this backend's root" in str(caught.value)
    assert not (tmp_path / "x.npy").exists()
    with pytest.raises(PathEscapeError):
        rooted.load("sub/../../x.npy")


def test_absolute_path_outside_the_disk_root_is_refused(rooted: DiskBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npy"
    np.save(outside, np.ones(2))
    with pytest.raises(PathEscapeError, match=re.escape(str(outside))):
        rooted.load(str(outside))
    with pytest.raises(PathEscapeError):
        rooted.delete(str(outside))
    assert outside.exists()


def test_symlink_pointing_outside_the_disk_root_is_refused(rooted: DiskBackend, tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    np.save(secret_dir / "s.npy", np.ones(2))
    assert rooted.root is not None
    (rooted.root / "link").symlink_to(secret_dir, target_is_directory=True)
    with pytest.raises(PathEscapeError, match="outside this backend's root"):
        rooted.load("link/s.npy")
    with pytest.raises(PathEscapeError):
        rooted.save(np.zeros(2), "link/new.npy")
    assert sorted(os.listdir(secret_dir)) == ["s.npy"]


def test_the_disk_root_itself_cannot_be_deleted(rooted: DiskBackend) -> None:
    with pytest.raises(PathEscapeError, match="root"):
        rooted.delete_all(".")


@pytest.mark.parametrize("path", ["../../x", "/../x", "a/../../x"])
def test_memory_paths_cannot_climb_above_the_root(path: str) -> None:
    memory = MemoryBackend()
    with pytest.raises(PathEscapeError, match=re.escape(f"'{path}'")):
        memory.save(np.zeros(2), path)
    with pytest.raises(PathEscapeError):
        memory.load(path)


# -- read-only backends -------------------------------------------------------------------


class _FixedSource(ReadOnlyBackend):
    """A read-only backend over a fixed dict (no _backend_type: given as an instance)."""

    def __init__(self, items: dict[str, Any]) -> None:
        self.items = items

    def load(self, file_path: Any, **kwargs: Any) -> Any:
        try:
            return self.items[str(file_path)]
        except KeyError:
            raise StorageFileNotFoundError(str(file_path)) from None

    def exists(self, path: Any) -> bool:
        return str(path) in self.items

    def is_file(self, path: Any) -> bool:
        return self.exists(path)

    def is_dir(self, path: Any) -> bool:
        return False


def test_every_write_to_a_read_only_backend_is_refused() -> None:
    source = _FixedSource({"a.npy": np.arange(3)})
    fm = FileManager({"ro": source, "memory": MemoryBackend()})
    attempts: list[Callable[[], object]] = [
        lambda: fm.save(np.zeros(1), "b.npy", backend="ro"),
        lambda: fm.save_batch([np.zeros(1)], ["b.npy"], backend="ro"),
        lambda: fm.delete("a.npy", backend="ro"),
        lambda: fm.delete_all("a.npy", backend="ro"),
        lambda: fm.ensure_directory("d", backend="ro"),
        lambda: fm.copy("a.npy", "b.npy", backend="ro"),
        lambda: fm.copy("/x.npy", "b.npy", backend="memory", dest_backend="ro"),
        lambda: fm.move("a.npy", "b.npy", backend="ro", dest_backend="memory"),
    ]
    fm.save(np.ones(1), "/x.npy", backend="memory")
    for attempt in attempts:
        with pytest.raises(ReadOnlyBackendError, match="read-only") as caught:
            attempt()
        assert isinstance(caught.value, PermissionError)
        assert "_FixedSource" in str(caught.value)
    assert list(source.items) == ["a.npy"]
    # Reading, and copying out to a writable backend, still work.
    fm.copy("a.npy", "/copied.npy", backend="ro", dest_backend="memory")
    np.testing.assert_array_equal(fm.load("/copied.npy", backend="memory"), np.arange(3))


# -- registry errors ----------------------------------------------------------------------


def test_unknown_backend_name_lists_the_known_ones(fm: FileManager) -> None:
    with pytest.raises(BackendNotFoundError) as caught:
        fm.save(np.zeros(1), "a.npy", backend="dsik")
    message = str(caught.value)
    assert isinstance(caught.value, KeyError)
    assert "Unknown backend 'dsik'" in message
    assert "disk" in message.split("Known backends:")[1] and "memory" in message
    assert "polystore.backends" in message  # how to make one known
    with pytest.raises(BackendNotFoundError):
        BackendRegistry()["dsik"]


def test_no_backend_given_and_no_default_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="default_backend"):
        FileManager().load("a.npy")


def test_missing_method_names_the_method_and_the_class() -> None:
    class OnlySaveLoad(StorageBackend):
        def save(self, data: Any, file_path: Any, **kwargs: Any) -> None:
            pass

        def load(self, file_path: Any, **kwargs: Any) -> Any:
            return None

    backend = OnlySaveLoad()
    backend.save(1, "x")  # what it defines works
    with pytest.raises(IncompleteBackendError) as caught:
        backend.list_files("somewhere")
    message = str(caught.value)
    assert isinstance(caught.value, NotImplementedError)
    assert "list_files()" in message and "OnlySaveLoad" in message
    assert "OnlySaveLoad.list_files()" in message
    for other in ("exists", "delete", "ensure_directory"):
        assert other in message.split("also leaves out:")[1]
    with pytest.raises(IncompleteBackendError, match=r"OnlySaveLoad.*is_dir\(\)"):
        FileManager({"partial": backend}).is_dir("x", backend="partial")


def test_two_classes_under_one_name_are_refused_naming_both() -> None:
    class FirstClaim(StorageBackend):
        _backend_type = "contested_name"

    with pytest.raises(BackendRegistrationError) as caught:

        class SecondClaim(StorageBackend):
            _backend_type = "contested_name"

    message = str(caught.value)
    assert "'contested_name'" in message
    assert "FirstClaim" in message and "SecondClaim" in message
    assert "unregister_backend_class" in message
    assert registered_backend_classes()["contested_name"] is FirstClaim


def test_class_needing_arguments_asks_for_a_registered_instance() -> None:
    class NeedsURL(StorageBackend):
        _backend_type = "needs_url"

        def __init__(self, url: str) -> None:
            self.url = url

    registry = BackendRegistry()
    with pytest.raises(BackendRegistrationError) as caught:
        registry["needs_url"]
    message = str(caught.value)
    assert "cannot be created without arguments" in message
    assert "registry.register('needs_url', NeedsURL(...))" in message
    # Following the advice works.
    instance = NeedsURL("http://example.invalid")
    registry.register("needs_url", instance)
    assert registry["needs_url"] is instance


def test_registering_a_taken_instance_name_asks_for_replace() -> None:
    registry = BackendRegistry({"scratch": MemoryBackend()})
    with pytest.raises(BackendRegistrationError, match="replace=True"):
        registry.register("scratch", MemoryBackend())


# -- formats with their own rules ----------------------------------------------------------


def test_torch_load_with_weights_only_false_is_refused(disk: DiskBackend) -> None:
    torch = pytest.importorskip("torch")
    disk.save(torch.arange(4), "t.pt")
    assert torch.equal(disk.load("t.pt"), torch.arange(4))
    with pytest.raises(UnsupportedDataError, match="weights_only=True only"):
        disk.load("t.pt", weights_only=False)


def test_imagej_tiff_with_an_unsupported_dtype_is_refused(disk: DiskBackend, tmp_path: Path) -> None:
    pytest.importorskip("tifffile")
    for dtype in (np.int32, np.float64, np.int8):
        with pytest.raises(UnsupportedDataError, match="uint8, uint16 or float32") as caught:
            disk.save(np.zeros((4, 4), dtype=dtype), "stack.tif", imagej=True)
        assert str(np.dtype(dtype)) in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [
        ((2, 4, 4), "QYX", "does not describe a 3-D array"),
        ((2, 4, 4), "YYX", "distinct letter"),
        ((2, 4, 4), "YX", "does not describe a 3-D array"),
        ((2, 3, 4, 4), None, "needs its axes named"),
    ],
)
def test_imagej_tiff_with_bad_axes_is_refused(
    disk: DiskBackend, tmp_path: Path, shape: tuple[int, ...], axes: str | None, expected: str
) -> None:
    pytest.importorskip("tifffile")
    with pytest.raises(UnsupportedDataError, match=expected):
        disk.save(np.zeros(shape, dtype=np.uint16), "stack.tif", imagej=True, axes=axes)
    assert os.listdir(tmp_path) == []


def test_every_error_is_a_polystore_error() -> None:
    for name in polystore.__all__:
        value = getattr(polystore, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, PolystoreError), name


# -- every error a user sees is ours ----------------------------------------------------------


def test_errors_that_were_builtins_are_ours_and_still_the_builtins(tmp_path: Path) -> None:
    from polystore.atomic import atomic_write
    from polystore.exceptions import FormatRegistrationError, InvalidOptionError

    cases: list[tuple[Any, type[Exception], type[Exception]]] = [
        (lambda: FileManager().load("a.npy"), InvalidOptionError, ValueError),
        (lambda: MemoryBackend().save_batch([1], ["a", "b"]), InvalidOptionError, ValueError),
        (lambda: atomic_write(tmp_path / "x", "a").__enter__(), InvalidOptionError, ValueError),
        (lambda: polystore.atomic_write_json({"x": {1, 2}}, tmp_path / "x.json"),
         UnsupportedDataError, TypeError),
        (lambda: polystore.register_format(polystore.Format("dup", (".npy",), print, print)),
         FormatRegistrationError, ValueError),
        (lambda: DiskBackend(root=tmp_path).load("a.npy", mmap="r"), InvalidOptionError, TypeError),
        (lambda: polystore.convert(np.zeros(2), "numpyy"), InvalidOptionError, ValueError),
    ]
    for attempt, ours, builtin in cases:
        with pytest.raises(ours) as caught:
            attempt()
        assert isinstance(caught.value, PolystoreError) and isinstance(caught.value, builtin)


def test_an_unknown_format_option_lists_the_ones_it_takes(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    disk.save(np.zeros(2), "a.npy")
    with pytest.raises(TypeError, match=r"does not take 'mmap'.*mmap_mode"):
        disk.load("a.npy", mmap="r")
    with pytest.raises(TypeError, match=r"does not take 'compres'.*compress"):
        disk.save(np.zeros(2), "a.npz", compres=True)


def test_errors_from_a_format_library_are_ours_with_the_cause_chained(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    (tmp_path / "bad.tif").write_bytes(b"II*\0garbage")  # tifffile alone gives an empty array
    with pytest.raises(polystore.exceptions.CorruptDataError, match=r"'bad\.tif' holds no image"):
        disk.load("bad.tif")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"Cannot read 'bad\.json' as json") as caught:
        disk.load("bad.json")
    assert isinstance(caught.value, polystore.exceptions.CorruptDataError)
    assert type(caught.value.__cause__).__name__ == "JSONDecodeError"


def test_polystore_info_on_a_corrupt_npy_says_it_is_not_npy(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPX" + b"\0" * 64)
    result = subprocess.run(
        [sys.executable, "-m", "polystore", "info", "corrupt.npy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "not a NumPy .npy file" in output and "pickle" not in output, output


# -- ROI sets received as bytes -----------------------------------------------------------------


def _roi_payloads() -> dict[str, bytes]:
    """Damaged and forged .roi.zip payloads, as a stream could carry them."""
    import io
    import struct
    import zipfile

    roifile = pytest.importorskip("roifile")
    good = roifile.ImagejRoi.frompoints(np.array([[1, 2], [3, 4], [5, 1]], np.float32)).tobytes()

    def archive(data: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytearray:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=method) as out:
            out.writestr("a.roi", data)
        return bytearray(buffer.getvalue())

    stored = archive(good, zipfile.ZIP_STORED)
    directory = stored.rfind(b"PK\x01\x02")
    unknown_method = bytearray(stored)
    unknown_method[8:10] = unknown_method[directory + 10:directory + 12] = struct.pack("<H", 99)
    encrypted = bytearray(stored)
    encrypted[6:8] = encrypted[directory + 8:directory + 10] = struct.pack("<H", 1)
    corrupt_deflate = archive(good * 50)
    corrupt_deflate[40:50] = b"\xff" * 10
    return {
        "garbage member": bytes(archive(b"not an roi at all" * 3)),
        "truncated roi": bytes(archive(good[:40])),
        "unknown compression": bytes(unknown_method),
        "encrypted": bytes(encrypted),
        "corrupt deflate": bytes(corrupt_deflate),
    }


@pytest.mark.parametrize("case", ["garbage member", "truncated roi", "unknown compression", "encrypted",
                                  "corrupt deflate"])
def test_a_damaged_roi_set_received_as_bytes_is_a_corrupt_data_error(case: str) -> None:
    from polystore.formats.roi import rois_from_zip_bytes

    with pytest.raises(polystore.exceptions.CorruptDataError, match=r"\.roi\.zip payload") as caught:
        rois_from_zip_bytes(_roi_payloads()[case])
    assert caught.value.__cause__ is not None


def test_every_error_class_is_exported_from_the_package() -> None:
    import inspect

    errors = {name for name, value in vars(polystore.exceptions).items()
              if inspect.isclass(value) and issubclass(value, PolystoreError)}
    assert errors - set(polystore.__all__) == set()
    assert all(getattr(polystore, name) is getattr(polystore.exceptions, name) for name in errors)
