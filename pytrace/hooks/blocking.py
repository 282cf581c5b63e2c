"""Blocking: where threads wait, why, and for how long.

Each observed wait is a pair on the waiting thread: ``Block(reason, stack)``
... ``Unblock`` (reason: index into ``events.BLOCK_REASONS``), or, for a call
into the OS that may or may not wait, ``SysCall(func, stack)`` ...
``SysCallEnd`` (``func`` is named like "os.read", with no file and line 0).
The stack is that of the code calling the observed function, pytrace's
frames left out.  Only the outermost observed wait of a thread is recorded:
``Popen.communicate`` reading its pipes records one subprocess block, not
the selector and ``os.read`` calls inside it.

Covered call paths.  Each is replaced where the program looks it up at
call time, and put back exactly on uninstall; "when" says when a call is
recorded:

- ``time.sleep`` -> sleep, for a positive duration;
- ``acquire`` (or ``with``) of a lock made by ``threading.Lock()`` or
  ``threading.RLock()`` -> lock, when the lock is held by someone else;
- ``threading.Condition.wait`` -> see below, when it waits (no timeout or a
  positive one);
- ``get`` of a ``queue.SimpleQueue()`` -> queue, when the queue is empty
  (``ThreadPoolExecutor`` workers waiting for work);
- ``threading.Thread.join`` -> join, when the thread is alive;
- ``select.select`` and every ``selectors`` selector's ``select`` -> select,
  when it may wait (no timeout or a positive one);
- ``subprocess.Popen.wait`` and ``communicate`` -> subprocess, when the
  process has not been reaped yet;
- ``socket.socket`` ``accept``, ``connect``, ``connect_ex``, ``recv``,
  ``recv_into``, ``recvfrom``, ``recvfrom_into``, ``send``, ``sendall``,
  ``sendto`` -> SysCall, when the socket is blocking (a timeout of 0, as on
  asyncio's sockets, means the call can never wait);
- ``os.read``, ``os.write`` -> SysCall, always.

``socket`` and ``concurrent.futures`` are not imported by pytrace: if the
program has not imported them when tracing starts, they are patched right
after its first import of them (``Patches.when_imported``).

``Condition.wait`` is where every pure-Python primitive of the standard
library actually waits, so it is recorded there, exactly when a wait
happens, with the reason taken from the primitive that called it:
``Event.wait`` -> event (``threading.Timer`` too), ``Semaphore.acquire`` ->
semaphore, ``queue.Queue`` ``get``/``put``/``join`` -> queue,
``concurrent.futures.Future`` ``result``/``exception`` -> future, otherwise
condition (``Barrier`` too).  ``Thread.start`` waiting for the new thread to
run is not a block.  The "socket" and "file" reasons are not written by
this hook: socket and file calls are SysCalls.

Locks and simple queues: C objects cannot be observed, so
``threading.Lock``, ``threading.RLock`` and ``queue.SimpleQueue`` are
replaced by factories of ``TracedLock``/``TracedRLock``/``TracedSimpleQueue``
objects that wrap a native one.  An acquire (a get) first tries without
blocking; only when that fails (the lock is held, the queue empty) is the
wait recorded, so the uncontended case costs one Python call.  Everything
else (``release``, ``put``, ``locked``, ``_is_owned``, ``_at_fork_reinit``,
repr, the refusal to be pickled or copied) is the native object's, and
``isinstance(x, threading.Lock)``/``isinstance(x, queue.SimpleQueue)`` hold
for native and traced objects alike (``threading.Lock`` is a type on 3.13).
Locks made by ``threading`` and ``queue`` after install (inside ``Event``,
``Condition``, ``Queue``) are traced locks too.

Not covered: names bound before install (``from time import sleep``,
``from threading import Lock``, locks and simple queues created before
install, ``os.read`` captured as a default argument as in
``multiprocessing.connection``); C-level primitives used directly
(``select.poll``/``epoll`` objects; file objects from ``open()``, whose
reads are C calls that never pass through ``os.read``; ``ssl.SSLSocket``
reads and writes; ``os.waitpid``/``os.system``); ``asyncio`` waits (they
are not thread waits: the event loop's idle time is its selector's
``select``, which is covered).

The replacements run no Python code besides the original they replace
(``Thread.join`` reads the thread's C-level state rather than calling
``is_alive()``): the call hook would record such calls as the program's own.

pytrace's own waits are never recorded: a wait is pytrace's when the first
frame above the threading/queue primitives belongs to pytrace (its stop
joining the sampler thread, a ticker's ``Event.wait``), or when there is no
such frame and the thread is pytrace's (one starting up).
"""

