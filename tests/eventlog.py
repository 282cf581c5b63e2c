"""Record small programs with the real tracer and compare their events.

    trace = record(trace_path, program, gc=True)     # only the hooks a test turns on
    normalized(of_kind(trace, "GCStart", "GCDone"))  # [("GCStart", 2, ("f", "g")), ...]

Timestamps are left out of normalized events; stacks become the names of
their functions, innermost first (None for no stack), functions their names.
"""

from __future__ import annotations

import sys

import pytest

import pytrace
from pytrace.reader import collector_paused

#: Every hook off: a test turns on the ones whose events it checks.
QUIET = dict(calls=False, c_calls=False, gc=False, threads=False, blocking=False, asyncio=False)


def record(path, program, **options) -> pytrace.Trace:
    """Run ``program()`` under ``pytrace.trace(path, ...)`` and read the trace back."""
    with pytrace.trace(path, **{**QUIET, **options}):
        program()
    return pytrace.read(path)


def of_kind(trace, *names, tid=None) -> list:
    """The events of the given kinds (optionally of one thread), in time order."""
    return [e for e in trace.events if e.name in names and (tid is None or e.tid == tid)]


def normalized(events) -> list[tuple]:
    """``(kind name, *args)`` per event, without timestamps."""
    return [(e.name, *(_plain(t, v) for (_, t), v in zip(e.kind.args, e.args))) for e in events]


def _plain(arg_type: str, value):
    if arg_type == "k":
        return None if value is None else tuple(frame.func for frame in value)
    if arg_type == "f":
        return value.name
    return value


def thread_tid(trace, thread) -> int:
    """The tid of the ``threading.Thread`` ``thread``, from its ThreadStart
    (matched on ident and name: a thread that ended during the trace may
    have had the same ident)."""
    [start] = [e for e in of_kind(trace, "ThreadStart")
               if (e.arg("ident"), e.arg("name")) == (thread.ident, thread.name)]
    return start.tid


def stack_names(event, arg: str = "stack") -> tuple:
    """The function names of an event's stack argument, innermost first."""
    return _plain("k", event.arg(arg))


#: ``with gc_disabled():`` no automatic collection in the block, so a test's
#: collections happen where it says (the reader's own pause, reused).
gc_disabled = collector_paused


#: The call backends, for ``parametrize``: sys.monitoring exists from 3.12 on.
BACKENDS = [
    pytest.param("monitoring", marks=pytest.mark.skipif(
        sys.version_info < (3, 12), reason="sys.monitoring is new in Python 3.12")),
    "setprofile",
]

#: The events that push and pop the recorded call stack.
CALL_KINDS = ("OpenFrames", "CallEnter", "CallExit", "CallUnwind", "GenYield", "GenResume",
              "CCallEnter", "CCallExit")


def call_events(trace, tid=None) -> list[tuple]:
    """The call-stack events of ``trace``, normalized."""
    return normalized(of_kind(trace, *CALL_KINDS, tid=tid))


def call_enter(name: str) -> tuple:
    return ("CallEnter", name)


def gen_resume(name: str) -> tuple:
    return ("GenResume", name)


def c_call_enter(name: str) -> tuple:
    return ("CCallEnter", name)


def open_frames(*names: str) -> tuple:
    """``OpenFrames`` of the named functions, innermost first."""
    return ("OpenFrames", names)


CALL_EXIT = ("CallExit",)
CALL_UNWIND = ("CallUnwind",)
GEN_YIELD = ("GenYield",)
C_CALL_EXIT = ("CCallExit",)
