"""The measuring and reporting machinery the benchmark scripts share.

Imported as ``from harness import ...``: run as ``python benchmarks/<script>.py``, a script's own
folder (this one) comes first on sys.path. Nothing here imports polystore or any array library
(matplotlib only, to draw figures).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

Item = TypeVar("Item")
Unit = Literal["s", "ms", "us"]
_UNITS: tuple[tuple[Unit, float, float], ...] = (("s", 1.0, 1.0), ("ms", 1e-3, 1e3), ("us", 1e-6, 1e6))


@dataclass(frozen=True)
class Goal:
    """What a row should reach: ``ratio <= limit`` or, with ``at_least``, ``ratio >= limit``."""

    limit: float
    at_least: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= self.limit if self.at_least else ratio <= self.limit

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:.2f}x"


@dataclass
class Row:
    """One line of the results table: our case against a reference, and the verdict."""

    section: str
    case: str
    ours_s: float
    reference: str
    reference_s: float
    ratio: float
    goal: str
    result: str  # PASS, MISS, or "info" for rows without a goal
    round_ratios: list[float] = field(default_factory=list)
    """ours / reference within each round (the two ran back to back): their spread shows the noise."""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The row as a dict for JSON, leaving out the optional fields where they are empty."""
        data = asdict(self)
        for name in ("round_ratios", "samples"):
            if not data[name]:
                del data[name]
        return data


@dataclass
class Settings:
    """What every benchmark section gets: quick or full, and where to write its files."""

    quick: bool
    directory: Path

    def reps(self, full: int, quick: int) -> int:
        """``quick`` repeats in a --quick run, ``full`` otherwise."""
        return quick if self.quick else full


def row(
    section: str, case: str, ours: float, reference: str, ref: float, goal: Goal | None,
    *, speedup: bool = False, round_ratios: list[float] | None = None,
    samples: dict[str, list[float]] | None = None,
) -> Row:
    """A table row; ``speedup`` rows report reference / ours (how many times faster)."""
    ratio = ref / ours if speedup else ours / ref
    result = "info" if goal is None else ("PASS" if goal.met(ratio) else "MISS")
    return Row(section, case, ours, reference, ref, ratio, str(goal) if goal else "-", result,
               round_ratios or [], samples or {})


def paired_row(
    section: str, case: str, samples: dict[str, list[float]], ours: str, reference: str,
    reference_label: str, goal: Goal | None,
) -> Row:
    """A row from the samples of :func:`interleaved`: medians, and the ratio within each round."""
    paired = [o / r for o, r in zip(samples[ours], samples[reference], strict=True)]
    return row(section, case, median(samples[ours]), reference_label, median(samples[reference]), goal,
               round_ratios=paired, samples={ours: samples[ours], reference: samples[reference]})


def settle() -> None:
    """Flush dirty pages (os.sync) so that one phase's writeback does not run during the next."""
    if hasattr(os, "sync"):
        os.sync()
    gc.collect()


