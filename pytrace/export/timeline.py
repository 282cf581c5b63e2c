"""Per-thread slices, rebuilt from a trace's events in one streaming pass.

Every face that draws a thread's timeline (Chrome JSON, folded stacks, the
HTML report) needs the same thing: on each thread, which slices -- calls, GC
pauses, blocking, syscalls, user regions -- are open at each moment, innermost
last.  ``walk`` rebuilds that and reports each slice's begin and end to
callbacks, so a consumer can stream its output instead of holding slices.

Two promises make every consumer simple:

* **Slices nest.**  An end event closes the innermost open slice *of its
  kind*; if slices of other kinds were opened inside it and are still open
  (a region left open across a generator's yield, a GC that began in a call
  that then returned in a cut trace), they are ended at that instant and
  begun again right after it, so each thread's begins and ends always form a
  well-parenthesised sequence (Chrome's B/E rule, and what a flame graph
  needs).
* **Every begin gets its end.**  Ends without a matching begin (the trace
  began inside them) are ignored; slices still open when a thread ends or
  the trace stops are ended there, with ``unfinished`` set.

The call stack follows the event semantics of ``pytrace.events``:
OpenFrames pushes the frames open when tracing began (outermost first),
CallEnter / GenResume / CCallEnter push, CallExit / CallUnwind / GenYield /
CCallExit pop the innermost call.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .. import events
from ..analysis.threads import block_reason
from ..analysis.timeline import thread_infos
from ..reader import Event, Trace

CALL = "call"
GC = "gc"
BLOCK = "block"
SYSCALL = "syscall"
REGION = "region"


class Slice:
    """One open interval on one thread.

    ``site`` is the ``(name, file, line)`` of a call (a ``Func`` or a
    ``Frame``); for other kinds it is None.  ``args`` holds the begin event's
    arguments as decoded (stacks stay tuples of ``Frame``).
    """

    __slots__ = ("kind", "name", "start", "site", "args", "unfinished")

    def __init__(self, kind: str, name: str, start: int, site=None, args=None) -> None:
        self.kind = kind
        self.name = name
        self.start = start
        self.site = site
        self.args = args
        #: Set when the trace or the thread ended before the slice did.
        self.unfinished = False

    def resumed(self, ts: int) -> "Slice":
        """The continuation of a slice split at ``ts`` to keep slices nested."""
        return Slice(self.kind, self.name, ts, self.site, self.args)

    def __repr__(self) -> str:
        return f"<Slice {self.kind} {self.name!r} @{self.start}>"


#: ``begin(ts, tid, slice)``
BeginFn = Callable[[int, int, Slice], None]
#: ``end(ts, tid, slice, end_args)``: ``end_args`` are the closing event's
#: arguments worth showing (GC results, how a call ended), or None.
EndFn = Callable[[int, int, Slice, "dict | None"], None]
#: ``other(event)``: every event that is not a slice boundary.
OtherFn = Callable[[Event], None]

# Dispatch on kind ids: EventKind is a frozen dataclass, so hashing it (a
# set lookup) would hash all of its fields for every event.
_K = {name: kind.id for name, kind in events.BY_NAME.items()}
#: Kind ids that push a call / pop the innermost call (with the end's args):
#: the call-stack rule, shared with exporters that track only call stacks.
PUSH_CALL = frozenset((_K["CallEnter"], _K["GenResume"], _K["CCallEnter"]))
POP_CALL = {
    _K["CallExit"]: None,
    _K["CallUnwind"]: {"ended_by": "exception"},
    _K["GenYield"]: {"ended_by": "yield"},
    _K["CCallExit"]: None,
}
_OPEN_FRAMES = _K["OpenFrames"]
_GC_START, _GC_DONE = _K["GCStart"], _K["GCDone"]
_BLOCK, _UNBLOCK = _K["Block"], _K["Unblock"]
_SYSCALL, _SYSCALL_END = _K["SysCall"], _K["SysCallEnd"]
_REGION_START, _REGION_END = _K["UserRegionStart"], _K["UserRegionEnd"]
_THREAD_END = _K["ThreadEnd"]


def walk(trace: Trace, begin: BeginFn, end: EndFn, other: OtherFn | None = None) -> None:
    """Report every slice of ``trace`` to ``begin``/``end`` in time order.

    Calls of ``begin`` and ``end`` are globally ordered by time, and per
    thread they nest (see the module docstring).  Slices still open at the
    end are ended at the last event's time.
    """
    stacks: dict[int, list[Slice]] = {}

    def open_slice(stack: list[Slice], ts: int, tid: int, s: Slice) -> None:
        stack.append(s)
        begin(ts, tid, s)

    def close(stack: list[Slice], ts: int, tid: int, index: int, args) -> None:
        above = stack[index + 1:]
        for inner in reversed(above):
            end(ts, tid, inner, None)
        target = stack[index]
        del stack[index:]
        end(ts, tid, target, args)
        for inner in above:
            open_slice(stack, ts, tid, inner.resumed(ts))

    def close_innermost(stack, ts, tid, kind, args, name=None, task=None) -> None:
        for index in range(len(stack) - 1, -1, -1):
            s = stack[index]
            if s.kind == kind and (name is None or (s.name == name and s.args["task"] == task)):
                close(stack, ts, tid, index, args)
                return

    def close_all(stack: list[Slice], ts: int, tid: int) -> None:
        while stack:
            s = stack.pop()
            s.unfinished = True
            end(ts, tid, s, None)

    last_ts = 0
    for ev in trace.events:
        ts, tid, kind = ev.ts, ev.tid, ev.kind.id
        last_ts = ts
        stack = stacks.get(tid)
        if stack is None:
            stack = stacks[tid] = []
        if kind in PUSH_CALL:
            func = ev.args[0]
            open_slice(stack, ts, tid, Slice(CALL, func.name, ts, func))
        elif kind in POP_CALL:
            if stack and stack[-1].kind == CALL:
                end(ts, tid, stack.pop(), POP_CALL[kind])
            else:
                close_innermost(stack, ts, tid, CALL, POP_CALL[kind])
        elif kind == _OPEN_FRAMES:
            for frame in reversed(ev.args[0] or ()):
                open_slice(stack, ts, tid, Slice(CALL, frame.func, ts, frame))
        elif kind == _GC_START:
            generation, trigger = ev.args
            open_slice(stack, ts, tid, Slice(GC, f"GC (generation {generation})", ts, None,
                                             {"generation": generation, "stack": trigger}))
        elif kind == _GC_DONE:
            collected, uncollectable = ev.args
            close_innermost(stack, ts, tid, GC,
                            {"collected": collected, "uncollectable": uncollectable})
        elif kind == _BLOCK:
            reason, where = ev.args
            open_slice(stack, ts, tid, Slice(BLOCK, f"blocked: {block_reason(reason)}", ts, None,
                                             {"reason": block_reason(reason), "stack": where}))
        elif kind == _UNBLOCK:
            close_innermost(stack, ts, tid, BLOCK, None)
        elif kind == _SYSCALL:
            func, where = ev.args
            open_slice(stack, ts, tid,
                       Slice(SYSCALL, func.name, ts, None, {"function": func.name, "stack": where}))
        elif kind == _SYSCALL_END:
            close_innermost(stack, ts, tid, SYSCALL, None)
        elif kind == _REGION_START:
            task, name = ev.args
            open_slice(stack, ts, tid, Slice(REGION, name, ts, None, {"task": task}))
        elif kind == _REGION_END:
            task, name = ev.args
            close_innermost(stack, ts, tid, REGION, None, name, task)
        else:
            if kind == _THREAD_END:
                close_all(stack, ts, tid)
            if other is not None:
                other(ev)
    for tid, stack in stacks.items():
        close_all(stack, last_ts, tid)


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it can be written as UTF-8.

    The reader keeps them (``surrogatepass``): they come from file names that
    were not valid UTF-8, which Python decodes with ``surrogateescape``.
    """
    return _SURROGATE.sub("\ufffd", text)


def format_frame(frame) -> str:
    """``name (file:line)``, or just the name for a frame without a file (C code)."""
    name, file, line = frame
    return f"{name} ({file}:{line})" if file else name


def format_stack(stack) -> list[str] | None:
    """A stack (innermost first) as a JSON-friendly list of frame strings."""
    return None if stack is None else [format_frame(f) for f in stack]


def thread_names(trace: Trace) -> dict[int, str]:
    """Every thread's name, by tid (the analyses' rule: ThreadStart, ThreadCreate, ``thread N``)."""
    return {tid: info.name for tid, info in thread_infos(trace).items()}
