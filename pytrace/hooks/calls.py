"""Function-call events: picks the backend, and holds what both backends share.

Backends (``options.backend``):

- ``"monitoring"``: ``sys.monitoring`` (3.12+), see ``hooks/monitoring.py``;
- ``"setprofile"``: ``sys.setprofile`` + ``threading.setprofile``, see
  ``hooks/setprofile.py``; the only one on 3.11, selectable on 3.12+;
- ``"auto"``: monitoring where it exists, else setprofile.

Both give the same events for the same program (``tests/test_backends.py``
checks it): per thread, ``OpenFrames`` first (the traced frames already open
when the thread's tracing began), then ``CallEnter``/``GenResume``/
``CCallEnter`` pushes and ``CallExit``/``CallUnwind``/``GenYield``/
``CCallExit`` pops that never outnumber the pushes.  Each backend keeps a
per-thread ``depth`` (frames open on the recorded stack, ``OpenFrames``
included) for that, and for ``max_depth``: a push deeper than ``max_depth``
is counted but not recorded, and so is its pop.

A generator or coroutine is a ``CallEnter`` the first time it runs (however
it is started: ``next``, ``send`` or ``throw``), a ``GenYield`` each time it
suspends, a ``GenResume`` each time it continues, and a ``CallExit`` or
``CallUnwind`` when it finishes.

The C core has its own callbacks (``monitoring_c``, ``setprofile_c``), so
the ones in ``monitoring.py`` and ``setprofile.py`` always run on the
pure-Python core's slots.  ``slot.emit_small`` would be a Python call per
event there, so their hot paths append inline instead.  They keep
``pytrace.buffer``'s two rules: the record is built before any part of it
is appended; then ``buf = slot.buf; buf += data`` (the same as ``slot.buf
+= data``, without storing back the same object) reads ``buf`` at the
moment of the append, and no call separates the append from the count.
``monitoring.py`` appends a call record as two parts, its start (type byte
and delta) and its function id, in two ``+=`` with nothing between them,
which saves building the record as a new object: ``+=`` on a bytearray is
not a call, runs no Python code and allocates no object the GC tracks, so
no thread switch, signal handler or collection can fall between the two
halves, just as none falls between an append and its count.  The cold paths
use ``emit``, the same steps as a function.
"""

from __future__ import annotations

import dis
import importlib
import sys
import types
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR

from .. import core, events, wire
from ..filters import CallFilter
from ..session import TracerError

#: True on 3.12+, where ``sys.monitoring`` exists.
HAVE_MONITORING = hasattr(sys, "monitoring")

#: Code flags of functions that suspend: generators, coroutines, async generators.
SUSPENDING = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR


def _prefix(name: str) -> bytes:
    """The type byte of a timed event, with its argument-count bits."""
    kind = events.BY_NAME[name]
    return bytes((kind.id | (kind.varint_count - 1) << 6,))


SMALL = wire.small_uvarints()
SMALL_LIMIT = wire.SMALL_LIMIT
uvarint = wire.uvarint

#: Tick deltas below this have their record start precomputed.
DELTA_TABLE_SIZE = 4096


ENTER = _prefix("CallEnter")
EXIT = _prefix("CallExit")
UNWIND = _prefix("CallUnwind")
YIELD = _prefix("GenYield")
RESUME = _prefix("GenResume")
C_ENTER = _prefix("CCallEnter")
C_EXIT = _prefix("CCallExit")
OPEN_FRAMES = events.BY_NAME["OpenFrames"].id


class Record:
    """A call event as the hot paths write it: its type byte (``prefix``, for
    ``emit_small``) and, for inline appends, ``starts``: the type byte plus
    each encoded delta below ``DELTA_TABLE_SIZE``, indexed instead of
    concatenated (~7% of an event)."""

    __slots__ = ("prefix", "starts")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.starts = tuple(prefix + SMALL[dt] for dt in range(DELTA_TABLE_SIZE))


