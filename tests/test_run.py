"""`pytrace run` runs a program exactly as `python` would, and always finishes the trace."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pytrace

PROGRAMS = {
    "ok": """
        import sys
        print("argv", sys.argv[1:], __name__)
        print("path0", sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    """,
    "exit3": """
        import sys
        print("bye")
        sys.exit(3)
    """,
    "exit_message": """
        import sys
        sys.exit("fatal: something went wrong")
    """,
    "raises": """
        def inner():
            raise ValueError("boom")
        def outer():
            inner()
        outer()
    """,
    "thread_exit": """
        import sys, threading
        t = threading.Thread(target=sys.exit, args=(5,))
        t.start(); t.join()
        print("main continues")
    """,
}


def default_sigint():
    """In the child: Ctrl-C as in a terminal.  A shell runs background jobs
    with SIGINT ignored, and a child inherits that; Python then installs no
    KeyboardInterrupt handler, and a test of Ctrl-C would wait for ever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _script(tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(PROGRAMS[name]))
    return path


def _python(script, *args, cwd):
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def _traced(script, *args, cwd, flags=()):
    out = cwd / "out.pytrace"
    proc = subprocess.run(
        [sys.executable, "-m", "pytrace", "run", "-o", str(out), *flags, str(script), *args],
        capture_output=True, text=True, cwd=cwd, timeout=60)
    return proc, out


def _program_stderr(stderr):
    """The traced program's stderr: pytrace's own summary lines removed."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("pytrace: "))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("flags", [(), ("--no-calls",)], ids=["calls", "light"])
def test_program_behaves_as_without_pytrace(tmp_path, name, flags):
    script = _script(tmp_path, name)
    plain = _python(script, "a", "--flag", cwd=tmp_path)
    traced, out = _traced(script, "a", "--flag", cwd=tmp_path, flags=flags)
    assert traced.returncode == plain.returncode
    assert traced.stdout == plain.stdout
    assert _program_stderr(traced.stderr) == plain.stderr
    assert f"pytrace: wrote {out}" in traced.stderr
    assert pytrace.validate(out).valid


def test_module_mode_runs_dunder_main(tmp_path):
    pkg = tmp_path / "demo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import sys\nprint('main of', __name__, sys.argv[1:])\n")
    plain = subprocess.run([sys.executable, "-m", "demo_pkg", "x"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    traced = subprocess.run([sys.executable, "-m", "pytrace", "run", "-m", "demo_pkg", "x"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert traced.returncode == plain.returncode == 0
    assert traced.stdout == plain.stdout == "main of __main__ ['x']\n"
    assert pytrace.validate(tmp_path / "demo_pkg.pytrace").valid


def test_default_output_name_comes_from_the_script(tmp_path):
    script = _script(tmp_path, "ok")
    proc = subprocess.run([sys.executable, "-m", "pytrace", "run", str(script)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert pytrace.validate(tmp_path / "ok.pytrace").valid


def test_ctrl_c_finishes_the_trace(tmp_path):
    script = tmp_path / "sleepy.py"
    script.write_text("import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.01)\n")
    out = tmp_path / "out.pytrace"
    proc = subprocess.Popen([sys.executable, "-m", "pytrace", "run", "-o", str(out), str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=default_sigint)
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT  # as python itself: killed by SIGINT
    assert "KeyboardInterrupt" in stderr
    assert "pytrace/" not in stderr.replace(str(out), "")  # no pytrace frames in the traceback
    assert pytrace.validate(out).valid


@pytest.mark.parametrize("argv, message", [
    (["run"], "give a script"),
    (["run", "--max-depth", "-1", "x.py"], "must not be negative"),
    (["run", "--buffer-size", "10", "x.py"], "too small"),
    (["run", "does_not_exist.py"], "no such file"),
])
def test_bad_usage_is_one_clear_sentence(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, "-m", "pytrace", *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_output_is_refused_clearly(tmp_path):
    script = _script(tmp_path, "ok")
    proc = subprocess.run(
        [sys.executable, "-m", "pytrace", "run", "-o", str(tmp_path), str(script)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "cannot write the trace" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.path.isdir(tmp_path)
