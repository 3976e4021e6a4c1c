"""Bad input, every combination: a format gives back exactly what it accepted, or refuses it at
save time with our error naming the format, the problem and what to use instead.

dtype x layout x format on a rooted disk, the same inputs on memory, torch tensors (bfloat16
among them) through every format, and conversions between frameworks that have no equivalent.
"Exactly" means values, shape and dtype; TIFF and .pt hold numbers in the machine's byte order,
so a big-endian array comes back as the same dtype in native order (docs/formats.md).
"""

from __future__ import annotations

import enum
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend, MemoryBackend, PolystoreError
from polystore.arrays import convert, framework_of, to_numpy
from polystore.atomic import json_default
from polystore.exceptions import UnsupportedDataError


def _values(dtype: np.dtype[Any], count: int) -> np.ndarray:
    """``count`` values of ``dtype``, the extremes among them."""
    kind = dtype.kind
    if dtype.names is not None:  # structured: each field's own extremes
        values = np.zeros(count, dtype=dtype)
        for name in dtype.names:
            field = dtype.fields[name][0]  # type: ignore[index]
            base = field.base
            values[name] = _values(base, count * max(1, field.itemsize // base.itemsize)).reshape(
                (count, *field.shape)
            )
        return values
    if kind == "b":
        return np.resize(np.array([True, False, True]), count).astype(dtype)
    if kind in "iu":
        info = np.iinfo(dtype)
        return np.resize(np.array([info.min, info.max, 0, 1, info.max - 1], dtype=dtype), count)
    if kind in "fc":
        finfo = np.finfo(dtype)
        special = [np.nan, np.inf, -np.inf, -0.0, finfo.max, finfo.tiny, 1.0, 0.5]
        real = np.resize(np.array(special, dtype=finfo.dtype), count)
        values = np.empty(count, dtype=dtype)
        values.real = real
        if kind == "c":
            values.imag = real[::-1]
        return values
    if kind == "U":
        return np.resize(np.array(["", "é", "abc"], dtype=dtype), count)
    if kind == "S":
        return np.resize(np.array([b"", b"\xff", b"ab"], dtype=dtype), count)
    if kind == "M":
        return (np.arange(count) * 86_400).astype("datetime64[s]").astype(dtype)
    if kind == "m":
        return np.arange(count).astype("timedelta64[s]").astype(dtype)
    if kind == "V":
        return np.frombuffer(bytes(range(count * dtype.itemsize)), dtype=dtype).copy()
    raise AssertionError(dtype)


DTYPES = [
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", ">u2", ">i8", ">f4", ">c16",
    "<U3", "S2", "datetime64[s]", "timedelta64[ms]", "V3", "i4,>f8", "(2,)u1,<U2",
]
LAYOUTS: dict[str, Callable[[np.dtype[Any]], np.ndarray]] = {
    "c": lambda d: _values(d, 12).reshape(3, 4),
    "fortran": lambda d: np.asfortranarray(_values(d, 12).reshape(3, 4)),
    "strided": lambda d: _values(d, 24).reshape(6, 4)[::2],
    "negative": lambda d: _values(d, 12).reshape(3, 4)[::-1, ::-1],
    "broadcast": lambda d: np.broadcast_to(_values(d, 4), (3, 4)),  # zero strides, read-only
    "0d": lambda d: _values(d, 1).reshape(()),
    "empty": lambda d: _values(d, 0).reshape(0, 4),
    "length1": lambda d: _values(d, 12).reshape(1, 3, 4),
    "column": lambda d: _values(d, 3).reshape(3, 1),
    "1d": lambda d: _values(d, 5),
}
FORMATS = [".npy", ".npz", ".tif", ".ome.tif", ".pt", ".csv", ".json"]
FORMAT_NAMES = {
    ".npy": r"\.npy", ".npz": r"\.npz", ".tif": "TIFF", ".ome.tif": "OME-TIFF", ".pt": r"\.pt|torch",
    ".csv": "CSV", ".json": "JSON",
}
ALTERNATIVE = re.compile(r"\.(npy|npz|tif|pt|json)\b|astype|convert|instead|squeeze", re.IGNORECASE)
NATIVE_ORDER_ONLY = {".tif", ".ome.tif", ".pt"}


def _input(dtype: str, layout: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inf/nan casts while making extremes
        return LAYOUTS[layout](np.dtype(dtype))


def _same(loaded: Any, original: np.ndarray, *, native: bool) -> None:
    array = to_numpy(loaded) if framework_of(loaded) is not None else loaded
    assert isinstance(array, np.ndarray), type(loaded)
    expected = original.dtype.newbyteorder("=") if native else original.dtype
    assert array.dtype == expected, f"dtype {original.dtype} came back as {array.dtype}"
    assert array.shape == original.shape, f"shape {original.shape} came back as {array.shape}"
    if original.dtype.kind in "fc":
        np.testing.assert_array_equal(array, original)  # nan == nan here, -0.0 == 0.0
        assert np.array_equal(np.signbit(array.real), np.signbit(original.real))
    else:
        assert array.tobytes() == np.ascontiguousarray(original).astype(expected).tobytes()


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> DiskBackend:
    return DiskBackend(root=tmp_path_factory.mktemp("bad-input"), durable=False)


def _round_trip_or_refusal(disk: DiskBackend, data: Any, ext: str, path: str) -> Any:
    """The loaded value, or ``None`` after checking the refusal at save time."""
    try:
        disk.save(data, path)
    except PolystoreError as error:
        message = str(error)
        assert re.search(FORMAT_NAMES[ext], message), f"the format is not named: {message}"
        assert ALTERNATIVE.search(message), f"no alternative given: {message}"
        assert not disk.exists(path), "a refused save left a file"
        return None
    return disk.load(path)


def _check_every_format(disk: DiskBackend, data: Any, stem: str, expected: Callable[[str], Any]) -> None:
    """Each format in turn (one test per input keeps the suite fast); every problem is reported."""
    problems = []
    for ext in FORMATS:
        try:
            loaded = _round_trip_or_refusal(disk, data, ext, f"{stem}{ext}")
            if loaded is not None:
                expected(ext)(loaded)
        except AssertionError as error:
            problems.append(f"{ext}: {error}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_disk_round_trips_exactly_or_refuses_at_save(disk: DiskBackend, dtype: str, layout: str) -> None:
    data = _input(dtype, layout)

    def check(ext: str) -> Callable[[Any], None]:
        if ext == ".json":  # JSON holds lists: an array is written as its nested lists
            return lambda loaded: _same_json(loaded, data)
        return lambda loaded: _same(loaded, data, native=ext in NATIVE_ORDER_ONLY)

    _check_every_format(disk, data, f"{dtype.replace('>', 'be').replace('<', 'le')}-{layout}", check)


def _same_json(loaded: Any, original: np.ndarray) -> None:
    expected = json.dumps(original, default=json_default)  # nested lists, as the format writes them
    assert json.dumps(loaded) == expected, f"{loaded!r} != {expected}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_memory_gives_back_what_it_was_given(dtype: str, layout: str) -> None:
    memory = MemoryBackend()
    data = _input(dtype, layout)
    memory.save(data, "x.npy")
    _same(memory.load("x.npy"), data, native=False)
    memory.save(data, "copy.npy", copy=True)
    _same(memory.load("copy.npy"), data, native=False)


# -- tensors ------------------------------------------------------------------------------------
TORCH_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
                "float16", "bfloat16", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("layout", ["c", "transposed", "0d", "empty"])
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_tensors_round_trip_exactly_or_are_refused(disk: DiskBackend, dtype: str, layout: str) -> None:
    torch = pytest.importorskip("torch")
    shape = {"c": (3, 4), "transposed": (4, 3), "0d": (), "empty": (0, 4)}[layout]
    tensor = torch.arange(int(np.prod(shape)) or 0).reshape(shape).to(getattr(torch, dtype))
    if layout == "transposed":
        tensor = tensor.T

    def same_tensor(loaded: Any) -> None:  # torch's own format: the very tensor, any dtype
        assert isinstance(loaded, torch.Tensor) and loaded.dtype == tensor.dtype
        assert loaded.shape == tensor.shape and torch.equal(loaded, tensor)

    def check(ext: str) -> Callable[[Any], None]:
        if ext == ".pt":
            return same_tensor
        expected = tensor.numpy()  # every dtype that got past save has a NumPy equivalent
        if ext == ".json":
            return lambda loaded: _same_json(loaded, expected)
        return lambda loaded: _same(loaded, expected, native=False)

    _check_every_format(disk, tensor, f"t-{dtype}-{layout}", check)


def test_bfloat16_to_numpy_formats_is_refused_naming_pt(disk: DiskBackend) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(UnsupportedDataError, match=r"bfloat16.*\.pt") as caught:
        disk.save(torch.zeros(3, dtype=torch.bfloat16), "bf16.npy")
    assert isinstance(caught.value.__cause__, TypeError)  # torch's own error, chained


# -- conversions between frameworks ------------------------------------------------------------


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
@pytest.mark.parametrize("dtype", ["<U3", "S2", "V3", "datetime64[s]"])
def test_a_dtype_without_equivalent_is_our_error_not_dlpacks(framework: str, dtype: str) -> None:
    pytest.importorskip(framework)
    with pytest.raises(UnsupportedDataError, match=rf"no {framework} equivalent") as caught:
        convert(_input(dtype, "c"), framework)
    assert isinstance(caught.value.__cause__, (BufferError, TypeError, RuntimeError, ValueError))


def test_loading_into_a_framework_without_the_dtype_is_our_error(disk: DiskBackend) -> None:
    pytest.importorskip("torch")
    disk.save(np.array(["a", "b"]), "strings.npy")
    with pytest.raises(UnsupportedDataError, match="no torch equivalent"):
        disk.load("strings.npy", framework="torch")


def test_jax_without_64_bit_types_refuses_instead_of_narrowing() -> None:
    jax = pytest.importorskip("jax")
    if jax.config.jax_enable_x64:
        pytest.skip("jax_enable_x64 is on in this process: nothing would be narrowed")
    with pytest.raises(UnsupportedDataError, match="jax_enable_x64"):
        convert(np.array([2**40], dtype=np.int64), "jax")
    assert convert(np.arange(3, dtype=np.int32), "jax").dtype == np.int32


# -- structures ---------------------------------------------------------------------------------


class _Color(enum.IntEnum):
    RED = 1



@pytest.mark.parametrize(
    ("data", "ext", "message"),
    [
        ({"w": np.arange(3)}, ".pt", None),  # a dict of arrays: stored as tensors, loads with weights_only
        ({"w": object()}, ".pt", r"weights_only=True.*\['w'\]"),
        ([np.arange(2), {"x": (1, 2.5, "s")}], ".pt", None),
        ({np.int64(3): np.arange(2)}, ".pt", r"NumPy scalar.*key"),  # keys: weights_only's rule too
        ({(1, np.int32(2)): 1}, ".pt", r"NumPy scalar.*key"),
        ({_Color.RED: 1}, ".pt", r"weights_only=True.*_Color.*key"),
        ({frozenset({1}): 2}, ".pt", r"weights_only=True.*frozenset.*key"),
        ({(1, "a"): np.arange(2), True: 1, None: 2.5, 1.5: b"x"}, ".pt", None),
        ({"k": np.float64(1.5)}, ".pt", r"NumPy scalar.*0-d tensor.*item\(\)"),
        (np.int8(3), ".pt", r"NumPy scalar.*the top level"),
        ({1: np.arange(2)}, ".npz", "str keys"),
        ({"arr_0": np.arange(2)}, ".npz", "arr_0"),
        ({1: "a"}, ".json", "keys are strings"),
        (b"bytes", ".txt", "bytes"),
    ],
    ids=["pt-dict-of-arrays", "pt-object", "pt-nested", "pt-numpy-key", "pt-numpy-in-tuple-key",
         "pt-intenum-key", "pt-frozenset-key", "pt-plain-keys", "pt-numpy-scalar", "pt-top-numpy-scalar",
         "npz-int-key", "npz-arr0", "json-int-key",
         "txt-bytes"],
)
def test_structures_round_trip_or_are_refused(
    disk: DiskBackend, data: Any, ext: str, message: str | None
) -> None:
    path = f"structure-{abs(hash(repr(data))) % 10**8}{ext}"
    if message is not None:
        with pytest.raises(UnsupportedDataError, match=message):
            disk.save(data, path)
        assert not disk.exists(path)
        return
    disk.save(data, path)
    loaded = disk.load(path)
    expected = _tensors_to_numpy(loaded)
    assert repr(expected) == repr(_tensors_to_numpy(data))


def _tensors_to_numpy(value: Any) -> Any:
    if framework_of(value) is not None:
        return to_numpy(value).tolist()
    if isinstance(value, dict):
        return {k: _tensors_to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_to_numpy(v) for v in value)
    return value


def test_a_masked_array_is_refused_by_every_format_never_unmasked(disk: DiskBackend) -> None:
    masked = np.ma.array([[1.0, 2.0], [3.0, 4.0]], mask=[[False, True], [False, False]])
    for ext in FORMATS:
        with pytest.raises(UnsupportedDataError, match=r"masked array.*mask.*filled") as caught:
            disk.save(masked, f"masked{ext}")
        assert not disk.exists(f"masked{ext}"), ext
        assert re.search(FORMAT_NAMES[ext], str(caught.value)), str(caught.value)
    with pytest.raises(UnsupportedDataError, match="mask"):
        disk.save({"m": masked}, "masked-in-dict.pt")


# -- corrupt and forged files -----------------------------------------------------------------


def test_a_corrupt_npy_is_named_corrupt_not_pickled(disk: DiskBackend, tmp_path: Path) -> None:
    root = disk.root
    assert root is not None
    (root / "corrupt.npy").write_bytes(b"this is not numpy data at all")
    with pytest.raises(PolystoreError, match=r"not a NumPy \.npy file") as caught:
        disk.load("corrupt.npy")
    assert "pickle" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_npy_header_claiming_more_than_the_file_holds_is_refused_first(disk: DiskBackend) -> None:
    root = disk.root
    assert root is not None
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}  # 8 TB announced
    with open(root / "forged.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    with pytest.raises(PolystoreError, match="cut short or forged"):
        disk.load("forged.npy")


def test_a_truncated_file_of_each_format_is_a_corrupt_data_error(disk: DiskBackend) -> None:
    root = disk.root
    assert root is not None
    samples = {".npy": np.arange(100), ".npz": {"a": np.arange(100)}, ".tif": np.arange(100).reshape(10, 10),
               ".csv": np.arange(10), ".json": {"a": [1, 2, 3]}}
    for ext, data in samples.items():
        disk.save(data, f"whole{ext}")
        payload = (root / f"whole{ext}").read_bytes()
        (root / f"cut{ext}").write_bytes(payload[: len(payload) // 2])
        try:
            disk.load(f"cut{ext}")
        except PolystoreError as error:
            assert isinstance(error, (ValueError, OSError)), type(error)
            assert error.__cause__ is not None or "cut short" in str(error) or "not a" in str(error)
        else:  # a cut CSV can still be a valid, shorter table; nothing else may load
            assert ext == ".csv", f"a truncated {ext} loaded"
    assert not [n for n in os.listdir(root) if n.endswith(".polystore-tmp")]


# -- tables -------------------------------------------------------------------------------------


def _frames() -> dict[str, tuple[Any, dict[str, Any], str | None]]:
    """name: (DataFrame, save options, what the refusal says, or None where it round-trips)."""
    pd = pytest.importorskip("pandas")
    return {
        "plain": (pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": ["x", "y"], "d": [True, False]}),
                  {}, None),
        "precise-floats": (pd.DataFrame({"a": [0.1 + 0.2, 1e-300, 1 / 3]}), {}, None),
        "index-written": (pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", "y"], name="id")),
                          {"index": True}, None),
        "number-names": (pd.DataFrame(np.arange(6).reshape(3, 2)), {}, "header.*all numbers"),
        "number-like-names": (pd.DataFrame({"1": [1.5], "2": [2.5]}), {}, "header.*all numbers"),
        "an-int-name": (pd.DataFrame({0: ["a"], "b": ["c"]}), {}, "column names"),
        "index-dropped": (pd.DataFrame({"a": [1, 2]}, index=["x", "y"]), {}, "index.*index=True"),
        "digit-strings": (pd.DataFrame({"a": ["1", "2"]}), {}, "column 'a'.*comes back as int64"),
        "dates": (pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])}), {}, "column 't'"),
        "empty": (pd.DataFrame(), {}, "cannot be read back"),
    }


@pytest.mark.parametrize("name", ["plain", "precise-floats", "index-written", "number-names",
                                  "number-like-names", "an-int-name", "index-dropped", "digit-strings",
                                  "dates", "empty"])
def test_a_dataframe_round_trips_through_csv_or_is_refused_at_save(disk: DiskBackend, name: str) -> None:
    frame, options, refusal = _frames()[name]
    path = f"frame-{name}.csv"
    if refusal is not None:
        with pytest.raises(UnsupportedDataError, match=rf"CSV cannot keep this DataFrame: .*{refusal}"):
            disk.save(frame, path, **options)
        assert not disk.exists(path)
        return
    disk.save(frame, path, **options)
    back = disk.load(path)
    if options.get("index"):
        back = back.set_index(back.columns[0])
    assert back.equals(frame) and list(back.columns) == list(frame.columns)
    assert list(back.dtypes) == list(frame.dtypes)
    assert list(back.index) == list(frame.index)


# -- TIFF's length-1 axes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "ext", "options", "refusal"),
    [
        ((1, 8, 6), ".tif", {"imagej": True}, r"\(1, 8, 6\) array \(axes ZYX\) would load as \(8, 6\)"),
        ((2, 1, 8, 6), ".tif", {"imagej": True, "axes": "ZCYX"}, r"would load as \(2, 8, 6\)"),
        ((1, 8, 6), ".ome.tif", {"imagej": True}, r"ImageJ.*would load as \(8, 6\)"),
        ((1, 8, 6), ".ome.tif", {}, r"OME-TIFF keeps length-1 axes only as Y or X.*would load as \(8, 6\)"),
        ((3, 1, 8, 6), ".ome.tif", {}, r"would load as \(3, 8, 6\)"),
        ((8, 6, 1), ".tif", {"imagej": True, "axes": "YXS"}, r"would load as \(8, 6\)"),
        ((1, 64), ".ome.tif", {}, None),  # Y and X keep length 1 (tifffile reads them back)
        ((64, 1), ".ome.tif", {}, None),
        ((1, 1), ".ome.tif", {}, None),
        ((3, 1, 64), ".ome.tif", {}, None),
        ((5, 64, 1), ".ome.tif", {}, None),
        ((1, 64), ".tif", {"imagej": True}, None),
        ((64, 1), ".tif", {"imagej": True}, None),
        ((1, 8, 6), ".tif", {}, None),  # plain TIFF keeps any shape
    ],
)
def test_tiff_keeps_length_1_axes_or_refuses_them_at_save(
    disk: DiskBackend, shape: tuple[int, ...], ext: str, options: dict[str, Any], refusal: str | None
) -> None:
    pytest.importorskip("tifffile")
    data = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    path = f"axes-{'x'.join(map(str, shape))}-{len(options)}{ext}"
    if refusal is not None:
        with pytest.raises(UnsupportedDataError, match=refusal):
            disk.save(data, path, **options)
        assert not disk.exists(path)
        return
    disk.save(data, path, **options)
    _same(disk.load(path), data, native=True)


def test_npz_keys_that_are_numpy_savez_arguments_round_trip(disk: DiskBackend) -> None:
    data = {"file": np.arange(3), "allow_pickle": np.ones(2), "kwds": np.zeros(1)}
    for compress in (False, True):
        disk.save(data, f"savez-names-{compress}.npz", compress=compress)
        back = disk.load(f"savez-names-{compress}.npz")
        assert sorted(back) == sorted(data)
        assert all(np.array_equal(back[k], v) for k, v in data.items())
