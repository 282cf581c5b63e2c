"""Threads as goroutines: ThreadCreate in the parent, ThreadStart ... ThreadEnd in the child.

Two class-level replacements on ``threading.Thread`` (undone exactly on
uninstall, see ``pytrace.hooks.patches``):

- ``start``, in the parent: reserves the child's tid and writes
  ``ThreadCreate(child, name, stack)`` *before* the thread exists, so the
  child's events can never precede it in time.
- ``_bootstrap``, the first Python code a new thread runs (``start`` hands
  ``self._bootstrap`` to ``_thread``): before anything else, and so before
  any other hook can write for the thread, it binds the reserved tid
  (``slots.bind``) and writes ``ThreadStart(ident, native_id, name)``; after
  the thread's ``run`` and threading's cleanup it writes ``ThreadEnd`` and
  retires the slot, because the OS reuses idents.  ``join()`` returns only
  after this, so a joined thread's events are all in the trace.

Threads already running at install, or when a parked session resumes into
a new file (``session.park``), get ``ThreadStart`` then (no ``ThreadCreate``:
their creation was not seen, as Go does for goroutines that exist when
tracing starts): the installing thread through its own slot, every other
thread of ``threading.enumerate()`` in a slot that is filled *before* it is
published, so its owner never races with the write.  Those that started
before the hook was installed get no ``ThreadEnd`` (nothing of theirs runs
through the hook); their timeline just stops.  One started under the hook,
in an earlier file of the parked session, ends with ``ThreadEnd`` as usual.

pytrace's own threads (named ``pytrace-...``, or started from pytrace's
code) are not the program's: they get no thread events.

The replacements run no Python code of ``threading`` besides the original
they replace (``thread._name``, not the ``name`` property; the ``_started``
event's ``_flag``, not ``is_set()``): the call hook would record such calls
as the program's own.

Not covered: threads started with ``_thread.start_new_thread`` (no
``threading.Thread``) get a slot on their first event and no thread events;
a ``Thread`` subclass that overrides ``_bootstrap``.  A
``ThreadCreate`` whose child never writes ``ThreadStart`` is a ``start()``
that failed (e.g. "can't start new thread").
"""

from __future__ import annotations

import functools
import sys
import threading

from .. import events, wire
from ..session import is_own_code
from .patches import Patches, activate, hide_own_frames
from ..session import OWN_THREAD_PREFIX

THREAD_CREATE = events.BY_NAME["ThreadCreate"].id
THREAD_START = events.BY_NAME["ThreadStart"].id
THREAD_END = wire.inline_prefix(events.BY_NAME["ThreadEnd"])

#: The installed hook, or None: the replacements pass straight through then
#: (a bound ``_bootstrap`` can outlive the hook that made it).
_active: ThreadsHook | None = None


