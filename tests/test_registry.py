"""Backend registration: classes by _backend_type, instances per registry, addons by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import polystore
from polystore import (
    BackendRegistrationError,
    BackendRegistry,
    DiskBackend,
    FileManager,
    MemoryBackend,
    StorageBackend,
)
from polystore.registry import (
    ENTRY_POINT_GROUP,
    registered_backend_classes,
    unregister_backend_class,
)

pytestmark = pytest.mark.usefixtures("restore_backend_classes")


class _Counted(StorageBackend):
    """Counts instantiations; subclasses set _backend_type."""

    created: ClassVar[int] = 0

    def __init__(self) -> None:
        type(self).created += 1
        self.items: dict[str, Any] = {}

    def save(self, data: Any, file_path: Any, **kwargs: Any) -> None:
        self.items[str(file_path)] = data

    def load(self, file_path: Any, **kwargs: Any) -> Any:
        return self.items[str(file_path)]


def test_builtin_backends_are_registered() -> None:
    registry = BackendRegistry()
    assert "disk" in registry and "memory" in registry
    assert registered_backend_classes()["disk"] is DiskBackend
    assert registered_backend_classes()["memory"] is MemoryBackend
    assert isinstance(registry["disk"], DiskBackend)
    assert {"disk", "memory"} <= set(registry.names())
    assert {"disk", "memory"} <= set(registry) and len(registry) >= 2
    assert "disk" in repr(registry)


def test_defining_a_class_with_backend_type_registers_it() -> None:
    class AutoDemo(_Counted):
        _backend_type = "auto_demo"

    assert registered_backend_classes()["auto_demo"] is AutoDemo
    registry = BackendRegistry()
    assert "auto_demo" in registry
    fm = FileManager(registry)
    fm.save(np.arange(3), "x", backend="auto_demo")
    np.testing.assert_array_equal(fm.load("x", backend="auto_demo"), np.arange(3))


def test_subclasses_do_not_reregister_an_inherited_name() -> None:
    class TunedDisk(DiskBackend):  # inherits _backend_type = "disk" but does not claim it
        pass

    assert registered_backend_classes()["disk"] is DiskBackend
    assert type(BackendRegistry()["disk"]) is DiskBackend
    assert TunedDisk._backend_type == "disk"


def test_classes_without_a_name_are_not_registered() -> None:
    before = set(registered_backend_classes())

    class Anonymous(_Counted):
        pass

    assert set(registered_backend_classes()) == before
    assert Anonymous not in registered_backend_classes().values()


def test_non_string_names_are_not_in_the_registry() -> None:
    registry = BackendRegistry()
    not_names: list[object] = [42, None]
    for name in not_names:
        assert name not in registry


def test_instances_are_created_lazily_and_reused() -> None:
    class LazyDemo(_Counted):
        _backend_type = "lazy_demo"
        created = 0

    registry = BackendRegistry()
    assert "lazy_demo" in registry
    assert "lazy_demo" in registry.names()
    assert LazyDemo.created == 0  # naming and membership do not instantiate
    first = registry["lazy_demo"]
    assert LazyDemo.created == 1
    assert registry["lazy_demo"] is first  # the same instance twice
    assert FileManager(registry).get_backend("lazy_demo") is first
    assert LazyDemo.created == 1
    other = BackendRegistry()["lazy_demo"]  # another registry has its own instance
    assert other is not first and LazyDemo.created == 2


def test_concurrent_first_lookups_create_one_instance() -> None:
    class RacedDemo(_Counted):
        _backend_type = "raced_demo"
        created = 0

    registry = BackendRegistry()
    barrier = threading.Barrier(8)
    found: list[Any] = []

    def look_up() -> None:
        barrier.wait()
        found.append(registry["raced_demo"])

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert RacedDemo.created == 1
    assert len(found) == 8 and all(backend is found[0] for backend in found)


def test_instances_given_as_a_dict() -> None:
    shared: dict[str, Any] = {}
    scratch = MemoryBackend(shared_dict=shared)
    registry = BackendRegistry({"scratch": scratch, "memory": scratch})
    assert registry["scratch"] is scratch
    assert registry["memory"] is scratch  # an instance wins over the registered class
    assert "scratch" in registry and "scratch" in registry.names()
    assert "scratch" not in BackendRegistry()  # only in the registry that was given it

    fm = FileManager({"scratch": scratch})
    assert fm.get_backend("scratch") is scratch
    fm.save(np.ones(2), "/a.npy", backend="scratch")
    assert "/a.npy" in shared


def test_filemanager_keeps_a_given_registry() -> None:
    registry = BackendRegistry()
    fm = FileManager(registry, default_backend="memory")
    assert fm.registry is registry
    fm.save(np.zeros(1), "/z.npy")  # the default backend
    assert registry["memory"].exists("/z.npy")


def test_register_instance_replace_and_unregister() -> None:
    registry = BackendRegistry()
    first, second = MemoryBackend(), MemoryBackend()
    registry.register("scratch", first)
    assert registry["scratch"] is first
    with pytest.raises(BackendRegistrationError, match="replace=True"):
        registry.register("scratch", second)
    assert registry["scratch"] is first
    registry.register("scratch", second, replace=True)
    assert registry["scratch"] is second
    registry.unregister("scratch")
    assert "scratch" not in registry

    # Replacing a built-in for this registry only, then going back to the class.
    registry.register("memory", first)
    assert registry["memory"] is first
    registry.unregister("memory")
    assert registry["memory"] is not first
    assert isinstance(registry["memory"], MemoryBackend)


def test_register_a_class_instantiates_it_lazily() -> None:
    class ByRegister(_Counted):
        created = 0

    registry = BackendRegistry()
    registry.register("by_register", ByRegister)
    assert "by_register" in registry
    assert ByRegister.created == 0
    backend = registry["by_register"]
    assert isinstance(backend, ByRegister) and registry["by_register"] is backend
    assert ByRegister.created == 1


def test_redefining_the_same_class_replaces_it() -> None:
    """A re-run notebook cell or reloaded module defines the 'same' class again."""
    defined = []
    for _ in range(2):

        class Reloaded(_Counted):
            _backend_type = "reloaded_demo"

        defined.append(Reloaded)
    assert defined[0] is not defined[1]
    assert registered_backend_classes()["reloaded_demo"] is defined[1]


def test_unregister_backend_class() -> None:
    class Transient(_Counted):
        _backend_type = "transient_demo"

    assert unregister_backend_class("transient_demo") is Transient
    assert "transient_demo" not in BackendRegistry()
    assert unregister_backend_class("transient_demo") is None
    # Now another class may take the name.

    class Successor(_Counted):
        _backend_type = "transient_demo"

    assert registered_backend_classes()["transient_demo"] is Successor


def test_registered_classes_view_is_read_only() -> None:
    with pytest.raises(TypeError):
        registered_backend_classes()["x"] = DiskBackend  # type: ignore[index]


# -- addons through entry points ------------------------------------------------------------

ADDON_SOURCE = '''\
"""A demo addon: one backend that keeps what it saves in a dict."""

from polystore import StorageBackend


class AddonDemoBackend(StorageBackend):
    _backend_type = "addon_demo"

    def __init__(self):
        self.items = {}

    def save(self, data, file_path, **kwargs):
        self.items[str(file_path)] = data

    def load(self, file_path, **kwargs):
        return self.items[str(file_path)]

    def exists(self, path):
        return str(path) in self.items


class PlainBackend(AddonDemoBackend):
    """No _backend_type of its own: the entry point's name registers it."""


