"""Chrome Trace Event / Perfetto JSON: open the file in ui.perfetto.dev or
chrome://tracing.

The file is written event by event (``write_chrome`` never holds the JSON in
memory): one JSON object per line inside ``traceEvents``, which comes last
so the file can be streamed.  Times are microseconds (``ts``, exact to the
nanosecond as three decimals).  What becomes what:

=========================  =====================================================
pytrace                    Chrome / Perfetto
=========================  =====================================================
process, threads           ``M`` metadata: process_name (argv), thread_name
calls, open frames         ``B``/``E`` slices on the thread, ``cat`` "call",
                           args file and line; ``ended_by`` on the E of an
                           unwind or a yield
GC collection              ``B``/``E`` slice "GC (generation N)" on the thread
                           that ran it, ``cat`` "gc", args generation and
                           trigger stack (B), collected and uncollectable (E)
Block / SysCall            ``B``/``E`` slices, ``cat`` "block" (name
                           "blocked: REASON") or "syscall" (name = function)
user regions               ``B``/``E`` slices, ``cat`` "region"
user tasks, asyncio tasks  nestable async ``b``/``e`` (ids "task-N",
                           "asyncio-N"); an asyncio task's run slices nest
                           inside its lifetime as "run"
UserLog, ThreadCreate,     instant ``i`` events on the thread (CPU samples on
CPUSample                  the sampled thread), args carry the details
Counter, HeapCounters      ``C`` counters: each Counter name; "gc counts"
                           (gen0..gen2), "allocated blocks", "rss bytes"
=========================  =====================================================

Slices nest on every thread (see ``timeline``); slices still open when the
trace ends get an E with ``"unfinished": true``.
"""

from __future__ import annotations

import json
from typing import TextIO

from .. import events
from ..reader import Event, Trace
from . import timeline

