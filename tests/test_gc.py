"""GC events: one whole GCStart/GCDone pair per collection, as many per
generation as CPython's own ``gc.get_stats()`` counts, the stack that
triggered each, heap counters after each and on an interval, and the summary.

Automatic collections are switched off around ``pytrace.start``/``stop``
(``gc_disabled``), so every collection of a test happens where its program
says; the programs switch them on where they want them.
"""

from __future__ import annotations

import contextlib
import gc
import re
import sys
import threading
import time

import psutil
import pytest

import pytrace
from eventlog import QUIET, gc_disabled, normalized, of_kind, record, stack_names
from pytrace import buffer
from pytrace.hooks import gcevents
from pytrace.session import PACKAGE_DIR

GC_ONLY = dict(QUIET, gc=True)
SUMMARY = re.compile(r"(\d+) collections? \(gen0 (\d+), gen1 (\d+), gen2 (\d+)\), "
                     r"total pause ([\d.]+) ms, longest ([\d.]+) ms \(gen (\d)\)(.*)")


@contextlib.contextmanager
def thresholds(*values):
    old = gc.get_threshold()
    gc.set_threshold(*values)
    try:
        yield
    finally:
        gc.set_threshold(*old)


@contextlib.contextmanager
def heap_frozen():
    """Hide every object that exists now from the collector, then collect.

    CPython skips an automatic gen2 collection until the objects that
    survived into gen2 since the last full collection exceed a quarter of
    those it kept then; with the heap of a long test session counted, a
    small program would never get one."""
    gc.freeze()
    try:
        gc.collect()
        yield
    finally:
        gc.unfreeze()


def collections_so_far() -> list[int]:
    return [stats["collections"] for stats in gc.get_stats()]


def make_cycles(count: int) -> None:
    for _ in range(count):
        cycle = []
        cycle.append(cycle)


def churn(rounds: int, keep: list) -> None:
    """Cyclic garbage for young collections, survivors to age into old ones."""
    for i in range(rounds):
        make_cycles(1)
        if i % 5 == 0:
            keep.append([i])


def pauses(trace) -> list[tuple[int, int]]:
    """``(pause ns, generation)`` per collection: each GCStart with the next GCDone of its thread."""
    open_starts, result = {}, []
    for event in of_kind(trace, "GCStart", "GCDone"):
        if event.name == "GCStart":
            open_starts[event.tid] = event
        else:
            start = open_starts.pop(event.tid)
            result.append((event.ts - start.ts, start.arg("generation")))
    return result


def gc_events(trace, frames: int = 0) -> list[tuple]:
    """GCStart as ``(name, generation, its innermost `frames` function names)``,
    GCDone as ``(name, collected, uncollectable)``."""
    return [(e.name, e.arg("generation"), stack_names(e)[:frames]) if e.name == "GCStart"
            else (e.name, *e.args) for e in of_kind(trace, "GCStart", "GCDone")]


