"""A process killed with SIGKILL leaves a trace that reads up to the kill.

``pytrace run`` traces a busy multi-threaded program (small buffers: many
batches per second from every thread) that is killed at random moments.
Each time, the complete part of the file (walked independently of the
reader, by the lengths in ``docs/format.md``) must come back from
``pytrace.read`` whole, batch for batch and record for record, with a
``TraceWarning`` naming the cut, and ``pytrace.validate`` must report the cut
at exactly that byte and no error.

A quiet program (its only thread asleep) loses nothing flushed before the
kill either: the periodic flush (``--flush-interval``) writes its events even
though no buffer ever fills; without it, they are lost (the control case).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
import warnings

import pytest

import pytrace
from pytrace import TraceWarning
from traced_processes import (
    TIMEOUT, complete_layout, complete_prefix_end, function_names, pytrace_run_argv,
    records_per_thread, write_program,
)

BUSY = """
    import threading
    import time

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def spin():
        while True:
            fib(6)
            time.sleep(0.002)

    for _ in range(3):
        threading.Thread(target=spin, daemon=True).start()
    print("ready", flush=True)
    spin()
"""

QUIET = """
    import time

    def before_the_sleep():
        return 42

    before_the_sleep()
    print("ready", flush=True)
    time.sleep(120)
"""

TRIALS = 20
SEED = 7


def start_traced(tmp_path, source: str, out, flags) -> subprocess.Popen:
    script = write_program(tmp_path, "program", source)
    proc = subprocess.Popen(pytrace_run_argv(out, script, flags=flags), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=TIMEOUT)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def check_killed_trace(out) -> tuple[int, int]:
    """The reader returns exactly the complete part of ``out`` and reports the
    cut there; returns (batches, records) recovered."""
    data = out.read_bytes()
    layout = complete_layout(data)
    with pytest.warns(TraceWarning, match="cut short"):
        trace = pytrace.read(out)
    assert trace.footer is None
    assert trace.batches == len(layout.batches)
    assert trace.threads == records_per_thread(layout)
    report = pytrace.validate(out)
    assert report.errors == []
    assert report.cut is not None and report.cut.offset == complete_prefix_end(data)
    assert report.batches == len(layout.batches)
    return len(layout.batches), sum(len(b.records) for b in layout.batches)


def test_sigkill_at_random_moments_loses_only_the_unwritten_tail(tmp_path):
    rng = random.Random(SEED)
    flags = ("--buffer-size", "2048", "--flush-interval", "0.05")
    recovered_batches = recovered_records = 0
    threads_seen = set()
    for trial in range(TRIALS):
        out = tmp_path / f"killed{trial}.pytrace"
        proc = start_traced(tmp_path, BUSY, out, flags)
        time.sleep(rng.uniform(0.0, 0.3))
        kill(proc)
        batches, records = check_killed_trace(out)
        assert batches > 0, f"trial {trial}: nothing was written before the kill"
        recovered_batches += batches
        recovered_records += records
        threads_seen.add(len(records_per_thread(complete_layout(out.read_bytes()))))
    # The program is multi-threaded: some trial must show its worker threads' batches.
    assert max(threads_seen) >= 4
    print(f"\ncrash safety: {TRIALS} SIGKILL trials, {recovered_batches} complete batches "
          f"({recovered_records} records) recovered, every one read back, cut reported")


@pytest.mark.parametrize("flush_interval, kept", [("0.1", True), ("0", False)],
                         ids=["periodic-flush", "control-no-flush"])
def test_quiet_program_killed_keeps_events_of_the_last_flush_interval(
        tmp_path, flush_interval, kept):
    out = tmp_path / "quiet.pytrace"
    proc = start_traced(tmp_path, QUIET, out, ("--flush-interval", flush_interval))
    time.sleep(0.6)  # several flush intervals: the flusher runs at least once
    kill(proc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        trace = pytrace.read(out)
    assert ("before_the_sleep" in function_names(trace)) == kept
    check_killed_trace(out)
