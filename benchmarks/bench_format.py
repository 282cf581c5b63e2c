"""Encoder and reader throughput, and bytes per call event (issues 2 and 6).

    .venv/bin/python -m pytest benchmarks/bench_format.py --benchmark-only \
        --benchmark-json=format.json

The call-heavy stream is what the call hooks write for recursive fib: per
call one CallEnter(func) and one CallExit, over a handful of functions, with
the real clock.  ``extra_info`` (in the JSON) carries events/s and bytes per
event: in the file for the encoder; for the reader, what a read trace holds
in memory per event and the peak while reading (tracemalloc, one read
outside the timed rounds).
"""

import tracemalloc

import pytest

import pytrace
from tracegen import write_call_stream

CALLS = 200_000


def test_encoder_call_stream(benchmark, tmp_path):
    path = tmp_path / "calls.pytrace"
    count = benchmark.pedantic(write_call_stream, args=(path, CALLS), rounds=5, iterations=1)
    size = path.stat().st_size
    benchmark.extra_info["events"] = count
    benchmark.extra_info["bytes_per_event"] = round(size / count, 3)
    benchmark.extra_info["events_per_second"] = round(count / benchmark.stats.stats.median)
    assert size / count <= 5, "the format promises <= 5 bytes per call enter/exit event"


@pytest.fixture(scope="module")
def call_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "calls.pytrace"
    write_call_stream(path, CALLS)
    return path


def test_reader_throughput(benchmark, call_trace):
    trace = benchmark.pedantic(pytrace.read, args=(call_trace,), rounds=15, iterations=1,
                               warmup_rounds=1)
    count = len(trace.events)
    benchmark.extra_info["events"] = count
    benchmark.extra_info["events_per_second"] = round(count / benchmark.stats.stats.median)
    del trace
    tracemalloc.start()
    try:
        trace = pytrace.read(call_trace)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    benchmark.extra_info["bytes_per_event_held"] = round(held / count, 1)
    benchmark.extra_info["bytes_per_event_peak"] = round(peak / count, 1)

