"""benchmarks/harness.py draws each benchmark's results as a figure next to its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# benchmarks/harness.py by its path: benchmarks/ on sys.path would shadow packages for the whole
# test session (benchmarks/distributed.py hid dask's `distributed`)
_spec = importlib.util.spec_from_file_location(
    "polystore_bench_harness", Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness  # dataclasses look their module up while the class is made
_spec.loader.exec_module(harness)


def test_save_figure_writes_png_svg_and_the_table_stamped(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need matplotlib (pip install 'polystore[bench]')")
    rows: list[harness.Row | harness.Bar] = [
        harness.row("a", "save", 0.011, "np.save", 0.0055, harness.Goal(1.1), round_ratios=[1.9, 2.1]),
        harness.row("b", "load_batch", 0.08, "serial", 0.12, harness.Goal(1.6, at_least=True), speedup=True),
        ("shm / memcpy", 0.48, harness.Goal(0.4, at_least=True)),
    ]
    written = harness.save_figure("example", rows, title="Example run", load_before=1.5, directory=tmp_path)
    assert sorted(path.name for path in written) == ["example.md", "example.png", "example.svg"]
    assert (tmp_path / "example.png").read_bytes().startswith(b"\x89PNG")
    svg = (tmp_path / "example.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    table = (tmp_path / "example.md").read_text(encoding="utf-8")
    assert "| save | 11.00 ms | np.save: 5.50 ms | 2.00x (1.90-2.10) | <= 1.10x | MISS |" in table
    assert "| shm / memcpy | | | 0.48x | >= 0.40x | PASS |" in table
    assert "load average 1.50 at the start" in table and harness.machine() in table