CALL_ENTER = Record(ENTER)
CALL_EXIT = Record(EXIT)
CALL_UNWIND = Record(UNWIND)
GEN_YIELD = Record(YIELD)
GEN_RESUME = Record(RESUME)


def record_start(record: Record, slot, seq: int, delta: int) -> bytes:
    """Type byte and ``delta`` for a delta outside ``record.starts``.

    This is the one Python call between an inline event's clock read and its
    append, so a flush (re-entrant, or another thread's) may start a new
    batch during it.  The caller reads ``seq`` (the slot's batch number)
    before calling; if it changed, the new batch's base already includes the
    event's time, so the event takes delta 0, as ``ThreadSlot.emit_small``
    does.
    """
    encoded = uvarint(delta)
    return record.prefix + (encoded if slot.seq == seq else b"\x00")


def emit(slot, prefix: bytes, arg: bytes = b"") -> None:
    """Append one timed event: ``prefix``, tick delta, then ``arg`` (an
    encoded varint or nothing), in the hot paths' inline steps, on a slot of
    either core.  The cold paths use it; ``tests/test_cores.py`` checks that
    it writes the same bytes as ``emit_small`` on both cores."""
    now = slot.clock()
    last = slot.last
    if now > last:
        slot.last = now
        now -= last
    else:
        now = 0
    seq = slot.seq
    data = prefix + (SMALL[now] if now < SMALL_LIMIT else uvarint(now)) + arg
    if slot.seq != seq:  # a flush during uvarint(): see record_start
        data = prefix + b"\x00" + arg
    buf = slot.buf
    buf += data
    slot.count += 1
    if len(buf) >= slot.limit:
        slot.flush()


def backend_name(requested: str) -> str:
    """The backend module to use for ``options.backend``."""
    if requested == "auto":
        return "monitoring" if HAVE_MONITORING else "setprofile"
    if requested == "monitoring" and not HAVE_MONITORING:
        raise TracerError(
            f"backend 'monitoring' needs sys.monitoring (Python 3.12+), and this is Python "
            f"{sys.version.split()[0]}; use backend='setprofile' or 'auto'")
    return requested


def backend_module(options):
    """The module of the call backend chosen by ``options.backend``, with the
    C core's callbacks (``monitoring_c``, ``setprofile_c``) when the C core is
    active (``pytrace.core``); imported on first use."""
    name = backend_name(options.backend)
    if core.name == "c":
        name += "_c"
    return importlib.import_module(f"{__package__}.{name}")


def install(session):
    """Install the call backend of ``backend_module``; return its ``stop``."""
    backend = backend_module(session.options).BACKEND(session)
    backend.start()
    return backend.stop


class CallBackend:
    """What every call backend keeps for its session: the options it
    applies per code object and per thread, and what it has learnt.
    Subclasses add ``start()`` and ``stop()``."""

    def __init__(self, session) -> None:
        self.session = session
        options = session.options
        self.filter = CallFilter(options.include, options.exclude)
        self.max_depth = depth_limit(options)
        self.c_calls = options.c_calls
        #: ``id(code)`` -> the backend's entry for that code (falsy: not
        #: traced; absent: not decided yet), for every lookup: a code
        #: object's hash is computed afresh from its contents at every lookup
        #: (its whole bytecode on 3.12+, ~1 us for a big function), its id is
        #: not.  (Nor would a code key do: two codes that differ only in file
        #: or name compare equal.)
        self.entries: dict = {}
        #: ``id(code)`` -> the code, for every id in ``entries``: kept alive,
        #: so that no other code gets its id.  Never shrinks.
        self.codes: dict = {}
        self.c_functions = CFunctions()
        self.stopped = False

    def remember(self, code, entry) -> None:
        """Record the decision on ``code``."""
        # ``codes`` first: an id in ``entries`` always belongs to a code object kept alive.
        self.codes[id(code)] = code
        self.entries[id(code)] = entry


#: ``max_depth`` when unlimited: deeper than any Python stack can be, and
#: below 2**30, so that the hot paths' depth comparisons stay on CPython's
#: fast path for small ("compact") ints.
UNLIMITED_DEPTH = 2**30 - 1