def assert_whole_pairs(trace) -> None:
    """Collections never overlap: over all threads, GC events go Start, Done,
    Start, Done...; each pair is on one thread and its heap counters follow it."""
    gc_events = of_kind(trace, "GCStart", "GCDone")
    assert [e.name for e in gc_events] == ["GCStart", "GCDone"] * (len(gc_events) // 2)
    for start, done in zip(gc_events[::2], gc_events[1::2]):
        assert start.tid == done.tid
        same_thread = [e for e in trace.events if e.tid == done.tid]
        assert same_thread[same_thread.index(done) + 1].name == "HeapCounters"


def find_hook() -> gcevents.GCHook:
    """The running GC hook, through its callback (wrapped, each wrapper's
    ``func`` being what it wraps, down to the bound method)."""
    def unwrapped(callback):
        while hasattr(callback, "func"):
            callback = callback.func
        return callback
    bound = (unwrapped(cb) for cb in gc.callbacks)
    return next(m.__self__ for m in bound
                if isinstance(getattr(m, "__self__", None), gcevents.GCHook))


def test_collections_per_generation_equal_gc_get_stats(trace_path):
    keep: list = []

    def program():
        gc.enable()
        with thresholds(100, 3, 3):
            worker = threading.Thread(target=churn, args=(30_000, keep))
            worker.start()
            churn(30_000, keep)
            worker.join()
        for generation in (0, 1, 2, 2, 1, 0):
            gc.collect(generation)
        gc.disable()

    with gc_disabled(), heap_frozen():
        before = collections_so_far()
        # No periodic flusher: with thresholds this low, its thread could
        # collect too (a third thread, with only pytrace's frames on its stack).
        with pytrace.trace(trace_path, **GC_ONLY, flush_interval=0) as session:
            program()
        after = collections_so_far()
    trace = pytrace.read(trace_path)

    expected = [a - b for a, b in zip(after, before)]
    assert expected[2] > 2, "the program must provoke automatic gen2 collections too"
    starts = of_kind(trace, "GCStart")
    assert [sum(e.arg("generation") == g for e in starts) for g in range(3)] == expected
    assert len({e.tid for e in starts}) == 2
    assert_whole_pairs(trace)
    for start in starts:
        assert stack_names(start)
        assert not any(frame.file.startswith(PACKAGE_DIR) for frame in start.arg("stack"))

    [line] = session.summary_lines()
    count, g0, g1, g2, total, longest, longest_gen, rest = SUMMARY.fullmatch(line).groups()
    assert [int(count), int(g0), int(g1), int(g2)] == [sum(expected), *expected]
    measured = pauses(trace)
    assert total == f"{sum(p for p, _ in measured) / 1e6:.3f}"
    assert (longest, int(longest_gen)) == (f"{max(measured)[0] / 1e6:.3f}", max(measured)[1])
    assert rest == ""


def trigger():
    gc.collect(2)


def explicit_collections():
    make_cycles(3)
    trigger()
    gc.collect(0)


def test_explicit_collections_give_exact_events(trace_path):
    with gc_disabled():
        gc.collect()
        trace = record(trace_path, explicit_collections, gc=True)
    assert gc_events(trace, frames=2) == [
        ("GCStart", 2, ("trigger", "explicit_collections")), ("GCDone", 3, 0),
        ("GCStart", 0, ("explicit_collections", "record")), ("GCDone", 0, 0),
    ]


def allocate(count: int, keep: list) -> None:
    for _ in range(count):
        keep.append([])


def test_automatic_collection_stack_is_the_allocating_code(trace_path):
    keep: list = []

    def program():
        with thresholds(50):
            gc.enable()
            allocate(500, keep)
            gc.disable()

    with gc_disabled():
        trace = record(trace_path, program, gc=True)
    starts = of_kind(trace, "GCStart")
    assert len(starts) >= 5
    assert {stack_names(e)[:2] for e in starts} == {
        ("allocate", f"{test_automatic_collection_stack_is_the_allocating_code.__name__}.<locals>.program")}


def test_heap_counters_follow_every_gc_done(trace_path):
    with gc_disabled():
        trace = record(trace_path, lambda: [gc.collect(g) for g in (0, 1, 2)], gc=True)
    assert_whole_pairs(trace)
    heap = of_kind(trace, "HeapCounters")
    assert len(heap) == 3
    after_full = dict(zip(heap[-1].kind.arg_names, heap[-1].args))
    assert after_full["gen1"] == after_full["gen2"] == 0
    assert after_full["threshold0"] == gc.get_threshold()[0]
    blocks_now = sys.getallocatedblocks()  # 0 without pymalloc (PYTHONMALLOC=malloc)
    if blocks_now:
        assert blocks_now / 2 < after_full["allocated_blocks"] < blocks_now * 2
    else:
        assert after_full["allocated_blocks"] == 0
    rss_now = psutil.Process().memory_info().rss
    assert rss_now / 2 < after_full["rss"] < rss_now * 2


def test_heap_interval_writes_counters_from_a_daemon_thread_until_stop(trace_path):
    with gc_disabled():
        trace = record(trace_path, lambda: time.sleep(0.3), gc=True, heap_interval=0.02)
    heap = of_kind(trace, "HeapCounters")
    assert len(heap) >= 3
    assert not of_kind(trace, "GCStart", "GCDone")
    assert len({e.tid for e in heap}) == 1
    assert "pytrace-heap" not in {t.name for t in threading.enumerate()}


def test_other_tools_callbacks_run_outside_the_recorded_pause(trace_path):
    def other_tool(phase, info):
        pytrace.log("other tool", phase)

    gc.callbacks.append(other_tool)
    try:
        callbacks_before = list(gc.callbacks)
        with gc_disabled():
            trace = record(trace_path, lambda: gc.collect(0), gc=True)
        assert gc.callbacks == callbacks_before
    finally:
        gc.callbacks.remove(other_tool)
    events = normalized(of_kind(trace, "GCStart", "GCDone", "UserLog"))
    assert [e[0] if e[0] != "UserLog" else e[-1] for e in events] == [
        "start", "GCStart", "GCDone", "stop"]


class StopsTracing:
    def __del__(self):
        pytrace.stop()


class StartsTracing:
    def __init__(self, path):
        self.path = path

    def __del__(self):
        pytrace.start(self.path, **GC_ONLY)


def garbage(obj):
    """Make ``obj`` cyclic garbage: only a collection finalizes it."""
    obj.cycle = obj


def test_stop_inside_a_collection_closes_it_at_the_stop(trace_path):
    def program():
        garbage(StopsTracing())
        gc.collect()

    with gc_disabled():
        with pytrace.trace(trace_path, **GC_ONLY) as session:
            program()
    assert not any(isinstance(getattr(cb, "__self__", None), gcevents.GCHook)
                   for cb in gc.callbacks)
    trace = pytrace.read(trace_path)
    assert gc_events(trace) == [("GCStart", 2, ()), ("GCDone", 0, 0)]
    [line] = session.summary_lines()
    assert SUMMARY.fullmatch(line).groups()[:4] == ("1", "0", "0", "1")
    assert line.endswith("; 1 still running when tracing stopped")


def test_start_inside_a_collection_records_only_later_ones(trace_path):
    with gc_disabled():
        garbage(StartsTracing(trace_path))
        gc.collect()
        assert pytrace.session.current() is not None
        gc.collect(1)
        pytrace.stop()
    trace = pytrace.read(trace_path)
    assert gc_events(trace) == [("GCStart", 1, ()), ("GCDone", 0, 0)]


class WaitsForStop:
    """Keeps its collection running until ``until()`` is true."""

    def __init__(self, entered: threading.Event, until):
        self.entered = entered
        self.until = until

    def __del__(self):
        self.entered.set()
        deadline = time.monotonic() + 10
        while not self.until() and time.monotonic() < deadline:
            time.sleep(0.001)


def stop_while_another_thread_collects(trace_path, until):
    """Start tracing, make a thread collect a ``WaitsForStop``, stop tracing
    from this thread while that collection runs; return the session."""
    entered = threading.Event()
    with gc_disabled():
        session = pytrace.start(trace_path, **GC_ONLY)
        hook = find_hook()

        def collect():
            garbage(WaitsForStop(entered, lambda: until(session, hook)))
            gc.collect()

        worker = threading.Thread(target=collect)
        worker.start()
        assert entered.wait(10)
        pytrace.stop()
        worker.join()
    return session


def test_stop_waits_for_a_collection_running_on_another_thread(trace_path):
    session = stop_while_another_thread_collects(
        trace_path, until=lambda session, hook: not hook.recording)
    trace = pytrace.read(trace_path)
    assert_whole_pairs(trace)
    [start, (done, collected, uncollectable)] = gc_events(trace)
    assert (start, done, uncollectable) == (("GCStart", 2, ()), "GCDone", 0)
    assert collected >= 1
    assert "still running" not in session.summary_lines()[0]


def test_collection_outliving_the_drain_is_closed_at_the_stop(trace_path, monkeypatch):
    monkeypatch.setattr(gcevents, "DRAIN_TIMEOUT", 0.05)
    session = stop_while_another_thread_collects(
        trace_path, until=lambda session, hook: session.recorder.closed)
    trace = pytrace.read(trace_path)
    starts = of_kind(trace, "GCStart")
    assert gc_events(trace) == [("GCStart", 2, ()), ("GCDone", 0, 0)]
    assert {e.tid for e in of_kind(trace, "GCStart", "GCDone")} == {starts[0].tid}
    assert session.summary_lines()[0].endswith("; 1 still running when tracing stopped")


INJECTION_POINTS = buffer.FLUSH_POINTS + buffer.INTERN_POINTS


def descend(depth: int) -> None:
    """Each depth is a new stack for the sampler to intern."""
    if depth:
        descend(depth - 1)
    else:
        time.sleep(0.002)


@pytest.mark.parametrize("point", INJECTION_POINTS)
def test_collections_inside_pytraces_own_writing_are_recorded_whole(
        trace_path, monkeypatch, point):
    ran_inside = []

    def collect_here(where):
        if where == point and pytrace.session.current() is not None:
            before = collections_so_far()[0]
            gc.collect(0)
            ran_inside.append(collections_so_far()[0] > before)

    def program():
        for i in range(60):
            pytrace.log("step", f"message {i}")
            descend(i % 12)

    monkeypatch.setattr(buffer, "injector", collect_here)
    with gc_disabled():
        before = collections_so_far()
        with pytrace.trace(trace_path, **GC_ONLY, sample_rate=400, buffer_size=256):
            program()
        after = collections_so_far()
    monkeypatch.setattr(buffer, "injector", None)

    assert any(ran_inside), f"no collection ran at {point}"
    assert pytrace.validate(trace_path).valid
    trace = pytrace.read(trace_path)
    assert_whole_pairs(trace)
    starts = of_kind(trace, "GCStart")
    assert [sum(e.arg("generation") == g for e in starts) for g in range(3)] == [
        a - b for a, b in zip(after, before)]
