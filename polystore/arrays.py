"""Which framework an array belongs to, and conversion between frameworks through DLPack.

Detection looks only at the type's module name, so it never imports a framework: a NumPy
user never pays for torch being installed. Conversion goes through DLPack, which shares
memory where the two frameworks can (NumPy <-> PyTorch on the CPU, for example), and falls
back to a copy where they cannot (read-only arrays, a GPU array to NumPy, dtypes a framework
does not exchange).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from polystore.exceptions import InvalidOptionError, UnsupportedDataError
from polystore.lazy import optional_import

_imported: dict[str, ModuleType] = {}
"""Frameworks whose import has finished, by name: a conversion is a per-array call."""


def _import(framework: str) -> ModuleType:
    try:
        return _imported[framework]
    except KeyError:
        pass
    spec = FRAMEWORKS[framework]
    # take an imported module straight from sys.modules (as the import statement's own fast
    # path does) and leave the rest to importlib; remember it only once its import finished
    module = sys.modules.get(spec.module)
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        module = optional_import(spec.module, extra=spec.extra, purpose=f"Converting to {framework}")
    if not getattr(getattr(module, "__spec__", None), "_initializing", False):
        _imported[framework] = module
    return module


def _native_order(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order, the only one DLPack and the frameworks take."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _torch_from_numpy(array: np.ndarray) -> Any:
    # no _native_order up front: torch.from_numpy refuses another byte order with the
    # ValueError handled below, so the common case pays for no check
    torch = _imported.get("torch") or _import("torch")  # the lookup without a call, per array
    if not array.flags.writeable:  # DLPack cannot mark memory read-only: copy, never alias
        array = array.copy()
    try:
        # Shares memory like torch.from_dlpack, at a third less per call, and raises a
        # ValueError where torch.from_dlpack aborts the whole process (negative strides).
        return torch.from_numpy(array)
    except ValueError:  # negative strides or a non-native byte order: torch has neither
        return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), order="C"))
    except TypeError:  # a dtype torch does not hold: DLPack's error names it
        return torch.from_dlpack(array)


def _jax_from_numpy(array: np.ndarray) -> Any:
    jnp = _import("jax").numpy
    array = _native_order(array)
    if array.flags.writeable and array.flags.c_contiguous:
        result = jnp.from_dlpack(array)
    else:
        result = jnp.asarray(array)  # jax's DLPack import takes neither strided nor read-only memory
    if result.dtype != array.dtype:  # jax without jax_enable_x64 narrows 64-bit types silently
        raise UnsupportedDataError(
            f"JAX would turn this {array.dtype} array into {result.dtype} (64-bit types are off "
            "in JAX by default), changing values that do not fit. Turn them on with "
            "jax.config.update('jax_enable_x64', True), or convert the array first."
        )
    return result


def _tensorflow_from_numpy(array: np.ndarray) -> Any:
    tf = _import("tensorflow")
    array = _native_order(array)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _cupy_from_numpy(array: np.ndarray) -> Any:
    return _import("cupy").asarray(_native_order(array))  # host -> device is always a copy


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    # a lazy conj()/neg() view's memory holds the values before the sign change: DLPack refuses
    # the conj bit, and exports a negative view's memory as it is (the values negated), so both
    # are resolved first (each returns the tensor itself when its bit is not set)
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return _numpy_from_dlpack(tensor, fallback=lambda t: t.numpy())


def _numpy_to_numpy(array: Any) -> np.ndarray:
    if type(array) is np.ndarray:  # the common case: neither masked nor a subclass to convert
        return array
    if isinstance(array, np.ma.MaskedArray):  # np.asarray would drop the mask without a word
        raise UnsupportedDataError(
            "A masked array (numpy.ma) would lose its mask: polystore's array formats and "
            "frameworks hold the values only. Store the mask beside the values, e.g. .npz of "
            "{'data': a.filled(0), 'mask': np.ma.getmaskarray(a)}, or fill the masked values "
            "first (a.filled(np.nan))."
        )
    return np.asarray(array)


_TF_NUMERIC = ("is_bool", "is_integer", "is_floating", "is_complex")
"""The tests on a ``tf.DType`` of what DLPack exchanges (quantized integers are not is_integer)."""


def _tensorflow_to_numpy(tensor: Any) -> np.ndarray:
    # DLPack only for the numbers it exchanges: a string tensor's __dlpack__ aborts the process
    # (a failed CHECK in TF, not an exception), and a Variable has none (.numpy() copies it)
    numeric = any(getattr(tensor.dtype, test, False) for test in _TF_NUMERIC)
    if numeric and hasattr(tensor, "__dlpack__"):
        return _numpy_from_dlpack(tensor, fallback=lambda t: t.numpy())
    return np.asarray(tensor.numpy())


def _cupy_to_numpy(array: Any) -> np.ndarray:
    return array.get()  # type: ignore[no-any-return]


def _numpy_from_dlpack(obj: Any, fallback: Callable[[Any], Any] = np.asarray) -> np.ndarray:
    try:
        return np.from_dlpack(obj)
    except (BufferError, TypeError, RuntimeError, ValueError):
        return np.asarray(fallback(obj))


@dataclass(frozen=True)
class Framework:
    """How one framework is recognised and converted."""

    module: str
    """Top-level module whose types are this framework's arrays."""
    extra: str
    """The polystore extra that installs it."""
    type_modules: tuple[str, ...]
    """Top-level module names of its array types (jax arrays live in ``jaxlib``)."""
    to_numpy: Callable[[Any], np.ndarray]
    from_numpy: Callable[[np.ndarray], Any]
    copy: Callable[[Any], Any]
    """An independent copy in the same framework (immutable arrays are returned as they are)."""


