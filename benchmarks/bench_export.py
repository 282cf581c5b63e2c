"""Time and peak memory of ``pytrace export --format chrome`` and ``pytrace report``
on a trace of one million events (issue 5: target <= 10 s and <= 1 GiB each).

    .venv/bin/python -m pytest benchmarks/bench_export.py --benchmark-only -s

Each round runs the real command in a child process (``python -m pytrace``),
so the time includes reading the trace, as a user waits for it; the child's
peak RSS comes from ``os.wait4`` and lands in ``extra_info["peak_rss_mib"]``
(printed with ``-s``).  The trace is written once per session by
``write_workload``: four threads of nested calls with GC pauses, heap
counters, blocking, syscalls, regions, logs and counters mixed in, so every
code path of the exporters is exercised at scale.
"""

from __future__ import annotations

import pytest

from child_rss import run_pytrace
from synthetic import Synthetic

EVENTS = 1_000_000
THREADS = 4
FUNCS = [(f"module.function_{i}", f"/src/module_{i % 7}.py", 10 * i + 1) for i in range(40)]


def write_workload(path, events: int = EVENTS) -> int:
    """Write a trace of about ``events`` events; return the exact count.

    Threads take turns in 50 us slices of a shared scripted clock.  In each
    slice a thread runs a small call tree (depth 4, fan-out 3) and, every few
    slices, a GC pause, a block, a syscall, a region with a log, a counter.
    """
    count = 0
    now = 0
    with Synthetic(path) as s:
        for tid in range(1, THREADS + 1):
            s.emit(now, tid, "ThreadStart", 1000 + tid, 2000 + tid, f"worker-{tid}")
            count += 1
        turn = 0
        while count < events:
            turn += 1
            tid = turn % THREADS + 1
            stack = [FUNCS[turn % len(FUNCS)]]

            def tree(depth):
                nonlocal now, count
                for child in range(3):
                    func = FUNCS[(turn + depth * 3 + child) % len(FUNCS)]
                    now += 100
                    s.emit(now, tid, "CallEnter", func)
                    if depth < 3:
                        tree(depth + 1)
                    now += 50
                    s.emit(now, tid, "CallExit")
                    count += 2

            tree(0)
            if turn % 5 == 0:
                now += 10
                s.emit(now, tid, "GCStart", turn % 3, stack)
                now += 2000 + 10 * (turn % 97)
                s.emit(now, tid, "GCDone", turn % 50, 0)
                s.emit(now, tid, "HeapCounters", 10, 2, 1, 700, 50_000 + turn, 30_000_000)
                count += 3
            if turn % 7 == 0:
                s.emit(now, tid, "Block", 2, stack)
                now += 5000
                s.emit(now, tid, "Unblock")
                s.emit(now, tid, "SysCall", ("socket.recv", "", 0), stack)
                now += 3000
                s.emit(now, tid, "SysCallEnd")
                count += 4
            if turn % 11 == 0:
                s.emit(now, tid, "UserRegionStart", 0, "handle request")
                now += 100
                s.emit(now, tid, "UserLog", 0, "http", f"request {turn}")
                s.emit(now, tid, "Counter", "queue depth", turn % 17 - 8)
                now += 100
                s.emit(now, tid, "UserRegionEnd", 0, "handle request")
                count += 4
        for tid in range(1, THREADS + 1):
            now += 10
            s.emit(now, tid, "ThreadEnd")
            count += 1
    return count


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_export") / "big.pytrace"
    events = write_workload(path)
    return path, events


@pytest.mark.parametrize("command", ["export-chrome", "report"])
def test_big_trace(benchmark, big_trace, tmp_path, command):
    path, events = big_trace
    if command == "report":
        args = ["report", str(path), "-o", str(tmp_path / "report.html")]
    else:
        args = ["export", str(path), "--format", "chrome", "-o", str(tmp_path / "trace.json")]
    peaks = []
    benchmark.group = "export"
    benchmark.pedantic(lambda: peaks.append(run_pytrace(*args)), rounds=3, iterations=1)
    benchmark.extra_info["events"] = events
    benchmark.extra_info["trace_mib"] = round(path.stat().st_size / 2**20, 1)
    benchmark.extra_info["peak_rss_mib"] = round(max(peaks) / 2**20, 1)
    print(f"\n{command}: {events} events, median {benchmark.stats.stats.median:.2f} s, "
          f"peak RSS {max(peaks) / 2**20:.0f} MiB")