def interleaved(
    cases: dict[str, Callable[[], object]], *, repeat: int, warmup: int = 2, number: int = 1,
    before: Callable[[str], None] | None = None, after: Callable[[str], None] | None = None,
    collect_each: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each case, ``repeat`` samples; each round runs every case, rotated.

    A sample times ``number`` calls in a row and is divided by ``number``. ``before`` / ``after``
    run (untimed) around every sample, e.g. to make and remove its folder. The garbage collector
    runs once before the timed rounds or, with ``collect_each``, before every sample (warm-ups too).
    """
    names = list(cases)

    def call(name: str) -> float:
        if before is not None:
            before(name)
        if collect_each:
            gc.collect()
        fn = cases[name]
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = (time.perf_counter() - start) / number
        if after is not None:
            after(name)
        return elapsed

    for _ in range(warmup):
        for name in names:
            call(name)
    samples: dict[str, list[float]] = {name: [] for name in names}
    if not collect_each:
        gc.collect()
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(call(name))
    return samples


def interleaved_items(
    cases: dict[str, Callable[[Item], object]], items: list[Item], *, repeat: int, warmup: int = 1,
    before_round: Callable[[], None] | None = None, after_round: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per round of each case over all ``items``, ``repeat`` rounds.

    Where a case is a loop over many items (reading every field of a plate), each item is
    handled by every case back to back, in rotated order, and a case's sample is the sum of
    its times over the items of a round: machine state that drifts within a round (page
    cache, memory reclaim, other processes) then hits every case alike, where a whole loop
    per sample left 0.5-1.45x between the rounds of one run. ``before_round`` / ``after_round``
    run (untimed) around every round, warm-ups included (e.g. fresh folders to write into).
    """
    names = list(cases)
    for _ in range(warmup):
        if before_round is not None:
            before_round()
        for item in items:
            for name in names:
                cases[name](item)
        if after_round is not None:
            after_round()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    turn = 0
    for _ in range(repeat):
        if before_round is not None:
            before_round()
        totals = dict.fromkeys(names, 0.0)
        for item in items:
            shift = turn % len(names)
            turn += 1
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                cases[name](item)
                totals[name] += time.perf_counter() - start
        if after_round is not None:
            after_round()
        for name in names:
            samples[name].append(totals[name])
    return samples


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """The median of each case's samples."""
    return {name: median(values) for name, values in samples.items()}


def duration(seconds: float, units: tuple[Unit, ...] = ("s", "ms", "us")) -> str:
    """``seconds`` in 11 characters, in the largest of ``units`` it reaches (else the smallest)."""
    chosen = [entry for entry in _UNITS if entry[0] in units]
    unit, _, scale = next((entry for entry in chosen if seconds >= entry[1]), chosen[-1])
    if unit == "s":
        return f"{seconds:8.3f} s "
    return f"{seconds * scale:8.2f} {unit}"


def print_table(
    rows: list[Row], *, case_width: int = 42, reference_width: int = 24,
    units: tuple[Unit, ...] = ("s", "ms", "us"), per_round: bool = False,
) -> None:
    """Print ``rows`` as a table, durations in ``units``; ``per_round`` adds a column with the lowest
    and highest ratio within one round. The caller prints what the ratio means beneath."""
    spread_header = f" {'per round':>11}" if per_round else ""
    header = (f"{'':2} {'case':{case_width}} {'ours':>11}  {'reference':{reference_width}} {'ref':>11} "
              f"{'ratio':>7}{spread_header}  {'goal':9} result")
    print(header)
    print("-" * len(header))
    for r in rows:
        spread = ""
        if per_round:
            text = f"{min(r.round_ratios):.2f}-{max(r.round_ratios):.2f}" if r.round_ratios else "-"
            spread = f" {text:>11}"
        print(
            f"{r.section:2} {r.case:{case_width}} {duration(r.ours_s, units)}  "
            f"{r.reference:{reference_width}} {duration(r.reference_s, units)}"
            f" {r.ratio:6.2f}x{spread}  {r.goal:9} {r.result}"
        )


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def note_load(cores: str = "cores", suffix: str = "") -> float:
    """The load average before a run; above 0.5, also print a note that it skews the timings."""
    load = load_average()
    if load > 0.5:
        print(f"  note: load average {load:.2f} before starting; other processes on these "
              f"{cores} skew the timings{suffix}")
    return load


def run_summary(elapsed: float, load_before: float) -> str:
    """How long the run took and the load average before and after it, in parentheses."""
    return f"({elapsed:.0f} s; load average {load_before:.2f} before, {load_average():.2f} after)"


def print_verdicts(rows: list[Row], elapsed: float, load_before: float) -> None:
    """The count of PASS and MISS rows, then :func:`run_summary`."""
    passed, missed = sum(r.result == "PASS" for r in rows), sum(r.result == "MISS" for r in rows)
    print(f"{passed} PASS, {missed} MISS {run_summary(elapsed, load_before)}")


def cores() -> str:
    """How many CPUs the machine has and how many this process may run on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.cpu_count()} CPUs ({usable} usable by this process)"


def version(name: str) -> str:
    """The installed version of distribution ``name``, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- figures ------------------------------------------------------------------------------------
FIGURES = Path(__file__).resolve().parent / "figures"
"""Where :func:`save_figure` writes by default (the README and the docs site show these)."""

FIGURES_VARIABLE = "POLYSTORE_BENCH_FIGURES"
"""Set to a folder, figures go there instead of :data:`FIGURES`: an A/B run of a change, or a
run on a busy machine, then leaves the committed figures as they are."""

Bar = tuple[str, float, "Goal | None"]
"""A figure's bar without a :class:`Row`: label, ratio, goal (streaming.py's verdicts)."""


def machine() -> str:
    """The CPU model and count, for the stamp on a figure."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs"


def last_level_cache_bytes() -> int | None:
    """The size of the largest CPU cache the kernel reports (sysfs), or None where it says none."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = entry.read_text(encoding="utf-8").strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=None)


def markdown_table(bars: list[Row | Bar]) -> str:
    """The rows as a Markdown table: case, ours, reference, ratio (per-round range), goal, result."""
    lines = ["| case | ours | reference | ratio | goal | result |", "|---|---|---|---|---|---|"]
    for bar in bars:
        if isinstance(bar, Row):
            spread = (f" ({min(bar.round_ratios):.2f}-{max(bar.round_ratios):.2f})"
                      if bar.round_ratios else "")
            lines.append(f"| {bar.case} | {duration(bar.ours_s).strip()} | {bar.reference}: "
                         f"{duration(bar.reference_s).strip()} | {bar.ratio:.2f}x{spread} | {bar.goal} | "
                         f"{bar.result} |")
        else:
            label, ratio, goal = bar
            result = "info" if goal is None else ("PASS" if goal.met(ratio) else "MISS")
            lines.append(f"| {label} | | | {ratio:.2f}x | {goal or '-'} | {result} |")
    return "\n".join(lines) + "\n"


def save_figure(name: str, bars: list[Row | Bar], *, title: str, load_before: float | None = None,
                directory: Path | None = None) -> list[Path]:
    """Write the results as a picture, ``NAME.png`` and ``NAME.svg``, and as ``NAME.md`` (the
    table), in ``directory`` (default: ``$POLYSTORE_BENCH_FIGURES`` if set, else
    :data:`FIGURES`); the paths written.

    One horizontal bar per row: its ratio on a log axis (1x = as fast as the reference), green
    where it meets its goal, red where it misses, grey without one; the goal as a black tick,
    the lowest and highest ratio within one round as a whisker. Stamped with the machine, the
    date and the load average, so a picture always says where its numbers came from. Without
    matplotlib (``pip install matplotlib``) nothing is drawn and a note says so.
    """
    if directory is None:
        directory = Path(os.environ[FIGURES_VARIABLE]) if os.environ.get(FIGURES_VARIABLE) else FIGURES
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (f"{machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             + (f"; load average {load_before:.2f} at the start" if load_before is not None else ""))
    table = directory / f"{name}.md"
    table.write_text(f"{title}\n\n{markdown_table(bars)}\n{stamp}\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print(f"figure not drawn (matplotlib is not installed); table written to {table}")
        return [table]
    labels, ratios, goals, spreads = [], [], [], []
    for bar in bars:
        if isinstance(bar, Row):
            labels.append(f"{bar.case}\nvs {bar.reference} (goal {bar.goal})")
            ratios.append(bar.ratio)
            goals.append(_goal_of(bar.goal))
            spreads.append((min(bar.round_ratios), max(bar.round_ratios)) if bar.round_ratios else None)
        else:
            labels.append(f"{bar[0]} (goal {bar[2] or '-'})")
            ratios.append(bar[1])
            goals.append(bar[2])
            spreads.append(None)
    colours = ["#9e9e9e" if goal is None else "#2e7d32" if goal.met(ratio) else "#c62828"
               for ratio, goal in zip(ratios, goals, strict=True)]
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(bars) + 1.6))
    positions = list(range(len(bars)))[::-1]
    axes.barh(positions, ratios, color=colours, height=0.6)
    for position, ratio, goal, spread in zip(positions, ratios, goals, spreads, strict=True):
        if spread is not None:
            axes.plot(spread, [position, position], color="black", linewidth=1)
        if goal is not None:
            axes.plot([goal.limit, goal.limit], [position - 0.4, position + 0.4], color="black", linewidth=2)
        axes.annotate(f"  {ratio:.2f}x", (max([ratio, *(spread or ())]), position), va="center", fontsize=8)
    axes.axvline(1.0, color="#555555", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlabel("ratio (ours / reference; speed-up and frames/s rows: higher is better)")
    axes.set_title(title, fontsize=10)
    figure.text(0.01, 0.01, stamp, fontsize=7, color="#555555")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    written = [table]
    for suffix in ("png", "svg"):
        path = directory / f"{name}.{suffix}"
        # no embedded date in the SVG: a figure changes only when its numbers (or stamp) do
        figure.savefig(path, dpi=110, metadata={"Date": None} if suffix == "svg" else None)
        written.append(path)
    plt.close(figure)
    print(f"figure written to {', '.join(str(path) for path in written)}")
    return written


def _goal_of(text: str) -> Goal | None:
    """A :class:`Goal` back from its text in a Row (``'<= 1.10x'``); None for ``'-'``."""
    if text in ("", "-"):
        return None
    sign, value = text.split()
    return Goal(float(value.rstrip("x")), at_least=sign == ">=")
