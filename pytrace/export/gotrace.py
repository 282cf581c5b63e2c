"""Go execution trace, format 1.19: open the file with ``go tool trace FILE``.

Go 1.19's parser (``internal/trace/parser.go`` and ``order.go``) and its web
UI (``cmd/trace``) are strict: goroutine and processor state machines,
per-goroutine sequence numbers, a global GC counter, every running slice
closed, a stack with a frame on every goroutine creation and region start.
This writer keeps those rules by construction; ``tests/test_export_go.py``
checks them with Go's own tools, on any event sequence.

=========================  ==================================================
pytrace                    Go 1.19
=========================  ==================================================
thread                     a goroutine (G id = pytrace tid) running on its own
                           P (P ids dense, by first appearance); GOMAXPROCS =
                           number of threads.  Threads alive when tracing
                           began are created at the trace start; the others
                           by GoCreate from their parent's ThreadCreate.
                           ThreadEnd -> GoEnd + ProcStop.
goroutine start function   what the thread or task runs, found outside the
                           machinery of runpy, importlib, threading and
                           asyncio (see ``_StartFunctions``; ``/goroutines``
                           groups by it), else a frame named after it
asyncio task               a goroutine of its own: AsyncTaskCreate ->
                           GoCreate; a run slice -> the thread's G yields
                           (GoSched) and the task's G runs on that P; a pause
                           -> GoBlock of the task, the thread's G resumes;
                           AsyncTaskDone -> GoEnd
GC collection              GCStart + GCSTWStart ... GCSTWDone + GCDone on the
                           collecting thread's P (stop-the-world: the MMU
                           drops to 0 during it)
Block(reason)              GoSleep (sleep), GoBlockCond (condition),
                           GoBlockSelect (select), GoBlockNet (socket, file),
                           GoBlockSync (lock, event, semaphore, queue, join,
                           future), GoBlock (others); Unblock -> GoUnblock
                           then GoStart on the same P
SysCall / SysCallEnd       GoSysCall + GoSysBlock / GoSysExit + GoStart (the
                           syscall's function is the top frame of its stack)
user task / region / log   UserTaskCreate/End, UserRegion (mode 0/1), UserLog
Counter                    UserLog with the counter's name as category
HeapCounters               HeapAlloc: RSS bytes if recorded, else allocated
                           blocks
CPUSample                  CPUSample of the sampled thread's P and goroutine
                           (dropped if taken at the instant the goroutine was
                           created: Go orders samples by time alone)
calls                      not events in Go: they give every stack of the
                           events above (innermost 1000 frames)
=========================  ==================================================

Ticks are nanoseconds (frequency 1e9).  Blocks and syscalls nested inside
another are folded into the outermost.  Anything Go would reject is mended
so the file stays valid: an end without its start is dropped, a region end
that skips open inner regions ends those first, a goroutine that logs or
blocks while the tracer thinks it waits is woken first, and at the trace
end running goroutines yield (GoSched), an open GC ends and every P stops
(as Go's own StopTrace does).  Events of a thread after its ThreadEnd are
dropped.  Records use the same varint layout as pytrace's own format
(``pytrace.wire``).  Per-P batches are flushed as they fill, strings and
stacks are written after the batches, so memory stays bounded by the
number of distinct strings and stacks.
"""

from __future__ import annotations

import itertools
import re
from typing import BinaryIO

from .. import events, wire
from ..analysis.threads import block_reason
from ..reader import Trace
from . import timeline

HEADER = b"go 1.19 trace\x00\x00\x00"
FREQUENCY = 1_000_000_000
BATCH_BYTES = 64 * 1024
MAX_FRAMES = 1000
MAX_STRING_BYTES = 1_000_000

