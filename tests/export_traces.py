"""Traces with known contents for the export and report tests.

``write_sample_trace`` writes one small trace that uses every event kind the
exporters map: two threads (one created in the trace), calls with recursion,
an exception and a generator, a GC pause, a lock wait, a sleep, a syscall, a
user task with a region and a log, a counter, heap counters, an asyncio task
with two run slices, CPU samples, and things left open at the end (the
module frame, a call, a region).  The timeline, in ns (all multiples of a
microsecond, so exported figures are exact)::

    thread 1 "MainThread"                    thread 2 "worker"
     1000 <module> open (OpenFrames)          5000 run_worker
     2000  main                               9000  [syscall socket.recv] -> 15000
     3000   task 1 "request", region          16000 [blocked: sleep] -> 17000
     4000   creates thread 2                  18000  recurse
     5000   EVIL                              19000   recurse -> 20000
     6000    GC gen 2 -> 8000 (42, 1)         21000  (recurse unwinds)
     9000   (EVIL returns)                    25000 (run_worker returns)
    10000   log, 11000 counter                26000 thread ends
    12000  [blocked: lock] -> 20000
    21000  region ends, 22000 task ends
    23000 (main returns)
    24000 asyncio task 7 created; runs 25000-26000 and 27000-28000 (fetch)
    29000 region "left open"; 30000 tail (never returns); 32000 last event

``EVIL`` and the other strings test escaping in every output.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

from hypothesis import strategies as st

from synthetic import timed, write_events

EVIL = "<script>alert(1)</script>"
MAIN = ("main", "app.py", 10)
EVIL_FUNC = (EVIL, "app.py", 20)
MODULE_FRAME = ("<module>", "app.py", 30)
FETCH = ("fetch", "app.py", 50)
TAIL = ("tail", "app.py", 60)
RUN_WORKER = ("run_worker", "worker.py", 1)
RECURSE = ("recurse", "worker.py", 40)
RECV = ("socket.recv", "", 0)
REGION = "phase <b>"
LOG_MESSAGE = "GET \"/\" 'x' & <y>"
SAMPLE_STACK = [("recurse", "worker.py", 42), ("recurse", "worker.py", 42),
                ("run_worker", "worker.py", 6)]

#: (ts, tid, event, *args), in time order per thread.
SAMPLE_EVENTS = [
    (1000, 1, "ThreadStart", 111, 1111, "MainThread"),
    (1000, 1, "OpenFrames", [MODULE_FRAME]),
    (2000, 1, "CallEnter", MAIN),
    (3000, 1, "UserTaskCreate", 1, 0, "request"),
    (3000, 1, "UserRegionStart", 1, REGION),
    (4000, 1, "ThreadCreate", 2, "worker", [("main", "app.py", 12), MODULE_FRAME]),
    (5000, 1, "CallEnter", EVIL_FUNC),
    (5000, 2, "ThreadStart", 222, 2222, "worker"),
    (5000, 2, "CallEnter", RUN_WORKER),
    (6000, 1, "GCStart", 2, [(EVIL, "app.py", 21), ("main", "app.py", 13), MODULE_FRAME]),
    (8000, 1, "GCDone", 42, 1),
    (8000, 1, "HeapCounters", 700, 3, 1, 700, 50_000, 30_000_000),
    (9000, 1, "CallExit"),
    (9000, 2, "SysCall", RECV, [("run_worker", "worker.py", 3)]),
    (10000, 1, "UserLog", 1, "http", LOG_MESSAGE),
    (11000, 1, "Counter", "queue depth", -3),
    (12000, 1, "Block", 2, [("main", "app.py", 14), MODULE_FRAME]),
    (15000, 2, "SysCallEnd"),
    (16000, 2, "Block", 1, None),
    (16500, 2, "CPUSample", 2, [("run_worker", "worker.py", 5)]),
    (17000, 2, "Unblock"),
    (18000, 2, "CallEnter", RECURSE),
    (19000, 2, "CallEnter", RECURSE),
    (19500, 2, "CPUSample", 2, SAMPLE_STACK),
    (19600, 2, "CPUSample", 2, SAMPLE_STACK),
    (20000, 1, "Unblock"),
    (20000, 2, "CallExit"),
    (21000, 1, "UserRegionEnd", 1, REGION),
    (21000, 2, "CallUnwind"),
    (22000, 1, "UserTaskEnd", 1),
    (23000, 1, "CallExit"),
    (24000, 1, "AsyncTaskCreate", 7, "Task-1", [("<module>", "app.py", 31)]),
    (25000, 1, "AsyncTaskRun", 7),
    (25000, 1, "CallEnter", FETCH),
    (25000, 2, "CallExit"),
    (26000, 1, "GenYield"),
    (26000, 1, "AsyncTaskPause", 7),
    (26000, 2, "ThreadEnd"),
    (27000, 1, "AsyncTaskRun", 7),
    (27000, 1, "GenResume", FETCH),
    (28000, 1, "CallExit"),
    (28000, 1, "AsyncTaskDone", 7),
    (29000, 1, "UserRegionStart", 0, "left open"),
    (30000, 1, "CallEnter", TAIL),
    (32000, 1, "Counter", "queue depth", 5),
]


def label(func) -> str:
    """A function as a folded-stack frame."""
    name, file, _line = func
    return f"{name} ({file})" if file else name


_M, _MAIN, _EVIL = label(MODULE_FRAME), label(MAIN), label(EVIL_FUNC)
_W, _R = label(RUN_WORKER), label(RECURSE)

#: Self time in us of every stack of the sample trace, worked out by hand
#: from the timeline above.
SAMPLE_SELF_TIMES_US = {
    (_M,): 1 + 2 + 1 + 2,                 # 1-2, 23-25, 26-27, 28-30 ms/1000
    (_M, _MAIN): 3 + 3 + 3,               # 2-5, 9-12, 20-23
    (_M, _MAIN, _EVIL): 1 + 1,            # 5-6, 8-9
    (_M, _MAIN, _EVIL, "[GC generation 2]"): 2,
    (_M, _MAIN, "[blocked: lock]"): 8,
    (_M, label(FETCH)): 1 + 1,            # two run slices of the coroutine
    (_M, label(TAIL)): 2,                 # 30 until the last event, 32
    (_W,): 4 + 1 + 1 + 4,                 # 5-9, 15-16, 17-18, 21-25
    (_W, "[syscall socket.recv]"): 6,
    (_W, "[blocked: sleep]"): 1,
    (_W, _R): 1 + 1,                      # 18-19, 20-21
    (_W, _R, _R): 1,
}

#: CPU sample counts per stack (outermost first) of the sample trace.
SAMPLE_SAMPLE_COUNTS = {
    ("run_worker (worker.py)",): 1,
    ("run_worker (worker.py)", "recurse (worker.py)", "recurse (worker.py)"): 2,
}


def write_sample_trace(path, buffer_size: int = 64 * 1024) -> None:
    write_events(path, SAMPLE_EVENTS, buffer_size)


# -- a real program, recorded by `pytrace run` ------------------------------------

PROGRAM = textwrap.dedent("""\
    import asyncio, gc, threading, time
    import pytrace

    def allocate(n):
        return [[i] for i in range(n)]

    def worker(lock):
        with lock:
            with pytrace.region("work <w>"):
                allocate(2000)
                gc.collect()
                time.sleep(0.005)

    async def fetch(i):
        await asyncio.sleep(0.001)
        return i

    async def fetch_all():
        return await asyncio.gather(*(fetch(i) for i in range(3)))

    def main():
        with pytrace.task('demo "task"'):
            lock = threading.Lock()
            thread = threading.Thread(target=worker, args=(lock,), name="worker <1>")
            with lock:
                thread.start()
                time.sleep(0.01)
            thread.join()
            pytrace.log("phase", "threads done")
            pytrace.counter("items", 3)
            asyncio.run(fetch_all())

    main()
    """)


def record_program(directory):
    """Run ``PROGRAM`` under ``pytrace run`` (threads, a lock wait, sleeps, GC,
    asyncio tasks, a user task, region, log and counter); return the trace's path."""
    script = directory / "program.py"
    script.write_text(PROGRAM)
    path = directory / "program.pytrace"
    subprocess.run([sys.executable, "-m", "pytrace", "run", "-o", str(path), str(script)],
                   check=True, capture_output=True, timeout=120)
    return path


