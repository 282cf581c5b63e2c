"""What the HTML report shows, gathered from the analyses and the timeline.

Tables and charts come from ``pytrace.analysis`` (the same numbers as
``pytrace stats``, ``gc`` and ``top``); the thread timeline comes from
``pytrace.export.timeline``.  Nothing here is HTML: ``html`` renders it.

Size bound: a trace of millions of calls cannot be drawn slice by slice in a
browser, so the timeline keeps at most ``max_slices`` slices: GC pauses,
blocking, syscalls and regions first, then calls, each longest first (ties:
shallowest first).  A slice is never shorter than one nested in it, so what
is kept is the top of every call tree, down to a duration that depends on
the trace; each thread says how many shorter slices were left out.  GC
pause bands are capped at ``max_slices`` likewise, and the profile table at
``top`` functions.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from .. import analysis
from ..export import timeline
from ..reader import Trace

DEFAULT_MAX_SLICES = 50_000
DEFAULT_TOP = 50

#: Slice kinds as the report's JavaScript numbers them.
KIND_CODES = {timeline.CALL: 0, timeline.GC: 1, timeline.BLOCK: 2, timeline.SYSCALL: 3,
              timeline.REGION: 4}


@dataclass
class ThreadRow:
    tid: int
    name: str
    #: Deepest nesting level among the slices kept (0 = outermost).
    depth: int = 0
    slices: int = 0
    omitted: int = 0


@dataclass
class Timeline:
    """Slices to draw: ``slices`` rows are ``[row, start, duration, depth, kind, name, detail]``
    with times in ns from ``start``, ``name``/``detail`` indexes into ``strings``."""

    start: int
    end: int
    threads: list[ThreadRow]
    strings: list[str]
    slices: list[list[int]]
    #: ``[start, duration]`` of GC pauses (every thread is stopped in them).
    pauses: list[list[int]]
    omitted: int = 0

    def to_json(self) -> dict:
        return {"span": self.end - self.start,
                "threads": [{"tid": t.tid, "name": t.name, "depth": t.depth, "slices": t.slices,
                             "omitted": t.omitted} for t in self.threads],
                "strings": self.strings, "slices": self.slices, "pauses": self.pauses}


@dataclass
class ReportData:
    trace: Trace
    gc: analysis.GCReport
    functions: list
    threads: list
    user: analysis.UserAnnotations
    timeline: Timeline
    meta: dict = field(default_factory=dict)


def _detail(s: timeline.Slice) -> str:
    """The one line a tooltip shows under a slice's name."""
    if s.kind == timeline.CALL:
        _name, file, line = s.site
        where = f"{file}:{line}" if file else "C function"
    elif s.kind == timeline.GC:
        where = f"generation {s.args['generation']}"
    elif s.kind == timeline.REGION:
        where = f"region of task {s.args['task']}"
    else:
        stack = s.args.get("stack")
        where = timeline.format_frame(stack[0]) if stack else ""
    return where + (" (unfinished)" if s.unfinished else "")


def build_timeline(trace: Trace, max_slices: int = DEFAULT_MAX_SLICES,
                   pauses=()) -> Timeline:
    """The slices of every thread, capped at ``max_slices`` (see the module docstring)."""
    start = trace.events[0].ts if trace.events else 0
    end = trace.events[-1].ts if trace.events else 0
    rows = {tid: ThreadRow(tid, name) for tid, name in timeline.thread_names(trace).items()}
    depths: dict[int, int] = {}  # open slices per thread
    kept: list[tuple] = []  # min-heap of (not a call, duration, -depth, order, tid, slice)
    order = itertools.count()

    def begin(ts, tid, s):
        depths[tid] = depths.get(tid, 0) + 1

    def end_slice(ts, tid, s, args):
        depths[tid] -= 1  # slices nest: the one ending is the innermost
        item = (s.kind != timeline.CALL, ts - s.start, -depths[tid], next(order), tid, s)
        if len(kept) < max_slices:
            heapq.heappush(kept, item)
        elif max_slices:
            dropped = heapq.heappushpop(kept, item)
            rows[dropped[4]].omitted += 1
        else:
            rows[tid].omitted += 1

    timeline.walk(trace, begin, end_slice)
    strings: dict[str, int] = {}

    def string(text: str) -> int:
        index = strings.get(text)
        if index is None:
            index = strings[text] = len(strings)
        return index

    row_index = {tid: i for i, tid in enumerate(rows)}
    slices = []
    by_thread_and_start = sorted(kept, key=lambda item: (item[4], item[5].start))
    for _, duration, neg_depth, _, tid, s in by_thread_and_start:
        row = rows[tid]
        row.depth = max(row.depth, -neg_depth)
        row.slices += 1
        slices.append([row_index[tid], s.start - start, duration, -neg_depth, KIND_CODES[s.kind],
                       string(s.name), string(_detail(s))])
    bands = sorted(pauses, key=lambda p: -p.duration)[:max_slices]
    return Timeline(start, end, list(rows.values()), list(strings), slices,
                    sorted([p.start - start, p.duration] for p in bands),
                    sum(r.omitted for r in rows.values()))


def report_data(trace: Trace, max_slices: int = DEFAULT_MAX_SLICES, top: int = DEFAULT_TOP,
                progress=None) -> ReportData:
    """Run the analyses and build the timeline; ``progress(stage)`` hears each stage."""
    step = progress or (lambda stage: None)
    step("analysing GC pauses and MMU")
    gc = analysis.analyze_gc(trace)
    step("profiling calls")
    functions = analysis.function_profile(trace).top("self", top)
    step("analysing threads")
    threads = analysis.thread_times(trace)
    user = analysis.user_annotations(trace)
    step("laying out the timeline")
    lines = build_timeline(trace, max_slices, gc.pauses)
    meta = {key: trace.meta[key] for key in analysis.summary.META_KEYS if key in trace.meta}
    return ReportData(trace, gc, functions, threads, user, lines, meta)
