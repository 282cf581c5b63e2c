"""Call events from ``sys.setprofile`` (Python 3.11; selectable on 3.12+).

Per-thread state without a lookup per event: ``start`` installs
``bootstrap`` as the profile function (this thread, and new threads through
``threading.setprofile``).  On its first event in a thread, ``bootstrap``
makes that thread's ``ThreadProfiler`` and re-installs the profiler's bound
``profile`` method with ``sys.setprofile``, so every later event arrives
with its state as ``self``.

Threads.  A thread started after ``start`` gets its profile function from
``threading`` just before its ``run``, so its first events show threading's
``_bootstrap`` and ``_bootstrap_inner`` in ``OpenFrames`` (unless filtered
out), where ``sys.monitoring`` records them as calls.  Threads already
running at ``start`` are reached on 3.12+ by ``sys._setprofileallthreads``
(what ``threading.setprofile_all_threads`` calls).  On 3.11 no API can give
another thread a profile function, so this backend does not trace threads
that were already running when tracing started (the one that called
``start`` excepted).  pytrace's own threads are never traced.

Likewise, ``stop`` can only remove the profile function of its own thread on
3.11.  Other threads remove theirs on their next event: ``stop`` swaps
their code map for an empty one, so that event takes the slow path, which
sees the session stopped and calls ``sys.setprofile(None)``.  The hot paths
pay nothing for this.

Keeping replaced profile functions alive (``HELD``).  Each thread holds a
reference to its profile function, and a bootstrap or profiler is often
referenced by nothing else, so replacing or removing it frees it.  On 3.11
that can happen while CPython is about to call it: ``call_trace`` in
``Python/ceval.c`` reads the thread's profile object, then makes the event's
frame object, whose allocation can run a garbage collection; the Python
code a collection runs (``gc.callbacks``, pytrace's own GC hook among them,
finalizers) is profiled, so a bootstrap handing over or a stopped profiler
removing itself there drops that object before ``call_trace`` calls it, a
use after free.  So every profile function pytrace puts in a thread's slot,
and the bootstrap it replaces, stays referenced from that thread's ``HELD``
until a later session's bootstrap runs in that thread, or the thread ends:
a thread keeps at most its last session's profile functions (and what they
reference) alive.  3.12+ collects only between instructions and does not
need this; it is the same code path there.  The event that the collection
interrupted reaches the bootstrap after the hand-over: it goes on to the
thread's profiler (the thread's stack is opened once).

Mapping the profiler's events (``frame.f_lasti`` says where a frame is):

- ``'call'``: ``CallEnter``; for a generator or coroutine past its first
  start, ``GenResume``.
- ``'return'``: the profiler says ``'return'`` for a return, an exception
  leaving the frame and a yield alike, with ``arg`` None for the first two.
  At a ``RETURN_*`` instruction it is ``CallExit``, at a yield ``GenYield``,
  anywhere else ``CallUnwind`` (an exception is raised at the instruction
  that failed).  An exception thrown into a generator (``throw()``,
  ``close()``) that leaves it straight away leaves it at the yield: on 3.11
  and 3.12 the preceding ``'call'`` shows the throw (``f_lasti`` is still at
  the ``YIELD_VALUE``, a ``send`` is past it), so that ``'return'`` becomes
  ``CallUnwind``.  Limits, both about *which* pop it is, never about the
  balance: on 3.13 a throw looks like a send, so a generator that an
  exception thrown into it leaves at the yield is recorded as ``GenYield``;
  and a generator that catches a thrown exception and yields ``None`` again
  from that same yield, calling nothing in between, is recorded as
  ``CallUnwind`` and then ``GenResume``.  ``sys.monitoring`` (the default
  on 3.12+) has neither limit.
- ``'c_call'``/``'c_return'``/``'c_exception'`` (with ``c_calls``):
  ``CCallEnter``/``CCallExit``, for C functions called from traced code.  A
  ``'c_return'`` pops only a C call recorded from the same frame, so one
  without its ``'c_call'`` (3.12.1-3.12.4 send those for bound methods of C
  functions, gh-122029) is dropped.
"""

from __future__ import annotations

import dis
import sys
import threading

from ..session import TracerError, is_own_thread
from .calls import (C_ENTER, C_EXIT, CALL_ENTER, CALL_EXIT, CALL_UNWIND, DELTA_TABLE_SIZE,
                    GEN_RESUME, GEN_YIELD, CallBackend, ThreadState, first_start_offset,
                    is_suspending, open_frames, record_start, uvarint)

