"""pytrace next to other tools that hook the interpreter: none of them breaks.

- coverage (``pytest --cov --pytrace``): the coverage report is the same as
  without pytrace, and each test's trace is valid;
- cProfile started first: pytrace takes another ``sys.monitoring`` tool id
  (3.12+) and both see every call;
- cProfile started while pytrace runs: on 3.12+ cProfile refuses clearly
  (``ValueError``: pytrace holds the profiler tool id) and the program can go
  on; pytrace's trace is unharmed;
- a debugger's ``sys.settrace``: it sees the same line events as without
  pytrace, and pytrace records every call.

Each scenario runs in its own interpreter (the hooks are process-wide).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import pytrace
from traced_processes import TIMEOUT, write_program

WORK = """
    import json, sys

    def leaf(n):
        return n * 2

    def work():
        return sum(leaf(i) for i in range(50))
"""


def run_json(tmp_path, body: str, *args) -> dict:
    script = write_program(tmp_path, "scenario", textwrap.dedent(WORK) + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def calls_of(path, name: str) -> int:
    return sum(1 for e in pytrace.read(path).events
               if e.name == "CallEnter" and e.arg("func").name == name)


def test_cprofile_first_then_pytrace_both_see_every_call_or_pytrace_refuses(tmp_path):
    """On 3.12+ pytrace takes another tool id and both work; where it would
    have to replace cProfile's profile function (the setprofile backend),
    it must refuse with a ``TracerError`` saying so, never silently blind cProfile."""
    result = run_json(tmp_path, """
        import cProfile, pstats, pytrace
        from pytrace.session import TracerError
        profile = cProfile.Profile()
        profile.enable()
        refused = tool = None
        try:
            with pytrace.trace(sys.argv[1]):
                tool = getattr(sys, "monitoring", None) and sys.monitoring.get_tool(2)
                work()
        except TracerError as exc:
            refused = str(exc)
            work()
        profile.disable()
        calls = {f[2]: s[1] for f, s in pstats.Stats(profile).stats.items()}
        print(json.dumps({"leaf": calls.get("leaf"), "tool2": tool, "refused": refused}))
    """, str(tmp_path / "t.pytrace"))
    assert result["leaf"] == 50  # cProfile saw every call either way
    if result["refused"] is not None:
        assert "profil" in result["refused"]
    else:
        assert calls_of(tmp_path / "t.pytrace", "leaf") == 50
    if sys.version_info >= (3, 12):
        assert result["refused"] is None
        assert result["tool2"] == "cProfile"  # still cProfile's: pytrace took another id


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is new in Python 3.12")
def test_cprofile_started_under_pytrace_refuses_clearly(tmp_path):
    result = run_json(tmp_path, """
        import cProfile, pytrace
        with pytrace.trace(sys.argv[1]):
            try:
                cProfile.Profile().enable()
                refused = None
            except ValueError as exc:
                refused = str(exc)
            work()
        print(json.dumps({"refused": refused}))
    """, str(tmp_path / "t.pytrace"))
    assert "already" in result["refused"]
    assert calls_of(tmp_path / "t.pytrace", "leaf") == 50
    assert pytrace.validate(tmp_path / "t.pytrace").valid


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_debugger_settrace_sees_the_same_lines(tmp_path, traced):
    result = run_json(tmp_path, """
        import collections, pytrace, threading
        lines = collections.Counter()

        def tracer(frame, event, arg):
            if frame.f_code.co_name in ("leaf", "work"):
                if event == "line":
                    lines[frame.f_code.co_name, frame.f_lineno - frame.f_code.co_firstlineno] += 1
                return tracer
            return None

        out = sys.argv[1]
        session = pytrace.start(out) if out != "-" else None
        sys.settrace(tracer)
        work()
        sys.settrace(None)
        if session:
            pytrace.stop()
        print(json.dumps({"lines": sorted([*k, v] for k, v in lines.items())}))
    """, str(tmp_path / "t.pytrace") if traced else "-")
    assert result["lines"] == [["leaf", 1, 50], ["work", 1, 1]]
    if traced:
        assert calls_of(tmp_path / "t.pytrace", "leaf") == 50


def test_pytest_cov_and_pytrace_together(tmp_path):
    (tmp_path / "mathlib.py").write_text(
        "def double(n):\n    return n * 2\n\n\ndef halve(n):\n    return n // 2\n")
    (tmp_path / "test_mathlib.py").write_text(
        "import mathlib\n\n\ndef test_double():\n    assert mathlib.double(2) == 4\n\n\n"
        "def test_halve():\n    assert mathlib.halve(4) == 2\n")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cov=mathlib",
               "--cov-report=term-missing", "-q", "test_mathlib.py"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=TIMEOUT)
    both = subprocess.run([*command, "--pytrace", "--pytrace-dir", str(tmp_path / "traces")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT)
    assert plain.returncode == both.returncode == 0, both.stdout + both.stderr

    def coverage_line(out):
        return [line.split() for line in out.splitlines() if line.startswith("mathlib.py")]

    assert coverage_line(both.stdout) == coverage_line(plain.stdout) == [
        ["mathlib.py", "4", "0", "100%"]]
    traces = sorted((tmp_path / "traces").glob("**/*.pytrace"))
    assert len(traces) == 2
    assert all(pytrace.validate(path).valid for path in traces)


def test_this_projects_tests_give_the_same_results_traced(tmp_path):
    """Behaviour unchanged on a larger program: part of this very test suite,
    run by pytest under ``pytrace run``, passes and fails exactly as untraced."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                   "test_spec.py", "test_cli_validate.py"]
    plain = subprocess.run([sys.executable, *pytest_args], capture_output=True, text=True,
                           cwd=tests_dir, timeout=TIMEOUT)
    out = tmp_path / "suite.pytrace"
    traced = subprocess.run([sys.executable, "-m", "pytrace", "run", "-o", str(out),
                             *pytest_args[:1], *pytest_args[1:]], capture_output=True,
                            text=True, cwd=tests_dir, timeout=TIMEOUT)

    def outcome(proc):
        summary = proc.stdout.strip().splitlines()[-1]
        return proc.returncode, summary.rsplit(" in ", 1)[0]  # counts, not the time

    assert outcome(traced) == outcome(plain)
    assert " passed" in outcome(plain)[1]
    assert pytrace.validate(out).valid
