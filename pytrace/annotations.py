"""User annotations, like Go's ``runtime/trace``: tasks, regions, logs, counters.

    with pytrace.task("checkout") as order:   # UserTaskCreate(order.id, parent, "checkout")
        with pytrace.region("load cart"):     # UserRegionStart(order.id, "load cart")
            ...                               # UserRegionEnd(order.id, "load cart")
        pytrace.log("cart", "3 items")        # UserLog(order.id, "cart", "3 items")
        pytrace.counter("queue_depth", 17)    # Counter("queue_depth", 17)
                                              # UserTaskEnd(order.id)
    @pytrace.region("parse")                  # a region around every call
    def parse(text): ...

Regions, logs and new tasks belong to the innermost task entered in the
current context (0 if none).  The task stack lives in a ``ContextVar``, so
each thread has its own (threads start with an empty context), and each
asyncio task continues from a copy of its creator's.

When no trace is running, every call is a no-op after one check for the
running session: about 0.1 us for ``log`` or ``counter`` and 0.3-0.5 us for
a ``with`` region or task on this project's machine (3.11-3.13).  A task entered then is not recorded and has ``id`` 0, and a
task or region that began outside the running trace records no end: every
end in a trace has its start.

Arguments are checked whether or not a trace is running, so code that runs
untraced also runs traced: names, categories and messages must be ``str``
(``TypeError`` otherwise) and counter values integers.  A float counter value
raises ``TypeError`` rather than being rounded: the trace stores exact
integers, and silently turning 0.4 into 0 would hide data; scale it (e.g.
milliseconds) and pass an int.  Values must fit in 64 signed bits
(``OverflowError``).  A problem inside the tracer never reaches the caller: it
stops tracing with one warning (``Session.fail``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
from contextvars import ContextVar

from . import events, wire
from .session import current

_TASK_CREATE = events.BY_NAME["UserTaskCreate"].id
_TASK_END = events.BY_NAME["UserTaskEnd"].id
_REGION_START = events.BY_NAME["UserRegionStart"].id
_REGION_END = events.BY_NAME["UserRegionEnd"].id
_LOG = events.BY_NAME["UserLog"].id
_COUNTER = events.BY_NAME["Counter"].id

#: Counter values are zigzag varints of at most 10 bytes: signed 64-bit.
COUNTER_MIN = -(1 << 63)
COUNTER_MAX = (1 << 63) - 1

_innermost: ContextVar = ContextVar("pytrace_task", default=None)
#: Task ids are unique in the process, hence in every trace.
_task_ids = itertools.count(1)


def _not_str(what: str, value) -> TypeError:
    return TypeError(f"pytrace: {what} must be a str, not {type(value).__name__}")


def _task_id(session) -> int:
    """The innermost task of this context, if it was recorded in ``session``'s
    current file; else 0."""
    innermost = _innermost.get()
    return innermost.id if innermost is not None and innermost._file is session.recorder else 0


def _recording(session, file) -> bool:
    """True if ``session`` is the running trace and still records ``file``
    (a parked session that resumed records another: see ``Session.park``)."""
    return session is not None and session is current() and session.recorder is file


def _emit(session, kind_id: int, numbers: tuple, texts: tuple = ()) -> None:
    """Write one event through the calling thread's slot: its ``numbers``,
    then the string ids of its ``texts`` (every annotation event but
    ``Counter`` lists its strings last).

    A tracer problem stops tracing instead of reaching the caller.
    """
    try:
        slot = session.slots.current()
        slot.emit(kind_id, *numbers, *map(slot.string_id, texts))
    except Exception as exc:
        session.fail(exc)


def _emit_named(session, kind_id: int, task_id: int, name: str) -> None:
    """``_emit`` of an event whose arguments are a task id and one string
    (a region's start or end).  Tasks and regions write without ``_emit``'s
    tuples and star-arguments: ``pytest --pytrace`` writes eight of these
    events per test, which took 5.2-6.1 us with them and 2.7-3.0 us without
    (issue 4)."""
    try:
        slot = session.slots.current()
        slot.emit(kind_id, task_id, slot.string_id(name))
    except Exception as exc:
        session.fail(exc)


class task:
    """``with pytrace.task(name) as t:`` records a task; ``t.id`` is its id (0 if not traced).

    A task object can be entered again after it ended (it gets a new id), but
    not while it is active.
    """

    __slots__ = ("name", "id", "parent", "_session", "_file", "_token")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise _not_str("task name", name)
        self.name = name
        self.id = 0
        self.parent = 0
        self._session = None
        self._file = None
        self._token = None

    def __enter__(self) -> "task":
        if self._token is not None:
            raise RuntimeError(f"pytrace.task {self.name!r} is already active; "
                               f"create a new pytrace.task for each with-block")
        session = current()
        if session is not None:
            self.id = next(_task_ids)
            self.parent = _task_id(session)
            self._session = session
            self._file = session.recorder
            self._token = _innermost.set(self)
            try:
                slot = session.slots.current()
                slot.emit(_TASK_CREATE, self.id, self.parent, slot.string_id(self.name))
            except Exception as exc:
                session.fail(exc)
        return self

    def __exit__(self, *exc_info) -> None:
        token, session, file = self._token, self._session, self._file
        if token is None:
            return
        self._token = self._session = self._file = None
        try:
            _innermost.reset(token)
        except ValueError:  # exited in another context (e.g. a generator resumed elsewhere)
            pass
        if _recording(session, file):
            try:
                session.slots.current().emit(_TASK_END, self.id)
            except Exception as exc:
                session.fail(exc)

    def __repr__(self) -> str:
        return f"<pytrace.task {self.name!r} id={self.id} parent={self.parent}>"


class region:
    """``with pytrace.region(name):`` or ``@pytrace.region(name)``: a named span
    of the current thread, in the innermost task.

    The same region object may be entered again while active (recursion,
    several threads): each enter is paired with its own exit.  Decorating a
    coroutine function records each whole ``await``; a generator function is
    refused, because its frames outlive the call and a region must end on
    the thread and in the context where it began.
    """

    __slots__ = ("name", "_open")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise _not_str("region name", name)
        self.name = name
        #: One entry per active enter: (the session its start went to, its
        #: file), or None.
        self._open: list = []

    def __enter__(self) -> "region":
        session = current()
        if session is not None:
            self._open.append((session, session.recorder))
            _emit_named(session, _REGION_START, _task_id(session), self.name)
        else:
            self._open.append(None)
        return self

    def __exit__(self, *exc_info) -> None:
        started = self._open.pop()
        if started is not None and _recording(*started):
            session = started[0]
            _emit_named(session, _REGION_END, _task_id(session), self.name)

    def __call__(self, func):
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(f"pytrace.region cannot decorate the generator function "
                            f"{func.__qualname__}; put the region around the code that "
                            f"consumes it instead")
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def traced_coroutine(*args, **kwargs):
                with self:
                    return await func(*args, **kwargs)
            return traced_coroutine

        @functools.wraps(func)
        def traced(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return traced

    def __repr__(self) -> str:
        return f"<pytrace.region {self.name!r}>"


def log(category: str, message: str) -> None:
    """Record a message, under a category, in the innermost task."""
    if not isinstance(category, str):
        raise _not_str("log category", category)
    if not isinstance(message, str):
        raise _not_str("log message", message)
    session = current()
    if session is not None:
        _emit(session, _LOG, (_task_id(session),), (category, message))


def counter(name: str, value: int) -> None:
    """Record the current value of a named integer (a queue length, bytes sent...)."""
    if not isinstance(name, str):
        raise _not_str("counter name", name)
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"pytrace: counter value must be an int, not {type(value).__name__}; "
                        f"scale a float to an integer unit and round it") from None
    if not COUNTER_MIN <= value <= COUNTER_MAX:
        raise OverflowError(f"pytrace: counter value {value} does not fit in 64 signed bits")
    session = current()
    if session is not None:
        try:
            slot = session.slots.current()
            slot.emit(_COUNTER, slot.string_id(name), wire.zigzag(value))  # its string first
        except Exception as exc:
            session.fail(exc)