# Go 1.19 event types (runtime/trace.go).
EV_BATCH = 1
EV_FREQUENCY = 2
EV_STACK = 3
EV_GOMAXPROCS = 4
EV_PROC_START = 5
EV_PROC_STOP = 6
EV_GC_START = 7
EV_GC_DONE = 8
EV_GC_STW_START = 9
EV_GC_STW_DONE = 10
EV_GO_CREATE = 13
EV_GO_START = 14
EV_GO_END = 15
EV_GO_SCHED = 17
EV_GO_SLEEP = 19
EV_GO_BLOCK = 20
EV_GO_UNBLOCK = 21
EV_GO_BLOCK_SELECT = 24
EV_GO_BLOCK_SYNC = 25
EV_GO_BLOCK_COND = 26
EV_GO_BLOCK_NET = 27
EV_GO_SYSCALL = 28
EV_GO_SYS_EXIT = 29
EV_GO_SYS_BLOCK = 30
EV_HEAP_ALLOC = 33
EV_STRING = 37
EV_USER_TASK_CREATE = 45
EV_USER_TASK_END = 46
EV_USER_REGION = 47
EV_USER_LOG = 48
EV_CPU_SAMPLE = 49

#: Block reason -> Go blocking event (see the module docstring).
BLOCK_EVENTS = {
    "sleep": EV_GO_SLEEP,
    "condition": EV_GO_BLOCK_COND,
    "select": EV_GO_BLOCK_SELECT,
    "socket": EV_GO_BLOCK_NET,
    "file": EV_GO_BLOCK_NET,
    "lock": EV_GO_BLOCK_SYNC,
    "event": EV_GO_BLOCK_SYNC,
    "semaphore": EV_GO_BLOCK_SYNC,
    "queue": EV_GO_BLOCK_SYNC,
    "join": EV_GO_BLOCK_SYNC,
    "future": EV_GO_BLOCK_SYNC,
}

_K = {name: kind.id for name, kind in events.BY_NAME.items()}
_PUSH_CALL = timeline.PUSH_CALL
_POP_CALL = timeline.POP_CALL

#: Files of the machinery that starts modules, threads and asyncio tasks
#: (frozen modules such as runpy and importlib, threading, asyncio): a
#: goroutine's start function is its first frame outside them.
_MACHINERY = re.compile(r"^<frozen |(^|[/\\])(threading|runpy)\.py$|[/\\]asyncio[/\\]")

DEAD, RUNNABLE, RUNNING, WAITING = range(4)


class _G:
    """A goroutine as Go's parser tracks it: state, sequence number, open regions."""

    __slots__ = ("id", "seq", "state", "regions", "created")

    def __init__(self, gid: int) -> None:
        self.id = gid
        self.seq = 0
        self.state = DEAD
        self.regions: list[tuple[int, str]] = []
        #: When its GoCreate was written (None before).
        self.created: int | None = None


class _P:
    """A Python thread as a Go P: its batch buffer and what runs on it."""

    __slots__ = ("index", "tid", "buf", "last", "started", "ended", "thread_g", "current",
                 "off_g", "off_syscall", "off_depth", "calls")

    def __init__(self, index: int, tid: int, thread_g: _G) -> None:
        self.index = index
        self.tid = tid
        self.buf = bytearray()
        self.last = 0
        self.started = False
        self.ended = False
        self.thread_g = thread_g
        #: The G running on this P, or None.
        self.current: _G | None = None
        #: The G that left this P for a block or a syscall, until it is woken.
        self.off_g: _G | None = None
        self.off_syscall = False
        #: Open Block/SysCall events (nested ones fold into the outermost).
        self.off_depth = 0
        #: The thread's open call sites, outermost first.
        self.calls: list = []


