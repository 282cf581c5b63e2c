"""Run a program under the tracer the way ``python`` would run it.

The program sees the same ``sys.argv``, ``sys.path[0]``, ``__name__ ==
"__main__"``, exit code and exceptions as without pytrace: a ``SystemExit``
keeps its code, an uncaught exception prints the program's own traceback
(pytrace's and runpy's frames left out) and exits 1, an uncaught Ctrl-C
prints its traceback and ends the process by SIGINT, as Python 3.8+ does.  The trace is finished in every case.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import types

from . import session as tracing

_RUNNER_FILES = (os.path.abspath(runpy.__file__),)


def _program_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback as ``python`` would show it: without the leading frames
    of pytrace and runpy, and without pytrace's wrappers (e.g. around
    ``time.sleep``) wherever they are."""
    kept = []
    leading = True
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        runner = filename in _RUNNER_FILES or filename == "<frozen runpy>"
        if not (tracing.is_own_code(filename) or (leading and runner)):
            kept.append(tb)
            leading = False
        tb = tb.tb_next
    for outer, inner in zip(kept, kept[1:]):
        outer.tb_next = inner
    if kept:
        kept[-1].tb_next = None
    return kept[0] if kept else None


def run_program(target: str, args: list[str], *, module: bool, path, options) -> int:
    """Trace ``target`` (a script path, or a module name if ``module``) with
    ``args``; return the exit status ``python`` would have given."""
    if module:
        sys.argv = [target, *args]
        sys.path.insert(0, os.getcwd())
    else:
        if not os.path.exists(target):
            print(f"pytrace: cannot run {target}: no such file", file=sys.stderr)
            return 2
        sys.argv = [target, *args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
    session = tracing.start(path, options=options)
    uncaught = None
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            # As python does since 3.9: the script's code has an absolute filename.
            runpy.run_path(os.path.abspath(target), run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException as exc:  # the program's own uncaught exception
        uncaught = exc
        status = 1
    finally:
        tracing.stop()
    if uncaught is not None:
        # The hook prints the exception's own __traceback__ (3.12+), so trim that.
        uncaught = uncaught.with_traceback(_program_traceback(uncaught.__traceback__))
        sys.excepthook(type(uncaught), uncaught, uncaught.__traceback__)
    _summarize(session)
    if isinstance(uncaught, KeyboardInterrupt):
        _die_of_sigint()
    return status


def _die_of_sigint() -> None:
    """End the way Python does after an uncaught Ctrl-C: killed by SIGINT,
    so that a calling shell sees the signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _exit_status(code) -> int:
    """What the interpreter does with ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _summarize(session: tracing.Session) -> None:
    """A few lines on stderr: where the trace went and what is in it."""
    totals = session.recorder.writer.totals
    records = sum(n for _, n in totals.values())
    try:
        size = os.path.getsize(session.path)
    except OSError:
        size = 0
    print(f"pytrace: wrote {session.path} ({size / 1024:.1f} KiB, {records} records "
          f"from {len(totals)} threads)", file=sys.stderr)
    for line in session.summary_lines():
        print(f"pytrace: {line}", file=sys.stderr)
    print(f"pytrace: check it with `pytrace validate {session.path}`", file=sys.stderr)
