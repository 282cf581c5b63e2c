"""Time and peak memory of ``pytrace stats`` and ``gc`` on a 1-million-event trace (issue 5).

    .venv/bin/python -m pytest benchmarks/bench_analysis.py --benchmark-only

Target: each command <= 10 s and <= 1 GiB in pure Python.  The ``*_command``
benchmarks run the real CLI in a child process (reading included, as a user
runs it) and put the child's peak RSS in ``extra_info["peak_rss_mib"]``; the
``*_analysis`` ones time only the library analysis of an already-read trace,
to show how the total splits between reading and analysing.

The workload is four threads doing request-shaped work: nested and
recursive calls, a generator, C calls, an exception, lock waits, syscalls,
sleeps, regions and tasks, and a collection every few requests (young ones
mostly, a full one now and then) whose pause stops everything.
"""

import pytest

import pytrace
from child_rss import run_pytrace
from pytrace.analysis import analyze_gc, summarize
from synthetic import Synthetic

EVENTS = 1_000_000
THREADS = 4
GIB = 1 << 30

HANDLE = ("handle", "server.py", 10)
PARSE = ("parse", "server.py", 30)
FIB = ("fib", "mathutil.py", 5)
ROWS = ("rows", "db.py", 12)
RISKY = ("risky", "server.py", 60)
LEN = ("builtins.len", "", 0)
READ = ("posix.read", "", 0)
GC_STACK = [("alloc", "server.py", 44), HANDLE]


def request(tid, n):
    """One request's events as ``(dt, name, *args)``: 48 events, about 40 us."""
    steps = [(200, "CallEnter", HANDLE), (50, "UserRegionStart", n, "request"),
             (300, "CallEnter", PARSE), (100, "CCallEnter", LEN), (20, "CCallExit"),
             (400, "CallExit")]
    steps += [(150, "CallEnter", FIB)] * 6 + [(90, "CallExit")] * 6
    steps += [(100, "CallEnter", ROWS), (80, "GenYield"), (500, "GenResume", ROWS),
              (80, "GenYield"), (500, "GenResume", ROWS), (60, "CallExit")]
    steps += [(100, "Block", 2, None), (3000, "Unblock"),
              (100, "SysCall", READ, None), (8000, "SysCallEnd"),
              (100, "Block", 1, [HANDLE]), (20_000, "Unblock"),
              (300, "CallEnter", RISKY), (100, "CallUnwind")]
    steps += [(100, "CallEnter", PARSE), (50, "CallExit")] * 5
    steps += [(100, "UserRegionEnd", n, "request"), (200, "CallExit")]
    return steps


def write_workload(path, events=EVENTS):
    """Write the workload; return the number of events written."""
    written = 0
    now = 0
    n = 0
    with Synthetic(path) as synthetic:
        emit = synthetic.emit
        for tid in range(1, THREADS + 1):
            emit(now, tid, "ThreadStart", tid, 1000 + tid, f"worker-{tid}")
            written += 1
        while written < events - THREADS - 2:
            n += 1
            tid = n % THREADS + 1
            emit(now, tid, "UserTaskCreate", n, 0, "request")
            for dt, name, *args in request(tid, n):
                now += dt
                emit(now, tid, name, *args)
            now += 10
            emit(now, tid, "UserTaskEnd", n)
            written += len(request(tid, n)) + 2
            if n % 7 == 0:
                generation = 2 if n % 700 == 0 else 1 if n % 70 == 0 else 0
                emit(now, tid, "GCStart", generation, GC_STACK)
                now += (50_000 if generation == 2 else 5_000) + 37 * (n % 11)
                emit(now, tid, "GCDone", 10 * n % 997, n % 3 == 0)
                written += 2
        for tid in range(1, THREADS + 1):
            emit(now, tid, "ThreadEnd")
            written += 1
    return written


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "workload.pytrace"
    write_workload(path)
    return path


@pytest.fixture(scope="module")
def trace(workload):
    return pytrace.read(workload)


@pytest.mark.parametrize("command", ["stats", "gc"])
def test_command(benchmark, workload, trace, command):
    peaks = []
    benchmark.pedantic(lambda: peaks.append(run_pytrace(command, workload, "--json")),
                       rounds=3, iterations=1)
    benchmark.extra_info["events"] = len(trace.events)
    benchmark.extra_info["trace_mib"] = round(workload.stat().st_size / 2**20, 1)
    benchmark.extra_info["peak_rss_mib"] = round(max(peaks) / 2**20)
    assert len(trace.events) >= EVENTS
    assert max(peaks) <= GIB, "issue 5 promises at most 1 GiB per command"


def test_stats_analysis(benchmark, trace):
    summary = benchmark.pedantic(summarize, args=(trace,), rounds=3, iterations=1)
    benchmark.extra_info["events"] = summary.events


def test_gc_analysis(benchmark, trace):
    report = benchmark.pedantic(analyze_gc, args=(trace,), rounds=3, iterations=1)
    benchmark.extra_info["collections"] = report.overall.collections
    benchmark.extra_info["mmu_points"] = len(report.mmu)