class ThreadsHook:
    """Writes the thread events of one session."""

    def __init__(self, session) -> None:
        self.session = session
        #: The slots of the session's current file.
        self.slots = session.slots
        #: id(Thread) -> the child's reserved tid, from ``start`` until the
        #: child's ``_bootstrap`` takes it (the parent keeps the object alive
        #: meanwhile: ``start`` waits for the child to be running).
        self._children: dict[int, int] = {}
        self.patches = Patches()

    # -- parent side ---------------------------------------------------------

    def announce(self, thread: threading.Thread, frame) -> None:
        """ThreadCreate for ``thread``, about to start, called from ``frame``."""
        try:
            slot = self.slots.current()
            child = self.slots.reserve_tid()
            self._children[id(thread)] = child
            slot.emit(THREAD_CREATE, child, slot.string_id(thread._name),
                      self.session.stack_id(slot, frame))
        except Exception as exc:
            self.session.fail(exc)

    def forget(self, thread: threading.Thread) -> None:
        """``start`` failed: no child will claim its tid."""
        self._children.pop(id(thread), None)

    # -- child side ----------------------------------------------------------

    def begin(self, thread: threading.Thread) -> bool:
        """In the new thread: bind the reserved tid and write ThreadStart.
        False if the thread was not announced (pytrace's own, or started
        before this session)."""
        child = self._children.pop(id(thread), None)
        if child is None:
            return False
        try:
            slot = self.slots.bind(child)
            slot.emit(THREAD_START, threading.get_ident(), threading.get_native_id(),
                      slot.string_id(thread._name))
            return True
        except Exception as exc:
            self.session.fail(exc)
            return False

    def end(self) -> None:
        """The thread's last event; its slot is flushed and its ident forgotten."""
        try:
            self.slots.current().emit_small(THREAD_END, -1)
            self.slots.retire(threading.get_ident())
        except Exception as exc:
            self.session.fail(exc)

    # -- a parked session ----------------------------------------------------

    def pause(self) -> None:
        """The replacements pass straight through until ``resume``.  A thread
        announced in the finished file and not running yet gets no
        ThreadStart in the next one (its tid was that file's)."""
        global _active
        _active = None
        self._children.clear()

    def resume(self) -> None:
        """The next file starts as an install's does: ThreadStart for every thread alive."""
        global _active
        self.slots = self.session.slots
        self.announce_running()
        _active = self

    # -- threads running at install ------------------------------------------

    def announce_running(self) -> None:
        """ThreadStart for every thread alive now (see the module docstring).
        Reads the threads' attributes, not their properties: this runs at
        the start of every file (``pytest --pytrace``: of every test)."""
        me = threading.current_thread()
        slot = self.slots.current()
        slot.emit(THREAD_START, me._ident, _native_id(me), slot.string_id(me._name))
        for thread in threading.enumerate():
            if thread is not me and thread._ident is not None and not _is_own(thread):
                # The name is defined through this thread's slot, so a
                # prepared slot that loses the race below takes no
                # definition with it.
                name = slot.string_id(thread._name)
                self._adopt(thread._ident, _native_id(thread), name)

    def _adopt(self, ident: int, native_id: int, name: int) -> None:
        """Give the running thread ``ident`` a slot that starts with ThreadStart.

        The slot is complete before it is published: until then no other
        thread can reach it, and if the thread made its own slot meanwhile,
        that one is kept and this one dropped.
        """
        slots = self.slots
        prepared = slots.make_slot(slots.reserve_tid())
        prepared.emit(THREAD_START, ident, native_id, name)
        slots.publish(ident, prepared)


def _native_id(thread: threading.Thread) -> int:
    """The thread's OS id, 0 where the platform has none (or not yet)."""
    return getattr(thread, "_native_id", None) or 0


def _is_own(thread: threading.Thread) -> bool:
    """pytrace's own threads are named so (see ``session.OWN_THREAD_PREFIX``)."""
    return thread._name.startswith(OWN_THREAD_PREFIX)


def _wrap_start(original):
    @functools.wraps(original)
    def start(self):
        hook = _active
        try:
            # Only a start that will succeed is announced: the same checks,
            # in the same order, as Thread.start's own.
            if hook is not None and self._initialized and not self._started._flag:
                caller = sys._getframe(1)
                if not (is_own_code(caller.f_code.co_filename) or _is_own(self)):
                    hook.announce(self, caller)
                    try:
                        return original(self)
                    except BaseException:
                        hook.forget(self)
                        raise
            return original(self)
        except BaseException as exc:
            hide_own_frames(exc)
            raise
    return start


def _wrap_bootstrap(original):
    @functools.wraps(original)
    def _bootstrap(self):
        hook = _active
        try:
            if hook is None or not hook.begin(self):
                return original(self)
            try:
                return original(self)
            finally:
                if _active is hook:
                    hook.end()
        except BaseException as exc:
            hide_own_frames(exc)
            raise
    return _bootstrap


def install(session):
    hook = ThreadsHook(session)
    hook.announce_running()

    def patch() -> None:
        hook.patches.replace(threading.Thread, "start", _wrap_start)
        hook.patches.replace(threading.Thread, "_bootstrap", _wrap_bootstrap)

    uninstall = activate(hook, globals(), patch)
    session.follow(hook.pause, hook.resume)
    return uninstall
