"""Backend registration: names to classes (global), names to instances (per registry).

Three ways a backend becomes known, in the order a lookup tries them:

1. an instance given to a registry (``registry.register("temp", TemporaryBackend())`` or
   ``FileManager({"temp": backend})``): for backends whose constructor needs arguments;
2. a class that set ``_backend_type`` in its body: registered when the class is created,
   instantiated with no arguments on first use, and then reused;
3. an entry point in the ``polystore.backends`` group of an installed distribution
   (``mybackend = "my_package.backends:MyBackend"``): imported only when its name is first
   asked for, so a pip-installed addon works without being imported first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import metadata
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from polystore.exceptions import BackendNotFoundError, BackendRegistrationError

if TYPE_CHECKING:
    from polystore.base import DataSource

ENTRY_POINT_GROUP = "polystore.backends"

_classes: dict[str, type] = {}
_classes_lock = threading.RLock()


def _describe(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_backend_class(name: str, cls: type) -> None:
    """Make ``cls`` the class behind backend ``name`` (called by ``__init_subclass__``).

    Re-running the same definition (a module reloaded, a notebook cell run again) replaces
    the old class; a *different* class claiming a taken name is an error naming both.
    """
    with _classes_lock:
        existing = _classes.get(name)
        if existing is not None and _describe(existing) != _describe(cls):
            raise BackendRegistrationError(
                f"Backend name '{name}' is already registered to {_describe(existing)}; "
                f"{_describe(cls)} cannot register under the same name. Give one of them "
                "another _backend_type, or call "
                f"polystore.registry.unregister_backend_class('{name}') first."
            )
        _classes[name] = cls


def unregister_backend_class(name: str) -> type | None:
    """Forget the class registered as ``name``; return it (``None`` if there was none)."""
    with _classes_lock:
        return _classes.pop(name, None)


def registered_backend_classes() -> Mapping[str, type]:
    """A read-only view of the name -> class table."""
    return MappingProxyType(_classes)


@cache
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def refresh_entry_points() -> None:
    """Look for addons again (after installing one into a running interpreter)."""
    _entry_points.cache_clear()


def _class_for(name: str) -> type | None:
    """The class registered as ``name``, importing its addon through an entry point if needed."""
    cls = _classes.get(name)
    if cls is not None:
        return cls
    entry_point = _entry_points().get(name)
    if entry_point is None:
        return None
    loaded = entry_point.load()  # importing the module registers classes it defines
    cls = _classes.get(name)
    if cls is None and isinstance(loaded, type):
        register_backend_class(name, loaded)
        cls = loaded
    if cls is None:
        raise BackendRegistrationError(
            f"Entry point '{name} = {entry_point.value}' (group '{ENTRY_POINT_GROUP}') loaded, "
            f"but registered no backend named '{name}'. Point it at the backend class, "
            f"or set _backend_type = '{name}' on that class."
        )
    return cls


class BackendRegistry(Mapping[str, "DataSource"]):
    """Backend name -> backend instance, created lazily on first use and reused after.

    A read-only mapping: ``registry["disk"]``, ``"zarr" in registry``, ``list(registry)``.

    Parameters
    ----------
    backends
        Instances (or classes) of this registry's own, by name, used on top of every
        registered class and installed addon: ``BackendRegistry({"temp": backend})``.

    Raises
    ------
    BackendRegistrationError
        Two of ``backends`` under one name (see :meth:`register`).
    """

    def __init__(self, backends: Mapping[str, Any] | None = None) -> None:
        self._instances: dict[str, Any] = {}
        self._lock = threading.RLock()
        for name, backend in (backends or {}).items():
            self.register(name, backend)

    def register(self, name: str, backend: Any, *, replace: bool = False) -> None:
        """Use ``backend`` (an instance, or a class to instantiate lazily) for ``name`` here.

        Parameters
        ----------
        name
            The name callers give as ``backend=``.
        backend
            A configured instance, or a class created with no arguments on first use.
        replace
            Swap an instance this registry already holds under ``name``.

        Raises
        ------
        BackendRegistrationError
            This registry already holds a backend named ``name`` and ``replace`` is false.
        """
        from polystore.base import DataSource  # here: polystore.base imports this module

        kind = backend if isinstance(backend, type) else type(backend)
        if not issubclass(kind, DataSource):
            raise BackendRegistrationError(
                f"Backend '{name}' must be a backend instance or class (a polystore DataSource, "
                f"such as DiskBackend(root=...) or MemoryBackend), not {type(backend).__name__} "
                f"{backend!r:.60}."
            )
        with self._lock:
            if not replace and name in self._instances:
                raise BackendRegistrationError(
                    f"This registry already has a backend '{name}' "
                    f"({type(self._instances[name]).__name__}); pass replace=True to swap it "
                    f"for {type(backend).__name__ if not isinstance(backend, type) else backend.__name__}."
                )
            self._instances[name] = backend

    def unregister(self, name: str) -> None:
        """Drop this registry's own instance of ``name`` (classes stay registered)."""
        with self._lock:
            self._instances.pop(name, None)

    def __getitem__(self, name: str) -> DataSource:
        with self._lock:
            backend = self._instances.get(name)
            if backend is None:
                cls = _class_for(name)
                if cls is None:
                    raise BackendNotFoundError(name, self.names())
                backend = cls
            if isinstance(backend, type):
                backend = self._instantiate(name, backend)
                self._instances[name] = backend
            return backend  # type: ignore[no-any-return]

    @staticmethod
    def _instantiate(name: str, cls: type) -> Any:
        try:
            return cls()
        except TypeError as error:
            raise BackendRegistrationError(
                f"Backend '{name}' ({cls.__name__}) cannot be created without arguments "
                f"({error}). Register a configured instance instead: "
                f"registry.register('{name}', {cls.__name__}(...))."
            ) from error

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._instances or name in _classes or name in _entry_points()
        )

    def names(self) -> list[str]:
        """Every name this registry can serve, without importing any addon."""
        return sorted(set(self._instances) | set(_classes) | set(_entry_points()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"BackendRegistry({', '.join(self.names())})"
