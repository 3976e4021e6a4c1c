"""Every error a user sees is one of polystore's (a PolystoreError that is also the builtin).

A scan of the source fails on any ``raise`` of a bare builtin exception class; the few that
must stay builtins are listed below, each with its reason. Behavioural tests check the
user-facing cases that were bare builtins before.
"""

from __future__ import annotations

import ast
import builtins
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from polystore.exceptions import (
    InvalidOptionError,
    InvalidPathError,
    LockTimeoutError,
    PolystoreError,
    StorageFileNotFoundError,
    UnsupportedDataError,
    UnviewableDataError,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("polystore", "polystore_napari", "polystore_fiji")
BUILTIN_ERRORS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)

ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    # (file, builtin): (how many raises of it the file may hold, why they stay builtins)
    ("polystore/__init__.py", "AttributeError"): (
        1, "module __getattr__: hasattr() and the import system need a plain AttributeError"),
    ("polystore_napari/__init__.py", "AttributeError"): (
        1, "module __getattr__: hasattr() and the import system need a plain AttributeError"),
    ("polystore_fiji/__init__.py", "AttributeError"): (
        1, "module __getattr__: hasattr() and the import system need a plain AttributeError"),
    ("polystore/backends/zarr/pipeline.py", "AttributeError"): (
        1, "module __getattr__ (zarr's registry and pickle look the pipeline class up by name)"),
    ("polystore/backends/zarr/pipeline.py", "NotImplementedError"): (
        1, "zarr's codec-pipeline protocol: zarr catches it and falls back to its own pipeline"),
    ("polystore/backends/memory.py", "AssertionError"): (
        1, "unreachable: a Refusal code added without its message; a bug, not a user's error"),
    ("polystore/__main__.py", "SystemExit"): (1, "the exit status of `python -m polystore`"),
    ("polystore/cli/__init__.py", "SystemExit"): (1, "the CLI's exit status"),
    ("polystore_napari/__main__.py", "SystemExit"): (1, "the exit status of `python -m polystore_napari`"),
    ("polystore/cli/convert.py", "argparse.ArgumentTypeError"): (
        2, "argparse's protocol for a type= function (shapes, counts): argparse turns it into a usage error"),
    ("polystore/streaming/payloads.py", "ValueError"): (
        1, "caught a line below with pandas' own ValueError and raised as CorruptDataError"),
}


