"""A tracing session: the recorder plus the hooks that feed it.

``start``/``stop``/``trace`` are the library faces; the CLI and the pytest
plugin call them too.  ``park`` is a ``stop`` that leaves the hooks
installed, inert, for the next ``start`` with the same options to record its
new file with (the pytest plugin's trace per test).  Hooks live in
``pytrace.hooks``; each module there has ``install(session) -> uninstall``
(and calls ``session.follow`` if it can be parked) and talks to the trace
only through the session's helpers below, which reach the calling thread's
slot at the moment of writing.

The tracer never raises into user code: hooks catch their own exceptions and
call ``session.fail``, which stops tracing with one warning and leaves a valid
trace up to that point.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import importlib
import os
import sys
import threading
import warnings

from . import forks, writer
from .options import Options
from .recorder import FLUSHER, OWN_THREAD_PREFIX, Recorder

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


def hook_modules(options: Options) -> list:
    """The hook modules a session with ``options`` installs, in order,
    imported.  Calling it before ``start`` keeps their import (its time, and
    the collections it triggers) out of the trace: ``pytest --pytrace`` does
    so before each test that needs hooks no test needed before."""
    modules = []
    if options.children:
        from . import children
        modules.append(children)
    for option, name in HOOKS:
        if getattr(options, option):
            module = importlib.import_module(f".hooks.{name}", __package__)
            if option == "calls":  # and what its install imports: the chosen backend
                module.backend_module(options)
            modules.append(module)
    return modules


class TracerError(RuntimeError):
    """pytrace cannot start (e.g. a trace is already running, or the path is unwritable)."""


class TracerWarning(RuntimeWarning):
    """pytrace hit an internal error and stopped tracing; the trace so far is valid."""


def is_own_thread() -> bool:
    """True on one of pytrace's own threads.  Looks the thread up without
    ``threading.current_thread()``, which would make a ``_DummyThread`` for a
    thread that ``threading`` has not registered yet.  A starting thread
    runs (and may wait: it tells ``Thread.start`` it runs through an Event)
    before ``threading`` moves it from ``_limbo`` to ``_active``, so it is
    looked for in both."""
    ident = threading.get_ident()
    thread = threading._active.get(ident)
    if thread is None:
        # list() copies in one C call: another thread may change _limbo.
        thread = next((t for t in list(threading._limbo) if t._ident == ident), None)
    return thread is not None and thread.name.startswith(OWN_THREAD_PREFIX)


def is_own_code(filename: str) -> bool:
    """True for pytrace's own source files, which are never traced."""
    return filename.startswith(PACKAGE_DIR)


