"""Garbage-collection pauses: per generation statistics, the worst pauses, GC share and MMU.

A CPython collection stops every thread (stop-the-world by construction: it
holds the GIL, or stops the world on free-threaded builds), so a pause costs
each live thread its full length.  A pause runs from ``GCStart`` to the
``GCDone`` of the same thread.  Tolerance for damaged traces: a ``GCDone``
without its start is ignored (and counted), and a collection still running
when the trace ends is closed at the end of the trace and marked incomplete.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from .. import events
from .distribution import Distribution
from .mmu import MMUCurve, MMUPoint, UtilizationSeries, default_windows
from .timeline import Span, merge_intervals, overlap, thread_infos, trace_span

GC_START = events.BY_NAME["GCStart"]
GC_DONE = events.BY_NAME["GCDone"]

#: Histogram bin edges repeat 1, 2, 5 per decade (ns), as latency charts usually do.
_MANTISSAS = (1, 2, 5)


@dataclass(frozen=True)
class GCPause:
    """One collection."""

    tid: int
    generation: int
    start: int
    end: int
    duration: int
    #: The stack that triggered it, innermost frame first (None if not recorded).
    stack: tuple | None
    collected: int
    uncollectable: int
    #: False if the trace ended before the collection's GCDone.
    complete: bool


@dataclass(frozen=True)
class GenerationStats:
    """Collections of one generation (``generation`` None: all generations together)."""

    generation: int | None
    collections: int
    pauses: Distribution
    collected: int
    uncollectable: int


@dataclass(frozen=True)
class ThreadGCShare:
    """How much of one thread's lifetime the collections took."""

    tid: int
    name: str
    lifetime: int
    gc_time: int
    share: float


@dataclass(frozen=True)
class HistogramBin:
    """Pauses with ``low <= duration < high`` (ns)."""

    low: int
    high: int
    count: int


@dataclass(frozen=True)
class GCReport:
    span: Span
    pauses: list[GCPause]
    generations: list[GenerationStats]
    overall: GenerationStats
    longest: list[GCPause]
    #: Time inside at least one pause, and its share of the span.
    gc_time: int
    gc_share: float
    threads: list[ThreadGCShare]
    histogram: list[HistogramBin]
    mmu: list[MMUPoint]
    #: GCDone events without a matching GCStart (a damaged or cut trace).
    unmatched_done: int


def collect_pauses(trace, span: Span | None = None) -> tuple[list[GCPause], int]:
    """Every collection in start order, and the number of unmatched ``GCDone`` events."""
    if span is None:
        span = trace_span(trace)
    open_by_thread: dict[int, list] = {}
    pauses: list[GCPause] = []
    unmatched = 0
    for ev in trace.events:
        kind = ev.kind
        if kind is GC_START:
            open_by_thread.setdefault(ev.tid, []).append(ev)
        elif kind is GC_DONE:
            stack = open_by_thread.get(ev.tid)
            if not stack:
                unmatched += 1
                continue
            start = stack.pop()
            pauses.append(_pause(start, ev.ts, ev.args[0], ev.args[1], True))
    for stack in open_by_thread.values():
        for start in stack:
            pauses.append(_pause(start, span.end, 0, 0, False))
    pauses.sort(key=lambda p: (p.start, p.tid))
    return pauses, unmatched


def _pause(start_event, end: int, collected: int, uncollectable: int, complete: bool) -> GCPause:
    generation, stack = start_event.args
    return GCPause(start_event.tid, generation, start_event.ts, end, end - start_event.ts,
                   stack, collected, uncollectable, complete)


def generation_stats(generation, pauses) -> GenerationStats:
    return GenerationStats(
        generation,
        len(pauses),
        Distribution.of(p.duration for p in pauses),
        sum(p.collected for p in pauses),
        sum(p.uncollectable for p in pauses),
    )


def histogram(durations) -> list[HistogramBin]:
    """Counts of ``durations`` in 1-2-5 bins from the smallest bin holding one to the largest.

    A zero-length pause falls in the first bin.
    """
    durations = list(durations)
    if not durations:
        return []
    edges = [1]
    while len(edges) < 2 or edges[-1] <= max(durations):
        decade, index = divmod(len(edges), len(_MANTISSAS))
        edges.append(_MANTISSAS[index] * 10 ** decade)
    counts = [0] * (len(edges) - 1)
    for duration in durations:
        counts[max(0, bisect_right(edges, duration) - 1)] += 1
    first = next(i for i, count in enumerate(counts) if count)
    return [HistogramBin(edges[i], edges[i + 1], counts[i]) for i in range(first, len(counts))]


def mmu_curve(pauses, span: Span, windows=None) -> list[MMUPoint]:
    """The MMU at each window size (default: ``mmu.default_windows`` of the span)."""
    if windows is None:
        windows = default_windows(span.duration)
    if not windows:
        return []
    series = UtilizationSeries.from_pauses(
        merge_intervals((p.start, p.end) for p in pauses), span.start, span.end)
    return MMUCurve(series).curve(windows)


def analyze_gc(trace, longest: int = 10, mmu_windows=None) -> GCReport:
    """The full GC report of ``trace``; ``longest`` pauses are listed with their stacks."""
    span = trace_span(trace)
    pauses, unmatched = collect_pauses(trace, span)
    by_generation: dict[int, list[GCPause]] = {}
    for pause in pauses:
        by_generation.setdefault(pause.generation, []).append(pause)
    stopped = merge_intervals((p.start, p.end) for p in pauses)
    gc_time = sum(end - start for start, end in stopped)
    threads = []
    for info in thread_infos(trace).values():
        thread_gc = overlap(stopped, info.start, info.end)
        threads.append(ThreadGCShare(info.tid, info.name, info.lifetime, thread_gc,
                                     thread_gc / info.lifetime if info.lifetime else 0.0))
    return GCReport(
        span=span,
        pauses=pauses,
        generations=[generation_stats(g, by_generation[g]) for g in sorted(by_generation)],
        overall=generation_stats(None, pauses),
        longest=sorted(pauses, key=lambda p: (-p.duration, p.start))[:longest],
        gc_time=gc_time,
        gc_share=gc_time / span.duration if span.duration else 0.0,
        threads=threads,
        histogram=histogram(p.duration for p in pauses),
        mmu=mmu_curve(pauses, span, mmu_windows),
        unmatched_done=unmatched,
    )