class _StartFunctions:
    """What each thread and asyncio task runs: Go's goroutine start function.

    A thread runs its longest-lived *outermost* frame outside the machinery
    (a frame whose callers are all runpy, importlib, threading or asyncio
    frames): the script's ``<module>`` on the main thread, the target of a
    ``threading.Thread``.  An asyncio task runs the first function outside
    the machinery that its first run slice calls: its coroutine.
    """

    def __init__(self) -> None:
        #: tid -> open frames: (site, start, is machinery, is outermost outside it)
        self.stacks: dict[int, list[tuple]] = {}
        #: tid -> number of open frames outside the machinery.
        self.plain: dict[int, int] = {}
        self.longest: dict[int, int] = {}
        self.threads: dict[int, tuple] = {}
        self.tasks: dict[int, tuple] = {}
        #: tid -> the asyncio task whose run slice began and called nothing yet.
        self.pending: dict[int, int] = {}
        self.machinery: dict[str, bool] = {}

    def push(self, tid: int, site, ts: int) -> None:
        file = site[1]
        machinery = self.machinery.get(file)
        if machinery is None:
            machinery = self.machinery[file] = bool(_MACHINERY.search(file))
        plain = self.plain.get(tid, 0)
        self.stacks.setdefault(tid, []).append((site, ts, machinery, not machinery and not plain))
        if not machinery:
            self.plain[tid] = plain + 1
            task = self.pending.pop(tid, None)
            if task is not None:
                self.tasks.setdefault(task, tuple(site))

    def pop(self, tid: int, ts: int) -> None:
        stack = self.stacks.get(tid)
        if stack:
            site, start, machinery, outermost = stack.pop()
            if not machinery:
                self.plain[tid] -= 1
            if outermost:
                self._candidate(tid, site, ts - start)

    def run(self, tid: int, task: int) -> None:
        self.pending[tid] = task

    def finish(self, ends: dict[int, int]) -> None:
        """Frames still open count up to their thread's last event."""
        for tid, stack in self.stacks.items():
            for site, start, _, outermost in stack:
                if outermost:
                    self._candidate(tid, site, ends[tid] - start)

    def _candidate(self, tid: int, site, duration: int) -> None:
        if duration > self.longest.get(tid, -1):
            self.longest[tid] = duration
            self.threads[tid] = tuple(site)


