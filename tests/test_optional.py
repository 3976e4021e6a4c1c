"""The base install needs only NumPy; every optional part fails with the extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from polystore import BackendRegistry, FileManager

OPTIONAL = ("tifffile", "roifile", "pandas", "filelock", "tqdm", "torch", "jax", "tensorflow", "zarr", "dask")


def run_without_optional_packages(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where every optional package fails to import."""
    blocker = f"import sys\nfor name in {OPTIONAL!r}:\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def test_numpy_alone_runs_the_core(tmp_path: Path) -> None:
    result = run_without_optional_packages(
        """
        import numpy as np
        from polystore import FileManager, atomic_write_json
        fm = FileManager()
        fm.save(np.arange(6).reshape(2, 3), "a/x.npy", backend="disk")
        fm.save({"a": 1}, "a/meta.json", backend="disk")
        fm.copy("a", "/copy", backend="disk", dest_backend="memory")
        atomic_write_json({"ok": True}, "done.json")
        print(fm.load("/copy/x.npy", backend="memory").sum(), fm.list_files("a", backend="disk"))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "15 ['a/meta.json', 'a/x.npy']"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("fm.save(np.zeros((4, 4), np.uint16), 'x.tif', backend='disk')", "tiff"),
        ("fm.save(np.zeros(3), 'x.pt', backend='disk')", "torch"),
        ("fm.load_batch(['a.npy'], backend='memory', progress=True)", "progress"),
        ("fm.load('a.npy', 'memory', framework='jax')", "jax"),
        ("from polystore.atomic import file_lock\nwith file_lock('x.json'): pass", "lock"),
        ("fm.save(np.zeros((4, 4)), 'x.zarr', backend='zarr')", "zarr"),
    ],
    ids=["tiff", "torch", "progress", "jax", "lock", "zarr"],
)
def test_a_missing_extra_is_named(tmp_path: Path, code: str, extra: str) -> None:
    result = run_without_optional_packages(
        "import numpy as np\nfrom polystore import FileManager\nfm = FileManager()\n"
        "fm.save(np.zeros(2), 'a.npy', backend='memory')\n" + code,
        tmp_path,
    )
    assert result.returncode != 0
    assert "MissingDependencyError" in result.stderr
    assert f"pip install 'polystore[{extra}]'" in result.stderr


def test_progress_bar_is_shown_and_order_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    fm = FileManager(BackendRegistry())
    arrays = [np.full(4, i) for i in range(12)]
    paths = [f"p/{i:02d}.npy" for i in range(12)]
    fm.save_batch(arrays, paths, backend="disk", progress=True)
    loaded = fm.load_batch(paths, backend="disk", progress=True)
    assert [int(a[0]) for a in loaded] == list(range(12))
    bar = capsys.readouterr().err
    assert "save_batch" in bar and "load_batch" in bar and "12/12" in bar