# -- any event sequence --------------------------------------------------------

_FUNCS = st.sampled_from([("f", "a.py", 1), ("g", "b.py", 2), ("<h>", "", 0)])
_STACKS = st.one_of(st.none(), st.lists(_FUNCS, min_size=1, max_size=3))
_NAMES = st.sampled_from(["r1", "r2", "<x>"])
_SMALL = st.integers(0, 3)
_THREADS = st.integers(0, 2)

#: Event name -> strategies of its arguments.
_ARGUMENTS = {
    "CallEnter": (_FUNCS,), "CallExit": (), "CallUnwind": (), "GenYield": (),
    "GenResume": (_FUNCS,), "CCallEnter": (_FUNCS,), "CCallExit": (), "OpenFrames": (_STACKS,),
    "GCStart": (st.integers(0, 2), _STACKS), "GCDone": (_SMALL, _SMALL),
    "HeapCounters": (_SMALL,) * 6,
    "ThreadCreate": (st.integers(0, 3), _NAMES, _STACKS),
    "ThreadStart": (_SMALL, _SMALL, _NAMES), "ThreadEnd": (),
    "Block": (st.integers(0, 14), _STACKS), "Unblock": (),
    "SysCall": (_FUNCS, _STACKS), "SysCallEnd": (),
    "AsyncTaskCreate": (_SMALL, _NAMES, _STACKS), "AsyncTaskRun": (_SMALL,),
    "AsyncTaskPause": (_SMALL,), "AsyncTaskDone": (_SMALL,),
    "UserTaskCreate": (_SMALL, _SMALL, _NAMES), "UserTaskEnd": (_SMALL,),
    "UserRegionStart": (_SMALL, _NAMES), "UserRegionEnd": (_SMALL, _NAMES),
    "UserLog": (_SMALL, _NAMES, _NAMES), "Counter": (_NAMES, st.integers(-5, 5)),
    "CPUSample": (st.integers(0, 3), _STACKS),
}
_EVENTS = st.sampled_from(sorted(_ARGUMENTS)).flatmap(
    lambda name: st.tuples(st.just(name), *_ARGUMENTS[name]))


def event_scripts(max_size: int = 60):
    """Scripts of any events in any order on up to three threads: unbalanced
    pairs, ends before starts, events after a thread's end, unknown ids...
    Every exporter must turn each of them into a valid output."""
    steps = st.lists(st.tuples(st.integers(0, 2000), _THREADS, _EVENTS),
                     min_size=1, max_size=max_size)
    return steps.map(timed)


# -- local HTTP servers (go tool trace, pytrace view) ---------------------------


def announced_url(process, pattern: str, timeout: float = 60) -> str:
    """The URL a server prints when it listens (group 1 of ``pattern`` in its
    stdout).  Servers here listen on port 0 and say which port they got, so
    parallel tests never race for a port."""
    seen = b""
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    while not (match := re.search(pattern.encode(), seen)):
        left = deadline - time.monotonic()
        assert left > 0, f"no address announced within {timeout} s: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            output = seen.decode(errors="replace")
            assert chunk, f"the server exited with {process.wait()}: {output}"
            seen += chunk
    return match[1].decode()


def http_get(url: str, timeout: float = 60) -> tuple[int, str]:
    """``(status, body)`` of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
