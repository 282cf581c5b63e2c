"""A trace started with ``pytrace.start()`` and never stopped is finished when
the interpreter exits (``session._finish_at_exit``), however the program
ends, and the program ends exactly as it would untraced."""

from __future__ import annotations

import os

import pytest

import pytrace
from pytrace import core
from traced_processes import run_python, write_program

PROGRAM = """
    import sys
    import threading
    import time

    import pytrace

    if sys.argv[1] != "-":
        pytrace.start(sys.argv[1])
    ending = sys.argv[2]


    def work(n):
        return sum(range(n))


    def late_worker():
        time.sleep(0.05)
        print("late worker", work(10))


    def spin():
        while True:
            work(100)


    if ending == "late thread":
        threading.Thread(target=late_worker, name="late").start()
    if ending == "daemon thread":
        threading.Thread(target=spin, name="spinner", daemon=True).start()
        time.sleep(0.02)
    print("result", work(1000))
    if ending == "sys.exit":
        sys.exit(3)
    if ending == "exception":
        raise ValueError("boom")
"""

ENDINGS = ["end of script", "sys.exit", "exception", "late thread", "daemon thread"]


@pytest.mark.parametrize("core_name", core.NAMES)
@pytest.mark.parametrize("ending", ENDINGS)
def test_a_trace_never_stopped_is_finished_at_exit(tmp_path, ending, core_name):
    script = write_program(tmp_path, "program", PROGRAM)
    env = {**os.environ, "PYTRACE_CORE": core_name}
    untraced = run_python(script, "-", ending, cwd=tmp_path, env=env)
    out = tmp_path / "program.pytrace"
    traced = run_python(script, str(out), ending, cwd=tmp_path, env=env)

    assert (traced.returncode, traced.stdout, traced.stderr) == \
        (untraced.returncode, untraced.stdout, untraced.stderr)
    assert untraced.returncode == {"sys.exit": 3, "exception": 1}.get(ending, 0)
    trace = pytrace.read(out)
    assert trace.complete and trace.warnings == []
    names = {e.tid: e.arg("name") for e in trace.events if e.name == "ThreadStart"}
    workers = {names[e.tid] for e in trace.events
               if e.name == "CallEnter" and e.arg("func").name == "work"}
    assert "MainThread" in workers
    if ending == "late thread":  # it ended after the main thread: its calls are in
        assert "late" in workers