FRAMEWORKS: dict[str, Framework] = {
    "numpy": Framework("numpy", "numpy", ("numpy",), _numpy_to_numpy, lambda a: a, np.copy),
    "torch": Framework(
        "torch", "torch", ("torch",), _torch_to_numpy, _torch_from_numpy,
        lambda t: t.detach().clone(),
    ),
    "jax": Framework(
        "jax", "jax", ("jax", "jaxlib"), _numpy_from_dlpack, _jax_from_numpy, lambda a: a
    ),
    "tensorflow": Framework(
        "tensorflow",
        "tensorflow",
        ("tensorflow", "tf_keras", "keras"),
        _tensorflow_to_numpy,
        _tensorflow_from_numpy,
        lambda t: t,
    ),
    "cupy": Framework(
        "cupy", "cupy", ("cupy", "cupyx"), _cupy_to_numpy, _cupy_from_numpy, lambda a: a.copy()
    ),
}

_BY_TYPE_MODULE = {mod: name for name, fw in FRAMEWORKS.items() for mod in fw.type_modules}
_by_type: dict[type, str | None] = {}  # memo of the answer per type (a program uses few types)
_BY_TYPE_LIMIT = 1024


def framework_of(obj: Any) -> str | None:
    """The array framework ``obj`` belongs to.

    Looks at the type's module only: never imports anything.

    Returns
    -------
    str or None
        ``"numpy"``, ``"torch"``, ``"jax"``, ``"tensorflow"``, ``"cupy"``, or ``None`` for
        anything that is not an array of one of them.
    """
    kind = type(obj)
    try:
        return _by_type[kind]
    except KeyError:
        name = _BY_TYPE_MODULE.get(kind.__module__.partition(".")[0])
        if len(_by_type) < _BY_TYPE_LIMIT:
            _by_type[kind] = name
        return name


def is_array(obj: Any) -> bool:
    """Whether ``obj`` is an array of one of the supported frameworks."""
    return framework_of(obj) is not None and hasattr(obj, "shape")


_CONVERSION_ERRORS = (BufferError, TypeError, RuntimeError, ValueError)
"""What frameworks raise for a dtype or memory the other side cannot take (DLPack's BufferError,
torch's TypeError for bfloat16, ...)."""


def _no_equivalent(obj: Any, source: str, target: str, error: BaseException) -> UnsupportedDataError:
    dtype = getattr(obj, "dtype", "?")
    hint = {
        "numpy": "convert it to a dtype NumPy has first (e.g. tensor.float() for bfloat16), or "
        "save it as .pt, which keeps every torch dtype",
    }.get(target, "convert it to a plain numeric dtype first (bool, integers, floats, complex), "
              "or load it as NumPy (framework='numpy')")
    return UnsupportedDataError(
        f"A {source} array of dtype {dtype} has no {target} equivalent ({type(error).__name__}: "
        f"{error}); {hint}."
    )


