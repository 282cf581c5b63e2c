"""Function profile: calls, inclusive (total) and self time per function, per thread and overall.

Each thread's call stack is rebuilt from its events (``OpenFrames`` pushes the
frames already open when tracing began, outermost first; ``CallEnter``,
``GenResume`` and ``CCallEnter`` push; ``CallExit``, ``CallUnwind``,
``GenYield`` and ``CCallExit`` pop).  Times are wall-clock nanoseconds:

- **self time** of a function is the time it was the innermost frame;
- **total time** is the time it was anywhere on the stack, counted once even
  when it recurses (only the outermost of its frames on a stack counts, so
  ``f -> f -> f`` for 10 ms is 10 ms of ``f``, not 30);
- a **generator or coroutine** is on the stack only between a resume and the
  next yield, so time it spends suspended is not its time;
- an exit by exception (``CallUnwind``) ends a call like a return and is
  also counted in ``exceptions``;
- **calls** counts ``CallEnter`` and ``CCallEnter`` only: a resumed generator
  is the same call going on, and frames open at the start began before the
  trace;
- a call **still open when the trace ends** is closed at its thread's
  ``ThreadEnd`` if the thread ended, else at the end of the trace (the thread
  was alive, and the call running, until recording stopped), and counted in
  ``unfinished``; and never before the thread's last push or pop, should a
  damaged trace go on after ``ThreadEnd``.

Functions are keyed by ``(qualified name, file)``, so the frames of
``OpenFrames`` (which carry the current line, not the first one) and the
``CallEnter`` records of the same function meet in one row.

Callers and callees come from the edge (caller, callee) of every push; an
edge's total time counts once under recursion the same way.  A stack that
pops more than it pushed (a damaged trace) ignores the extra pops and counts
them in ``ThreadProfile.unmatched_pops``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import events
from .timeline import thread_infos

CALL_ENTER = events.BY_NAME["CallEnter"]
C_CALL_ENTER = events.BY_NAME["CCallEnter"]
GEN_RESUME = events.BY_NAME["GenResume"]
OPEN_FRAMES = events.BY_NAME["OpenFrames"]
CALL_UNWIND = events.BY_NAME["CallUnwind"]
POPS = frozenset(events.BY_NAME[name]
                 for name in ("CallExit", "CallUnwind", "GenYield", "CCallExit"))
PUSHES = frozenset((CALL_ENTER, C_CALL_ENTER, GEN_RESUME))
STACK_KINDS = POPS | PUSHES | {OPEN_FRAMES}

#: The orders ``Profile.top`` knows.
SORT_KEYS = ("self", "total", "calls")

# Slots of the mutable per-function counters used during the pass.
_CALLS, _TOTAL, _SELF, _EXCEPTIONS, _UNFINISHED = range(5)


@dataclass(frozen=True)
class FunctionStats:
    name: str
    file: str
    #: First line (from a ``CallEnter``); for a function only seen in
    #: ``OpenFrames``, the line it was at when tracing began.
    line: int
    #: True for a C function (seen through ``CCallEnter``).
    c_function: bool
    calls: int
    total_time: int
    self_time: int
    exceptions: int
    unfinished: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.file)


@dataclass(frozen=True)
class CallEdge:
    """Calls from ``caller`` to ``callee`` (function keys) and the callee's time under it."""

    caller: tuple[str, str]
    callee: tuple[str, str]
    calls: int
    total_time: int


@dataclass(frozen=True)
class ThreadProfile:
    tid: int
    name: str
    functions: dict[tuple[str, str], FunctionStats]
    edges: list[CallEdge]
    #: Time with at least one frame on the stack (the sum of all self times).
    busy_time: int
    unmatched_pops: int


