"""Where a trace and each of its threads begin and end, and what threads are called.

The trace's span runs from its first event to its last (``Trace.duration``),
as Go's tools bound a trace by its first and last event: time before the
first event was not observed.  A thread lives from its ``ThreadStart`` (or,
for threads already running when tracing began, its first event) to its
``ThreadEnd`` (or, if it never ended, the end of the trace: it was still
alive when recording stopped).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import events

THREAD_CREATE = events.BY_NAME["ThreadCreate"]
THREAD_START = events.BY_NAME["ThreadStart"]
THREAD_END = events.BY_NAME["ThreadEnd"]


@dataclass(frozen=True)
class Span:
    """A time interval in nanoseconds since the trace started."""

    start: int
    end: int

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ThreadInfo:
    """One pytrace thread: its name, lifetime and how many events it wrote."""

    tid: int
    name: str
    start: int
    end: int
    #: True if the trace holds the thread's ThreadEnd.
    ended: bool
    events: int

    @property
    def lifetime(self) -> int:
        return self.end - self.start


def trace_span(trace) -> Span:
    """From the first event to the last; ``Span(0, 0)`` for a trace without events."""
    if not trace.events:
        return Span(0, 0)
    return Span(trace.events[0].ts, trace.events[-1].ts)


def thread_infos(trace) -> dict[int, ThreadInfo]:
    """Every thread that wrote an event, by tid, in tid order."""
    first: dict[int, int] = {}
    started: dict[int, int] = {}
    ended: dict[int, int] = {}
    counts: dict[int, int] = {}
    names: dict[int, str] = {}
    created_names: dict[int, str] = {}
    for ev in trace.events:
        tid = ev.tid
        count = counts.get(tid)
        if count is None:
            counts[tid] = 1
            first[tid] = ev.ts
        else:
            counts[tid] = count + 1
        kind = ev.kind
        if kind is THREAD_START:
            started.setdefault(tid, ev.ts)
            if ev.args[2]:
                names[tid] = ev.args[2]
        elif kind is THREAD_END:
            ended[tid] = ev.ts
        elif kind is THREAD_CREATE and ev.args[1]:
            created_names.setdefault(ev.args[0], ev.args[1])
    span_end = trace_span(trace).end
    infos = {}
    for tid in sorted(counts):
        start = started.get(tid, first[tid])
        infos[tid] = ThreadInfo(
            tid,
            names.get(tid) or created_names.get(tid) or f"thread {tid}",
            start,
            max(start, ended.get(tid, span_end)),  # a damaged trace may end before it starts
            tid in ended,
            counts[tid],
        )
    return infos


def merge_intervals(intervals) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-empty intervals covering the same time as ``intervals``."""
    merged: list[list[int]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def overlap(intervals, start: int, end: int) -> int:
    """Time that sorted disjoint ``intervals`` share with ``[start, end)``."""
    total = 0
    for a, b in intervals:
        if b <= start:
            continue
        if a >= end:
            break
        total += min(b, end) - max(a, start)
    return total
