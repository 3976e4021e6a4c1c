"""The measuring and reporting machinery the benchmark scripts share.

Imported as ``from harness import ...``: run as ``python benchmarks/<script>.py``, a script's own
folder (this one) comes first on sys.path. Nothing here imports polystore or any array library.
"""

from __future__ import annotations

import gc
import os
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
