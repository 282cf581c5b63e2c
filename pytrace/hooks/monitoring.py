"""Call events from ``sys.monitoring`` (Python 3.12+).

Tool id.  pytrace claims the first free id of ``PROFILER_ID`` (2), 4, 3 and
never frees or clobbers another tool's id (cProfile always uses 2, coverage
1, debuggers 0); if all three are taken, starting fails with an error that
names the tool holding each.

Events.  ``PY_START`` is global: the first time a code object starts, the
filter decides about it once.  Traced code gets local ``PY_RETURN``,
``PY_YIELD``, ``PY_RESUME`` (and ``CALL``/``C_RETURN``/``C_RAISE`` with
``c_calls``) on that code object only, so returns need no filter lookup;
filtered-out code gets ``DISABLE`` from ``PY_START`` and costs nothing
afterwards.  ``PY_UNWIND`` and ``PY_THROW`` cannot be set per code nor
disabled (``DISABLE`` there raises ``ValueError`` on 3.12), so they stay
global and look the code up.

``DISABLE`` sticks per (tool id, location) across ``set_events(id, 0)``
and even across ``free_tool_id`` until ``sys.monitoring.restart_events()``:
the next holder of the id (a second pytrace session, or cProfile, which
always takes id 2) would silently miss every location pytrace disabled.  So
``stop`` calls ``restart_events()`` once its events are off, and ``start``
calls it too, for whatever the id's previous holder left.  The trade-off:
the call is global, so it also re-enables locations that *other* tools
(e.g. coverage.py) disabled; each such tool receives one more event per
location and disables it again.  Correct data for the next tool is worth
that one-off cost to a tool that must already cope with ``restart_events``
from others.

C calls.  ``CALL`` fires for every call; only builtin functions and method
descriptors called with their ``self`` become ``CCallEnter`` (what the
interpreter's profiler calls a C call).  ``C_RETURN``/``C_RAISE`` fire after
every call of something that is not a Python function (classes too), so each
pops only the C call it belongs to (same callable, code and offset, the top
of the thread's C-call markers); one without its recorded ``CALL``, e.g. of
a call that began before tracing, is dropped.  (``f(*args)`` on early 3.12
releases sends ``CALL`` only when ``f`` is a C function, gh-116626: that
costs nothing here, where ``CALL`` matters only for C functions.)

Threads.  Events are process-wide, so threads started before and after
``start()`` are traced alike (pytrace's own threads excepted: their state is
``MUTED``); per-thread state lives in a ``_thread._local``, so it ends with
its thread.  A thread's state is also tied to its slot: when the slot of
the thread changes (the threads hook binds a new one when a thread starts,
possibly after its first events), the state starts afresh at the thread's
next outermost call.

Speed (the callbacks below run on the pure-Python core only).  Every event
pays for the callback's own call (recursive fib on 3.12: 3.5x untraced with
empty callbacks), then for each lookup and call it makes, so the hot paths
make few:

- the code's entry is found by ``id(code)`` in ``entries``, not by the code
  object: a code object's hash is computed afresh each time from its
  name, bytecode and constants (0.7 us for a big function on 3.12).  An id
  is unique only while its object lives, so every code object in ``entries``
  is kept alive in ``codes``, whose entries are never removed;
- the thread's state is an attribute of a ``_thread._local``: one
  attribute load, which finds the running thread's own dict in C (20 ns
  here, against 32 ns for ``get_ident()`` and a comparison with a cached
  ident, or 40 ns for ``get_ident()`` and a dict lookup).  A new thread
  has no attribute yet: its first event takes the cold path.  Nothing
  about the running thread is cached where another thread could see it,
  so a thread switch inside a callback cannot mix two threads' states up.

Clean stop: ``set_events(id, 0)``, ``set_local_events(id, code, 0)`` for every
code object instrumented, every callback unregistered, ``restart_events()``,
then ``free_tool_id``; after that, another tool can claim the id and sees
every event (``free_tool_id`` alone leaves callbacks behind on 3.12 and
3.13).
"""

from __future__ import annotations

import _thread
import sys
import threading

from ..session import TracerError, is_own_thread
from .calls import (BUILTIN, C_ENTER, C_EXIT, CALL_ENTER, CALL_EXIT, CALL_UNWIND,
                    DELTA_TABLE_SIZE, GEN_RESUME, GEN_YIELD, METHOD_DESCRIPTOR, MUTED,
                    CallBackend, ThreadState, emit, first_start_offset, open_frames,
                    record_start, uvarint)

monitoring = sys.monitoring
E = monitoring.events
DISABLE = monitoring.DISABLE
MISSING = monitoring.MISSING

#: Tool ids tried in order: the profiler's own, then the two unassigned ones.
TOOL_IDS = (monitoring.PROFILER_ID, 4, 3)
TOOL_NAME = "pytrace"

GLOBAL_EVENTS = E.PY_START | E.PY_UNWIND | E.PY_THROW
LOCAL_EVENTS = E.PY_RETURN | E.PY_YIELD | E.PY_RESUME
C_CALL_EVENTS = E.CALL | E.C_RETURN | E.C_RAISE


