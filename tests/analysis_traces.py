"""Traces with hand-computed answers for the analysis and CLI tests.

Each scenario is a list of ``(ts_ns, tid, event name, *args)`` rows and a
comment deriving the numbers the tests expect.  ``write`` sorts the rows by
time (stably, so same-time rows keep their order) before handing them to
``synthetic.write_events``, which needs a thread's first event to come no earlier than
what was already written (its batch base is the clock when the thread's
slot is made).
"""

from __future__ import annotations

import warnings

import pytrace
from synthetic import timed, write_events

MAIN = ("main", "app.py", 1)
ALLOC = ("alloc", "app.py", 40)


def write(path, rows):
    """Write ``rows`` as a trace file at ``path``; return the path."""
    write_events(path, sorted(rows, key=lambda row: row[0]))
    return path


def read_strictly(path):
    """``pytrace.read(path)``, with any reader warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pytrace.read(path)


def load(path, rows):
    """Write ``rows`` and read them back as a ``Trace`` (any reader warning is an error)."""
    return read_strictly(write(path, rows))


# -- GC ----------------------------------------------------------------------------------
#
# Span 0 .. 10_000 (main's CallEnter .. CallExit).  Worker (tid 2) lives 2_000 .. 6_000.
#   gen 0: 1000-1100 (100), 3000-3300 (300), 7000-7050 (50)  -> [50, 100, 300], total 450
#   gen 1: 4000-4500 (500)
#   gen 2: 8000-9000 (1000), triggered in alloc <- main
# All five: [50, 100, 300, 500, 1000], total 1950, share 0.195.  Nearest rank: p50 = rank
# ceil(2.5) = 3 -> 300; p90 = rank ceil(4.5) = 5 -> 1000.  Worker overlap: 300 + 500 = 800 of
# 4000 -> 0.2.  MMU: a window no longer than the 1000 ns pause fits inside it -> 0; the
# worst 2000 ns window is 7000..9000 holding 50 + 1000 paused -> 1 - 1050/2000 = 0.475;
# the worst 1500 ns window holds the 1000 ns pause -> 1/3; the whole span -> 0.805.
GC_SCENARIO = [
    (0, 1, "CallEnter", MAIN),
    (1000, 1, "GCStart", 0, None), (1100, 1, "GCDone", 10, 0),
    (2000, 2, "ThreadStart", 7, 70, "worker"),
    (3000, 2, "GCStart", 0, None), (3300, 2, "GCDone", 20, 1),
    (4000, 1, "GCStart", 1, None), (4500, 1, "GCDone", 30, 0),
    (6000, 2, "ThreadEnd"),
    (7000, 1, "GCStart", 0, None), (7050, 1, "GCDone", 5, 0),
    (8000, 1, "GCStart", 2, [ALLOC, MAIN]), (9000, 1, "GCDone", 400, 3),
    (10_000, 1, "CallExit"),
]

# -- profile -----------------------------------------------------------------------------
#
# Thread 1, recursion and an exception:
#   0 main { 10 fact { 20 fact { 30 fact } 40 } 60 } 100   110 helper raises 150 } 200
#   fact: 3 calls, self 10+10+10+20+40 = 90, total 100-10 = 90 (not 90+40+10)
#   main: self 10 + 10 + 50 = 70, total 200;  helper: self = total = 40, 1 exception
#   edges: main->fact 1 call 90; fact->fact 2 calls 40 (20..60, the inner 30..40 not again);
#   main->helper 1 call 40
# Thread 2, a generator and a C call:
#   0 main2 { 5 len 7 }  10 gen { 20 yield ... 50 resume { 60 yield ... 100 resume { 110 } 120
#   gen: 1 call, total = self = 10+10+10 = 30 (suspended time is not its time)
#   main2: total 120, self 120 - 30 - 2 = 88;  builtins.len: C, 1 call, 2
# Thread 3, frames open at the start, never ends: closed at the trace end (200)
#   0 OpenFrames [inner, outer] (innermost first) ; 10 leaf { 30 }
#   outer: total 200, self 0; inner: total 200, self 10 + 170 = 180; both 0 calls, unfinished
# Thread 4 ends with a call open: closed at its ThreadEnd (50): run total 45, unfinished 1
# Thread 5 pops more than it pushed: the pop is ignored and counted.
FACT = ("fact", "app.py", 10)
HELPER = ("helper", "app.py", 20)
MAIN2 = ("main2", "app.py", 30)
GEN = ("gen", "app.py", 35)
LEN = ("builtins.len", "", 0)
INNER = ("inner", "lib.py", 27)
OUTER = ("outer", "lib.py", 5)
LEAF = ("leaf", "lib.py", 50)
RUN = ("run", "lib.py", 60)

PROFILE_SCENARIO = [
    (0, 1, "CallEnter", MAIN), (10, 1, "CallEnter", FACT), (20, 1, "CallEnter", FACT),
    (30, 1, "CallEnter", FACT), (40, 1, "CallExit"), (60, 1, "CallExit"), (100, 1, "CallExit"),
    (110, 1, "CallEnter", HELPER), (150, 1, "CallUnwind"), (200, 1, "CallExit"),
    (0, 2, "CallEnter", MAIN2), (5, 2, "CCallEnter", LEN), (7, 2, "CCallExit"),
    (10, 2, "CallEnter", GEN), (20, 2, "GenYield"), (50, 2, "GenResume", GEN),
    (60, 2, "GenYield"), (100, 2, "GenResume", GEN), (110, 2, "CallExit"), (120, 2, "CallExit"),
    (0, 3, "OpenFrames", [INNER, OUTER]), (10, 3, "CallEnter", LEAF), (30, 3, "CallExit"),
    (0, 4, "ThreadStart", 8, 80, "runner"), (5, 4, "CallEnter", RUN), (50, 4, "ThreadEnd"),
    (70, 5, "CallExit"),
]

# -- threads -----------------------------------------------------------------------------
#
# Span 0 .. 1000.  Thread 1 (no ThreadStart: lives 0 .. 1000):
#   sleep 100..300 (200); lock 400..450 (50); syscall 500..700 with a socket block 550..650
#   inside (syscall 100, socket 100); GC 800..900 while running (gc 100); running 450.
# Thread 2 "worker" lives 200 .. 950: queue block 250..850 (600; the GC from 800 did not
#   delay it), gc 850..900 (50), running 100.
# Tasks "request": 100..720 and 200..460 (ended by another thread) -> [260, 620]:
#   total 880, mean 440, p50 260 (rank 1), p90 620, max 620; task 3 never ends.
# Regions "parse" (thread 1, nested, same name): inner 30..40 (10), outer 20..90 (70).
#   "db" (thread 2): 200..240 (40), and one opened at 920 never closed.
SLEEP, LOCK, SOCKET, QUEUE = 1, 2, 8, 6
THREAD_SCENARIO = [
    (0, 1, "CallEnter", MAIN),
    (20, 1, "UserRegionStart", 1, "parse"), (30, 1, "UserRegionStart", 1, "parse"),
    (40, 1, "UserRegionEnd", 1, "parse"), (90, 1, "UserRegionEnd", 1, "parse"),
    (100, 1, "UserTaskCreate", 1, 0, "request"),
    (100, 1, "Block", SLEEP, None), (300, 1, "Unblock"),
    (400, 1, "Block", LOCK, [MAIN]), (450, 1, "Unblock"),
    (460, 1, "UserTaskEnd", 2),
    (500, 1, "SysCall", ("posix.read", "", 0), None), (550, 1, "Block", SOCKET, None),
    (650, 1, "Unblock"), (700, 1, "SysCallEnd"),
    (720, 1, "UserTaskEnd", 1),
    (800, 1, "GCStart", 0, None), (900, 1, "GCDone", 1, 0),
    (1000, 1, "CallExit"),
    (200, 2, "ThreadStart", 9, 90, "worker"),
    (200, 2, "UserTaskCreate", 2, 0, "request"),
    (200, 2, "UserRegionStart", 0, "db"), (240, 2, "UserRegionEnd", 0, "db"),
    (245, 2, "UserTaskCreate", 3, 0, "request"),
    (250, 2, "Block", QUEUE, None), (850, 2, "Unblock"),
    (920, 2, "UserRegionStart", 0, "db"),
    (950, 2, "ThreadEnd"),
]


def traced(path, program, **options):
    """Run ``program()`` under the real tracer and return the trace it wrote."""
    with pytrace.trace(path, **options):
        program()
    return read_strictly(path)


# -- arbitrary event sequences -------------------------------------------------------------
#
# For the property tests: any mix of the events the analyses read, on three threads,
# balanced or not, in any order the reader accepts (time never goes backwards).

def arbitrary_rows():
    """A hypothesis strategy for ``rows`` that ``write`` accepts."""
    from hypothesis import strategies as st

    funcs = st.sampled_from([MAIN, FACT, GEN, LEN])
    stacks = st.sampled_from([None, [FACT, MAIN], [INNER, OUTER]])
    tasks = st.integers(1, 3)
    names = st.sampled_from(["a", "b"])
    event = st.one_of(
        st.tuples(st.just("CallEnter"), funcs), st.tuples(st.just("GenResume"), funcs),
        st.tuples(st.just("CCallEnter"), funcs), st.tuples(st.just("OpenFrames"), stacks),
        *(st.tuples(st.just(name)) for name in
          ("CallExit", "CallUnwind", "GenYield", "CCallExit", "Unblock", "SysCallEnd",
           "ThreadEnd")),
        st.tuples(st.just("GCStart"), st.integers(0, 2), stacks),
        st.tuples(st.just("GCDone"), st.integers(0, 50), st.integers(0, 2)),
        st.tuples(st.just("Block"), st.integers(0, 20), stacks),
        st.tuples(st.just("SysCall"), funcs, stacks),
        st.tuples(st.just("ThreadStart"), st.just(1), st.just(1), names),
        st.tuples(st.just("UserTaskCreate"), tasks, st.just(0), names),
        st.tuples(st.just("UserTaskEnd"), tasks),
        st.tuples(st.just("UserRegionStart"), tasks, names),
        st.tuples(st.just("UserRegionEnd"), tasks, names),
    )
    steps = st.lists(st.tuples(st.integers(0, 50), st.integers(1, 3), event),
                     min_size=1, max_size=40)
    return steps.map(timed)