from __future__ import annotations

import functools
import os
import queue
import select
import selectors
import subprocess
import sys
import threading
import time
import types
from _queue import Empty, SimpleQueue as NativeSimpleQueue
from _thread import LockType, allocate_lock, get_ident

from .. import events, wire
from ..session import is_own_code, is_own_thread
from .patches import Patches, activate, hide_own_frames, unwrapped

BLOCK = events.BY_NAME["Block"].id
SYSCALL = events.BY_NAME["SysCall"].id
UNBLOCK = wire.inline_prefix(events.BY_NAME["Unblock"])
SYSCALL_END = wire.inline_prefix(events.BY_NAME["SysCallEnd"])
REASON = {name: index for index, name in enumerate(events.BLOCK_REASONS)}
#: 3.13+: a thread's end is its ``_handle``'s (before: its ``_tstate_lock``'s release).
THREAD_HANDLES = sys.version_info >= (3, 13)

#: socket.socket methods recorded as SysCalls (all inherited from
#: ``_socket.socket`` but ``accept``).
SOCKET_METHODS = ("accept", "connect", "connect_ex", "recv", "recv_into", "recvfrom",
                  "recvfrom_into", "send", "sendall", "sendto")

#: The installed hook, or None: every replacement (including
#: ones captured by the program, like a ``from time import sleep`` done
#: while tracing) passes straight through then.
_active: BlockingHook | None = None


class BlockingHook:
    """Writes the pairs of one session and knows which waits not to write."""

    def __init__(self, session) -> None:
        self.session = session
        #: Idents of threads inside a recorded wait: waits nested in it are not recorded.
        self.inside: set[int] = set()
        self.patches = Patches()
        #: Source files of the primitives whose frames are looked through to
        #: find who is waiting (see ``waiter``); ``concurrent.futures``' once imported.
        self.primitive_files = {unwrapped(function).__code__.co_filename
                                for function in (threading.Condition.wait, queue.Queue.get)}
        #: The primitive that called ``Condition.wait`` -> the reason of the wait.
        self.reason_by_code = {
            threading.Event.wait.__code__: REASON["event"],
            threading.Semaphore.acquire.__code__: REASON["semaphore"],
            queue.Queue.get.__code__: REASON["queue"],
            queue.Queue.put.__code__: REASON["queue"],
            queue.Queue.join.__code__: REASON["queue"],
        }
        #: Condition waits inside these are not blocks (the handshake of a starting thread).
        self.not_blocks = frozenset({unwrapped(threading.Thread.start).__code__})

    def add_futures(self, futures_base) -> None:
        """``concurrent.futures``' ``Future.result``/``exception`` wait in
        ``Condition.wait`` with the reason future."""
        self.primitive_files.add(unwrapped(futures_base.Future.result).__code__.co_filename)
        self.reason_by_code[futures_base.Future.result.__code__] = REASON["future"]
        self.reason_by_code[futures_base.Future.exception.__code__] = REASON["future"]

    def waiter(self, frame):
        """The first frame at or above ``frame`` that is not a primitive's,
        or None if there is none (a thread whose own code is a primitive,
        like ``threading.Timer``)."""
        while frame is not None and frame.f_code.co_filename in self.primitive_files:
            frame = frame.f_back
        return frame

    def is_own(self, frame) -> bool:
        """True if pytrace itself is the one waiting: pytrace's code waits,
        or one of pytrace's threads does (a starting one waits in
        ``threading``'s code alone).  The outermost frame of a thread
        started while tracing is pytrace's thread entry (``hooks.threads``),
        which runs the program's thread: not a wait of pytrace's."""
        waiter = self.waiter(frame)
        if waiter is None or waiter.f_back is None:  # nothing but the thread's entry
            return is_own_thread()
        return is_own_code(waiter.f_code.co_filename)

    def condition_reason(self, frame) -> int | None:
        """The reason of a ``Condition.wait`` called from ``frame`` (None: not a block)."""
        reason = None
        while frame is not None and frame.f_code.co_filename in self.primitive_files:
            code = frame.f_code
            if code in self.not_blocks:
                return None
            if reason is None:
                reason = self.reason_by_code.get(code)
            frame = frame.f_back
        return REASON["condition"] if reason is None else reason

    def begin(self, kind: int, arg, frame):
        """Write Block(arg) or SysCall(func named arg) for a wait called from
        ``frame``; return the slots of the file written to (for ``end``), or
        None if the wait is not to be recorded."""
        if self.is_own(frame):
            return None
        session = self.session
        try:
            slots = session.slots
            slot = slots.current()
            if kind == SYSCALL:
                arg = slot.func_id(("syscall", arg), arg, "", 0)
            slot.emit(kind, arg, session.stack_id(slot, frame))
            return slots
        except Exception as exc:
            session.fail(exc)
            return None

    def end(self, kind: int, slots) -> None:
        """Write the Unblock or SysCallEnd that closes a ``kind`` wait begun
        in the file of ``slots``."""
        if _active is not self or self.session.slots is not slots:
            return  # tracing stopped, or went on into another file, during the wait
        try:
            slots.current().emit_small(UNBLOCK if kind == BLOCK else SYSCALL_END, -1)
        except Exception as exc:
            self.session.fail(exc)

    # -- a parked session ----------------------------------------------------

    def pause(self) -> None:
        """The replacements pass straight through until ``resume``."""
        global _active
        _active = None

    def resume(self) -> None:
        global _active
        _active = self


