"""``pytrace.validate``: every problem of a trace file, not just the first."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import TraceFormatError
from .reader import Decoder, load


@dataclass
class ValidationReport:
    """What ``validate`` found.  ``valid`` is true only for a whole, clean trace."""

    path: str
    errors: list[TraceFormatError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The cut, if the file was not stopped cleanly (also counted in ``problems``).
    cut: TraceFormatError | None = None
    events: int = 0
    batches: int = 0
    threads: int = 0

    @property
    def problems(self) -> list[TraceFormatError]:
        return self.errors + ([self.cut] if self.cut is not None else [])

    @property
    def valid(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.valid:
            return (f"{self.path}: valid trace: {self.events} events from {self.threads} "
                    f"threads in {self.batches} batches")
        return f"{self.path}: INVALID: {len(self.problems)} problem(s)"


def validate(path) -> ValidationReport:
    """Check ``path`` completely.  Unreadable files raise ``TraceFormatError``."""
    decoder = Decoder(load(path), os.fspath(path))
    trace = decoder.decode()
    return ValidationReport(
        path=os.fspath(path),
        errors=decoder.errors,
        warnings=trace.warnings,
        cut=decoder.cut,
        events=len(trace.events),
        batches=trace.batches,
        threads=len(trace.threads),
    )
