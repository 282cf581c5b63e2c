"""Stress: many threads, tiny buffers and gc storms whose callbacks emit events.

Where ``tests/test_reentrancy.py`` forces one interleaving at a time, this
test lets the interpreter find them: 16 threads race to intern the same new
strings, functions and stacks through buffers that flush every few records,
while frequent collections (explicit and automatic, with a low threshold)
run a gc callback that emits its own events, with new strings, in whatever
tracer code the collecting thread was in, a periodic flusher flushes every
thread's slot from its own thread, and a short switch interval makes the GIL
change hands often.  Whatever happened, the trace must validate and hold
every emitted event exactly once, and no thread may deadlock.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import sys
import threading
import time
import traceback
from collections import Counter

import pytest

from pytrace import buffer
from pytrace.recorder import MIN_BUFFER_SIZE, Recorder
from test_reentrancy import Ledger, check_trace

THREADS = 16
ROUNDS = 250
#: Every worker collects explicitly this often (cycling through generations).
COLLECT_EVERY = 20
#: Buffers hold a header and one or two records: nearly every write flushes.
TINY_BUFFER = MIN_BUFFER_SIZE + 16
#: Seconds between the periodic flusher's rounds: it races the owners' own flushes.
FLUSH_INTERVAL = 0.001
#: A worker still running after this long is deadlocked (a run takes well
#: under a second); waiting forever would hang the whole suite instead.
DEADLOCK_SECONDS = 60


@contextlib.contextmanager
def gc_storm(recorder: Recorder, ledger: Ledger, errors: list):
    """Collections every 100 allocations, each emitting two events with new
    strings from whatever thread collects; the GIL switching every 10 µs."""
    collections = itertools.count()

    def on_gc(phase: str, info: dict) -> None:
        try:
            ledger.log(recorder.slots.current(), f"gc {phase}",
                       f"gc {phase} {info['generation']} #{next(collections)}")
        except BaseException as exc:  # an exception here would only be printed
            errors.append(exc)

    threshold = gc.get_threshold()
    switch_interval = sys.getswitchinterval()
    gc.callbacks.append(on_gc)
    gc.set_threshold(100, 5, 5)
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*threshold)
        gc.callbacks.remove(on_gc)


def run_workers(recorder: Recorder, ledger: Ledger, errors: list) -> list[threading.Thread]:
    """Run the workers; return those still running at the deadline (daemons,
    so that a deadlock fails this test instead of hanging the interpreter)."""
    barrier = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(ROUNDS):
                slot = recorder.slots.current()
                ledger.log(slot, "worker", f"thread {n} round {i}")
                if i % 5 == 0:
                    # Names and functions shared by all threads: they race to define them.
                    ledger.task(slot, f"shared task {i}", f"func {i % 20}", n + 1)
                if i % COLLECT_EVERY == 0:
                    gc.collect(i // COLLECT_EVERY % 3)
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)
        finally:
            # The OS may reuse this ident for a later thread, which must get its own slot.
            recorder.slots.retire(threading.get_ident())

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLOCK_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


def stacks_of_every_thread() -> str:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items())


def test_threads_and_gc_storms_lose_and_duplicate_nothing(trace_path):
    ledger = Ledger()
    errors: list[BaseException] = []
    recorder = Recorder(trace_path, buffer_size=TINY_BUFFER, flush_interval=FLUSH_INTERVAL)
    with gc_storm(recorder, ledger, errors):
        stuck = run_workers(recorder, ledger, errors)
    if stuck:
        # Not closed: closing would wait for the same lock forever.
        pytest.fail(f"{len(stuck)} workers deadlocked:\n{stacks_of_every_thread()}")
    recorder.close()

    assert errors == []
    check = check_trace(trace_path, ledger)
    assert check.problems == []
    decoded = Counter((e.tid, e.name) for e in check.trace.events)
    assert decoded == Counter((tid, kind) for tid, kind, _ in ledger.emitted)
    worker_tids = {tid for tid, _, args in ledger.emitted if args[1] == "worker"}
    assert len(worker_tids) == THREADS
    assert len(check.trace.strings) > THREADS * ROUNDS
    gc_events = sum(1 for _, _, args in ledger.emitted if args[1].startswith("gc "))
    assert gc_events >= 2 * ROUNDS // COLLECT_EVERY


class YieldingThreadFlags(threading.local):
    """``buffer``'s per-thread flags, giving the GIL away on every read: the
    flush's checks then cross a thread switch each time, as they do now and
    then when the interpreter switches threads at a call."""

    def __getattribute__(self, name):
        time.sleep(0)
        return super().__getattribute__(name)


def test_flushes_racing_on_one_slot_write_its_batches_in_order(trace_path, monkeypatch):
    """The owner and other threads flushing the same slot at once: exactly
    one flush may run, so the batches reach the file in sequence order.  (A
    flag tested, then a call, then set let two flushes through; one of them
    wrote batch n+1 before the other wrote batch n.)"""
    monkeypatch.setattr(buffer, "_this_thread", YieldingThreadFlags())
    recorder = Recorder(trace_path, buffer_size=TINY_BUFFER, flush_interval=0)
    ledger = Ledger()
    slot = recorder.slots.current()
    done = threading.Event()

    def flush_again_and_again() -> None:
        while not done.is_set():
            slot.flush()

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    racers = [threading.Thread(target=flush_again_and_again) for _ in range(3)]
    try:
        for racer in racers:
            racer.start()
        for i in range(20_000):
            ledger.log(slot, "owner", f"round {i % 50}")
    finally:
        done.set()
        for racer in racers:
            racer.join()
        sys.setswitchinterval(switch_interval)
    recorder.close()

    check = check_trace(trace_path, ledger)
    assert check.problems == []