@dataclass(frozen=True)
class Profile:
    functions: dict[tuple[str, str], FunctionStats]
    edges: list[CallEdge]
    threads: dict[int, ThreadProfile]

    def top(self, sort: str = "self", limit: int | None = None,
            thread: int | None = None) -> list[FunctionStats]:
        """Functions by ``sort`` (``self``, ``total`` or ``calls``), largest first."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        functions = self.functions if thread is None else self.threads[thread].functions
        attribute = {"self": "self_time", "total": "total_time", "calls": "calls"}[sort]
        ranked = sorted(functions.values(),
                        key=lambda f: (-getattr(f, attribute), f.name, f.file))
        return ranked if limit is None else ranked[:limit]

    def callers(self, key) -> list[CallEdge]:
        return sorted((e for e in self.edges if e.callee == key), key=lambda e: -e.total_time)

    def callees(self, key) -> list[CallEdge]:
        return sorted((e for e in self.edges if e.caller == key), key=lambda e: -e.total_time)


class _ThreadStack:
    """One thread's call stack and counters while the events are replayed."""

    __slots__ = ("stack", "last", "counters", "info", "frame_lines", "active", "edges",
                 "edge_active", "unmatched")

    def __init__(self) -> None:
        #: ``(key, start, edge)`` per open frame, outermost first.
        self.stack: list[tuple] = []
        #: When the innermost frame last changed: self time runs from here.
        self.last = 0
        self.counters: dict[tuple, list[int]] = {}
        #: key -> (first line, c_function), from the first push that carried a Func.
        self.info: dict[tuple, tuple] = {}
        #: key -> line of the frame in OpenFrames, for functions never pushed by a call.
        self.frame_lines: dict[tuple, int] = {}
        #: key -> frames of it now on the stack (recursion depth).
        self.active: dict[tuple, int] = {}
        self.edges: dict[tuple, list[int]] = {}
        self.edge_active: dict[tuple, int] = {}
        self.unmatched = 0

    def push(self, key, ts: int, call: bool) -> None:
        stack = self.stack
        if stack:
            caller = stack[-1][0]
            self.counters[caller][_SELF] += ts - self.last
            edge = (caller, key)
            counts = self.edges.get(edge)
            if counts is None:
                counts = self.edges[edge] = [0, 0]
            if call:
                counts[0] += 1
            self.edge_active[edge] = self.edge_active.get(edge, 0) + 1
        else:
            edge = None
        self.last = ts
        counters = self.counters.get(key)
        if counters is None:
            counters = self.counters[key] = [0, 0, 0, 0, 0]
        if call:
            counters[_CALLS] += 1
        self.active[key] = self.active.get(key, 0) + 1
        stack.append((key, ts, edge))

    def pop(self, ts: int) -> tuple | None:
        if not self.stack:
            self.unmatched += 1
            return None
        key, start, edge = self.stack.pop()
        counters = self.counters[key]
        counters[_SELF] += ts - self.last
        self.last = ts
        depth = self.active[key] - 1
        self.active[key] = depth
        if depth == 0:
            counters[_TOTAL] += ts - start
        if edge is not None:
            depth = self.edge_active[edge] - 1
            self.edge_active[edge] = depth
            if depth == 0:
                self.edges[edge][1] += ts - start
        return key

    def describe(self, key) -> tuple[int, bool]:
        return self.info.get(key) or (self.frame_lines[key], False)


def function_profile(trace) -> Profile:
    """Replay every thread's calls and return the profile (see the module docstring)."""
    threads: dict[int, _ThreadStack] = {}
    keys: dict = {}  # Func -> (name, file); the reader shares one Func per id, so this hits
    stack_kinds = STACK_KINDS
    pushes, pops, unwind, c_enter, resume = PUSHES, POPS, CALL_UNWIND, C_CALL_ENTER, GEN_RESUME
    for ts, tid, kind, args in trace.events:
        if kind not in stack_kinds:
            continue
        thread = threads.get(tid)
        if thread is None:
            thread = threads[tid] = _ThreadStack()
        if kind in pushes:
            func = args[0]
            key = keys.get(func)
            if key is None:
                key = keys[func] = (func[0], func[1])
            if key not in thread.info:
                thread.info[key] = (func[2], kind is c_enter)
            thread.push(key, ts, kind is not resume)
        elif kind in pops:
            key = thread.pop(ts)
            if kind is unwind and key is not None:
                thread.counters[key][_EXCEPTIONS] += 1
        else:  # OpenFrames: innermost first on the wire, pushed outermost first
            for frame in reversed(args[0] or ()):
                key = (frame.func, frame.file)
                thread.frame_lines.setdefault(key, frame.line)
                thread.push(key, ts, False)
    return _finish(trace, threads)


def _finish(trace, threads: dict[int, _ThreadStack]) -> Profile:
    infos = thread_infos(trace)
    per_thread: dict[int, ThreadProfile] = {}
    for tid in sorted(threads):
        thread = threads[tid]
        info = infos[tid]
        # ThreadEnd if it ended, else the end of the trace; never before the
        # thread's last push or pop (a damaged trace may go on after ThreadEnd).
        close_at = max(info.end, thread.last)
        while thread.stack:
            key = thread.pop(close_at)
            thread.counters[key][_UNFINISHED] += 1
        functions = {key: _stats(key, thread.describe(key), counters)
                     for key, counters in thread.counters.items()}
        edges = [CallEdge(caller, callee, calls, total)
                 for (caller, callee), (calls, total) in thread.edges.items()]
        busy = sum(f.self_time for f in functions.values())
        per_thread[tid] = ThreadProfile(tid, info.name, functions, edges, busy, thread.unmatched)
    return Profile(_merge_functions(per_thread.values()), _merge_edges(per_thread.values()),
                   per_thread)


def _stats(key, info, counters) -> FunctionStats:
    line, c_function = info
    return FunctionStats(key[0], key[1], line, c_function, *counters)


def _merge_functions(thread_profiles) -> dict[tuple[str, str], FunctionStats]:
    merged: dict[tuple[str, str], FunctionStats] = {}
    for thread in thread_profiles:
        for key, f in thread.functions.items():
            seen = merged.get(key)
            if seen is None:
                merged[key] = f
            else:
                merged[key] = FunctionStats(
                    f.name, f.file, seen.line, seen.c_function or f.c_function,
                    seen.calls + f.calls, seen.total_time + f.total_time,
                    seen.self_time + f.self_time, seen.exceptions + f.exceptions,
                    seen.unfinished + f.unfinished)
    return merged


def _merge_edges(thread_profiles) -> list[CallEdge]:
    merged: dict[tuple, list[int]] = {}
    for thread in thread_profiles:
        for edge in thread.edges:
            counts = merged.setdefault((edge.caller, edge.callee), [0, 0])
            counts[0] += edge.calls
            counts[1] += edge.total_time
    return [CallEdge(caller, callee, calls, total)
            for (caller, callee), (calls, total) in merged.items()]