def depth_limit(options) -> int:
    """``options.max_depth`` as a number every depth can be compared with."""
    return options.max_depth or UNLIMITED_DEPTH


#: The depth of a thread whose calls are never recorded: above any
#: ``max_depth`` however many calls it makes or returns from.
MUTED = 1 << 80


class ThreadState:
    """One thread's call-stack bookkeeping, shared by both backends.

    ``depth`` counts the frames open on the recorded stack (recorded or too
    deep to be); ``c_calls`` holds one marker per open C call, so that a C
    return whose call was never seen (e.g. it began before tracing) is
    recognised and dropped.
    """

    __slots__ = ("slot", "depth", "c_calls")

    def __init__(self, slot) -> None:
        self.slot = slot
        self.depth = 0
        self.c_calls: list = []


def open_frames(slot, frame, traced_func_id, max_depth: int) -> int:
    """Emit ``OpenFrames`` for the traced frames from ``frame`` outwards and
    return how many there are (the thread's starting depth).

    ``traced_func_id(code, frame)`` gives a code's function id, or 0 if it is
    not traced.  With ``max_depth``, the stack keeps the outermost
    ``max_depth`` frames: the inner ones are too deep to be recorded, and
    their pops will not be either.
    """
    frames = []
    while frame is not None:
        fid = traced_func_id(frame.f_code, frame)
        if fid:
            frames.append((fid, frame.f_lineno or 0))
        frame = frame.f_back
    if frames:
        kept = frames[-max_depth:] if len(frames) > max_depth else frames
        slot.emit(OPEN_FRAMES, slot.stack_id(tuple(kept)))
    return len(frames)


def is_suspending(code) -> bool:
    return bool(code.co_flags & SUSPENDING)


def first_start_offset(code) -> int:
    """Offset of the ``RESUME`` that starts a generator's body: an event at or
    before it is the generator's first run, one after it a resumption."""
    for instruction in dis.get_instructions(code):
        if instruction.opname == "RESUME" and instruction.arg == 0:
            return instruction.offset
    return 0


# -- C functions ----------------------------------------------------------------

#: Callables that the interpreter's profiler reports as C calls (``c_call``):
#: builtin functions and bound builtin methods, and method descriptors called
#: with their ``self`` (``d.get(k)`` on 3.12+ is ``dict.get`` plus ``d``).
BUILTIN = types.BuiltinFunctionType
METHOD_DESCRIPTOR = types.MethodDescriptorType


def c_function_name(func) -> str:
    """``builtins.len``, ``time.sleep``, ``dict.get``: module-qualified for
    module functions, type-qualified for methods."""
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    module = getattr(func, "__module__", None)
    if isinstance(module, str) and isinstance(getattr(func, "__self__", None), types.ModuleType):
        return f"{module}.{qualname}"
    return qualname


class CFunctions:
    """Function ids of C callables.

    Module functions and method descriptors are long-lived objects and are
    cached by identity.  Bound builtin methods are made afresh for each call
    (``m = obj.method``, and every method call under 3.11's profiler), so
    they are cached by the class they belong to and their name instead:
    caching them by identity would keep their ``self`` alive.
    """

    def __init__(self) -> None:
        self.by_object: dict = {}
        self.by_method: dict = {}

    def func_id(self, slot, func) -> int:
        fid = self.by_object.get(func)
        if fid is not None:
            return fid
        owner = getattr(func, "__self__", None)
        if type(func) is METHOD_DESCRIPTOR or owner is None or isinstance(owner, types.ModuleType):
            cache, key = self.by_object, func
        else:
            # A classmethod's self is the class itself (dict.fromkeys).
            cls = owner if isinstance(owner, type) else type(owner)
            cache, key = self.by_method, (cls, func.__name__)
            fid = cache.get(key)
            if fid is not None:
                return fid
        name = c_function_name(func)
        fid = cache[key] = slot.func_id(("C", name), name, "", 0)
        return fid
