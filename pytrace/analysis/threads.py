"""Where each thread's time went, and how long user tasks and regions took.

A thread's lifetime (see ``timeline``) is split into exclusive states:

- **blocked** by reason (``Block(reason)`` .. ``Unblock``), except
- **sleeping** (``Block`` with reason ``sleep``),
- **syscall** (``SysCall`` .. ``SysCallEnd``: a call into C that may block),
- **gc_stopped**: a collection ran while the thread would otherwise have
  been running (collections stop every thread; a thread already blocked or
  sleeping stays counted as such, since the pause did not delay it),
- **running**: the rest.

Blocks and syscalls nest (a ``Block`` inside a ``SysCall``); the innermost
one names the state.  Blocks or syscalls still open when the thread's
lifetime ends count up to that end.  Unmatched ends are ignored.

User tasks (``UserTaskCreate`` .. ``UserTaskEnd``, matched by task id) and
regions (``UserRegionStart`` .. ``UserRegionEnd`` on one thread, matched to
the innermost open region of the same task and name, as Go does) get latency
statistics per name; ones still open at the end are counted as unfinished
and left out of the latencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import events
from .distribution import Distribution
from .timeline import thread_infos

BLOCK = events.BY_NAME["Block"]
UNBLOCK = events.BY_NAME["Unblock"]
SYSCALL = events.BY_NAME["SysCall"]
SYSCALL_END = events.BY_NAME["SysCallEnd"]
GC_START = events.BY_NAME["GCStart"]
GC_DONE = events.BY_NAME["GCDone"]
TASK_CREATE = events.BY_NAME["UserTaskCreate"]
TASK_END = events.BY_NAME["UserTaskEnd"]
REGION_START = events.BY_NAME["UserRegionStart"]
REGION_END = events.BY_NAME["UserRegionEnd"]

_STATE_KINDS = frozenset((BLOCK, UNBLOCK, SYSCALL, SYSCALL_END))
SLEEP = events.BLOCK_REASONS.index("sleep")


def block_reason(index: int) -> str:
    """The name of a ``Block`` reason (``reason N`` for one this pytrace does not know)."""
    if 0 <= index < len(events.BLOCK_REASONS):
        return events.BLOCK_REASONS[index]
    return f"reason {index}"


@dataclass
class ThreadTimes:
    tid: int
    name: str
    start: int
    end: int
    ended: bool
    running: int = 0
    sleeping: int = 0
    syscall: int = 0
    gc_stopped: int = 0
    #: Blocked time by reason name (sleep excluded: see ``sleeping``).
    blocked: dict[str, int] = field(default_factory=dict)

    @property
    def lifetime(self) -> int:
        return self.end - self.start

    @property
    def blocked_total(self) -> int:
        return sum(self.blocked.values())


class _ThreadState:
    """The replay of one thread: its nested waits and the time accounted so far."""

    __slots__ = ("times", "waits", "last")

    def __init__(self, times: ThreadTimes) -> None:
        self.times = times
        #: Open waits, outermost first: ("blocked", reason) or ("syscall", None).
        self.waits: list[tuple[str, int | None]] = []
        #: Accounted up to here; starting at the thread's start, so nothing
        #: before it (e.g. a collection before the thread existed) counts.
        self.last = times.start

    def account(self, until: int, gc_running: bool) -> None:
        """Give the time since the last change to the current state."""
        until = min(until, self.times.end)
        elapsed = until - self.last
        if elapsed <= 0:
            return
        times = self.times
        if self.waits:
            what, reason = self.waits[-1]
            if what == "syscall":
                times.syscall += elapsed
            elif reason == SLEEP:
                times.sleeping += elapsed
            else:
                name = block_reason(reason)
                times.blocked[name] = times.blocked.get(name, 0) + elapsed
        elif gc_running:
            times.gc_stopped += elapsed
        else:
            times.running += elapsed
        self.last = until


def thread_times(trace) -> list[ThreadTimes]:
    """Every thread's time by state (see the module docstring), in tid order."""
    infos = thread_infos(trace)
    states = {tid: _ThreadState(ThreadTimes(info.tid, info.name, info.start, info.end,
                                            info.ended))
              for tid, info in infos.items()}
    gc_depth = 0
    for ev in trace.events:
        kind = ev.kind
        if kind in _STATE_KINDS:
            state = states[ev.tid]
            state.account(ev.ts, gc_depth > 0)
            if kind is BLOCK:
                state.waits.append(("blocked", ev.args[0]))
            elif kind is SYSCALL:
                state.waits.append(("syscall", None))
            elif state.waits:
                wanted = "blocked" if kind is UNBLOCK else "syscall"
                if state.waits[-1][0] == wanted:
                    state.waits.pop()
        elif kind is GC_START or kind is GC_DONE:
            for state in states.values():
                state.account(ev.ts, gc_depth > 0)
            gc_depth = gc_depth + 1 if kind is GC_START else max(0, gc_depth - 1)
    for state in states.values():
        state.account(state.times.end, gc_depth > 0)
    return [states[tid].times for tid in sorted(states)]


@dataclass(frozen=True)
class LatencyStats:
    """Completed tasks or regions of one name."""

    name: str
    latency: Distribution
    unfinished: int


@dataclass(frozen=True)
class UserAnnotations:
    tasks: list[LatencyStats]
    regions: list[LatencyStats]


def user_annotations(trace) -> UserAnnotations:
    """Latency statistics of ``pytrace.task()`` and ``pytrace.region()`` per name."""
    task_open: dict[int, tuple[str, int]] = {}
    task_done: dict[str, list[int]] = {}
    region_open: dict[int, list[tuple[int, str, int]]] = {}
    region_done: dict[str, list[int]] = {}
    for ev in trace.events:
        kind = ev.kind
        if kind is TASK_CREATE:
            task_open[ev.args[0]] = (ev.args[2], ev.ts)
        elif kind is TASK_END:
            opened = task_open.pop(ev.args[0], None)
            if opened is not None:
                task_done.setdefault(opened[0], []).append(ev.ts - opened[1])
        elif kind is REGION_START:
            region_open.setdefault(ev.tid, []).append((ev.args[0], ev.args[1], ev.ts))
        elif kind is REGION_END:
            stack = region_open.get(ev.tid, [])
            for i in range(len(stack) - 1, -1, -1):
                task, name, start = stack[i]
                if task == ev.args[0] and name == ev.args[1]:
                    del stack[i]
                    region_done.setdefault(name, []).append(ev.ts - start)
                    break
    task_unfinished: dict[str, int] = {}
    for name, _ in task_open.values():
        task_unfinished[name] = task_unfinished.get(name, 0) + 1
    region_unfinished: dict[str, int] = {}
    for stack in region_open.values():
        for _, name, _ in stack:
            region_unfinished[name] = region_unfinished.get(name, 0) + 1
    return UserAnnotations(_latencies(task_done, task_unfinished),
                           _latencies(region_done, region_unfinished))


def _latencies(done: dict[str, list[int]], unfinished: dict[str, int]) -> list[LatencyStats]:
    return [LatencyStats(name, Distribution.of(done.get(name, ())), unfinished.get(name, 0))
            for name in sorted(set(done) | set(unfinished))]