RETURN_OPS = frozenset(op for op in ("RETURN_VALUE", "RETURN_CONST") if op in dis.opmap)
#: Where ``f_lasti`` points when a generator has yielded: at the
#: ``YIELD_VALUE`` up to 3.12, at the instruction after it from 3.13 on.
YIELD_LASTI_SHIFT = 2 if sys.version_info >= (3, 13) else 0
#: Up to 3.12 a throw resumes a generator at its ``YIELD_VALUE``, a send
#: after it; from 3.13 on both resume after it.
THROW_VISIBLE = sys.version_info < (3, 13)
#: 3.12+: set the profile function of every running thread.  This is what
#: ``threading.setprofile_all_threads`` calls; calling it directly keeps that
#: function's own frame out of the trace.
set_all_threads = getattr(sys, "_setprofileallthreads", None)


def exit_positions(code) -> dict:
    """``f_lasti`` -> ``Record`` for a frame of ``code`` leaving normally: the
    offsets of its returns and of its yields.  Any other place is an unwind."""
    positions = {}
    for instruction in dis.get_instructions(code):
        if instruction.opname in RETURN_OPS:
            positions[instruction.offset] = CALL_EXIT
        elif instruction.opname == "YIELD_VALUE":
            positions[instruction.offset + YIELD_LASTI_SHIFT] = GEN_YIELD
    return positions


class HeldProfileFunctions(threading.local):
    """Per thread: the profile functions its last session put in its slot
    (see "Keeping replaced profile functions alive" above)."""

    owner = None
    functions: tuple = ()
    #: What the owner's bootstrap handed this thread over to, if it did.
    handed_to = None

    def keep(self, owner, function) -> None:
        if self.owner is not owner:
            self.owner, self.functions, self.handed_to = owner, (), None
        self.functions += (function,)

    def hand_over(self, owner, function) -> None:
        """Install ``function`` in this thread, handed over to by ``owner``'s bootstrap."""
        self.keep(owner, function)
        self.handed_to = function
        sys.setprofile(function)


HELD = HeldProfileFunctions()


class SetprofileCalls(CallBackend):
    """One session's profile functions.  Its ``codes`` entries are
    ``(encoded function id, exit_positions, first start offset or None if it
    never suspends)`` for traced code, ``()`` for code not traced."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.profilers: list[ThreadProfiler] = []

    def start(self) -> None:
        active = sys.getprofile()
        if active is not None:
            # sys.setprofile has one slot per thread: taking it would silently
            # switch off the profiler that holds it (cProfile, yappi, ...).
            raise TracerError(
                f"another profiler is active ({active!r}); stop it first, or trace without "
                f"calls (--no-calls / calls=False)")
        # New threads first (a Python function: called before any profiling),
        # then the running ones; this thread's first event is the return of
        # the C call below, whose frame is this one.
        threading.setprofile(self.bootstrap)
        if set_all_threads is not None:
            set_all_threads(self.bootstrap)
        else:
            sys.setprofile(self.bootstrap)

    def stop(self) -> None:
        self.stopped = True
        HELD.keep(self, sys.getprofile())
        if set_all_threads is not None:
            set_all_threads(None)
        else:
            sys.setprofile(None)
        threading.setprofile(None)  # after: this Python call is not profiled
        for profiler in list(self.profilers):
            profiler.entries_get = {}.get  # their next event takes the slow path: see above

    def bootstrap(self, frame, event, arg) -> None:
        """A thread's first profile event: make its profiler and hand over."""
        try:
            HELD.keep(self, sys.getprofile())
            if HELD.handed_to is not None:  # the interrupted event (see HELD)
                if sys.getprofile() is HELD.handed_to:
                    HELD.handed_to(frame, event, arg)
                return
            if self.stopped or is_own_thread():
                sys.setprofile(None)
                return
            slot = self.session.slots.current()
            profiler = ThreadProfiler(self, slot)
            innermost_open = frame.f_back if event == "call" else frame
            profiler.depth = open_frames(slot, innermost_open, self._traced_func_id,
                                         self.max_depth)
            self.profilers.append(profiler)
            HELD.hand_over(self, profiler.profile)
            profiler.profile(frame, event, arg)
        except Exception as exc:
            self.session.fail(exc)

    def decide(self, code, frame) -> tuple:
        """Decide once whether ``code`` is traced; return its map entry."""
        if self.filter.traces(frame.f_globals.get("__name__"), code.co_filename):
            fid = self.session.slots.current().code_func_id(code)
            entry = (uvarint(fid), exit_positions(code),
                     first_start_offset(code) if is_suspending(code) else None)
        else:
            entry = ()
        self.remember(code, entry)
        return entry

    def _traced_func_id(self, code, frame) -> int:
        entry = self.entries.get(id(code))
        if entry is None:
            entry = self.decide(code, frame)
        return self.session.slots.current().code_func_id(code) if entry else 0


