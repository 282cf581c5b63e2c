"""Child processes: never in the parent's trace; each in its own when asked.

A traced program that forks (``os.fork``, ``multiprocessing`` with the
``fork`` start method) or starts new interpreters (``subprocess``,
``multiprocessing`` with ``spawn``): its own trace stays valid and complete
and holds nothing a child did.  With ``children=True`` (library) or
``--children`` (``pytrace run``), every such child that runs Python writes
its own valid trace, ``<stem>.<pid>.pytrace`` (``pytrace.children``), and
the environment the parent had is restored when tracing stops.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pytrace
from pytrace.children import child_path
from traced_processes import TIMEOUT, function_names, run_traced, write_program

FAMILY = """
    import multiprocessing, os, subprocess, sys

    def work_in_child():
        return sum(range(100))

    def start_children():
        \"\"\"One child of each kind; prints "kind pid" for each.\"\"\"
        for method in ("fork", "spawn"):
            process = multiprocessing.get_context(method).Process(target=work_in_child)
            process.start()
            process.join()
            assert process.exitcode == 0, process.exitcode
            print(method, process.pid)
        child = subprocess.run([sys.executable, __file__, "child"], capture_output=True,
                               text=True, check=True)
        print("subprocess", child.stdout.strip())
        pid = os.fork()
        if pid == 0:
            work_in_child()
            os._exit(0)
        os.waitpid(pid, 0)
        print("os.fork", pid)

    if __name__ == "__main__":
        if sys.argv[1:] == ["child"]:
            work_in_child()
            print(os.getpid())
        elif sys.argv[1:2] == ["api"]:
            import pytrace
            with pytrace.trace(sys.argv[2], children=sys.argv[3] == "children"):
                start_children()
            print("env", os.environ.get("PYTRACE_CHILDREN"), os.environ.get("PYTHONPATH"))
        else:
            start_children()
"""

#: Children whose trace is finished at their exit (an ``os.fork`` child
#: that leaves by ``os._exit`` is cut short at its last flush instead).
CLEAN_EXITS = ("fork", "spawn", "subprocess")


def child_pids(stdout: str) -> dict[str, int]:
    return {kind: int(pid) for kind, pid in
            (line.rsplit(" ", 1) for line in stdout.splitlines() if not line.startswith("env "))}


def run_family(tmp_path, face: str, follow: bool):
    script = write_program(tmp_path, "family", FAMILY)
    out = tmp_path / "family.pytrace"
    env = {k: v for k, v in os.environ.items() if k != "PYTRACE_CHILDREN"}
    if face == "cli":
        proc = run_traced(out, script, cwd=tmp_path, env=env,
                          flags=("--children",) if follow else ())
    else:
        proc = subprocess.run([sys.executable, str(script), "api", str(out),
                               "children" if follow else "alone"],
                              capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc, out


def assert_parent_trace_is_its_own(out) -> None:
    report = pytrace.validate(out)
    assert report.valid, [str(p) for p in report.problems]
    trace = pytrace.read(out)
    assert trace.meta["pid"] != ""
    assert "work_in_child" not in function_names(trace)
    assert "start_children" in function_names(trace)


@pytest.mark.parametrize("face", ["cli", "api"])
def test_without_children_option_no_child_writes_a_trace(tmp_path, face):
    proc, out = run_family(tmp_path, face, follow=False)
    assert sorted(child_pids(proc.stdout)) == ["fork", "os.fork", "spawn", "subprocess"]
    assert_parent_trace_is_its_own(out)
    assert sorted(p.name for p in tmp_path.glob("*.pytrace")) == ["family.pytrace"]


@pytest.mark.parametrize("face", ["cli", "api"])
def test_with_children_option_every_python_child_has_its_own_trace(tmp_path, face):
    proc, out = run_family(tmp_path, face, follow=True)
    pids = child_pids(proc.stdout)
    assert_parent_trace_is_its_own(out)
    for kind, pid in pids.items():
        path = child_path(str(out), pid)
        assert os.path.exists(path), f"no trace for the {kind} child"
        report = pytrace.validate(path)
        assert report.errors == [], (kind, [str(p) for p in report.errors])
        if kind in CLEAN_EXITS:
            assert report.valid, (kind, [str(p) for p in report.problems])
            trace = pytrace.read(path)
            assert "work_in_child" in function_names(trace), kind
            assert trace.meta["pid"] == str(pid)
    if face == "api":  # the environment is the program's own again after stop
        assert "env None None" in proc.stdout


def test_child_path_names():
    assert child_path("/t/app.pytrace", 42) == "/t/app.42.pytrace"
    assert child_path("/t/app.trace", 7) == "/t/app.trace.7.pytrace"


def test_an_existing_sitecustomize_still_runs_in_traced_children(tmp_path):
    """The bootstrap chains to the ``sitecustomize`` the child would have run."""
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sitecustomize.py").write_text("import os\nos.environ['CUSTOMIZED'] = 'yes'\n")
    script = write_program(tmp_path, "kid", """
        import os, subprocess, sys
        code = "import os, sys; print(os.environ.get('CUSTOMIZED'), sys.path[1:2])"
        print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip())
    """)
    out = tmp_path / "kid.pytrace"
    env = {**os.environ, "PYTHONPATH": str(custom)}
    proc = run_traced(out, script, cwd=tmp_path, env=env, flags=("--children",))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"yes {[str(custom)]}"  # no bootstrap dir left in sys.path
    assert len(list(tmp_path.glob("kid.*.pytrace"))) == 1
