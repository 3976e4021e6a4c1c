"""Arrays of every framework go in and come out; conversion shares memory where it can."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import BackendRegistry, FileManager
from polystore.arrays import FRAMEWORKS, convert, copy_array, framework_of, to_numpy

torch = pytest.importorskip("torch", reason="torch is part of the test install")


def _cuda_available() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no cupy, or cupy without a driver: no CUDA GPU here
        return False


def _make_jax(a: np.ndarray) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(a)


def _make_tf(a: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.constant(a)


def _make_cupy(a: np.ndarray) -> Any:
    import cupy

    return cupy.asarray(a)


MAKERS: dict[str, Callable[[np.ndarray], Any]] = {
    "numpy": lambda a: a,
    "torch": lambda a: torch.tensor(a),
    "jax": _make_jax,
    "tensorflow": _make_tf,
    "cupy": _make_cupy,
}

needs_gpu = pytest.mark.skipif(not _cuda_available(), reason="CuPy needs a CUDA GPU; this machine has none")


def framework_param(name: str) -> Any:
    marks = [needs_gpu] if name == "cupy" else []
    return pytest.param(name, id=name, marks=marks)


ALL = [framework_param(name) for name in FRAMEWORKS]


@pytest.fixture
def fm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileManager:
    monkeypatch.chdir(tmp_path)
    return FileManager(BackendRegistry())


def test_numpy_to_torch_shares_memory() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = convert(array, "torch")
    assert tensor.data_ptr() == array.ctypes.data
    tensor[0, 0] = 42.0
    assert array[0, 0] == 42.0


def test_torch_to_numpy_shares_memory() -> None:
    tensor = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    array = convert(tensor, "numpy")
    assert isinstance(array, np.ndarray)
    assert array.ctypes.data == tensor.data_ptr()
    array[1, 1] = -7
    assert int(tensor[1, 1]) == -7


def test_read_only_numpy_is_copied_not_aliased_into_torch() -> None:
    array = np.arange(6, dtype=np.int64)
    array.flags.writeable = False
    tensor = convert(array, "torch")
    tensor[0] = 100  # must not write into memory numpy promised was read-only
    assert array[0] == 0


def test_torch_tensor_requiring_grad_converts() -> None:
    tensor = torch.ones(3, requires_grad=True)
    np.testing.assert_array_equal(to_numpy(tensor), np.ones(3, dtype=np.float32))


@pytest.mark.parametrize("framework", ALL)
def test_detection_by_type(framework: str) -> None:
    assert framework_of(MAKERS[framework](np.zeros(2))) == framework


def test_detection_never_imports_a_framework() -> None:
    code = (
        "import sys, numpy as np\n"
        "from polystore.arrays import framework_of\n"
        "import polystore\n"
        "assert framework_of(np.zeros(1)) == 'numpy'\n"
        "assert framework_of({'a': 1}) is None\n"
        "fm = polystore.FileManager()\n"
        "fm.save(np.zeros(3), 'x.npy', backend='memory')\n"
        "optional = ('torch', 'jax', 'tensorflow', 'cupy', 'tifffile', 'pandas')\n"
        "heavy = [m for m in optional if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("target", ALL)
@pytest.mark.parametrize("source", ALL)
def test_convert_between_every_pair(source: str, target: str) -> None:
    original = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    converted = convert(MAKERS[source](original), target)
    assert framework_of(converted) == target
    np.testing.assert_array_equal(to_numpy(converted), original)


def test_unknown_framework_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"Unknown framework 'mxnet'.*numpy"):
        convert(np.zeros(1), "mxnet")


def test_non_arrays_pass_through_convert() -> None:
    payload = {"a": 1}
    assert convert(payload, "torch") is payload


@pytest.mark.parametrize("framework", ALL)
@pytest.mark.parametrize("backend", ["disk", "memory"])
@pytest.mark.parametrize("extension", [".npy", ".tif", ".pt"])
def test_every_framework_saves_on_every_backend(
    fm: FileManager, framework: str, backend: str, extension: str
) -> None:
    original = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = f"arrays/{framework}{extension}"
    fm.save(MAKERS[framework](original), path, backend=backend)
    for wanted in ("numpy", "torch", "jax", "tensorflow"):
        loaded = fm.load(path, backend=backend, framework=wanted)
        assert framework_of(loaded) == wanted
        np.testing.assert_array_equal(to_numpy(loaded), original)


def test_memory_backend_keeps_the_same_tensor(fm: FileManager) -> None:
    tensor = torch.zeros(3)
    fm.save(tensor, "t.pt", backend="memory")
    assert fm.load("t.pt", backend="memory") is tensor


def test_memory_load_as_numpy_shares_the_tensor_memory(fm: FileManager) -> None:
    tensor = torch.arange(4, dtype=torch.float64)
    fm.save(tensor, "t", backend="memory")
    array = fm.load("t", backend="memory", framework="numpy")
    assert array.ctypes.data == tensor.data_ptr()


def test_disk_load_to_torch_does_not_copy_after_reading(fm: FileManager) -> None:
    fm.save(np.arange(10, dtype=np.int16), "x.npy", backend="disk")
    array = fm.load("x.npy", backend="disk")
    tensor = convert(array, "torch")
    assert tensor.data_ptr() == array.ctypes.data


def test_copy_array_is_independent_in_its_framework() -> None:
    tensor = torch.zeros(3)
    clone = copy_array(tensor)
    clone[0] = 1
    assert float(tensor[0]) == 0.0 and framework_of(clone) == "torch"
    array = np.zeros(3)
    array_copy = copy_array(array)
    array_copy[0] = 1
    assert array[0] == 0


@needs_gpu
def test_cupy_array_stays_on_its_gpu_in_memory_backend(fm: FileManager) -> None:
    import cupy

    on_gpu = cupy.arange(5)
    fm.save(on_gpu, "g", backend="memory")
    loaded = fm.load("g", backend="memory")
    assert loaded is on_gpu and isinstance(loaded, cupy.ndarray)


@needs_gpu
def test_cuda_torch_to_cupy_without_host_round_trip() -> None:
    import cupy

    tensor = torch.arange(6, device="cuda", dtype=torch.float32)
    array = convert(tensor, "cupy")
    assert isinstance(array, cupy.ndarray)
    assert array.data.ptr == tensor.data_ptr()


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_strided_and_reversed_numpy_views_convert(framework: str) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    for view in (base[::-1], base[:, ::2], base.T):
        converted = convert(view, framework)
        np.testing.assert_array_equal(to_numpy(converted), view)


def test_numpy_to_tensorflow_and_jax_back_share_memory() -> None:
    import jax.numpy as jnp

    array = np.arange(12, dtype=np.float32)
    tensor = convert(array, "tensorflow")
    assert np.from_dlpack(tensor).ctypes.data == array.ctypes.data  # docs/frameworks.md says so
    on_jax = jnp.arange(12.0)
    assert convert(on_jax, "numpy").ctypes.data == on_jax.unsafe_buffer_pointer()


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_big_endian_numpy_converts_with_its_values(framework: str) -> None:
    # each framework's from_numpy brings the machine's byte order (torch through its ValueError)
    base = np.arange(12, dtype=">i4").reshape(3, 4)
    read_only = base.copy()
    read_only.flags.writeable = False
    for view in (base, base[::-1], read_only):
        converted = convert(view, framework)
        np.testing.assert_array_equal(to_numpy(converted), view)
        assert to_numpy(converted).dtype == np.dtype("int32")


@pytest.mark.parametrize("view", ["conj", "neg"])
def test_torch_conjugate_and_negative_views_convert_with_their_values(view: str, tmp_path: Path) -> None:
    # torch's lazy conj()/neg() views: a conj view was refused as "no numpy equivalent", and a
    # negative view (x.conj().imag) came out of DLPack with its values negated, saved so too
    values = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    lazy, expected = {
        "conj": (values.conj(), np.array([1 - 2j, 3 + 4j], np.complex64)),
        "neg": (values.conj().imag, np.array([-2, 4], np.float32)),
    }[view]
    assert lazy.is_conj() or lazy.is_neg()
    np.testing.assert_array_equal(to_numpy(lazy), expected)
    np.testing.assert_array_equal(to_numpy(convert(lazy, "jax")), expected)
    fm = FileManager(default_backend="disk")
    fm.save(lazy, tmp_path / "view.npy")
    np.testing.assert_array_equal(fm.load(tmp_path / "view.npy"), expected)
    assert lazy.is_conj() or lazy.is_neg(), "the caller's view is left as it was"


def test_tensorflow_variable_converts_and_saves(tmp_path: Path) -> None:
    import tensorflow as tf

    variable = tf.Variable([[1.5, 2.5], [3.5, 4.5]])  # model weights: no __dlpack__ of its own
    np.testing.assert_array_equal(to_numpy(variable), variable.numpy())
    fm = FileManager(default_backend="disk")
    fm.save(variable, tmp_path / "w.npy")
    np.testing.assert_array_equal(fm.load(tmp_path / "w.npy"), variable.numpy())


def test_tensorflow_string_tensor_is_refused_not_a_crash(tmp_path: Path) -> None:
    # TF aborts the whole process (a failed CHECK) when a string tensor is asked for DLPack:
    # run in a child, so that a crash is a failed test and not the end of the test run
    code = (
        "import sys, tensorflow as tf\n"
        "from polystore import FileManager, PolystoreError\n"
        "fm = FileManager(default_backend='disk')\n"
        "try:\n"
        f"    fm.save(tf.constant(['a', 'b']), {str(tmp_path / 's.npy')!r})\n"
        "except PolystoreError as error:\n"
        "    print('refused:', error)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, f"the process died ({child.returncode}): {child.stderr[-1500:]}"
    assert "refused:" in child.stdout and "object" in child.stdout, child.stdout
    assert not (tmp_path / "s.npy").exists()
