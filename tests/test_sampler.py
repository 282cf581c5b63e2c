"""CPU samples: every traced thread's stack, ``sample_rate`` times a second,
from a daemon thread that runs only while tracing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

import pytrace
from eventlog import gc_disabled, of_kind, record, stack_names
from pytrace.session import PACKAGE_DIR

RATE = 100


def spin(seconds: float) -> None:
    """Keep the CPU busy in this very function for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def spin_in_worker(seconds: float) -> None:
    pytrace.log("worker", "started")  # gives the thread its slot: it is traced
    spin(seconds)


def innermost_share(samples, name: str) -> float:
    return Counter(stack_names(e)[0] for e in samples)[name] / len(samples)


def test_samples_name_the_busy_function_at_roughly_the_rate(trace_path):
    def program():
        with pytrace.region("busy"):
            spin(0.5)

    trace = record(trace_path, program, sample_rate=RATE)
    start, end = of_kind(trace, "UserRegionStart", "UserRegionEnd")
    samples = [e for e in of_kind(trace, "CPUSample")
               if e.arg("thread") == start.tid and start.ts <= e.ts <= end.ts]
    expected = RATE * (end.ts - start.ts) / 1e9
    assert len(samples) >= 0.3 * expected
    assert innermost_share(samples, "spin") >= 0.9
    assert {stack_names(e)[1] for e in samples if stack_names(e)[0] == "spin"} == {
        f"{test_samples_name_the_busy_function_at_roughly_the_rate.__name__}.<locals>.program"}


def test_samples_every_traced_thread_and_nothing_else(trace_path):
    stop_untraced = threading.Event()

    def untraced():
        while not stop_untraced.wait(0.001):
            pass

    def program():
        quiet = threading.Thread(target=untraced)
        worker = threading.Thread(target=spin_in_worker, args=(0.3,))
        quiet.start()
        worker.start()
        pytrace.log("main", "started")
        spin(0.3)
        worker.join()
        stop_untraced.set()
        quiet.join()

    with gc_disabled():  # heap counters come from the heap ticker only
        trace = record(trace_path, program, sample_rate=RATE, heap_interval=0.01, gc=True)
    logs = {e.arg("category"): e.tid for e in of_kind(trace, "UserLog")}
    traced = {logs["main"], logs["worker"]}
    samples = of_kind(trace, "CPUSample")
    sampled = {e.arg("thread") for e in samples}
    assert sampled == traced
    [sampler_tid] = {e.tid for e in samples}
    [heap_ticker_tid] = {e.tid for e in of_kind(trace, "HeapCounters")}
    assert not {heap_ticker_tid, sampler_tid} & (sampled | traced)
    for tid in traced:
        assert innermost_share([e for e in samples if e.arg("thread") == tid], "spin") >= 0.5
    assert not any(frame.file.startswith(PACKAGE_DIR)
                   for e in samples for frame in e.arg("stack"))


def test_sampler_runs_only_while_tracing_with_a_rate(trace_path, tmp_path):
    seen = []

    def program():
        seen.append({t.name for t in threading.enumerate()})
        spin(0.1)

    sampled = record(trace_path, program, sample_rate=RATE)
    unsampled = record(tmp_path / "unsampled.pytrace", program, sample_rate=0)
    assert ["pytrace-sampler" in names for names in seen] == [True, False]
    assert "pytrace-sampler" not in {t.name for t in threading.enumerate()}
    assert of_kind(sampled, "CPUSample")
    assert not of_kind(unsampled, "CPUSample")
    # With nothing else recorded, the thread that started tracing is still sampled.
    assert len({e.arg("thread") for e in of_kind(sampled, "CPUSample")}) == 1


def test_tracing_stopped_from_inside_a_round_of_samples_ends_the_sampler(
        trace_path, monkeypatch):
    """A stop that runs on the sampler's own thread, inside a round (a GC
    callback or a finalizer there can stop tracing), still ends that thread."""
    from pytrace.hooks import sampler as sampler_module

    sample = sampler_module.Sampler._sample
    stopped = threading.Event()

    def stop_inside(self, slot):
        sample(self, slot)
        if not stopped.is_set():
            stopped.set()
            pytrace.stop()

    monkeypatch.setattr(sampler_module.Sampler, "_sample", stop_inside)
    pytrace.start(trace_path, calls=False, sample_rate=RATE)
    assert stopped.wait(10), "no round of samples ran"
    deadline = time.monotonic() + 10
    while any(t.name == "pytrace-sampler" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the sampler thread is still there"
        time.sleep(0.01)
    assert pytrace.session.current() is None
    assert pytrace.validate(trace_path).valid


# 3.13 warns after the parent's at-fork handlers ran, i.e. after pytrace's
# threads resumed, so the fork still looks multi-threaded there.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_pauses_pytraces_threads_and_they_resume_in_the_parent(trace_path):
    child_status = []

    def program():
        spin(0.1)
        pid = os.fork()
        if pid == 0:  # the child: pytrace stopped itself there; leave at once
            os._exit(0 if pytrace.session.current() is None else 1)
        child_status.append(os.waitpid(pid, 0)[1])
        spin(0.1)

    with gc_disabled():  # heap counters come from the heap ticker only
        trace = record(trace_path, program, sample_rate=RATE, heap_interval=0.01, gc=True)
    assert child_status == [0]
    # Each ticker ran as one thread before the fork and as a new one after it.
    assert len({e.tid for e in of_kind(trace, "CPUSample")}) == 2
    assert len({e.tid for e in of_kind(trace, "HeapCounters")}) == 2


def test_ticks_taken_in_the_middle_of_the_programs_own_flushes(tmp_path):
    """On the C core the thread running Python takes a tick wherever it is,
    inside pytrace's writer too (a flush of its own slot, holding the
    writer's lock): the sample must not wait for that lock.  Tiny buffers
    and a fast rate make it happen; a child process, so that a deadlock
    fails the test instead of hanging the suite."""
    path = tmp_path / "flushing.pytrace"
    program = f"""
import time, pytrace
from pytrace import session
session.start({str(path)!r}, calls=False, sample_rate=1000, buffer_size=256)
end = time.perf_counter() + 0.2
while time.perf_counter() < end:
    pytrace.log("flush", "often")
session.stop()
"""
    env = {**os.environ, "PYTRACE_CORE": pytrace.core.name}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    trace = pytrace.read(path)
    assert pytrace.validate(path).valid
    assert len(of_kind(trace, "UserLog")) >= 1000
    if pytrace.core.name == "c":
        assert len(of_kind(trace, "CPUSample")) >= 20
    # (The Python core's sampler thread may get no sample in at all here: it
    # waits for the GIL, which the program, making a system call every few
    # microseconds, takes back first each time: see pytrace/_beat.c.)


def test_the_ticks_own_work_is_not_recorded_as_the_programs_calls(trace_path):
    """On the C core the thread running Python takes the ticks: a tick that
    called ``threading.enumerate()`` or a thread's properties there showed
    them as the traced program's calls."""
    def program():
        spin(0.3)

    trace = record(trace_path, program, calls=True, sample_rate=500, heap_interval=0.002,
                   gc=True)
    assert of_kind(trace, "CPUSample") and of_kind(trace, "HeapCounters")
    called = {e.arg("func").name for e in of_kind(trace, "CallEnter")}
    assert not {name for name in called if name.split(".")[0] in ("Thread", "enumerate")}
    assert not [e for e in of_kind(trace, "CallEnter")
                if e.arg("func").file == threading.__file__]
