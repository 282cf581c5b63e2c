"""The C core against the pure-Python core (issue 6).

    python -m pytest benchmarks/bench_core.py --benchmark-only

- writing: a call-dense event stream through ``ThreadSlot.emit_small``;
- tracing: recursive fib under ``pytrace.trace`` (the call hooks);
- reading: ``pytrace.read`` of a 2.5M-event trace with each decoder
  (``extra_info``: events/s, bytes per call event);
- memory: peak RSS of a fresh process tracing 10M events, against the same
  process untraced (``extra_info``: growth in MiB).

The side-by-side table with cProfile and VizTracer is ``benchmarks/side_by_side.py``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

import pytrace
from pytrace import core, events
from pytrace.recorder import Recorder

ENTER_PREFIX = bytes((events.BY_NAME["CallEnter"].id | 1 << 6,))
EXIT_PREFIX = bytes((events.BY_NAME["CallExit"].id,))
CALLS = 200_000


@pytest.fixture(params=core.NAMES)
def each_core(request):
    if request.param == "c" and core.c_module is None:
        pytest.fail("pytrace's C core is not built in this installation")
    previous = core.use(request.param)
    yield request.param
    core.use(previous)


def write_calls(path, calls: int = CALLS) -> int:
    with Recorder(path) as recorder:
        slot = recorder.slots.current()
        funcs = [slot.func_id(("bench", i), f"fib{i}", "bench.py", i) for i in range(8)]
        emit = slot.emit_small
        for i in range(calls):
            emit(ENTER_PREFIX, funcs[i & 7])
            emit(EXIT_PREFIX, -1)
    return 2 * calls


def test_write_call_stream(benchmark, tmp_path, each_core):
    path = tmp_path / "calls.pytrace"
    count = benchmark.pedantic(write_calls, args=(path,), rounds=5, iterations=1)
    benchmark.extra_info["events_per_second"] = round(count / benchmark.stats.stats.median)
    benchmark.extra_info["bytes_per_event"] = round(path.stat().st_size / count, 3)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_trace_fib(benchmark, tmp_path, each_core):
    path = tmp_path / "fib.pytrace"

    def traced():
        with pytrace.trace(path, gc=False, threads=False, blocking=False, asyncio=False):
            fib(27)

    benchmark.pedantic(traced, rounds=3, iterations=1)
    trace = pytrace.read(path)
    calls = sum(1 for e in trace.events if e.name == "CallEnter")
    benchmark.extra_info["calls"] = calls
    # Per call, with fib's own time and starting and stopping the trace.
    benchmark.extra_info["ns_per_call"] = round(benchmark.stats.stats.median / calls * 1e9, 1)
    benchmark.extra_info["bytes_per_call_event"] = round(
        os.path.getsize(path) / (2 * calls), 3)


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory):
    """A real 2.5M-event trace of fib, recorded with the active core."""
    path = tmp_path_factory.mktemp("read") / "fib.pytrace"
    with pytrace.trace(path, gc=False, threads=False, blocking=False, asyncio=False):
        for _ in range(2):
            fib(27)
    return path


def test_read(benchmark, big_trace, each_core):
    def fresh():
        gc.collect()  # the previous round's trace, before the clock starts
        return (big_trace,), {}

    trace = benchmark.pedantic(pytrace.read, setup=fresh, rounds=3)
    count = len(trace.events)
    benchmark.extra_info["events"] = count
    benchmark.extra_info["events_per_second"] = round(count / benchmark.stats.stats.median)
    benchmark.extra_info["bytes_per_event"] = round(os.path.getsize(big_trace) / count, 3)


#: Peak RSS (MiB) of a fresh interpreter running fib(32) (7.0M calls, 14.1M
#: call events when traced), traced or not: tracing's memory is the difference.
RSS_PROGRAM = textwrap.dedent("""
    import json, sys, tempfile, os
    import pytrace

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    with tempfile.TemporaryDirectory() as folder:
        if sys.argv[1] == "traced":
            with pytrace.trace(os.path.join(folder, "t.pytrace"), gc=False, threads=False,
                               blocking=False, asyncio=False):
                fib(32)
        else:
            fib(32)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent
    # (here, pytest) across exec.
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps(peak_kib / 1024))
""")


def peak_rss_mib(mode: str, core_name: str) -> float:
    env = {**os.environ, "PYTRACE_CORE": core_name}
    done = subprocess.run([sys.executable, "-c", RSS_PROGRAM, mode], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def test_rss_growth_over_10m_events(benchmark):
    """Only the C core: the Python core takes minutes for 10M events."""
    if core.c_module is None:
        pytest.fail("pytrace's C core is not built in this installation")
    traced = benchmark.pedantic(peak_rss_mib, args=("traced", "c"), rounds=1, iterations=1)
    untraced = peak_rss_mib("untraced", "c")
    benchmark.extra_info["traced_peak_rss_mib"] = round(traced, 1)
    benchmark.extra_info["untraced_peak_rss_mib"] = round(untraced, 1)
    benchmark.extra_info["growth_mib"] = round(traced - untraced, 1)