class ThreadProfiler(ThreadState):
    """One thread's profile function (``profile``) and its state."""

    __slots__ = ("backend", "entries_get", "clock", "limit", "max_depth", "c_calls_on", "thrown")

    def __init__(self, backend: SetprofileCalls, slot) -> None:
        super().__init__(slot)
        self.backend = backend
        #: ``backend.entries.get``, by ``id(code)``.
        self.entries_get = backend.entries.get
        self.clock = slot.clock
        self.limit = slot.limit
        self.max_depth = backend.max_depth
        self.c_calls_on = backend.c_calls
        #: The generator frame an exception was just thrown into (3.11/3.12).
        self.thrown = None

    def profile(self, frame, event, arg) -> None:
        try:
            if event == "call":
                entry = self.entries_get(id(frame.f_code))
                if not entry:
                    if entry is None:
                        self._call_cold(frame)
                    return
                fid, exits, first_start = entry
                record = CALL_ENTER
                if first_start is not None and frame.f_lasti > first_start:
                    record = self._resumed(frame, exits)
                depth = self.depth + 1
                self.depth = depth
                if depth > self.max_depth:
                    return
            elif event == "return":
                entry = self.entries_get(id(frame.f_code))
                if not entry:
                    if entry is None:
                        self._stopped_check()
                    return
                depth = self.depth
                if not depth:
                    return
                self.depth = depth - 1
                if depth > self.max_depth:
                    return
                record = entry[1].get(frame.f_lasti, CALL_UNWIND)
                if self.thrown is not None:
                    record = self._after_throw(frame, record, arg)
                fid = b""
            elif self.c_calls_on:
                if event == "c_call":
                    self._c_call(frame, arg)
                else:
                    self._c_return(frame)
                return
            else:
                return
            # The inline append (see calls.py's module doc).
            slot = self.slot
            now = self.clock()
            delta = now - slot.last
            if delta > 0:
                slot.last = now
            else:
                delta = 0
            if delta < DELTA_TABLE_SIZE:
                start = record.starts[delta]
            else:
                start = record_start(record, slot, slot.seq, delta)
            data = start + fid
            buf = slot.buf
            buf += data
            slot.count += 1
            if len(buf) >= self.limit:
                slot.flush()
        except Exception as exc:
            self.backend.session.fail(exc)

    # -- less frequent paths ---------------------------------------------------

    def _stopped_check(self) -> bool:
        """True (and this thread's profile function removed) once the session stopped."""
        if self.backend.stopped:
            sys.setprofile(None)
            return True
        return False

    def _call_cold(self, frame) -> None:
        """The first call of a code object (or the first event after stop)."""
        if not self._stopped_check() and self.backend.decide(frame.f_code, frame):
            self.profile(frame, "call", None)

    def _resumed(self, frame, exits):
        """A generator continues; note whether an exception is thrown into it."""
        if THROW_VISIBLE and exits.get(frame.f_lasti) is GEN_YIELD:
            self.thrown = frame
        return GEN_RESUME

    def _after_throw(self, frame, record, arg):
        """A thrown-into generator leaving at its yield with no value is unwinding."""
        if self.thrown is not frame:
            return record
        self.thrown = None
        return CALL_UNWIND if record is GEN_YIELD and arg is None else record

    def _c_call(self, frame, func) -> None:
        entry = self.entries_get(id(frame.f_code))
        if not entry:
            if entry is None:
                self._stopped_check()
            return
        self.c_calls.append(frame)
        depth = self.depth = self.depth + 1
        if depth <= self.max_depth:
            slot = self.slot
            slot.emit_small(C_ENTER, self.backend.c_functions.func_id(slot, func))

    def _c_return(self, frame) -> None:
        c_calls = self.c_calls
        if not c_calls or c_calls[-1] is not frame or self._stopped_check():
            return
        c_calls.pop()
        depth = self.depth
        self.depth = depth - 1
        if depth <= self.max_depth:
            self.slot.emit_small(C_EXIT, -1)


BACKEND = SetprofileCalls