def _observed(kind: int, arg, frame, call, /, *args, **kwargs):
    """``call(*args, **kwargs)``, recorded as a wait of ``kind`` (Block or
    SysCall, with ``arg``) called from ``frame``, unless no session runs, the
    thread is already inside a recorded wait, or the wait is pytrace's own."""
    hook = _active
    if hook is None:
        return call(*args, **kwargs)
    ident = get_ident()
    slots = None if ident in hook.inside else hook.begin(kind, arg, frame)
    if slots is None:
        return call(*args, **kwargs)
    hook.inside.add(ident)
    try:
        return call(*args, **kwargs)
    finally:
        hook.inside.discard(ident)
        hook.end(kind, slots)


def _replacement(original, kind: int, describe):
    """A replacement for ``original`` that records a call as a wait of
    ``kind`` when ``describe(hook, args, kwargs, caller)`` gives its argument
    (a reason, a function name) rather than None.

    It takes ``*args, **kwargs`` and hands them over untouched, so a wrong
    call fails with the original's own error (a ``describe`` that cannot
    make sense of the arguments records nothing).  An exception leaving it
    carries no pytrace frames: the program's traceback is the one it would
    get without pytrace.
    """
    @functools.wraps(original)
    def replacement(*args, **kwargs):
        try:
            hook = _active
            if hook is not None:
                caller = sys._getframe(1)
                try:
                    arg = describe(hook, args, kwargs, caller)
                except Exception:
                    arg = None
                if arg is not None:
                    return _observed(kind, arg, caller, original, *args, **kwargs)
            return original(*args, **kwargs)
        except BaseException as exc:
            hide_own_frames(exc)
            raise
    return replacement


def _blocks(timeout) -> bool:
    """True if a ``timeout`` argument (None = forever) lets the call wait.
    Anything but None or a positive number is left to the call itself."""
    return timeout is None or (isinstance(timeout, (int, float)) and timeout > 0)


def _lock_blocks(timeout) -> bool:
    """Like ``_blocks`` for ``acquire``'s timeout, where -1 is forever."""
    return isinstance(timeout, (int, float)) and (
        timeout == -1 or 0 < timeout <= threading.TIMEOUT_MAX)


def _argument(args, kwargs, index: int, name: str):
    """The argument ``name`` (at ``index`` if positional) of a call, or None."""
    return args[index] if len(args) > index else kwargs.get(name)


# -- what each replacement records (the ``describe`` of ``_replacement``) ---------

def _sleep(hook, args, kwargs, caller):
    seconds = args[0] if len(args) == 1 and not kwargs else None
    positive = isinstance(seconds, (int, float)) and seconds > 0
    return REASON["sleep"] if positive else None


def _condition_wait(hook, args, kwargs, caller):
    if not _blocks(_argument(args, kwargs, 1, "timeout")):
        return None
    return hook.condition_reason(caller)


def _running(thread) -> bool:
    """``thread.is_alive()``, reading the C-level state instead of calling it."""
    if not thread._started._flag:
        return False
    if THREAD_HANDLES:
        return not thread._handle.is_done()
    lock = thread._tstate_lock
    return lock is not None and lock.locked()


