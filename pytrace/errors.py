"""The one exception type bad trace input raises, and the warning for cut traces."""

from __future__ import annotations


class TraceFormatError(Exception):
    """A trace file is not a valid pytrace trace.

    The message says what is wrong and where; the attributes carry the same
    facts for programs: ``offset`` (byte offset in the file), ``tid`` (pytrace
    thread id) and ``batch`` (that thread's batch sequence number), each
    ``None`` when it does not apply.
    """

    def __init__(self, problem: str, offset: int | None = None,
                 tid: int | None = None, batch: int | None = None) -> None:
        self.problem = problem
        self.offset = offset
        self.tid = tid
        self.batch = batch
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = []
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.tid is not None:
            where.append(f"thread {self.tid}")
        if self.batch is not None:
            where.append(f"batch {self.batch}")
        return f"{self.problem} (at {', '.join(where)})" if where else self.problem


class TraceWarning(UserWarning):
    """A trace is readable but incomplete (e.g. cut short before its footer)."""