not_a_backend = "just a string"
'''

ENTRY_POINTS = f"""\
[{ENTRY_POINT_GROUP}]
addon_demo = polystore_addon_demo:AddonDemoBackend
addon_plain = polystore_addon_demo:PlainBackend
addon_broken = polystore_addon_demo:not_a_backend
"""

CHECK_SCRIPT = '''\
import json
import sys

import numpy as np
from polystore import BackendRegistry, FileManager
from polystore.exceptions import BackendRegistrationError

report = {}
registry = BackendRegistry()
report["imported_at_start"] = "polystore_addon_demo" in sys.modules
report["in_registry"] = "addon_demo" in registry
report["in_names"] = [n for n in registry.names() if n.startswith("addon_")]
report["imported_after_membership"] = "polystore_addon_demo" in sys.modules

fm = FileManager(registry)
fm.save(np.arange(4), "a/b.npy", backend="addon_demo")
report["imported_after_use"] = "polystore_addon_demo" in sys.modules
report["loaded"] = fm.load("a/b.npy", backend="addon_demo").tolist()
report["exists"] = fm.exists("a/b.npy", backend="addon_demo")
backend = fm.get_backend("addon_demo")
report["backend_class"] = type(backend).__module__ + "." + type(backend).__qualname__
report["reused"] = fm.get_backend("addon_demo") is backend