class GoTraceWriter:
    """Streams one ``Trace`` as a Go 1.19 trace to a binary file."""

    def __init__(self, trace: Trace, out: BinaryIO) -> None:
        self.trace = trace
        self.out = out
        self.strings: dict[str, int] = {}
        self.stacks: dict[tuple, int] = {}
        self.pcs: dict[tuple, int] = {}
        self.procs: dict[int, _P] = {}
        self.tasks_seen: set[int] = set()
        self.asyncio: dict[int, _G] = {}
        self.gc_open: _P | None = None
        self.gc_nested = 0
        self.gc_seq = 0

    # -- encoding ------------------------------------------------------------

    def _emit(self, p: _P, ts: int, ev_type: int, *args: int, tail: bytes = b"") -> None:
        if not p.buf:
            p.buf += wire.record(EV_BATCH, (p.index, ts))
            p.last = ts
        p.buf += wire.record(ev_type, (ts - p.last, *args))
        p.buf += tail
        p.last = ts
        if len(p.buf) >= BATCH_BYTES:
            self._flush(p)

    def _flush(self, p: _P) -> None:
        if p.buf:
            self.out.write(p.buf)
            p.buf = bytearray()

    def _string(self, text: str) -> int:
        """The id of ``text`` (0 for the empty string, which Go cannot define)."""
        return _intern(self.strings, text) if text else 0

    def _stack(self, sites) -> int:
        """The id of a stack given innermost first as ``(name, file, line)`` sites."""
        key = tuple(sites[:MAX_FRAMES])
        return _intern(self.stacks, key) if key else 0

    def _stack_here(self, p: _P) -> int:
        """The stack of ``p``'s thread now; never empty (Go's UI needs a frame)."""
        if p.calls:
            return self._stack(p.calls[::-1])
        return self._stack([self.start_sites[p.tid]])

    def _frames_or_here(self, p: _P, stack) -> int:
        return self._stack(stack) if stack else self._stack_here(p)

    # -- goroutine and processor states --------------------------------------

    def _go_create(self, p: _P, ts: int, g: _G, start_site, creator_stack: int) -> None:
        self._emit(p, ts, EV_GO_CREATE, g.id, self._stack([start_site]), creator_stack)
        g.state = RUNNABLE
        g.created = ts

    def _go_start(self, p: _P, ts: int, g: _G) -> None:
        g.seq += 1
        self._emit(p, ts, EV_GO_START, g.id, g.seq)
        g.state = RUNNING
        p.current = g

    def _leave(self, p: _P, ts: int, ev_type: int, *args: int, state: int) -> _G:
        """The running G stops running on ``p`` by ``ev_type`` (GoSched, GoBlock*, GoEnd...)."""
        g = p.current
        self._emit(p, ts, ev_type, *args)
        g.state = state
        p.current = None
        return g

    def _unblock(self, p: _P, ts: int, g: _G) -> None:
        g.seq += 1
        self._emit(p, ts, EV_GO_UNBLOCK, g.id, g.seq, 0)
        g.state = RUNNABLE

    def _start_proc(self, p: _P, ts: int) -> None:
        """The thread's first event: its P starts and its G runs (created here if it was not)."""
        p.started = True
        self._emit(p, ts, EV_PROC_START, p.tid)
        if p.thread_g.state == DEAD:
            self._go_create(p, ts, p.thread_g, self.start_sites[p.tid], 0)
        if p.thread_g.state == RUNNABLE:
            self._go_start(p, ts, p.thread_g)

    def _wake(self, p: _P, ts: int) -> None:
        """The G that blocked or entered a syscall on ``p`` runs again."""
        g = p.off_g
        if g is None:
            return
        p.off_g = None
        p.off_depth = 0
        if g.state != WAITING:
            return
        if p.off_syscall:
            g.seq += 1
            self._emit(p, ts, EV_GO_SYS_EXIT, g.id, g.seq, 0)
            g.state = RUNNABLE
        else:
            self._unblock(p, ts, g)
        if p.current is None:
            self._go_start(p, ts, g)

    def _running(self, p: _P, ts: int) -> _G | None:
        """The G running on ``p``, woken first if it was off the P; None if there is none."""
        if p.current is None:
            self._wake(p, ts)
        return p.current

    def _to_thread_g(self, p: _P, ts: int) -> None:
        """If an asyncio task's G runs on ``p``, park it (GoBlock) and resume the thread's G."""
        g = p.current
        if g is not None and g is not p.thread_g:
            self._leave(p, ts, EV_GO_BLOCK, 0, state=WAITING)
            if p.thread_g.state == RUNNABLE:
                self._go_start(p, ts, p.thread_g)

    def _run_task(self, p: _P, ts: int, task: _G) -> bool:
        """Switch ``p`` from its thread's G to the task's G; False if that cannot be."""
        self._to_thread_g(p, ts)
        if p.current is not p.thread_g or task.state in (DEAD, RUNNING):
            return False
        if task.state == WAITING:
            self._unblock(p, ts, task)
        self._leave(p, ts, EV_GO_SCHED, 0, state=RUNNABLE)
        self._go_start(p, ts, task)
        return True

    # -- the trace ---------------------------------------------------------------

    def _plan(self) -> None:
        """First pass: Ps, goroutines, who is created when, start functions."""
        trace = self.trace
        first_seen: dict[int, int] = {}
        last_seen: dict[int, int] = {}
        created: dict[int, int] = {}  # child tid -> ThreadCreate ts
        task_names: dict[int, str] = {}
        tasks: set[int] = set()  # every asyncio task that may become a goroutine
        starts = _StartFunctions()
        for ev in trace.events:
            kind, tid, ts = ev.kind.id, ev.tid, ev.ts
            first_seen.setdefault(tid, ts)
            last_seen[tid] = ts
            if kind in _PUSH_CALL:
                starts.push(tid, ev.args[0], ts)
            elif kind in _POP_CALL:
                starts.pop(tid, ts)
            elif kind == _K["OpenFrames"]:
                for frame in reversed(ev.args[0] or ()):
                    starts.push(tid, frame, ts)
            elif kind == _K["ThreadCreate"]:
                child = ev.args[0]
                if child not in first_seen:
                    created.setdefault(child, ts)
            elif kind == _K["AsyncTaskCreate"]:
                task_names.setdefault(ev.args[0], ev.args[1])
                tasks.add(ev.args[0])
            elif kind == _K["AsyncTaskRun"]:
                starts.run(tid, ev.args[0])
                tasks.add(ev.args[0])
        starts.finish(last_seen)
        names = timeline.thread_names(trace)
        self.start_sites = {
            tid: starts.threads.get(tid) or (f"thread {names.get(tid, tid)}", "", 0)
            for tid in [*first_seen, *created]}
        self.created_in_trace = set(created)
        # A thread's G id is its tid; Go reserves 0, so tid 0 and the asyncio
        # tasks get ids above every tid.
        fresh_ids = itertools.count(max([*first_seen, *created, 0]) + 1)
        for index, tid in enumerate(first_seen):
            self.procs[tid] = _P(index, tid, _G(tid or next(fresh_ids)))
        self.unstarted = {tid: _G(tid or next(fresh_ids))
                          for tid in created if tid not in self.procs}
        self.task_ids = {task: next(fresh_ids) for task in sorted(tasks)}
        self.task_sites = {
            task: starts.tasks.get(task)
            or (f"asyncio task {task_names.get(task) or task}", "", 0) for task in tasks}

    def write(self) -> None:
        trace = self.trace
        if not trace.events:
            raise ValueError("the trace has no events: Go's parser rejects an empty trace")
        self._plan()
        t0 = trace.events[0].ts
        first = self.procs[trace.events[0].tid]
        self.out.write(HEADER)
        for tid, p in self.procs.items():
            if tid not in self.created_in_trace:
                self._go_create(first, 0, p.thread_g, self.start_sites[tid], 0)
        self._start_proc(first, 0)
        self._emit(first, 0, EV_GOMAXPROCS, len(self.procs), 0)
        last = 0
        for ev in trace.events:
            last = ev.ts - t0
            p = self.procs[ev.tid]
            if p.ended:
                continue
            if not p.started:
                self._start_proc(p, last)
            self._event(p, last, ev)
        self._finish(last)

    def _event(self, p: _P, ts: int, ev) -> None:
        kind, args = ev.kind.id, ev.args
        if kind in _PUSH_CALL:
            p.calls.append(args[0])
        elif kind in _POP_CALL:
            if p.calls:
                p.calls.pop()
        else:
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, p, ts, *args)

    def _open_frames(self, p: _P, ts: int, stack) -> None:
        p.calls.extend(reversed(stack or ()))

    def _gc_start(self, p: _P, ts: int, generation: int, stack) -> None:
        if self.gc_open is not None:
            self.gc_nested += 1
            return
        self._emit(p, ts, EV_GC_START, self.gc_seq, self._frames_or_here(p, stack))
        self._emit(p, ts, EV_GC_STW_START, 0)
        self.gc_open = p
        self.gc_seq += 1

    def _gc_end(self, p: _P, ts: int, collected: int, uncollectable: int) -> None:
        if self.gc_nested:
            self.gc_nested -= 1
        elif self.gc_open is not None:
            # Done on the P that started it: Go orders the events of one P
            # by their place in its batches, but ties in time across Ps
            # arbitrarily, so a STW end on another P at the start's very
            # tick could come first ("bogus STW end").
            self._gc_done(self.gc_open, ts)

    def _heap(self, p: _P, ts: int, gen0, gen1, gen2, threshold0, blocks: int, rss: int) -> None:
        self._emit(p, ts, EV_HEAP_ALLOC, rss or blocks)

    def _thread_end(self, p: _P, ts: int) -> None:
        if self._running(p, ts) is not None:
            self._to_thread_g(p, ts)
            if p.current is p.thread_g:
                self._leave(p, ts, EV_GO_END, state=DEAD)
        if p.current is None and p.off_g is None:
            self._emit(p, ts, EV_PROC_STOP)
            p.ended = True

    def _gc_done(self, p: _P, ts: int) -> None:
        self._emit(p, ts, EV_GC_STW_DONE)
        self._emit(p, ts, EV_GC_DONE)
        self.gc_open = None

    def _block(self, p: _P, ts: int, reason: int, stack) -> None:
        p.off_depth += 1
        if p.off_depth == 1 and p.current is not None:
            ev_type = BLOCK_EVENTS.get(block_reason(reason), EV_GO_BLOCK)
            p.off_g = self._leave(p, ts, ev_type, self._frames_or_here(p, stack), state=WAITING)
            p.off_syscall = False

    def _syscall(self, p: _P, ts: int, func, stack) -> None:
        p.off_depth += 1
        if p.off_depth == 1 and p.current is not None:
            frames = [tuple(func), *(stack or p.calls[::-1])]
            self._emit(p, ts, EV_GO_SYSCALL, self._stack(frames))
            p.off_g = self._leave(p, ts, EV_GO_SYS_BLOCK, state=WAITING)
            p.off_syscall = True

    def _off_end(self, p: _P, ts: int) -> None:
        """Unblock or SysCallEnd: the outermost one wakes the G."""
        if p.off_depth:
            p.off_depth -= 1
            if not p.off_depth:
                self._wake(p, ts)

    def _thread_create(self, p: _P, ts: int, child: int, name: str, stack) -> None:
        g = self.procs[child].thread_g if child in self.procs else self.unstarted.get(child)
        if g is None or g.state != DEAD or child not in self.created_in_trace:
            return
        if self._running(p, ts) is not None:
            self._go_create(p, ts, g, self.start_sites[child], self._frames_or_here(p, stack))

    def _cpu_sample(self, p: _P, ts: int, thread: int, stack) -> None:
        sampled = self.procs.get(thread)
        if sampled is None or not stack:
            return
        g = sampled.current or sampled.off_g or sampled.thread_g
        # Go sorts samples apart from every other event: one at the instant of
        # its goroutine's creation may be taken first and make the G exist twice.
        if g.state != DEAD and g.created is not None and ts > g.created:
            self._emit(p, ts, EV_CPU_SAMPLE, ts, sampled.index, g.id, self._stack(stack))

    # -- user annotations (the G running on the P is the one annotated) ------

    def _task_create(self, p: _P, ts: int, task: int, parent: int, name: str) -> None:
        if task and task not in self.tasks_seen:
            self.tasks_seen.add(task)
            self._emit(p, ts, EV_USER_TASK_CREATE, task, parent, self._string(name),
                       self._stack_here(p))

    def _task_end(self, p: _P, ts: int, task: int) -> None:
        self._emit(p, ts, EV_USER_TASK_END, task, self._stack_here(p))

    def _region_start(self, p: _P, ts: int, task: int, name: str) -> None:
        self._emit(p, ts, EV_USER_REGION, task, 0, self._string(name), self._stack_here(p))
        p.current.regions.append((task, name))

    def _region_end(self, p: _P, ts: int, task: int, name: str) -> None:
        regions = p.current.regions
        for index in range(len(regions) - 1, -1, -1):
            if regions[index] == (task, name):
                for open_task, open_name in reversed(regions[index:]):
                    self._emit(p, ts, EV_USER_REGION, open_task, 1, self._string(open_name),
                               self._stack_here(p))
                del regions[index:]
                return

    def _log(self, p: _P, ts: int, task: int, category: str, message: str) -> None:
        value = _truncated(message)
        self._emit(p, ts, EV_USER_LOG, task, self._string(category), self._stack_here(p),
                   tail=wire.uvarint(len(value)) + value)

    def _counter(self, p: _P, ts: int, name: str, value: int) -> None:
        self._log(p, ts, 0, name, str(value))

    # -- asyncio tasks as goroutines -------------------------------------------

    def _task_g(self, p: _P, ts: int, task: int) -> _G | None:
        """The G of asyncio ``task``, created (from the running G) if it does not exist yet."""
        g = self.asyncio.get(task)
        if g is None:
            if self._running(p, ts) is None:
                return None
            g = self.asyncio[task] = _G(self.task_ids[task])
            self._go_create(p, ts, g, self.task_sites[task], self._stack_here(p))
        return g

    def _asyncio_create(self, p: _P, ts: int, task: int, name: str, stack) -> None:
        if task not in self.asyncio and self._running(p, ts) is not None:
            g = self.asyncio[task] = _G(self.task_ids[task])
            self._go_create(p, ts, g, self.task_sites[task], self._frames_or_here(p, stack))

    def _asyncio_run(self, p: _P, ts: int, task: int) -> None:
        g = self._task_g(p, ts, task)
        if g is not None and p.current is not g and self._running(p, ts) is not None:
            self._run_task(p, ts, g)

    def _asyncio_pause(self, p: _P, ts: int, task: int) -> None:
        if self.asyncio.get(task) is not None and p.current is self.asyncio[task]:
            self._to_thread_g(p, ts)

    def _asyncio_done(self, p: _P, ts: int, task: int) -> None:
        g = self.asyncio.get(task)
        if g is None or g.state == DEAD or self._running(p, ts) is None:
            return
        if p.current is not g and not self._run_task(p, ts, g):
            return
        self._leave(p, ts, EV_GO_END, state=DEAD)
        if p.thread_g.state == RUNNABLE:
            self._go_start(p, ts, p.thread_g)

    # -- the end -------------------------------------------------------------------

    def _finish(self, ts: int) -> None:
        """Close what Go's UI needs closed, then write strings, stacks and the frequency."""
        if self.gc_open is not None:
            self._gc_done(self.gc_open, ts)
        for p in self.procs.values():
            if p.started and not p.ended:
                if p.current is not None:
                    self._leave(p, ts, EV_GO_SCHED, 0, state=RUNNABLE)
                self._emit(p, ts, EV_PROC_STOP)
            self._flush(p)
        out = self.out
        for key, sid in self.stacks.items():
            payload = [wire.uvarint(sid), wire.uvarint(len(key))]
            for name, file, line in key:
                pc = self.pcs.setdefault((name, file, line), len(self.pcs) + 1)
                payload += [wire.uvarint(pc), wire.uvarint(self._string(name)),
                            wire.uvarint(self._string(file)), wire.uvarint(line)]
            out.write(wire.length_prefixed(EV_STACK, b"".join(payload)))
        for text, sid in self.strings.items():
            data = _truncated(text)
            out.write(bytes((EV_STRING,)) + wire.uvarint(sid) + wire.uvarint(len(data)) + data)
        out.write(wire.record(EV_FREQUENCY, (FREQUENCY,)))