def claim_tool_id() -> int:
    """Take the first free id of ``TOOL_IDS``; fail naming the holders if none is."""
    holders = {}
    for tool in TOOL_IDS:
        if monitoring.get_tool(tool) is None:
            try:
                monitoring.use_tool_id(tool, TOOL_NAME)
                return tool
            except ValueError:  # another thread took it just now
                pass
        holders[tool] = monitoring.get_tool(tool)
    held = ", ".join(f"{tool} by {name!r}" for tool, name in holders.items())
    raise TracerError(
        f"no sys.monitoring tool id is free for pytrace (held: {held}); stop one of those "
        f"tools first, or use backend='setprofile'")


class MonitoringCalls(CallBackend):
    """One session's ``sys.monitoring`` tool.  Its ``codes`` entries are
    encoded function ids, False for code not traced."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.local_events = LOCAL_EVENTS | (C_CALL_EVENTS if self.c_calls else 0)
        #: ``threads.state``: the running thread's ThreadState.
        self.threads = _thread._local()
        self.first_starts: dict = {}
        # Guards instrumenting code objects against a concurrent stop.  An
        # RLock because a hook's callback may stop tracing while we hold it;
        # _thread's, because the blocking hook traces threading's locks.
        self.lock = _thread.RLock()
        self.tool: int | None = None
        self.registered: list[int] = []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.tool = claim_tool_id()
        try:
            for event, callback in self._callbacks().items():
                monitoring.register_callback(self.tool, event, callback)
                self.registered.append(event)
            monitoring.restart_events()
            # This thread's open frames now, as setprofile does, and before
            # events flow: nothing the tracer itself calls is recorded.
            self._state(sys._getframe())
            monitoring.set_events(self.tool, GLOBAL_EVENTS)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            tool = self.tool
            monitoring.set_events(tool, 0)
            for key, code in list(self.codes.items()):
                if self.entries.get(key):
                    monitoring.set_local_events(tool, code, 0)
            for event in self.registered:
                monitoring.register_callback(tool, event, None)
            monitoring.restart_events()
            monitoring.free_tool_id(tool)

    # -- decisions and per-thread state (cold paths) --------------------------------

    def _decide(self, code, frame):
        """Decide once whether ``code`` is traced; if so, instrument it and
        return its ``codes`` entry, else return False."""
        if not self.filter.traces(frame.f_globals.get("__name__"), code.co_filename):
            self.remember(code, False)
            return False
        fid = uvarint(self.session.slots.current().code_func_id(code))
        with self.lock:
            if self.stopped:  # never leave local events behind on a freed id
                return False
            monitoring.set_local_events(self.tool, code, self.local_events)
            self.remember(code, fid)
        return fid

    def _traced_func_id(self, code, frame) -> int:
        fid = self.entries.get(id(code))
        if fid is None:
            fid = self._decide(code, frame)
        return self.session.slots.current().code_func_id(code) if fid else 0

    def _state(self, innermost_open) -> ThreadState:
        """The calling thread's state.  A new one starts (with ``OpenFrames``
        from ``innermost_open`` outwards) on the thread's first event, and when
        its slot changed while none of its calls was open."""
        threads = self.threads
        state = getattr(threads, "state", None)
        if state is None and is_own_thread():
            state = threads.state = ThreadState(None)
            state.depth = MUTED
            return state
        slot = self.session.slots.current()
        if state is not None and (state.slot is slot or state.depth):
            return state
        state = ThreadState(slot)
        state.depth = open_frames(slot, innermost_open, self._traced_func_id, self.max_depth)
        threads.state = state
        return state

    def _push_cold(self, code, record, frame) -> bool:
        """A push off the hot path; False if ``code`` is not traced."""
        fid = self._traced_func_id(code, frame)
        if not fid:
            return False
        state = self._state(frame.f_back)
        depth = state.depth + 1
        state.depth = depth
        if depth <= self.max_depth:
            emit(state.slot, record.prefix, uvarint(fid))
        return True

    def _pop_cold(self, record, frame) -> None:
        """A pop on a thread without state yet: its open frames include ``frame``."""
        state = self._state(frame)
        depth = state.depth
        if depth:
            state.depth = depth - 1
            if depth <= self.max_depth:
                emit(state.slot, record.prefix)

    def _throw(self, code, offset, frame) -> None:
        """``PY_THROW``: ``throw()``/``close()`` resumes a generator, or starts
        it if it never ran.  Only decided, traced code is pushed: a generator
        of undecided code was never seen running, so it is not on the stack."""
        if not self.entries.get(id(code)):
            return
        start = self.first_starts.get(code)
        if start is None:
            start = self.first_starts[code] = first_start_offset(code)
        self._push_cold(code, CALL_ENTER if offset <= start else GEN_RESUME, frame)

    def _fail(self, exc: BaseException) -> None:
        self.session.fail(exc)

    # -- callbacks (hot paths) ------------------------------------------------

    def _callbacks(self) -> dict:
        """The callbacks, as closures over everything they read: the cheapest
        lookups pure Python has."""
        fids = self.entries
        fids_get = fids.get
        threads = self.threads
        slot_of = self.session.slots.by_ident.get
        get_ident = threading.get_ident
        getframe = sys._getframe
        clock = self.session.slots.clock
        limit = self.session.slots.limit
        max_depth = self.max_depth
        push_cold = self._push_cold
        pop_cold = self._pop_cold
        fail = self._fail

        def push_callback(record):
            starts = record.starts

            def on_push(code, offset):
                try:
                    try:
                        fid = fids[id(code)]
                    except KeyError:  # code not decided yet
                        return None if push_cold(code, record, getframe(1)) else DISABLE
                    if not fid:
                        return DISABLE
                    try:
                        state = threads.state
                    except AttributeError:  # the thread's first event
                        push_cold(code, record, getframe(1))
                        return None
                    depth = state.depth
                    if not depth and state.slot is not slot_of(get_ident()):
                        push_cold(code, record, getframe(1))
                        return None
                    depth += 1
                    state.depth = depth
                    if depth > max_depth:
                        return None
                    # The inline append (see calls.py's module doc).
                    slot = state.slot
                    now = clock()
                    delta = now - slot.last
                    if delta > 0:
                        slot.last = now
                    else:
                        delta = 0
                    if delta < DELTA_TABLE_SIZE:
                        buf = slot.buf
                        buf += starts[delta]
                        buf += fid
                    else:
                        data = record_start(record, slot, slot.seq, delta) + fid
                        buf = slot.buf
                        buf += data
                    slot.count += 1
                    if len(buf) >= limit:
                        slot.flush()
                except Exception as exc:
                    fail(exc)
                return None
            return on_push

        def pop_callback(record, global_event):
            starts = record.starts

            def on_pop(code, offset, value):
                try:
                    if global_event and not fids_get(id(code)):
                        return
                    try:
                        state = threads.state
                    except AttributeError:  # the thread's first event
                        pop_cold(record, getframe(1))
                        return
                    depth = state.depth
                    if not depth:
                        return
                    state.depth = depth - 1
                    if depth > max_depth:
                        return
                    # The inline append (see calls.py's module doc).
                    slot = state.slot
                    now = clock()
                    delta = now - slot.last
                    if delta > 0:
                        slot.last = now
                    else:
                        delta = 0
                    if delta < DELTA_TABLE_SIZE:
                        data = starts[delta]
                    else:
                        data = record_start(record, slot, slot.seq, delta)
                    buf = slot.buf
                    buf += data
                    slot.count += 1
                    if len(buf) >= limit:
                        slot.flush()
                except Exception as exc:
                    fail(exc)
            return on_pop

        def on_throw(code, offset, exception):
            try:
                self._throw(code, offset, getframe(1))
            except Exception as exc:
                fail(exc)

        callbacks = {
            E.PY_START: push_callback(CALL_ENTER),
            E.PY_RESUME: push_callback(GEN_RESUME),
            E.PY_RETURN: pop_callback(CALL_EXIT, False),
            E.PY_YIELD: pop_callback(GEN_YIELD, False),
            E.PY_UNWIND: pop_callback(CALL_UNWIND, True),
            E.PY_THROW: on_throw,
        }
        if self.c_calls:
            callbacks.update(self._c_callbacks())
        return callbacks

    def _c_callbacks(self) -> dict:
        threads = self.threads
        getframe = sys._getframe
        c_func_id = self.c_functions.func_id
        builtin_subtypes: dict = {}
        max_depth = self.max_depth
        fail = self._fail

        def on_call(code, offset, func, arg0):
            try:
                kind = type(func)
                if kind is not BUILTIN:
                    if kind is METHOD_DESCRIPTOR:
                        if arg0 is MISSING:  # no self: the profiler does not call it a C call
                            return
                    else:
                        known = builtin_subtypes.get(kind)
                        if known is None:
                            known = builtin_subtypes[kind] = issubclass(kind, BUILTIN)
                        if not known:
                            return
                try:
                    state = threads.state
                except AttributeError:  # the thread's first event
                    state = self._state(getframe(1))
                state.c_calls.append((func, offset, code))
                depth = state.depth + 1
                state.depth = depth
                if depth <= max_depth:
                    slot = state.slot
                    slot.emit_small(C_ENTER, c_func_id(slot, func))
            except Exception as exc:
                fail(exc)

        def on_c_return(code, offset, func, arg0):
            try:
                try:
                    state = threads.state
                except AttributeError:  # the thread's first event
                    return
                c_calls = state.c_calls
                if not c_calls or c_calls[-1] != (func, offset, code):
                    return
                c_calls.pop()
                depth = state.depth
                state.depth = depth - 1
                if depth <= max_depth:
                    state.slot.emit_small(C_EXIT, -1)
            except Exception as exc:
                fail(exc)

        return {E.CALL: on_call, E.C_RETURN: on_c_return, E.C_RAISE: on_c_return}


BACKEND = MonitoringCalls
