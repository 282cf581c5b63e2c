"""The traced program behaves as without pytrace, whatever the environment does.

Real processes throughout.  A disk that fills up (``RLIMIT_FSIZE``: writes
past the limit fail with EFBIG; ``/dev/full``: every write fails with
ENOSPC) must not change the program's output or exit status; pytrace warns
once, and the bytes that reached the file are a valid, cut-short trace.  A
path that cannot be written is refused before the program starts, in one
sentence.  Ctrl-C landing inside a flush reaches the program as it would
without pytrace, and the trace stays valid.  Deep recursion, generator
``close()``/``throw()``, uncaught exceptions and ``sys.exit`` from a thread
give the same output, traceback and status as untraced, on every backend.
"""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
import warnings

import pytest

import pytrace
from test_run import default_sigint
from eventlog import BACKENDS
from pytrace import TraceWarning, buffer
from pytrace.session import TracerError
from traced_processes import (
    TIMEOUT, complete_prefix_end, program_stderr, pytrace_run_argv, run_python, run_traced,
    write_program,
)

#: Busy enough to need many batches, and says where it got to.
CHATTY = """
    import sys, threading

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    results = {}

    def work(k):
        results[k] = fib(16)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("threads", sorted(results.items()))
    print("main", fib(17))
    sys.exit(7)
"""

WRITE_FAILED = "could not write"