def to_numpy(obj: Any) -> np.ndarray:
    """``obj`` as a NumPy array: a view where memory can be shared, else a copy.

    Parameters
    ----------
    obj
        An array of NumPy, PyTorch, JAX, TensorFlow or CuPy (a GPU array is copied to the host).

    Returns
    -------
    numpy.ndarray
        Shares memory with ``obj`` where the framework allows it (CPU torch tensors, JAX).

    Raises
    ------
    UnsupportedDataError
        ``obj`` is not an array of a supported framework.
    """
    framework = framework_of(obj)
    if framework is None:
        raise UnsupportedDataError(
            f"Expected an array (NumPy, PyTorch, JAX, TensorFlow or CuPy), got "
            f"{type(obj).__module__}.{type(obj).__qualname__}."
        )
    return _to_numpy(obj, framework)


def _to_numpy(obj: Any, framework: str) -> np.ndarray:
    """:func:`to_numpy` of an array of ``framework``."""
    try:
        return FRAMEWORKS[framework].to_numpy(obj)
    except UnsupportedDataError:
        raise
    except _CONVERSION_ERRORS as error:
        raise _no_equivalent(obj, framework, "numpy", error) from error


def convert(obj: Any, framework: str | None) -> Any:
    """``obj`` as an array of ``framework``, without a copy where DLPack allows.

    Parameters
    ----------
    obj
        An array of any supported framework; other objects (dicts, strings, DataFrames) are
        returned unchanged.
    framework
        ``"numpy"``, ``"torch"``, ``"jax"``, ``"tensorflow"`` or ``"cupy"``; ``None`` leaves
        ``obj`` as it is.

    Returns
    -------
    Any
        The converted array (or ``obj`` itself).

    Raises
    ------
    InvalidOptionError
        ``framework`` is not one of those names (also a ``ValueError``).
    MissingDependencyError
        The framework is not installed (the message names the extra to install).
    UnsupportedDataError
        The array has no equivalent in ``framework`` (a dtype it lacks).
    """
    if framework is None:
        return obj
    target = FRAMEWORKS.get(framework)
    if target is None:
        raise InvalidOptionError(
            f"Unknown framework '{framework}'. Choose one of: {', '.join(FRAMEWORKS)}."
        )
    source = _by_type.get(type(obj)) or framework_of(obj)  # the memo without a call, per array
    if source is None or source == framework:
        return obj
    if type(obj) is np.ndarray:  # the common case: already what every from_numpy takes
        array = obj
    else:
        if framework == "cupy" and hasattr(obj, "__dlpack__") and source != "numpy":
            cupy = _import("cupy")
            try:
                return cupy.from_dlpack(obj)  # device to device without the host round trip
            except _CONVERSION_ERRORS:
                pass
        array = _to_numpy(obj, source)
    try:  # each from_numpy puts the array in the machine's byte order where it must
        return target.from_numpy(array)
    except UnsupportedDataError:
        raise
    except _CONVERSION_ERRORS as error:
        raise _no_equivalent(array, source, framework, error) from error


def copy_array(obj: Any) -> Any:
    """An independent copy: arrays in their own framework, other objects deep-copied."""
    framework = framework_of(obj)
    if framework is not None:
        return FRAMEWORKS[framework].copy(obj)
    import copy

    return copy.deepcopy(obj)


def as_plain_array(data: Any, fmt: str) -> np.ndarray:
    """A NumPy array of a non-object dtype, from any framework's array or a nested list."""
    try:
        array = to_numpy(data) if framework_of(data) is not None else np.asarray(data)
    except UnsupportedDataError as error:  # say which format could not take it
        raise UnsupportedDataError(f"{fmt} cannot store this: {error}") from error.__cause__
    if array.dtype.hasobject:
        raise UnsupportedDataError(
            f"{fmt} stores numeric arrays; got an array of Python objects (dtype=object), "
            "which would need pickle. Convert it to a numeric dtype, or save it as .json on disk."
        )
    return array