def _bare_builtin_raises(path: Path) -> Counter[str]:
    """The builtin exception classes ``path`` raises by name (``raise ValueError(...)`` and
    ``raise ValueError``), and the classes it raises straight from another module
    (``raise json.JSONDecodeError(...)``, counted as ``"json.JSONDecodeError"``: not
    polystore's either); re-raising a caught error (``raise error``) is not counted."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules = {alias.asname or alias.name.split(".")[0]
               for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    found: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id in BUILTIN_ERRORS:
                found[raised.id] += 1
            elif isinstance(raised, ast.Attribute) and ast.unparse(raised.value).split(".")[0] in modules:
                found[ast.unparse(raised)] += 1
    return found


def test_no_bare_builtin_raises() -> None:
    offences: list[str] = []
    seen: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for name, count in _bare_builtin_raises(path).items():
                allowed, _reason = ALLOWED.get((relative, name), (0, ""))
                seen.add((relative, name))
                if count > allowed:
                    offences.append(f"{relative}: raise {name} x{count} (allowed: {allowed})")
    assert not offences, (
        "Bare builtin exceptions reach users; raise a PolystoreError subclass that is also the "
        "builtin (polystore/exceptions.py), or, for one always caught inside polystore, add it to "
        "ALLOWED with the reason:\n  " + "\n  ".join(offences)
    )
    # an entry left after its raise was converted would let a new one in unnoticed
    stale = sorted(f"{file}: {name}" for file, name in set(ALLOWED) - seen)
    assert not stale, f"ALLOWED lists raises that are gone; remove them: {stale}"


def test_the_scan_finds_bare_raises(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f(e):\n    raise ValueError('x')\n\ndef g():\n    raise KeyError\n\n"
                      "def h(e):\n    raise e\n\nimport json\n\ndef i(self):\n"
                      "    raise json.JSONDecodeError('x', '', 0)\n\ndef j(self):\n    raise self.fail()\n")
    assert _bare_builtin_raises(source) == Counter({"ValueError": 1, "KeyError": 1,
                                                    "json.JSONDecodeError": 1})


def _both(error: pytest.ExceptionInfo[BaseException], builtin: type[BaseException]) -> None:
    assert isinstance(error.value, PolystoreError)
    assert isinstance(error.value, builtin)


def test_zarr_config_refusals_are_invalid_options() -> None:
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    with pytest.raises(ValueError, match="shards need Zarr v3") as error:
        ZarrBackend(zarr_format=2, shards=(1, 64, 64))
    _both(error, ValueError)
    assert isinstance(error.value, InvalidOptionError)
    with pytest.raises(ValueError, match="pyramid_levels=0") as error:
        ZarrBackend(pyramid_levels=0)
    _both(error, ValueError)
    with pytest.raises(ValueError, match="codec_pipeline='bogus'") as error:
        ZarrBackend(codec_pipeline="bogus")
    _both(error, ValueError)


def test_zarr_paths_that_climb_or_copy_into_themselves(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    backend = ZarrBackend(root=tmp_path)
    with pytest.raises(InvalidPathError, match="cannot climb out") as error:
        backend.save(np.zeros((2, 2), np.uint8), "../x")
    _both(error, ValueError)
    backend.save(np.zeros((2, 2), np.uint8), "s.zarr/a/image")
    with pytest.raises(InvalidPathError, match="onto or into itself") as error:
        backend.copy("s.zarr/a", "s.zarr/a/b")
    _both(error, ValueError)
    with pytest.raises(InvalidPathError, match="into itself") as error:
        backend.move("s.zarr/a", "s.zarr/a/b")
    _both(error, ValueError)
    assert backend.exists("s.zarr/a/image") and not backend.exists("s.zarr/a/b")


def test_zarr_level_out_of_range(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    backend = ZarrBackend(root=tmp_path)
    backend.save(np.zeros((8, 8), np.uint8), "s.zarr/image")
    with pytest.raises(InvalidOptionError, match=r"level=5\. Pass a level from 0") as error:
        backend.load("s.zarr/image", level=5)
    _both(error, ValueError)


def test_ngff_axes_refusals() -> None:
    from polystore.ome.ngff import infer_axes

    with pytest.raises(InvalidOptionError, match="does not describe a 3-D image") as error:
        infer_axes(3, "xy")
    _both(error, ValueError)
    with pytest.raises(InvalidOptionError, match="OME-NGFF's order") as error:
        infer_axes(2, "xy")
    _both(error, ValueError)


def test_zarr_lock_timeout_is_ours_and_a_timeout(s3_bucket: str) -> None:
    pytest.importorskip("obstore")
    from polystore.backends.zarr.location import ObjectKeys, Stores
    from polystore.backends.zarr.locks import ObjectStoreLock

    keys = Stores({}).keys(f"s3://{s3_bucket}")
    assert isinstance(keys, ObjectKeys)
    key = ".plate.zarr.polystore-lock"
    with (ObjectStoreLock(keys, key, lease=60),
          pytest.raises(LockTimeoutError, match="another writer holds it") as error):
        ObjectStoreLock(keys, key, timeout=0.3).acquire()
    _both(error, TimeoutError)


def test_json_of_an_unwritable_object_is_unsupported_data(tmp_path: Path) -> None:
    from polystore.atomic import json_default

    with pytest.raises(UnsupportedDataError, match="cannot be written as JSON") as error:
        json.dumps({"a": object()}, default=json_default)
    _both(error, TypeError)


def test_cli_stream_of_a_folder_without_images(tmp_path: Path) -> None:
    import argparse

    from polystore.cli import stream

    (tmp_path / "notes.txt").write_text("no images here")
    parser = argparse.ArgumentParser()
    stream.add_arguments(parser)
    args = parser.parse_args([str(tmp_path), "--to", "napari", "--no-launch"])
    with pytest.raises(StorageFileNotFoundError, match="No images") as error:
        stream.run(args)
    _both(error, FileNotFoundError)
    assert error.value.filename == str(tmp_path)


def test_storage_file_not_found_detail_survives_pickling() -> None:
    import pickle

    error = StorageFileNotFoundError("a.zarr/x", "zarr", "No zarr array there")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.detail == "No zarr array there"
    assert "No zarr array there" in str(error) and error.filename == "a.zarr/x"


def test_napari_channel_mode_refusal() -> None:
    from polystore_napari.placement import ComponentParser

    with pytest.raises(InvalidOptionError, match="channel_mode must be 'layers' or 'axis'") as error:
        ComponentParser(channel_mode="stack")  # type: ignore[arg-type]  # the wrong value is the test
    _both(error, ValueError)


@pytest.mark.napari
def test_napari_browser_refuses_data_it_cannot_show() -> None:
    from polystore_napari.browser_widget import loaded_layer_data

    with pytest.raises(UnviewableDataError, match="cannot be shown as a layer") as error:
        loaded_layer_data({"a": 1}, "notes")
    _both(error, ValueError)
    assert isinstance(error.value, TypeError)  # an UnsupportedDataError too


def test_fiji_composite_mode_refusal() -> None:
    from polystore_fiji.convert import make_composite

    # refused before the JVM is needed: no ImagePlus is touched
    with pytest.raises(InvalidOptionError, match="composite_mode must be one of") as error:
        make_composite(None, "bogus")
    _both(error, ValueError)


def test_stream_refusals_are_ours() -> None:
    pytest.importorskip("zmq")
    from net_helpers import free_port_block

    from polystore.streaming import StreamingBackend, StreamReceiver, StreamStateError

    port = free_port_block(3)
    with StreamReceiver(port=port).start() as receiver:
        with pytest.raises(StreamStateError, match="already running") as error:
            receiver.start()
        _both(error, RuntimeError)
    with StreamingBackend(mode="push", port=port) as sender:
        with pytest.raises(InvalidOptionError, match="unexpected options: colour") as error:
            sender.frame((4, 4), np.uint8, "a.tif", colour="red")
        _both(error, TypeError)
        with pytest.raises(InvalidOptionError, match="2 data items but 1 paths") as error:
            sender.save_batch([np.zeros(2), np.zeros(2)], ["a.npy"])
        _both(error, ValueError)
