"""A tracing session: the recorder plus the hooks that feed it.

``start``/``stop``/``trace`` are the library faces; the CLI and the pytest
plugin call them too.  Hooks live in ``pytrace.hooks``; each module there has
``install(session) -> uninstall`` and talks to the trace only through the
session's helpers below, which reach the calling thread's slot at the moment
of writing.

The tracer never raises into user code: hooks catch their own exceptions and
call ``session.fail``, which stops tracing with one warning and leaves a valid
trace up to that point.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import warnings

from .options import Options
from .recorder import OWN_THREAD_PREFIX, Recorder

#: The package directory: code in it is never traced.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Most frames recorded in one stack (innermost kept).
MAX_STACK_FRAMES = 64

#: Hook modules of ``pytrace.hooks`` in install order, with the option that
#: enables each.  The GC hook is first in and last out, so that every
#: collection while any hook runs is recorded (the trace's collection counts
#: equal ``gc.get_stats()``'s for the session, even for collections that
#: pytrace's own threads trigger); call hooks go last, so that installing the
#: others is not traced.
HOOKS = (
    ("gc", "gcevents"),
    ("threads", "threads"),
    ("blocking", "blocking"),
    ("asyncio", "aio"),
    ("sample_rate", "sampler"),
    ("calls", "calls"),
)


class TracerError(RuntimeError):
    """pytrace cannot start (e.g. a trace is already running, or the path is unwritable)."""


class TracerWarning(RuntimeWarning):
    """pytrace hit an internal error and stopped tracing; the trace so far is valid."""


def is_own_thread() -> bool:
    """True on one of pytrace's own threads.  Looks the thread up without
    ``threading.current_thread()``, which would make a ``_DummyThread`` for a
    thread that ``threading`` has not registered yet (its first events come
    before that)."""
    thread = threading._active.get(threading.get_ident())
    return thread is not None and thread.name.startswith(OWN_THREAD_PREFIX)


def is_own_code(filename: str) -> bool:
    """True for pytrace's own source files, which are never traced."""
    return filename.startswith(PACKAGE_DIR)


class Session:
    """One trace being recorded."""

    def __init__(self, path, options: Options) -> None:
        self.options = options
        self.path = os.fspath(path)
        try:
            self.recorder = Recorder(self.path, options.buffer_size,
                                     flush_interval=options.flush_interval)
        except OSError as exc:
            raise TracerError(
                f"cannot write the trace to {self.path}: {exc.strerror or exc}; "
                f"choose a writable file path") from None
        self.slots = self.recorder.slots
        self._uninstall: list = []
        #: Callables returning lines for the end-of-run summary, added by hooks.
        self.summaries: list = []
        #: If set, ``start()`` of another trace calls it (it must stop this
        #: session) instead of refusing: the owner of this session gives way.
        self.on_superseded = None
        self._stop_lock = threading.Lock()
        self.stopped = False
        self.failure: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        try:
            if self.options.children:
                from . import children
                self._uninstall.append(children.install(self))
            for option, module in HOOKS:
                if getattr(self.options, option):
                    hook = importlib.import_module(f".hooks.{module}", __package__)
                    self._uninstall.append(hook.install(self))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove every hook, flush every thread, write the footer.  Idempotent."""
        with self._stop_lock:
            if self.stopped:
                return
            self.stopped = True
        for uninstall in reversed(self._uninstall):
            try:
                uninstall()
            except Exception as exc:  # never let cleanup hide the trace
                self._warn(f"pytrace could not remove a hook cleanly: {exc!r}")
        self._uninstall.clear()
        try:
            self.recorder.close()
        except Exception as exc:  # stop() runs inside user code: never raise there
            self._warn(f"pytrace could not finish {self.path}: {exc!r}; the trace may be cut short")

    def abandon(self) -> None:
        """In a forked child: remove the hooks and drop the trace without
        writing a byte (the file and its buffers belong to the parent)."""
        self.stopped = True
        self.recorder.abandon()
        for uninstall in reversed(self._uninstall):
            try:
                uninstall()
            except Exception:
                pass
        self._uninstall.clear()

    def fail(self, exc: BaseException) -> None:
        """An internal error in a hook: stop tracing, warn once, keep the trace valid."""
        if self.failure is not None or self.stopped:
            return
        self.failure = exc
        self._warn(f"pytrace stopped tracing after an internal error: {exc!r}; "
                   f"the trace up to this point is valid: {self.path}")
        stop()

    def summary_lines(self) -> list[str]:
        """A few lines about what was recorded, contributed by the hooks."""
        return [line for summarize in self.summaries for line in summarize()]

    def _warn(self, message: str) -> None:
        warnings.warn(message, TracerWarning, stacklevel=3)

    # -- helpers for hooks ---------------------------------------------------

    def func_id(self, slot, code) -> int:
        """The trace id of a code object, defining it on first use."""
        fid = slot.tables.funcs.get(code)
        if fid is None:
            fid = slot.func_id(code, code.co_qualname, code.co_filename, code.co_firstlineno)
        return fid

    def stack_id(self, slot, frame) -> int:
        """The trace id of the stack that starts at ``frame`` (innermost),
        leaving out pytrace's own frames; 0 if nothing is left."""
        frames = []
        while frame is not None and len(frames) < MAX_STACK_FRAMES:
            code = frame.f_code
            if not is_own_code(code.co_filename):
                frames.append((self.func_id(slot, code), frame.f_lineno or 0))
            frame = frame.f_back
        return slot.stack_id(tuple(frames))

    def caller_stack_id(self, slot, depth: int = 1) -> int:
        """The stack of the code that called into pytrace, ``depth`` frames up."""
        return self.stack_id(slot, sys._getframe(depth + 1))


_session: Session | None = None
_session_lock = threading.Lock()


def current() -> Session | None:
    """The running session, or None."""
    return _session


def start(path, **options) -> Session:
    """Start tracing into ``path``.  Options: see ``pytrace.options.Options``."""
    global _session
    opts = options.pop("options", None) or Options.from_kwargs(**options)
    running = _session
    if running is not None and running.on_superseded is not None:
        running.on_superseded()  # e.g. the pytest plugin ends a per-test trace
    with _session_lock:
        if _session is not None:
            raise TracerError(
                f"a trace is already being recorded to {_session.path}; call pytrace.stop() first")
        session = Session(path, opts)
        _session = session
    try:
        session.start()
    except BaseException:
        with _session_lock:
            _session = None
        raise
    return session


def stop() -> Session | None:
    """Stop tracing and finish the file.  Returns the stopped session (None if none ran)."""
    global _session
    with _session_lock:
        session, _session = _session, None
    if session is not None:
        session.stop()
    return session


def _before_fork() -> None:
    """pytrace's own threads must not make a fork look multi-threaded (3.12+
    warns then): pause them, resume in the parent afterwards."""
    session = _session
    if session is not None:
        session.recorder.pause_flushing()


def _after_fork_in_parent() -> None:
    session = _session
    if session is not None:
        session.recorder.resume_flushing()


def _stop_in_forked_child() -> None:
    """A forked child never writes into its parent's trace: it stops tracing."""
    global _session
    session, _session = _session, None
    if session is not None:
        session.abandon()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_stop_in_forked_child)


@contextlib.contextmanager
def trace(path, **options):
    """``with pytrace.trace(path, **options):`` traces the block."""
    session = start(path, **options)
    try:
        yield session
    finally:
        if current() is session:
            stop()
        else:
            session.stop()