def _join(hook, args, kwargs, caller):
    # Thread.join's own refusals (not initialized, not started, the current
    # thread) happen inside the original, unrecorded.
    thread = args[0]
    waits = (_blocks(_argument(args, kwargs, 1, "timeout")) and thread._initialized
             and thread._ident != get_ident() and _running(thread))
    return REASON["join"] if waits else None


def _select(hook, args, kwargs, caller):
    # select.select(rlist, wlist, xlist, timeout=None), positional only.
    waits = len(args) in (3, 4) and not kwargs and _blocks(args[3] if len(args) == 4 else None)
    return REASON["select"] if waits else None


def _selector_select(hook, args, kwargs, caller):
    return REASON["select"] if _blocks(_argument(args, kwargs, 1, "timeout")) else None


def _popen_wait(hook, args, kwargs, caller):
    waits = args[0].returncode is None and _blocks(_argument(args, kwargs, 1, "timeout"))
    return REASON["subprocess"] if waits else None


def _popen_communicate(hook, args, kwargs, caller):
    waits = args[0].returncode is None and _blocks(_argument(args, kwargs, 2, "timeout"))
    return REASON["subprocess"] if waits else None


def _named(name: str):
    """A SysCall named ``name``, always."""
    return lambda hook, args, kwargs, caller: name


def _socket_call(name: str):
    """A SysCall named ``socket.name``, unless the socket is non-blocking."""
    qualified = f"socket.{name}"
    return lambda hook, args, kwargs, caller: None if args[0].timeout == 0.0 else qualified


# -- locks and simple queues ----------------------------------------------------

class _Standin(type):
    """The metaclass of a class that stands in for a native one in its module
    (its ``_native``): ``isinstance``/``issubclass`` against it accept the
    native class too, so objects made before install still pass."""

    def __instancecheck__(cls, instance) -> bool:
        native = vars(cls).get("_native")
        return type.__instancecheck__(cls, instance) or (
            native is not None and isinstance(instance, native))

    def __subclasscheck__(cls, subclass) -> bool:
        native = vars(cls).get("_native")
        return type.__subclasscheck__(cls, subclass) or (
            native is not None and issubclass(subclass, native))


class _Wrapper:
    """A native object (``_inner``) that stays itself in every way but the
    methods a subclass defines: other attributes, repr, the refusal to be
    pickled or copied are the native object's.  Every method keeps its own
    frame out of the tracebacks of exceptions it lets through."""

    __slots__ = ("_inner", "__weakref__")

    def __getattr__(self, name):
        try:
            # object.__getattribute__: an instance without _inner (never
            # built) raises AttributeError instead of recursing.
            return getattr(object.__getattribute__(self, "_inner"), name)
        except BaseException as exc:
            hide_own_frames(exc)
            raise

    def __repr__(self) -> str:
        return repr(self._inner)

    def __reduce_ex__(self, protocol):
        try:
            return self._inner.__reduce_ex__(protocol)
        except BaseException as exc:
            hide_own_frames(exc)
            raise


class _TracedLockBase(_Wrapper):
    """A native lock whose contended acquires are recorded."""

    __slots__ = ("_acquire", "release")

    def _wrap(self, inner) -> None:
        self._inner = inner
        # Bound C methods: release and the non-blocking try cost no Python frame.
        self._acquire = inner.acquire
        self.release = inner.release

    def acquire(self, blocking=True, timeout=-1):
        try:
            if blocking and _lock_blocks(timeout):
                return self._acquire(False) or _observed(
                    BLOCK, REASON["lock"], sys._getframe(1), self._acquire, blocking, timeout)
            return self._acquire(blocking, timeout)
        except BaseException as exc:
            hide_own_frames(exc)
            raise

    def __enter__(self):
        try:
            return self._acquire(False) or _observed(
                BLOCK, REASON["lock"], sys._getframe(1), self._acquire)
        except BaseException as exc:
            hide_own_frames(exc)
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            self.release()
        except BaseException as exc:
            hide_own_frames(exc)
            raise


class TracedLock(_TracedLockBase, metaclass=_Standin):
    """What ``threading.Lock()`` makes while the hook is installed."""

    __slots__ = ()
    _native = LockType

    def __init__(self) -> None:
        self._wrap(allocate_lock())


class TracedRLock(_TracedLockBase):
    """What ``threading.RLock()`` makes while the hook is installed."""

    __slots__ = ()

    def __init__(self, inner) -> None:
        self._wrap(inner)


def _rlock_factory(original):
    @functools.wraps(original)
    def RLock(*args, **kwargs):
        try:
            return TracedRLock(original(*args, **kwargs))
        except BaseException as exc:
            hide_own_frames(exc)
            raise
    return RLock


