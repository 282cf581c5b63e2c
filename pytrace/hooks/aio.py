"""asyncio tasks as goroutine-like timelines.

Per task: ``AsyncTaskCreate(task, name, stack)``, then for each step (the
stretch of the coroutine between two awaits that suspend it)
``AsyncTaskRun(task)`` ... ``AsyncTaskPause(task)`` on the thread running
the loop, and ``AsyncTaskDone(task)`` right after the ``Pause`` of the step
that finished it (returned, raised, or was cancelled).  ``task`` is a
number given by pytrace (1, 2, ...), ``name`` is ``task.get_name()``.

How, with the C ``_asyncio`` accelerator in place (its ``Task.__step`` is
out of reach):

- every step of a task runs as a callback of a ``Handle`` of the loop: the
  task's step callback (C: a ``TaskStepMethWrapper``; pure Python:
  ``Task.__step``) or its wakeup (C: ``task_wakeup``; Python:
  ``Task.__wakeup``), both bound to the task.  ``asyncio.events.Handle._run``
  is pure Python on 3.11-3.13 and looked up on every call, so a class-level
  replacement sees every step of every task, C or Python, of any loop
  derived from asyncio's (not uvloop's);
- ``asyncio.base_events.BaseEventLoop.create_task`` is where
  ``asyncio.create_task``, ``ensure_future``, ``gather``, ``TaskGroup`` and
  ``asyncio.run`` make tasks, with or without a task factory: the task is
  announced with the stack of the code that asked for it.  A task made
  another way (``asyncio.Task(...)`` directly, or before tracing started) is
  announced, without a stack, just before its first traced step.  An eager
  task (3.12's ``eager_task_factory``) runs its first step inside
  ``create_task``, in its creator's slice: that step is not a slice of its
  own, and a task that finishes there is announced and done at once.

asyncio is not imported by pytrace: if the program has not imported it when
tracing starts, the replacements are made right after its first import
(a one-shot finder on ``sys.meta_path`` that runs the package's own loader,
then patches).
"""

from __future__ import annotations

import functools
import itertools
import sys
import weakref

from .. import events, wire
from ..session import is_own_code
from .patches import Patches, activate, hide_own_frames, unwrapped

TASK_CREATE = events.BY_NAME["AsyncTaskCreate"].id

TASK_RUN = wire.inline_prefix(events.BY_NAME["AsyncTaskRun"])
TASK_PAUSE = wire.inline_prefix(events.BY_NAME["AsyncTaskPause"])
TASK_DONE = wire.inline_prefix(events.BY_NAME["AsyncTaskDone"])

#: Names of the task methods that run a step: C wakeup, Python step and wakeup.
#: (The C step callback is recognized by its type's name.)
STEP_NAMES = frozenset({"task_wakeup", "__step", "__wakeup"})

#: The installed hook, or None: the replacements pass straight through then.
_active: AsyncioHook | None = None