_K = {name: kind.id for name, kind in events.BY_NAME.items()}
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _us(ns: int) -> str:
    """Nanoseconds as a microsecond JSON number, exact (three decimals)."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


def _json_args(args: dict) -> dict:
    return {key: timeline.format_stack(value) if key == "stack" else value
            for key, value in args.items()}


class ChromeWriter:
    """Streams one trace as Chrome JSON to a text file."""

    def __init__(self, trace: Trace, out: TextIO) -> None:
        self.trace = trace
        self.out = out
        self.pid = _int(trace.meta.get("pid"), 1)
        #: Per call site: the JSON fragment shared by all its B events.
        self._call_heads: dict = {}
        #: Async lifetimes (user and asyncio tasks) begun and not ended: id -> (cat, name).
        self._open_async: dict[str, tuple[str, str]] = {}
        #: asyncio tasks inside a run slice.
        self._running: set[str] = set()
        self._write = out.write
        self._first = True

    # -- output --------------------------------------------------------------

    def _emit(self, text: str) -> None:
        if self._first:
            self._first = False
            self._write(text)
        else:
            self._write(",\n" + text)

    def _event(self, ph: str, ts: int | None, tid: int, **fields) -> None:
        head = f'{{"ph":"{ph}","pid":{self.pid},"tid":{tid}'
        if ts is not None:
            head += f',"ts":{_us(ts)}'
        body = _dumps(fields)[1:] if fields else "}"
        self._emit(head + ("," + body if fields else body))

    # -- slices (from timeline.walk) -----------------------------------------

    def begin(self, ts: int, tid: int, s: timeline.Slice) -> None:
        if s.kind == timeline.CALL:
            head = self._call_heads.get(s.site)
            if head is None:
                name, file, line = s.site
                head = _dumps({"name": name, "cat": "call", "args": {"file": file, "line": line}})
                self._call_heads[s.site] = head
            self._emit(f'{{"ph":"B","pid":{self.pid},"tid":{tid},"ts":{_us(ts)},{head[1:]}')
        else:
            self._event("B", ts, tid, name=s.name, cat=s.kind, args=_json_args(s.args))

    def end(self, ts: int, tid: int, s: timeline.Slice, args) -> None:
        if s.unfinished:
            args = {"unfinished": True}
        if args:
            self._event("E", ts, tid, args=args)
        else:
            self._emit(f'{{"ph":"E","pid":{self.pid},"tid":{tid},"ts":{_us(ts)}}}')

    # -- everything else -----------------------------------------------------

    def other(self, ev: Event) -> None:
        kind, ts, tid, a = ev.kind.id, ev.ts, ev.tid, ev.args
        if kind == _K["Counter"]:
            self._event("C", ts, tid, name=a[0], args={"value": a[1]})
        elif kind == _K["HeapCounters"]:
            gen0, gen1, gen2, threshold0, blocks, rss = a
            self._event("C", ts, tid, name="gc counts",
                        args={"gen0": gen0, "gen1": gen1, "gen2": gen2})
            self._event("C", ts, tid, name="allocated blocks", args={"blocks": blocks})
            if rss:
                self._event("C", ts, tid, name="rss bytes", args={"rss": rss})
        elif kind == _K["UserLog"]:
            task, category, message = a
            self._event("i", ts, tid, name=category or "log", cat="log", s="t",
                        args={"task": task, "category": category, "message": message})
        elif kind == _K["UserTaskCreate"]:
            task, parent, name = a
            self._begin_async(ts, tid, "task", f"task-{task}", name,
                              {"task": task, "parent": parent})
        elif kind == _K["UserTaskEnd"]:
            self._end_async(ts, tid, f"task-{a[0]}")
        elif kind == _K["AsyncTaskCreate"]:
            task, name, stack = a
            self._begin_async(ts, tid, "asyncio", f"asyncio-{task}", name or f"task {task}",
                              {"task": task, "stack": timeline.format_stack(stack)})
        elif kind == _K["AsyncTaskRun"]:
            self._begin_run(ts, tid, a[0])
        elif kind == _K["AsyncTaskPause"]:
            self._end_run(ts, tid, f"asyncio-{a[0]}")
        elif kind == _K["AsyncTaskDone"]:
            self._end_async(ts, tid, f"asyncio-{a[0]}")
        elif kind == _K["ThreadCreate"]:
            child, name, stack = a
            self._event("i", ts, tid, name=f"start thread {name or child}", cat="thread", s="t",
                        args={"child": child, "stack": timeline.format_stack(stack)})
        elif kind == _K["CPUSample"]:
            thread, stack = a
            self._event("i", ts, thread, name="cpu sample", cat="sample", s="t",
                        args={"stack": timeline.format_stack(stack)})

    def _begin_async(self, ts, tid, cat, ident, name, args) -> None:
        if ident not in self._open_async:
            self._open_async[ident] = (cat, name)
            self._event("b", ts, tid, name=name, cat=cat, id=ident, args=args)

    def _end_async(self, ts, tid, ident, args=None) -> None:
        self._end_run(ts, tid, ident)
        opened = self._open_async.pop(ident, None)
        if opened is not None:
            cat, name = opened
            fields = {"args": args} if args else {}
            self._event("e", ts, tid, name=name, cat=cat, id=ident, **fields)

    def _begin_run(self, ts, tid, task: int) -> None:
        """A run slice of an asyncio task (a task created before the trace gets a lifetime here)."""
        ident = f"asyncio-{task}"
        if ident not in self._open_async:
            self._begin_async(ts, tid, "asyncio", ident, f"task {task}", {"task": task})
        if ident not in self._running:
            self._running.add(ident)
            self._event("b", ts, tid, name="run", cat="asyncio", id=ident)

    def _end_run(self, ts, tid, ident) -> None:
        if ident in self._running:
            self._running.discard(ident)
            self._event("e", ts, tid, name="run", cat="asyncio", id=ident)

    # -- driver ----------------------------------------------------------------

    def write(self) -> None:
        trace = self.trace
        self._write('{"displayTimeUnit":"ns","otherData":' + _dumps(trace.meta)
                    + ',"traceEvents":[\n')
        self._event("M", None, 0, name="process_name", args={"name": _process_name(trace)})
        for index, (tid, name) in enumerate(timeline.thread_names(trace).items()):
            self._event("M", None, tid, name="thread_name", args={"name": name})
            self._event("M", None, tid, name="thread_sort_index", args={"sort_index": index})
        timeline.walk(trace, self.begin, self.end, self.other)
        self._close_async(trace.events[-1].ts if trace.events else 0)
        self._write("\n]}\n")

    def _close_async(self, ts: int) -> None:
        """End the async slices still open when the trace stops."""
        for ident in list(self._open_async):
            self._end_async(ts, 0, ident, {"unfinished": True})


def _process_name(trace: Trace) -> str:
    try:
        argv = json.loads(trace.meta.get("argv", "[]"))
    except ValueError:
        argv = []
    return "python " + " ".join(map(str, argv)) if argv else "python"


def _int(text, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def write_chrome(trace: Trace, out: TextIO) -> None:
    """Write ``trace`` to the text stream ``out`` as Chrome/Perfetto JSON."""
    ChromeWriter(trace, out).write()