class Session:
    """One trace being recorded; parked, the hooks of one waiting for the next file."""

    def __init__(self, path, options: Options) -> None:
        self.options = options
        self.path = os.fspath(path)
        self.recorder = self._open(self.path)
        self.slots = self.recorder.slots
        self._uninstall: list = []
        #: ``(pause, resume)`` of each installed hook that can follow the
        #: session into another file (see ``follow``).
        self._followers: list = []
        #: True while every installed hook can follow (see ``park``).
        self.parkable = True
        #: Callables returning lines for the end-of-run summary, added by hooks.
        self.summaries: list = []
        #: The GC hook (``hooks.gcevents.GCHook``) once installed: the figures
        #: of the file recorded last, without reading it back.
        self.gc = None
        #: If set, ``start()`` of another trace calls it (it must stop this
        #: session) instead of refusing: the owner of this session gives way.
        self.on_superseded = None
        self._stop_lock = _thread.allocate_lock()
        self.stopped = False
        self.failure: BaseException | None = None

    def _open(self, path: str, background: bool = False) -> Recorder:
        try:
            return Recorder(path, self.options.buffer_size,
                            flush_interval=self.options.flush_interval, background=background)
        except OSError as exc:
            raise TracerError(
                f"cannot write the trace to {path}: {exc.strerror or exc}; "
                f"choose a writable file path") from None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        try:
            for hook in hook_modules(self.options):
                self._install(hook)
        except BaseException:
            self.stop()
            raise

    def _install(self, hook) -> None:
        followers = len(self._followers)
        self._uninstall.append(hook.install(self))
        if len(self._followers) == followers:
            self.parkable = False

    def follow(self, pause, resume) -> None:
        """For a hook's ``install``: the hook can follow the session from one
        file to the next.  ``pause()`` makes it inert and closes in the file
        being finished what it has open there; ``resume()``, with the next
        file in place, writes what its install writes first (the threads
        already running, ...) and makes it record again."""
        self._followers.append((pause, resume))

    def park(self) -> bool:
        """Finish the file as ``stop`` does, but keep the hooks installed and
        inert, for ``resume`` to record the next file without installing
        them again (``pytest --pytrace`` traces each test into its own file:
        installing the hooks was most of a test's tracing cost, issue 4).
        Stops instead, and returns False, if a hook cannot follow."""
        if not self.parkable:
            self.stop()
            return False
        if self.stopped:
            return False
        try:
            for pause, _ in reversed(self._followers):
                pause()
        except Exception as exc:
            self._warn(f"pytrace could not pause a hook cleanly: {exc!r}")
            self.stop()
            return False
        self._close_recorder(keep_flusher=True)
        return True

    def resume(self, path) -> None:
        """Record into ``path``, a new file that holds everything a fresh
        start would write there, and only what happens from now on."""
        try:
            path = os.fspath(path)
            # A background thread writes the file (on the C core): its
            # system calls were a fifth of what recording a short test's
            # file cost (issue 4).  Earlier files' late failures are reported.
            writer.settle()
            recorder = self._open(path, background=True)
            self.path, self.recorder, self.slots = path, recorder, recorder.slots
            self.on_superseded = None
            for _, resume in self._followers:
                resume()
        except BaseException:
            self.stop()  # removes the hooks: nobody else would
            raise

    def stop(self) -> None:
        """Remove every hook, flush every thread, write the footer.  Idempotent."""
        with self._stop_lock:
            if self.stopped:
                return
            self.stopped = True
        self._remove_hooks(warn=True)
        self._followers.clear()
        self._close_recorder()
        writer.settle(wait=True)  # the files of earlier resumes are complete, or reported

    def _remove_hooks(self, warn: bool) -> None:
        """Uninstall every hook, last installed first; one that fails (with
        a warning if ``warn``) does not keep the others in."""
        for uninstall in reversed(self._uninstall):
            try:
                uninstall()
            except Exception as exc:  # never let cleanup hide the trace
                if warn:
                    self._warn(f"pytrace could not remove a hook cleanly: {exc!r}")
        self._uninstall.clear()

    def _close_recorder(self, keep_flusher: bool = False) -> None:
        try:
            try:
                self.recorder.close(keep_flusher)
            except KeyboardInterrupt:
                # A Ctrl-C that lands before the recorder began closing (at
                # the call's entry) would leave the file without its last
                # batches and footer: close again (a close already under way
                # finishes its own work), then let the interrupt go on.
                self.recorder.close(keep_flusher)
                raise
        except Exception as exc:  # stop() runs inside user code: never raise there
            self._warn(f"pytrace could not finish {self.path}: {exc!r}; the trace may be cut short")

    def abandon(self) -> None:
        """In a forked child: remove the hooks and drop the trace without
        writing a byte (the file and its buffers belong to the parent)."""
        self.stopped = True
        self.recorder.abandon()
        self._remove_hooks(warn=False)

    def fail(self, exc: BaseException) -> None:
        """An internal error in a hook: stop tracing, warn once, keep the trace valid."""
        if self.failure is not None or self.stopped:
            return
        self.failure = exc
        self._warn(f"pytrace stopped tracing after an internal error: {exc!r}; "
                   f"the trace up to this point is valid: {self.path}")
        if current() is self:
            stop()
        else:  # parked, or already given way
            self.stop()

    def summary_lines(self) -> list[str]:
        """A few lines about what was recorded, contributed by the hooks."""
        return [line for summarize in self.summaries for line in summarize()]

    def _warn(self, message: str) -> None:
        warnings.warn(message, TracerWarning, stacklevel=3)

    # -- helpers for hooks ---------------------------------------------------

    def stack_id(self, slot, frame) -> int:
        """The trace id of the stack that starts at ``frame`` (innermost),
        leaving out pytrace's own frames; 0 if nothing is left.  The slot
        walks the frames (in C on the C core)."""
        return slot.frame_stack_id(frame, PACKAGE_DIR, MAX_STACK_FRAMES)

    def caller_stack_id(self, slot, depth: int = 1) -> int:
        """The stack of the code that called into pytrace, ``depth`` frames up."""
        return self.stack_id(slot, sys._getframe(depth + 1))


_session: Session | None = None
#: The session ``park`` left waiting with its hooks installed, or None.
_parked: Session | None = None
_session_lock = _thread.allocate_lock()
#: ``(session, thread ident)`` while ``stop``/``park``/``unpark`` take a
#: session's hooks out (or park them): ``start`` on another thread waits for
#: that to end, so a new session's hooks never go in before the old ones are
#: out (the old uninstall would otherwise undo the new session's patches).
_leaving: tuple[Session, int] | None = None
_left = threading.Condition(_session_lock)
#: How many ``start`` calls wait on ``_left``: with none, a park skips the
#: notification (a Python-level call, on every test under ``pytest --pytrace``).
_waiting = 0