class AsyncioHook:
    """Writes the task events of one session."""

    def __init__(self, session) -> None:
        self.session = session
        #: id(task) -> (its number, weak reference to it).  Not a
        #: WeakKeyDictionary: its Python methods would be recorded by the
        #: call hook as the program's calls, at every step.  The weak
        #: reference's callback forgets a task that dies unfinished.
        self.numbers: dict[int, tuple[int, weakref.ref]] = {}
        self._next_number = itertools.count(1).__next__
        self.patches = Patches()
        #: Set by ``patch``, once asyncio is imported.
        self.task_types: tuple = ()
        self.naming_creators: frozenset = frozenset()

    # -- patching ------------------------------------------------------------

    def patch(self, asyncio) -> None:
        """Make the replacements in the imported ``asyncio`` package."""
        from asyncio import base_events, events as loop_events, tasks
        from asyncio.taskgroups import TaskGroup

        self.task_types = (tasks.Task, tasks._PyTask)
        self.naming_creators = frozenset(
            unwrapped(creator).__code__ for creator in (tasks.create_task, TaskGroup.create_task))
        try:
            self.patches.replace(loop_events.Handle, "_run", _wrap_run)
            self.patches.replace(base_events.BaseEventLoop, "create_task", _wrap_create_task)
        except BaseException:
            self.patches.undo()
            raise

    # -- events --------------------------------------------------------------

    def created(self, task, frame) -> None:
        """AsyncTaskCreate for a task just made by ``create_task``, called from ``frame``."""
        try:
            slot = self.session.slots.current()
            self._announce(slot, task, self.session.stack_id(slot, frame), self.name(task, frame))
            if task.done():  # an eager task that finished inside create_task
                self._finish(slot, task)
        except Exception as exc:
            self.session.fail(exc)

    def name(self, task, frame) -> str:
        """The name ``task`` is getting.  On 3.11 and 3.12, ``asyncio.create_task``
        and ``TaskGroup.create_task`` (the ``frame`` calling ``loop.create_task``)
        name the task only after ``loop.create_task`` returns: their ``name``
        argument is what the task will be called (``set_name`` takes ``str()``)."""
        if frame.f_code in self.naming_creators:
            given = frame.f_locals.get("name")
            if given is not None:
                return str(given)
        return task.get_name()

    def _announce(self, slot, task, stack: int, name: str) -> int:
        number = self._next_number()
        key = id(task)
        numbers = self.numbers

        def forget(ref):
            if numbers.get(key, (0, None))[1] is ref:
                del numbers[key]

        numbers[key] = (number, weakref.ref(task, forget))
        slot.emit(TASK_CREATE, number, slot.string_id(name), stack)
        return number

    def number(self, task) -> int | None:
        """The number of ``task``, if it was announced."""
        entry = self.numbers.get(id(task))
        return entry[0] if entry is not None and entry[1]() is task else None

    def _finish(self, slot, task) -> None:
        number, _ = self.numbers.pop(id(task))
        slot.emit_small(TASK_DONE, number)

    # -- a parked session ----------------------------------------------------

    def pause(self) -> None:
        """The replacements pass straight through until ``resume``."""
        global _active
        _active = None

    def resume(self) -> None:
        """The next file numbers its tasks from 1, as an install's does; a task
        announced in an earlier file is announced again at its next step."""
        global _active
        self.numbers = {}
        self._next_number = itertools.count(1).__next__
        _active = self

    def step(self, handle, run, task):
        """Run the handle ``handle`` (``run`` is the original ``Handle._run``),
        a step of ``task``, as one run slice."""
        number = None
        slots = self.session.slots
        try:
            number = self.number(task)
            slot = slots.current()
            if number is None:
                number = self._announce(slot, task, 0, task.get_name())
            slot.emit_small(TASK_RUN, number)
        except Exception as exc:
            self.session.fail(exc)
        try:
            return run(handle)
        finally:
            # Not if tracing stopped, or went on into another file, during the step.
            if _active is self and number is not None and self.session.slots is slots:
                try:
                    slot = self.session.slots.current()
                    slot.emit_small(TASK_PAUSE, number)
                    if task.done():
                        self._finish(slot, task)
                except Exception as exc:
                    self.session.fail(exc)


def _stepped_task(callback, task_types):
    """The task whose step ``callback`` runs, or None for any other callback."""
    task = getattr(callback, "__self__", None)
    if isinstance(task, task_types) and (
            type(callback).__name__ == "TaskStepMethWrapper"
            or getattr(callback, "__name__", None) in STEP_NAMES):
        return task
    return None


def _wrap_run(original):
    @functools.wraps(original)
    def _run(self):
        hook = _active
        try:
            if hook is not None:
                task = _stepped_task(self._callback, hook.task_types)
                if task is not None:
                    return hook.step(self, original, task)
            return original(self)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt
            hide_own_frames(exc)
            raise
    return _run


def _wrap_create_task(original):
    @functools.wraps(original)
    def create_task(self, coro, *args, **kwargs):
        try:
            task = original(self, coro, *args, **kwargs)
        except BaseException as exc:
            hide_own_frames(exc)
            raise
        hook = _active
        if hook is not None and isinstance(task, hook.task_types):
            hook.created(task, sys._getframe(1))
            _hide_own_frames(task)
        return task
    return create_task


def _hide_own_frames(task) -> None:
    """In debug mode a task records where it was created; keep this
    replacement's frame out of it, as ``create_task`` keeps its own out."""
    source = getattr(task, "_source_traceback", None)
    if source:
        source[:] = [frame for frame in source if not is_own_code(frame.filename)]


def install(session):
    hook = AsyncioHook(session)

    def patch() -> None:
        hook.patches.when_imported("asyncio", hook.patch, session.fail)

    uninstall = activate(hook, globals(), patch)
    session.follow(hook.pause, hook.resume)
    return uninstall
