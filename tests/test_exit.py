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


ALIVE_AFTER_TEARDOWN = """
    import atexit, gc, sys, weakref

    import pytrace
    import pytrace.children
    import pytrace.hooks.sampler


    class Sentinel:
        pass


    # A trace with the default hooks and samples, parked, then ended: what
    # ``pytest --pytrace`` leaves behind at the interpreter's exit.
    pytrace.start(sys.argv[1], calls=False, sample_rate=100)
    pytrace.session.park()
    pytrace.session.unpark()
    # Python modules only: an extension module's dict lives as long as the
    # interpreter (and holds nothing of pytest's).
    modules = [name for name, module in sys.modules.items()
               if name.startswith("pytrace.") and module.__file__.endswith(".py")]
    alive = {}
    for name in modules:
        sentinel = Sentinel()
        sys.modules[name].__dict__["_sentinel"] = sentinel
        alive[name] = weakref.ref(sentinel)
    del sentinel
    # What the interpreter does at exit: runs and drops the atexit handlers,
    # forgets the modules, collects.
    atexit._run_exitfuncs()
    atexit._clear()
    for name in [*modules, "pytrace"]:
        del sys.modules[name]
    del pytrace
    gc.collect()
    print(sorted(name for name, ref in alive.items() if ref() is not None))
"""


@pytest.mark.parametrize("core_name", core.NAMES)
def test_nothing_the_interpreter_holds_at_exit_keeps_a_pytrace_module_alive(tmp_path, core_name):
    """The interpreter keeps its fork callbacks past the modules' teardown.
    Under pytest a pytrace module's globals lead to pytest's ``Config`` (its
    ``__loader__`` is pytest's assertion-rewriting hook), so one pytrace
    module kept alive there kept all of pytest alive through the exit's first
    collection: ``pytest --pytrace`` took ~7 ms longer to end on 3.11
    (``pytrace.forks``)."""
    script = write_program(tmp_path, "program", ALIVE_AFTER_TEARDOWN)
    done = run_python(script, str(tmp_path / "t.pytrace"), cwd=tmp_path,
                      env={**os.environ, "PYTRACE_CORE": core_name})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


FAILING_FORK_CALLBACK = """
    import os, sys

    from pytrace import forks


    def fails():
        raise RuntimeError("boom in a fork callback")


    def fails_too():
        raise ValueError("another boom")


    def mark(text):
        with open(sys.argv[1], "a") as out:
            out.write(text + " ")


    def marks():
        mark("parent" if os.getpid() == parent else "child")


    def registers():
        mark("registers")
        forks.register(before=late)


    def late():
        mark("late")


    parent = os.getpid()
    forks.register(before=registers)
    forks.register(before=marks, after_in_parent=fails, after_in_child=fails)
    forks.register(before=fails, after_in_parent=marks, after_in_child=marks)
    forks.register(after_in_parent=fails_too)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_callbacks_each_run_once_though_some_fail(tmp_path):
    """Through ``pytrace.forks`` as with ``os.register_at_fork``: a callback
    that raises does not skip the rest, every failure is reported, and a
    callback registered during a fork waits for the next one."""
    script = write_program(tmp_path, "program", FAILING_FORK_CALLBACK)
    marks = tmp_path / "marks"
    done = run_python(script, str(marks), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(marks.read_text().split()) == ["child", "parent", "parent", "registers"]
    assert "boom in a fork callback" in done.stderr
    assert "another boom" in done.stderr