plain = registry["addon_plain"]
report["plain_class"] = type(plain).__qualname__

try:
    registry["addon_broken"]
except BackendRegistrationError as error:
    report["broken_error"] = str(error)
print(json.dumps(report))
'''


@pytest.fixture
def installed_addon(tmp_path: Path) -> Path:
    """A real (unpacked) distribution: the package and its .dist-info, as pip lays them out."""
    site = tmp_path / "site"
    package = site / "polystore_addon_demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(ADDON_SOURCE)
    dist_info = site / "polystore_addon_demo-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: polystore-addon-demo\nVersion: 0.1\n"
        "Requires-Dist: polystore\n"
    )
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def test_addon_is_found_through_its_entry_point_and_imported_only_when_used(
    installed_addon: Path, tmp_path: Path
) -> None:
    polystore_parent = str(Path(polystore.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(installed_addon), polystore_parent]))
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["imported_at_start"] is False
    assert report["in_registry"] is True
    assert report["in_names"] == ["addon_broken", "addon_demo", "addon_plain"]
    assert report["imported_after_membership"] is False  # listed without importing the addon
    assert report["imported_after_use"] is True
    assert report["loaded"] == [0, 1, 2, 3]
    assert report["exists"] is True
    assert report["backend_class"] == "polystore_addon_demo.AddonDemoBackend"
    assert report["reused"] is True
    assert report["plain_class"] == "PlainBackend"
    assert "addon_broken = polystore_addon_demo:not_a_backend" in report["broken_error"]
    assert "registered no backend named 'addon_broken'" in report["broken_error"]


def test_addon_is_absent_without_its_distribution(tmp_path: Path) -> None:
    """The same check without the addon on the path: the name is unknown, clearly."""
    script = textwrap.dedent(
        """
        from polystore import BackendRegistry, BackendNotFoundError
        registry = BackendRegistry()
        assert "addon_demo" not in registry
        try:
            registry["addon_demo"]
        except BackendNotFoundError as error:
            print(error)
        """
    )
    polystore_parent = str(Path(polystore.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=polystore_parent)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown backend 'addon_demo'" in result.stdout
    assert "disk" in result.stdout and "memory" in result.stdout


@pytest.mark.parametrize("thing", [5, "disk", None, object()])
def test_what_is_no_backend_is_refused_when_registered(thing: Any) -> None:
    # it was taken, and the first call on it raised a bare AttributeError ('int' object has no
    # attribute 'exists')
    with pytest.raises(BackendRegistrationError, match="backend instance or class") as refused:
        FileManager({"x": thing})
    assert isinstance(refused.value, TypeError)
    registry = BackendRegistry()
    with pytest.raises(BackendRegistrationError, match="DiskBackend"):
        registry.register("x", thing)
    assert "x" not in registry