def _annotated(method):
    """A handler for an event that needs the P's G running (woken first if it was off the P)."""
    def handler(writer: GoTraceWriter, p: _P, ts: int, *args) -> None:
        if writer._running(p, ts) is not None:
            method(writer, p, ts, *args)
    return handler


#: Event kind id -> handler(writer, p, ts, *event args).
_HANDLERS = {
    _K["OpenFrames"]: GoTraceWriter._open_frames,
    _K["GCStart"]: GoTraceWriter._gc_start,
    _K["GCDone"]: GoTraceWriter._gc_end,
    _K["HeapCounters"]: GoTraceWriter._heap,
    _K["Block"]: GoTraceWriter._block,
    _K["SysCall"]: GoTraceWriter._syscall,
    _K["Unblock"]: GoTraceWriter._off_end,
    _K["SysCallEnd"]: GoTraceWriter._off_end,
    _K["CPUSample"]: GoTraceWriter._cpu_sample,
    _K["ThreadCreate"]: GoTraceWriter._thread_create,
    _K["ThreadEnd"]: GoTraceWriter._thread_end,
    _K["UserTaskCreate"]: _annotated(GoTraceWriter._task_create),
    _K["UserTaskEnd"]: _annotated(GoTraceWriter._task_end),
    _K["UserRegionStart"]: _annotated(GoTraceWriter._region_start),
    _K["UserRegionEnd"]: _annotated(GoTraceWriter._region_end),
    _K["UserLog"]: _annotated(GoTraceWriter._log),
    _K["Counter"]: _annotated(GoTraceWriter._counter),
    _K["AsyncTaskCreate"]: GoTraceWriter._asyncio_create,
    _K["AsyncTaskRun"]: GoTraceWriter._asyncio_run,
    _K["AsyncTaskPause"]: GoTraceWriter._asyncio_pause,
    _K["AsyncTaskDone"]: GoTraceWriter._asyncio_done,
}


def _intern(table: dict, key) -> int:
    """The id of ``key`` in ``table``, given on first sight: ids count from 1
    (Go reserves 0 for "none")."""
    sid = table.get(key)
    if sid is None:
        sid = table[key] = len(table) + 1
    return sid


def _truncated(text: str) -> bytes:
    """UTF-8 bytes of ``text``, cut to Go's 1e6-byte string limit on a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_STRING_BYTES:
        data = data[:MAX_STRING_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return data


def write_go(trace: Trace, out: BinaryIO) -> None:
    """Write ``trace`` to the binary stream ``out`` as a Go 1.19 execution trace."""
    GoTraceWriter(trace, out).write()
