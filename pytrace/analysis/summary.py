"""The overview of a trace that ``pytrace stats`` prints: one call, every analysis's headline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .gc import GCPause, GenerationStats, analyze_gc
from .profile import FunctionStats, function_profile
from .threads import ThreadTimes, UserAnnotations, thread_times, user_annotations
from .timeline import Span, trace_span

#: Metadata worth showing in an overview (the rest stays in ``Trace.meta``).
META_KEYS = ("python_version", "python_implementation", "pytrace_version", "pid", "argv")


@dataclass(frozen=True)
class GCSummary:
    collections: int
    gc_time: int
    gc_share: float
    generations: list[GenerationStats]
    longest: GCPause | None


@dataclass(frozen=True)
class TraceSummary:
    path: str | None
    #: False if the trace was cut short (no footer).
    complete: bool
    span: Span
    meta: dict[str, str]
    events: int
    events_by_kind: dict[str, int]
    threads: list[ThreadTimes]
    gc: GCSummary
    top_functions: list[FunctionStats]
    user: UserAnnotations
    warnings: list[str]


def summarize(trace, top: int = 10, progress=None) -> TraceSummary:
    """Everything ``pytrace stats`` shows; ``progress(stage)`` is told each stage's name."""
    step = progress or (lambda stage: None)
    counts = Counter(ev.kind.name for ev in trace.events)
    step("analysing GC pauses")
    gc = analyze_gc(trace, longest=1, mmu_windows=())
    step("profiling calls")
    functions = function_profile(trace).top("self", top)
    step("analysing threads")
    threads = thread_times(trace)
    user = user_annotations(trace)
    return TraceSummary(
        path=trace.path,
        complete=trace.complete,
        span=trace_span(trace),
        meta={key: trace.meta[key] for key in META_KEYS if key in trace.meta},
        events=len(trace.events),
        events_by_kind=dict(counts.most_common()),
        threads=threads,
        gc=GCSummary(gc.overall.collections, gc.gc_time, gc.gc_share, gc.generations,
                     gc.longest[0] if gc.longest else None),
        top_functions=functions,
        user=user,
        warnings=list(trace.warnings),
    )