def limit_file_size(limit: int):
    """For ``preexec_fn``: files the child writes stop growing at ``limit``
    bytes; a write past it fails with EFBIG instead of killing the process."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def same_repetitions(stderr: str) -> str:
    return re.sub(r"\[Previous line repeated \d+ more times\]", "[Previous line repeated]",
                  stderr)


def assert_same_behaviour(plain, traced) -> None:
    assert traced.returncode == plain.returncode
    assert traced.stdout == plain.stdout
    assert program_stderr(traced.stderr) == plain.stderr


@pytest.mark.parametrize("limit", [200, 20_000], ids=["full-at-start", "full-midway"])
def test_disk_full_midway_changes_nothing_for_the_program(tmp_path, limit):
    script = write_program(tmp_path, "chatty", CHATTY)
    out = tmp_path / "out.pytrace"
    plain = run_python(script, cwd=tmp_path)
    traced = run_traced(out, script, cwd=tmp_path, flags=("--buffer-size", "4096"),
                        preexec_fn=limit_file_size(limit))
    assert plain.returncode == 7
    assert traced.returncode == 7 and traced.stdout == plain.stdout
    warned = [line for line in program_stderr(traced.stderr).splitlines() if line.strip()]
    # One warning (message and its source line), nothing else from the program.
    assert sum(WRITE_FAILED in line for line in warned) == 1, traced.stderr
    assert all(WRITE_FAILED in line or "warnings.warn" in line or line.startswith(" ")
               for line in warned), traced.stderr
    data = out.read_bytes()
    assert len(data) <= limit
    if len(data) >= complete_prefix_end(data) > 16:  # something past the header was written
        with pytest.warns(TraceWarning, match="cut short"):
            pytrace.read(out)
    report = pytrace.validate(out)
    assert report.errors == [] and report.cut is not None


def test_a_device_that_is_always_full(tmp_path):
    """``/dev/full``: every write fails with ENOSPC, from the header on."""
    script = write_program(tmp_path, "chatty", CHATTY)
    plain = run_python(script, cwd=tmp_path)
    traced = run_traced("/dev/full", script, cwd=tmp_path)
    assert traced.returncode == plain.returncode and traced.stdout == plain.stdout
    assert program_stderr(traced.stderr).count(WRITE_FAILED) == 1, traced.stderr
    assert "No space left on device" in traced.stderr


@pytest.mark.parametrize("where", ["missing-directory", "under-a-file"])
def test_unwritable_path_is_refused_before_the_program_starts(tmp_path, where):
    script = write_program(tmp_path, "chatty", CHATTY)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / ("no_such_dir" if where == "missing-directory" else "a_file") / "t.pytrace"
    traced = run_traced(out, script, cwd=tmp_path)
    assert traced.returncode == 2
    assert traced.stdout == ""  # the program did not run
    assert traced.stderr.count("\n") == 1 and "cannot write the trace" in traced.stderr
    assert str(out) in traced.stderr


def test_library_start_on_a_directory_raises_and_leaves_nothing_running(tmp_path):
    with pytest.raises(TracerError, match="cannot write the trace .* choose a writable"):
        pytrace.start(tmp_path)
    assert pytrace.stop() is None
    with pytrace.trace(tmp_path / "after.pytrace", calls=False):
        pass
    assert pytrace.validate(tmp_path / "after.pytrace").valid


FLUSH_POINTS = buffer.FLUSH_POINTS


@pytest.mark.parametrize("point", FLUSH_POINTS)
def test_ctrl_c_inside_a_flush_reaches_the_program_and_the_trace_stays_valid(
        tmp_path, monkeypatch, point):
    """A real SIGINT raised at an injection point of the flush: Python's
    handler raises ``KeyboardInterrupt`` there, inside pytrace.  It must
    reach the program (as it would have at that moment untraced), and the
    trace must stay valid and keep every batch: no thread's sequence broken."""
    interrupted = []

    def interrupt_once(at):
        if at == point and not interrupted:
            interrupted.append(at)
            signal.raise_signal(signal.SIGINT)  # the handler runs at the next bytecode

    def work():
        for i in range(2000):
            pytrace.log("loop", str(i))

    monkeypatch.setattr(signal, "SIGINT", signal.SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "interrupted.pytrace"
    caught = 0
    try:
        with pytrace.trace(out, calls=False, gc=False, buffer_size=1024, flush_interval=0):
            monkeypatch.setattr(buffer, "injector", interrupt_once)
            try:
                work()
            except KeyboardInterrupt:
                caught += 1
            monkeypatch.setattr(buffer, "injector", None)
            pytrace.log("loop", "after")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted and caught == 1
    report = pytrace.validate(out)
    assert report.valid, [str(p) for p in report.problems]
    logged = [e.arg("message") for e in pytrace.read(out).events if e.name == "UserLog"]
    assert logged[-1] == "after"


def test_repeated_ctrl_c_in_a_busy_traced_program(tmp_path):
    """A real process with tiny buffers (flushing much of the time) gets
    SIGINT again and again: each one reaches the program's handler, the
    program ends normally, and the trace is whole.  (A Ctrl-C at the
    writer's entry used to lose a batch on the C core; see
    ``tests/test_interrupted_flush.py`` for that moment, and every other
    one of a flush, forced deterministically.)"""
    script = write_program(tmp_path, "interruptible", """
        import sys, time

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        deadline = time.monotonic() + 60  # never run (and write a trace) for ever
        caught = 0
        while caught < 15:
            try:
                print("armed", caught, flush=True)  # the next SIGINT comes after this
                while time.monotonic() < deadline:
                    fib(10)
                sys.exit("a SIGINT never arrived")
            except KeyboardInterrupt:
                caught += 1
        print("done")
    """)
    out = tmp_path / "out.pytrace"
    proc = subprocess.Popen(
        pytrace_run_argv(out, script, flags=("--buffer-size", "1024", "--flush-interval", "0.01")),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, preexec_fn=default_sigint)
    try:
        for k in range(15):
            assert proc.stdout.readline() == f"armed {k}\n"
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()  # whatever failed above, leave no program writing a trace
        proc.wait()
    assert (proc.returncode, stdout) == (0, "done\n"), stderr
    assert pytrace.validate(out).valid


PROGRAMS = {
    "recursion-error": """
        import sys
        sys.setrecursionlimit(300)
        def down(n):
            return down(n + 1)
        try:
            down(0)
        except RecursionError as exc:
            print("caught", type(exc).__name__)
        down(0)
    """,
    "generator-close-throw": """
        def numbers():
            try:
                yield 1
                yield 2
            except ValueError as exc:
                print("thrown in:", exc)
                yield 99
            finally:
                print("generator cleanup")
        g = numbers(); print(next(g)); print(g.throw(ValueError("x"))); g.close()
        g = numbers(); next(g); g.close(); print(list(g))
        g = numbers(); next(g); next(g)
        try:
            g.throw(KeyError("k"))
        except KeyError as exc:
            print("propagated", exc)
    """,
    "uncaught-exception": """
        class Oops(Exception):
            pass
        def inner():
            raise Oops("deep") from ValueError("cause")
        def outer():
            try:
                inner()
            finally:
                print("finally ran")
        outer()
    """,
    "exit-from-thread": """
        import sys, threading
        t = threading.Thread(target=sys.exit, args=(4,)); t.start(); t.join()
        def worker():
            sys.exit("message from a thread")
        t = threading.Thread(target=worker); t.start(); t.join()
        print("main still runs"); sys.exit(3)
    """,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_behaves_exactly_as_untraced(tmp_path, name, backend):
    script = write_program(tmp_path, name, PROGRAMS[name])
    out = tmp_path / "out.pytrace"
    plain = run_python(script, cwd=tmp_path)
    traced = run_traced(out, script, cwd=tmp_path, flags=("--backend", backend))
    assert traced.returncode == plain.returncode
    assert traced.stdout == plain.stdout
    # ``pytrace run``'s own frames (about ten) are below the program's, so
    # it reaches the recursion limit that many calls sooner: the one line
    # counting the repetitions differs, every frame shown is the same.
    assert same_repetitions(program_stderr(traced.stderr)) == same_repetitions(plain.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        pytrace.read(out)
    assert pytrace.validate(out).valid
    if name == "recursion-error":
        assert "RecursionError: maximum recursion depth exceeded" in plain.stderr
