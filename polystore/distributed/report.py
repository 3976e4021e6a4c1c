"""What a conversion tells its caller: a :class:`ConversionReport`, or a
:class:`ConversionError` naming every field or block that failed, with the file and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from polystore.distributed.layout import Skipped
from polystore.exceptions import BatchError, BatchFailure


@dataclass
class ConversionReport:
    """What a conversion did."""

    destination: str
    kind: Literal["plate", "image"]
    tasks: int
    """Fields (plate) or blocks (image, every level) the conversion has in all."""
    written: list[str] = field(default_factory=list)
    """The fields or blocks written by this run."""
    already_done: list[str] = field(default_factory=list)
    """Those a stopped run had finished, skipped by ``resume=True``."""
    skipped_files: list[Skipped] = field(default_factory=list)
    """Files of the source folder left out, and why (not images, thumbnails, names no convention reads)."""
    failures: list[BatchFailure] = field(default_factory=list)
    convention: str | None = None
    shape: tuple[int, ...] = ()
    """The shape of the image, or of each field image of the plate."""
    axes: str = ""

    def summary(self) -> str:
        """A few lines for a person: what was written, what was skipped and why."""
        what = "fields" if self.kind == "plate" else "blocks"
        lines = [f"{self.destination}: {len(self.written)} {what} written"
                 + (f", {len(self.already_done)} finished before (resumed)" if self.already_done else "")
                 + f" of {self.tasks}; {self.kind} {self.axes} {self.shape}"
                 + (f", files named as {self.convention}" if self.convention else "")]
        if self.skipped_files:
            lines.append(f"{len(self.skipped_files)} files skipped:")
            lines += [f"  {s}" for s in self.skipped_files]
        if self.failures:
            lines.append(f"{len(self.failures)} {what} failed:")
            lines += [f"  {f.path}: {type(f.error).__name__}: {f.error}" for f in self.failures]
        return "\n".join(lines)


class ConversionError(BatchError):
    """Some fields or blocks failed (each named, with the file and the error); the others are
    written, and the failed ones marked incomplete. Fix the files and run again with
    ``resume=True``: only those are redone."""

    def __init__(self, report: ConversionReport) -> None:
        super().__init__("convert", report.failures, report.tasks)
        self.report = report

    def __str__(self) -> str:
        return (super().__str__() + "\nThe rest is written; fix these and run again with resume=True "
                "(--resume): only what failed is redone.")

    def __reduce__(self) -> tuple[type[ConversionError], tuple[ConversionReport]]:
        return (type(self), (self.report,))