class TracedSimpleQueue(_Wrapper, metaclass=_Standin):
    """What ``queue.SimpleQueue()`` makes while the hook is installed: a
    native SimpleQueue whose ``get`` records a wait (reason queue) when the
    queue is empty.  ``ThreadPoolExecutor`` workers wait for work there."""

    __slots__ = ("_get", "put", "put_nowait", "get_nowait", "empty", "qsize")
    _native = NativeSimpleQueue

    def __class_getitem__(cls, item):
        """``queue.SimpleQueue[int]`` is the same alias as without pytrace."""
        return types.GenericAlias(NativeSimpleQueue if cls is TracedSimpleQueue else cls, item)

    def __new__(cls, *args, **kwargs):
        try:
            # SimpleQueue() takes no arguments; a subclass's __init__ may.
            inner = NativeSimpleQueue(*args, **kwargs) if cls is TracedSimpleQueue else (
                NativeSimpleQueue())
        except BaseException as exc:
            hide_own_frames(exc)
            raise
        self = object.__new__(cls)
        self._inner = inner
        self._get = inner.get
        self.put, self.put_nowait = inner.put, inner.put_nowait
        self.get_nowait, self.empty, self.qsize = inner.get_nowait, inner.empty, inner.qsize
        return self

    def get(self, block=True, timeout=None):
        try:
            if block and _blocks(timeout):
                try:
                    return self._get(False)
                except Empty:
                    pass
                return _observed(BLOCK, REASON["queue"], sys._getframe(1), self._get, block,
                                 timeout)
            return self._get(block, timeout)
        except BaseException as exc:
            hide_own_frames(exc)
            raise


@functools.cache
def _selector_classes() -> tuple:
    """Every concrete selector class that defines its own ``select`` (looked
    up once: ``selectors`` defines them at import)."""
    found = []
    for value in vars(selectors).values():
        if (isinstance(value, type) and issubclass(value, selectors.BaseSelector)
                and value is not selectors.BaseSelector and "select" in vars(value)
                and value not in found):
            found.append(value)
    return tuple(found)


#: (owner, name) -> (original, its replacement), for ``_reusable_replacement``.
_made: dict[tuple, tuple] = {}


def _reusable_replacement(owner, name: str, original, kind: int, describe):
    """The replacement of ``owner.name``, currently ``original``: built once
    and given to every later install while the original stays the same.
    A replacement holds nothing of a session (it finds the hook in
    ``_active`` at each call), and building the ~25 of them anew
    (``functools.wraps``) was most of the cost of starting a trace, which
    ``pytest --pytrace`` does for every test (issue 4)."""
    made = _made.get((owner, name))
    if made is None or made[0] is not original:
        made = _made[(owner, name)] = (original, _replacement(original, kind, describe))
    return made[1]


def install(session):
    hook = BlockingHook(session)

    def replace(owner, name: str, kind: int, describe) -> None:
        hook.patches.replace(owner, name, lambda original: _reusable_replacement(
            owner, name, original, kind, describe))

    def patch() -> None:
        hook.patches.replace(threading, "Lock", lambda original: TracedLock)
        hook.patches.replace(threading, "RLock", _rlock_factory)
        hook.patches.replace(queue, "SimpleQueue", lambda original: TracedSimpleQueue)
        replace(time, "sleep", BLOCK, _sleep)
        replace(threading.Condition, "wait", BLOCK, _condition_wait)
        replace(threading.Thread, "join", BLOCK, _join)
        replace(select, "select", BLOCK, _select)
        for cls in _selector_classes():
            replace(cls, "select", BLOCK, _selector_select)
        replace(subprocess.Popen, "wait", BLOCK, _popen_wait)
        replace(subprocess.Popen, "communicate", BLOCK, _popen_communicate)
        replace(os, "read", SYSCALL, _named("os.read"))
        replace(os, "write", SYSCALL, _named("os.write"))
        # Not imported only to be patched (see ``Patches.when_imported``).
        hook.patches.when_imported("socket", patch_socket, session.fail)
        hook.patches.when_imported("concurrent.futures._base", hook.add_futures, session.fail)

    def patch_socket(socket) -> None:
        for name in SOCKET_METHODS:
            replace(socket.socket, name, SYSCALL, _socket_call(name))

    uninstall = activate(hook, globals(), patch)
    session.follow(hook.pause, hook.resume)
    return uninstall