def _wait_for_leaving() -> None:
    """With ``_session_lock`` held: wait until no session is being stopped."""
    global _waiting
    while _leaving is not None:
        if _leaving[1] == threading.get_ident():
            raise TracerError("pytrace.start() was called while this thread is stopping a trace "
                              "(from a callback inside pytrace.stop()); start it after stop() returns")
        _waiting += 1
        try:
            _left.wait()
        finally:
            _waiting -= 1


def _left_behind(session: Session) -> None:
    """``session`` is stopped or parked: a waiting ``start`` may go on."""
    global _leaving
    with _session_lock:
        if _leaving is not None and _leaving[0] is session:
            _leaving = None
            if _waiting:
                _left.notify_all()


def current() -> Session | None:
    """The running session, or None."""
    return _session


def start(path, **options) -> Session:
    """Start tracing into ``path``.  Options: see ``pytrace.options.Options``.

    A parked session (``park``) with the same options records the new file
    with the hooks it has installed; one with other options is stopped first.
    """
    global _session, _parked
    opts = options.pop("options", None) or Options.from_kwargs(**options)
    running = _session
    if running is not None and running.on_superseded is not None:
        running.on_superseded()  # e.g. the pytest plugin ends a per-test trace
    with _session_lock:
        _wait_for_leaving()
        if _session is not None:
            raise TracerError(
                f"a trace is already being recorded to {_session.path}; call pytrace.stop() first")
        parked, _parked = _parked, None
        reuse = (parked is not None and not parked.stopped
                 and (parked.options is opts or parked.options == opts))
        try:
            session = parked if reuse else Session(path, opts)
        except BaseException:
            _parked = parked  # e.g. an unwritable path: the parked session stays as it was
            raise
        _session = session
    try:
        if reuse:
            session.resume(path)
        else:
            if parked is not None:
                parked.stop()  # its hooks go before the new session's come
            session.start()
    except BaseException:
        with _session_lock:
            _session = None
        raise
    return session


def _take(name: str) -> Session | None:
    """Take the module's ``_session`` or ``_parked`` session out, marking it
    as leaving (``start`` waits until ``_left_behind``)."""
    global _leaving
    with _session_lock:
        session = globals()[name]
        globals()[name] = None
        if session is not None:
            _leaving = (session, threading.get_ident())
    return session


def _stop_taken(session: Session | None) -> None:
    if session is not None:
        try:
            session.stop()
        finally:
            _left_behind(session)


def stop() -> Session | None:
    """Stop tracing and finish the file.  Returns the stopped session (None if none ran)."""
    session = _take("_session")
    _stop_taken(session)
    return session


def park() -> Session | None:
    """Stop tracing and finish the file, but keep the hooks installed, inert,
    for the next ``start`` with the same options (see ``Session.park``); a
    session whose hooks cannot all follow it is stopped.  Returns the
    session (None if none ran)."""
    global _parked
    session = _take("_session")
    if session is None:
        return None
    try:
        if not session.park():
            return session
        with _session_lock:
            keep = _session is None and _parked is None
            if keep:
                _parked = session
        if not keep:
            session.stop()
    finally:
        _left_behind(session)
    return session


def unpark() -> None:
    """Remove the hooks of the parked session, if any."""
    _stop_taken(_take("_parked"))


def wait_for_files() -> None:
    """Return once every file that pytrace finished is complete on disk: on
    the C core a background thread writes the files of a parked session's
    resumes (``Session.resume``), and may still be writing the last one
    after ``park``.  ``stop`` and ``unpark`` wait for them."""
    writer.settle(wait=True)


def _before_fork() -> None:
    """pytrace's own threads must not make a fork look multi-threaded (3.12+
    warns then): pause them, resume in the parent afterwards."""
    FLUSHER.pause()


def _after_fork_in_parent() -> None:
    FLUSHER.resume()


def _stop_in_forked_child() -> None:
    """A forked child never writes into its parent's trace: it stops tracing."""
    global _session, _parked, _leaving, _session_lock, _left, _waiting
    FLUSHER.forget_all()
    # Another thread of the parent may have held the lock or been stopping:
    # neither exists in the child.
    _session_lock = _thread.allocate_lock()  # not the blocking hook's stand-in
    _left = threading.Condition(_session_lock)
    _leaving = None
    _waiting = 0
    session, _session = _session, None
    if session is not None:
        session.abandon()
    session, _parked = _parked, None
    if session is not None:
        session.abandon()


forks.register(before=_before_fork, after_in_parent=_after_fork_in_parent,
               after_in_child=_stop_in_forked_child)


def _finish_at_exit() -> None:
    """The interpreter exits with a trace still running (the program never
    called ``stop()``, called ``sys.exit()``, or died of an uncaught
    exception): finish it as ``stop()`` does, so that the program's last
    events and the footer reach the file, and remove a parked session's
    hooks.  ``atexit`` runs this while modules are still whole, after the
    program's non-daemon threads have ended."""
    stop()
    unpark()


atexit.register(_finish_at_exit)


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
