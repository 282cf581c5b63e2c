"""The periodic flusher thread against a program that stops tracing at awkward moments.

One ``pytrace-flusher`` thread serves every recorder (``pytrace/recorder.py``).
Each case runs in a child process with a time limit, because the failure
these tests guard against is a deadlock.
"""

from __future__ import annotations

import os
import textwrap

import pytest

import pytrace
from pytrace import core
from traced_processes import run_python

pytestmark = pytest.mark.parametrize(
    "pytrace_core", core.NAMES, indirect=True, ids=[f"core={name}" for name in core.NAMES])

CTRL_C_WHILE_THE_FLUSHER_WRITES = """
    import signal, sys, threading, time
    import pytrace
    from pytrace import buffer

    in_flush = threading.Event()

    def slow_flusher_hand_over(point):
        if threading.current_thread().name == "pytrace-flusher" and point == "flush:hand-over" \\
                and not in_flush.is_set():
            in_flush.set()
            time.sleep(0.5)

    def ctrl_c(*_):
        raise KeyboardInterrupt

    buffer.injector = slow_flusher_hand_over
    signal.signal(signal.SIGALRM, ctrl_c)
    pytrace.start(sys.argv[1], flush_interval=0.02, calls=False)
    for i in range(200):
        pytrace.log("before", f"event {i}")
    assert in_flush.wait(10)
    signal.setitimer(signal.ITIMER_REAL, 0.1)  # while stop() waits for the flusher
    try:
        pytrace.stop()
    except KeyboardInterrupt:
        print("interrupted")
    buffer.injector = None
    print([t.name for t in threading.enumerate() if t.name.startswith("pytrace-")])
"""

STOP_FROM_A_GC_CALLBACK_ON_THE_FLUSHER = """
    import gc, sys, threading, time
    import pytrace

    stopped = []

    def stop_on_the_flusher(phase, info):
        if phase == "start" and not stopped and threading.current_thread().name == "pytrace-flusher":
            stopped.append(True)
            pytrace.stop()

    gc.callbacks.append(stop_on_the_flusher)
    pytrace.start(sys.argv[1], flush_interval=0.002, calls=False)
    gc.set_threshold(1)
    deadline = time.monotonic() + 20
    while not stopped and time.monotonic() < deadline:
        for i in range(50):
            pytrace.log("busy", f"event {i}")
        time.sleep(0.001)
    gc.set_threshold(700)
    print("stopped on the flusher" if stopped else "no collection on the flusher")
    time.sleep(0.1)
    pytrace.start(sys.argv[2], flush_interval=0.01, calls=False)  # tracing still works
    pytrace.log("after", "again")
    pytrace.stop()
    print("restarted")
"""


def run(tmp_path, core_name: str, program: str, *traces: str):
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(program))
    return run_python(script, *(str(tmp_path / t) for t in traces), cwd=tmp_path,
                      env={**os.environ, "PYTRACE_CORE": core_name})


def test_ctrl_c_while_stop_waits_for_the_flusher_leaves_a_whole_trace(tmp_path, pytrace_core):
    done = run(tmp_path, pytrace_core, CTRL_C_WHILE_THE_FLUSHER_WRITES, "t.pytrace")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["interrupted", "[]"]
    report = pytrace.validate(tmp_path / "t.pytrace")
    assert report.valid, report
    trace = pytrace.read(tmp_path / "t.pytrace")
    assert [e.arg("message") for e in trace.events if e.name == "UserLog"] == [
        f"event {i}" for i in range(200)]


def test_stopping_from_a_gc_callback_on_the_flusher_thread_does_not_deadlock(
        tmp_path, pytrace_core):
    done = run(tmp_path, pytrace_core, STOP_FROM_A_GC_CALLBACK_ON_THE_FLUSHER, "t.pytrace", "again.pytrace")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["stopped on the flusher", "restarted"]
    for name in ("t.pytrace", "again.pytrace"):
        report = pytrace.validate(tmp_path / name)
        assert report.valid, report
