"""One conversion as it runs: where it writes, its progress journal, how its tasks run, and
the rules of starting over a destination that exists (refused unless told to resume or
overwrite; a resume refused when the plan is not the one the stopped run followed)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from polystore.backends.zarr import ZarrBackend
from polystore.backends.zarr.location import Location
from polystore.distributed.journal import Journal
from polystore.distributed.report import ConversionError, ConversionReport
from polystore.distributed.runner import Task, run_batches
from polystore.distributed.tasks import Outcome, Target
from polystore.exceptions import BatchFailure, StorageExistsError


class DestinationExistsError(StorageExistsError):
    """The destination of a conversion exists (finished, or stopped half way)."""


class PlanChangedError(DestinationExistsError):
    """A stopped conversion was resumed with another plan (files added or removed, another
    number of levels, other chunks or codecs): resuming would leave what the old plan wrote."""


def _changes(before: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between two plan summaries, in a few words."""
    parts = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list) and key == "fields":
            gone = [f for f in old if f not in set(new)]
            added = [f for f in new if f not in set(old)]
            parts.append(f"fields {len(old)} -> {len(new)}" + _some("no longer", gone) + _some("new", added))
        else:
            parts.append(f"{key} {old} -> {new}")
    return "; ".join(parts) or "its digest"


def new_run_id() -> str:
    """What makes this run's dask keys its own (a client may still hold an earlier run's)."""
    return uuid.uuid4().hex[:12]


def _some(what: str, items: list[str]) -> str:
    return f" ({what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''})" if items else ""


@dataclass(frozen=True)
class Job:
    target: Target
    backend: ZarrBackend
    journal: Journal
    location: Location
    client: Any
    workers: int | None
    progress: bool
    resume: bool

    def options(self) -> dict[str, Any]:
        """What of the config decides the bytes written (part of every digest): its fields but
        the threads and pipeline, which write the same bytes."""
        fields = dataclasses.asdict(self.target.config)
        return {name: value for name, value in fields.items() if name not in ("threads", "codec_pipeline")}

    def start(self, plan_digest: str, summary: dict[str, Any], *, overwrite: bool) -> None:
        """Check the destination against what was asked (resume, overwrite, neither), clear it
        if told to, and record the plan: from here on the conversion writes."""
        exists = self.backend.documents.node_kind(self.location) is not None
        started = self.journal.exists()
        where = self.location.display
        # files where no node is (an earlier store's chunks, its metadata deleted): a conversion
        # writes no chunk where its source has no pixels, so they would be read back as data
        keys = self.backend.stores.keys(self.location.store)
        leftovers = not exists and not self.resume and next(
            iter(keys.list(f"{self.location.node}/" if self.location.node else "")), None) is not None
        if overwrite and not self.resume:
            if exists or leftovers:
                self.backend.stores.remove(self.location.store, self.location.node)
            if self.location.node:
                self.journal.remove()
            else:
                self.journal.remove_all()
        elif self.resume:
            if exists and not started:
                raise DestinationExistsError(
                    f"Nothing to resume: '{where}' has no conversion in progress (it finished, or was "
                    "written otherwise). overwrite=True (--overwrite) writes it again."
                )
            recorded = self.journal.plan()
            if recorded is not None and recorded.get("digest") != plan_digest:
                now = json.loads(json.dumps(summary, default=str))  # as the journal holds it
                changed = _changes(recorded.get("plan") or {}, now)
                raise PlanChangedError(
                    f"The conversion stopped in '{where}' followed another plan ({changed}): "
                    "resuming would leave what that plan wrote. Convert with the same files and options "
                    "to resume it, or overwrite=True (--overwrite) to start over."
                )
        elif started:
            raise DestinationExistsError(
                f"A conversion into '{where}' was stopped before it finished (its progress is in "
                f"'{self.journal.location}'): resume=True (--resume) finishes it; overwrite=True "
                "(--overwrite) starts over."
            )
        elif exists:
            raise DestinationExistsError(f"'{where}' exists: overwrite=True (--overwrite) replaces it.")
        elif leftovers:
            raise DestinationExistsError(
                f"'{where}' holds files but no zarr node (an earlier store's, its metadata deleted?): "
                "where the source has no pixels they would be read back as data. Delete them, or "
                "overwrite=True (--overwrite) to clear the destination."
            )
        self.journal.begin(plan_digest, summary)

    def finished(self) -> set[tuple[str, str]]:
        """(task, token) of the tasks a stopped run finished (none unless resuming)."""
        return self.journal.finished() if self.resume else set()

    def run(self, batches: Iterable[Sequence[Task]], total: int, what: str) -> list[Outcome]:
        """Run the tasks of ``batches`` (``total`` in all), each batch started as it comes."""
        return run_batches(batches, total, self.client, workers=self.workers, progress=self.progress,
                           what=what)

    def report(self, report: ConversionReport, outcomes: list[Outcome], names: list[str]) -> ConversionReport:
        """The report, or ConversionError naming every failure; the journal goes when none failed."""
        index = {name: i for i, name in enumerate(names)}
        report.written = sorted((o.task for o in outcomes if o.ok), key=index.__getitem__)
        failed = sorted((o for o in outcomes if not o.ok), key=lambda o: index[o.task])
        report.failures = [BatchFailure(index[o.task], o.where, o.error)
                           for o in failed if o.error is not None]
        if report.failures:
            raise ConversionError(report) from report.failures[0].error
        self.journal.remove()
        return report
