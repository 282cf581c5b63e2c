"""Following child processes: each Python child traced into its own file.

With ``children=True`` (library) or ``--children`` (``pytrace run``), a
child process of a traced program that runs Python is traced too, with the
same options, into ``<trace stem>.<pid>.pytrace`` next to the parent's trace
(the parent's ``app.pytrace`` -> ``app.4242.pytrace``); grandchildren
likewise, all next to the first trace.  ``child_path`` makes the name.

How.  Two kinds of children:

- *New interpreters* (``subprocess`` running Python, ``multiprocessing``
  with the ``spawn`` or ``forkserver`` start method, ``os.exec*``): while the
  session runs, the environment carries ``PYTRACE_CHILDREN`` (JSON: the
  parent trace's absolute path and the options) and ``PYTHONPATH`` starts
  with ``pytrace/_bootstrap``, whose ``sitecustomize`` starts tracing as the
  child's interpreter starts (then chains to the ``sitecustomize`` that would
  have run otherwise).  The child stops tracing at exit (``atexit``).  No file
  is installed anywhere; the environment is restored when the session stops.
  Children started with ``-I``, ``-E`` or ``-S``, or by a Python without
  pytrace, ignore it and run untraced.
- *Forked children* (``os.fork``, ``multiprocessing`` with ``fork``): the
  child never writes into the parent's file (``session._stop_in_forked_child``
  drops the inherited session without writing); then this module's at-fork
  handler starts a new trace to the child's own file.  It stops at
  ``threading._shutdown`` (interpreter exit, and the end of a
  ``multiprocessing`` fork child, which leaves by ``os._exit`` after it): a
  child that calls ``os._exit`` itself skips that, and its file ends at the
  last periodic flush, cut short but readable.

A child that cannot write its trace (e.g. a read-only directory) runs
untraced with one warning.  Without ``children``, forked children stop
tracing and new interpreters are not traced.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import warnings

from . import forks
from . import session as tracing
from .options import Options

#: The environment variable that asks a child interpreter to trace itself.
ENV_VAR = "PYTRACE_CHILDREN"
#: The directory whose ``sitecustomize`` starts tracing in a child interpreter.
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")

#: While a session follows children: (parent trace path, options); None otherwise.
_following: tuple[str, Options] | None = None
_installed_by_pid: int | None = None


def child_path(parent_trace: str, pid: int) -> str:
    """The trace file of child ``pid`` of the trace ``parent_trace``."""
    stem = parent_trace[:-len(".pytrace")] if parent_trace.endswith(".pytrace") else parent_trace
    return f"{stem}.{pid}.pytrace"


def install(session) -> callable:
    """Make children of this process trace themselves; returns the uninstaller."""
    global _following, _installed_by_pid
    path = os.path.abspath(session.path)
    _following = (path, session.options)
    _installed_by_pid = os.getpid()
    saved = {name: os.environ.get(name) for name in (ENV_VAR, "PYTHONPATH")}
    os.environ[ENV_VAR] = json.dumps({"path": path, "options": _options_json(session.options)})
    rest = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *rest])

    def uninstall() -> None:
        global _following
        if os.getpid() != _installed_by_pid:
            return  # a forked child dropping its inherited session: keep following
        _following = None
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return uninstall


def _options_json(options: Options) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in options.as_dict().items()}


def _start(path: str, options: Options) -> bool:
    """Start tracing this (child) process into ``path``; warn if impossible."""
    try:
        tracing.start(path, options=options)
    except Exception as exc:
        warnings.warn(f"pytrace: this child process runs untraced: {exc}",
                      tracing.TracerWarning, stacklevel=2)
        return False
    return True


def start_in_child() -> None:
    """Called by the bootstrap ``sitecustomize``: trace this interpreter if
    ``PYTRACE_CHILDREN`` asks for it."""
    request = os.environ.get(ENV_VAR)
    if not request or tracing.current() is not None:
        return
    try:
        spec = json.loads(request)
        options = Options.from_kwargs(**spec["options"])
        path = child_path(spec["path"], os.getpid())
    except (ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"pytrace: ignoring a malformed {ENV_VAR}: {exc}",
                      tracing.TracerWarning, stacklevel=2)
        return
    if _start(path, options):
        atexit.register(tracing.stop)


def _trace_forked_child() -> None:
    """After ``fork`` in the child (this runs after the session dropped the
    parent's trace): start the child's own trace."""
    if _following is None or tracing.current() is not None:
        return
    parent_path, options = _following
    if _start(child_path(parent_path, os.getpid()), options):
        try:
            threading._register_atexit(tracing.stop)
        except RuntimeError:  # the parent forked while shutting down
            atexit.register(tracing.stop)


forks.register(after_in_child=_trace_forked_child)
