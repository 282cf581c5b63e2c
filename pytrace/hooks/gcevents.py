"""Garbage collections as GCStart/GCDone pairs, and heap counters.

One pair per collection, from ``gc.callbacks``, on the thread that triggered
it.  CPython runs every callback in list order both before a collection
("start") and after it ("stop"), so the hook registers two callbacks: the
start one *last* and the stop one *first*.  Each reads the clock as close to
the collection as the list allows, so ``GCDone.ts - GCStart.ts`` is the
collector's own pause, without pytrace's or other callbacks' work (a callback
another tool adds later can still land inside it).  ``GCStart``'s stack is
the Python code running when the collection began, pytrace's frames left out.

``HeapCounters`` follow every ``GCDone`` and, with ``heap_interval``, come
from a daemon thread too.  RSS is read after ``GCDone``, so it costs the
program time but not the recorded pause.  On Linux it is the second field of
``/proc/self/statm`` (resident pages), read directly: what psutil's
``memory_info().rss`` reads there too, without importing psutil (~5 ms at
each ``pytest --pytrace`` start, issue 4) and at about half its ~10 us per
call (a gen-0 collection pauses 40-120 us).  Elsewhere it comes from psutil.
0 means it could not be read.

Re-entrancy: a collection can begin inside pytrace's own code (interning, a
flush).  The callbacks reach the slot through ``session.slots.current()`` at
the moment they write, and the buffers accept a record in the middle of
another.  Collections never nest, so neither do the callbacks.

Only whole pairs are written.  Tracing can start or stop while a collection
is running (from a finalizer, or on another thread while the collecting
thread has let go of the GIL), so the hook tracks each thread's collection:

- a "stop" whose "start" was not recorded is ignored;
- on uninstall, no new collection is recorded, collections already running on
  other threads get ``DRAIN_TIMEOUT`` seconds to finish normally, and one
  still open after that (tracing stopped by the collection's own finalizer,
  or a finalizer blocked that long) is closed at the stop with
  ``GCDone(0, 0)``: its counts are not known yet.  The summary counts these.
"""

from __future__ import annotations

import _thread
import gc
import heapq
import os
import sys
import threading
import time

from .. import core, events
from ..recorder import CLOCK_FREQUENCY
from ..session import OWN_THREAD_PREFIX, is_own_code

GC_START = events.BY_NAME["GCStart"].id
GC_DONE = events.BY_NAME["GCDone"].id
HEAP_COUNTERS = events.BY_NAME["HeapCounters"].id

#: Seconds the uninstall waits for collections running on other threads.
DRAIN_TIMEOUT = 2.0
#: A thread's state while its "start" callback runs, before GCStart is written.
_STARTING = "starting"
#: A thread's state while its "stop" callback writes GCDone.
_ENDING = "ending"
#: Most pauses of a file that ``GCHook.longest_pauses`` keeps.
LONGEST_KEPT = 32


class GCHook:
    """The two ``gc.callbacks`` entries, the per-thread collection states, and
    the figures of the current file: counts, total and longest pauses (the
    summary's, and the pytest plugin's, which would otherwise read each
    test's trace back: ~0.8 ms a test)."""

    def __init__(self, session) -> None:
        self.session = session
        self._rss = _rss_reader()
        #: False once uninstall began: collections starting after that are not recorded.
        self.recording = True
        #: thread ident -> _STARTING, (generation, GCStart ticks, where), or
        #: _ENDING; ``where`` is ``(code, line)`` of the innermost frame of the
        #: stack written with GCStart, or None if it is empty.
        self._open: dict = {}
        self._reset_figures()
        self._ticker = None

    def _reset_figures(self) -> None:
        self.collections = [0, 0, 0]
        self.cut_short = 0
        self.total_pause = 0
        self.longest = (0, 0)  # (ticks, generation)
        #: A min-heap of the ``LONGEST_KEPT`` longest pauses: (ticks, -order, generation, where).
        self._longest_kept: list = []

    # -- the callbacks -------------------------------------------------------

    def on_start(self, phase: str, info: dict) -> None:
        """Runs last before a collection: records GCStart."""
        if phase != "start":
            return
        ident = threading.get_ident()
        # Announce first, then check: an uninstall that stops recording either
        # sees this thread in ``_open`` (and waits) or is seen here.
        self._open[ident] = _STARTING
        if not self.recording:
            del self._open[ident]
            return
        session = self.session
        try:
            slot = session.slots.current()
            # No local holds this frame: it would make a cycle, garbage that
            # the collection about to run would count as the program's.
            where = _where(sys._getframe())
            stack = session.stack_id(slot, sys._getframe())
            slot.emit(GC_START, info["generation"], stack)  # the last thing before the collection
            self._open[ident] = (info["generation"], slot.last, where)
        except Exception as exc:
            self._open.pop(ident, None)
            session.fail(exc)

    def on_stop(self, phase: str, info: dict) -> None:
        """Runs first after a collection: records GCDone, then the heap counters."""
        if phase != "stop":
            return
        ident = threading.get_ident()
        started = self._open.get(ident)
        if type(started) is not tuple:
            return  # its start was not recorded (tracing began mid-collection)
        self._open[ident] = _ENDING
        try:
            slot = self.session.slots.current()
            slot.emit(GC_DONE, info["collected"], info["uncollectable"])
            self._account(started, slot.last)
            self.emit_heap_counters()
        except Exception as exc:
            self.session.fail(exc)
        finally:
            self._open.pop(ident, None)

    def emit_heap_counters(self, slot=None) -> None:
        """Through ``slot`` (the heap ticker's), else the calling thread's."""
        gen0, gen1, gen2 = gc.get_count()
        if slot is None:
            slot = self.session.slots.current()
        slot.emit(
            HEAP_COUNTERS, gen0, gen1, gen2, gc.get_threshold()[0],
            sys.getallocatedblocks(), self._rss())

    def _account(self, started: tuple, done_ticks: int) -> None:
        generation, start_ticks, where = started
        pause = done_ticks - start_ticks
        kept = (pause, -sum(self.collections), generation, where)
        if len(self._longest_kept) < LONGEST_KEPT:
            heapq.heappush(self._longest_kept, kept)
        else:
            heapq.heappushpop(self._longest_kept, kept)
        self.collections[generation] += 1
        self.total_pause += pause
        if pause > self.longest[0]:
            self.longest = (pause, generation)

    # -- install / uninstall -------------------------------------------------

    def install(self) -> None:
        self._start_ticker()  # first: if the thread cannot start, nothing is left registered
        self.on_start = _passing_ctrl_c(self.on_start)
        self.on_stop = _passing_ctrl_c(self.on_stop)
        if core.name == "c":
            # The callbacks can run at the recursion limit (a collection
            # triggered deep in a recursion): give them the C core's headroom,
            # so that tracing never turns into "Exception ignored" noise.
            self.on_start = core.c_module.Headroom(self.on_start)
            self.on_stop = core.c_module.Headroom(self.on_stop)
        gc.callbacks.insert(0, self.on_stop)
        gc.callbacks.append(self.on_start)
        self.session.summaries.append(self.summary)
        self.session.gc = self
        self.session.follow(self.pause, self.resume)

    def _start_ticker(self) -> None:
        interval = self.session.options.heap_interval
        if interval > 0:
            # Imported here: the default (no ticker) never loads the sampler,
            # and ``pytest --pytrace`` imports this module in every run (issue 4).
            # Only the first call imports (at install, before any call hook).
            from .sampler import Ticker

            self._ticker = Ticker(self.session, OWN_THREAD_PREFIX + "heap", interval,
                                  self.emit_heap_counters)

    def _stop_recording(self) -> None:
        """No new collection is recorded; the running ones get their chance to finish."""
        self.recording = False
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()
        self._drain()

    def uninstall(self) -> None:
        self._stop_recording()
        gc.callbacks.remove(self.on_start)
        gc.callbacks.remove(self.on_stop)
        self._close_open_collections()

    def pause(self) -> None:
        """The session parks: the callbacks stay, recording nothing, and a
        collection still open is closed in the file being finished."""
        self._stop_recording()
        self._close_open_collections()

    def resume(self) -> None:
        """The session records a new file: its figures start from zero."""
        self._reset_figures()
        self._start_ticker()
        self.recording = True

    def _drain(self) -> None:
        """Wait (bounded) for collections running on other threads to write their GCDone.

        Only live threads count: in a forked child the others are gone."""
        if not self._open:  # the usual case: no collection running anywhere
            return
        me = threading.get_ident()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            running_elsewhere = (self._open.keys() - {me}) & sys._current_frames().keys()
            if not running_elsewhere:
                return
            time.sleep(0.001)

    def _close_open_collections(self) -> None:
        """Close each collection still running with GCDone(0, 0), on its own thread's slot.

        For another thread, this thread writes into that thread's slot, as
        the final flush does: that thread is stuck in a finalizer, so it is
        not writing there itself."""
        for ident, started in list(self._open.items()):
            slot = self.session.slots.by_ident.get(ident)
            if type(started) is tuple and slot is not None and self._open.pop(ident, None) is started:
                slot.emit(GC_DONE, 0, 0)
                self._account(started, slot.last)
                self.cut_short += 1

    # -- figures -------------------------------------------------------------

    def longest_pauses(self, count: int) -> list | None:
        """The ``count`` longest pauses of the current file, longest first
        (of equal ones the earlier first), as ``(ticks, generation, where)``
        with ``where`` as in ``_open``; None if the file has more
        collections than this hook keeps (read the file then)."""
        if count > LONGEST_KEPT and sum(self.collections) > LONGEST_KEPT:
            return None
        ordered = sorted(self._longest_kept, key=lambda kept: (-kept[0], -kept[1]))
        return [(ticks, generation, where) for ticks, _, generation, where in ordered[:count]]

    # -- summary -------------------------------------------------------------

    def summary(self) -> list[str]:
        total = sum(self.collections)
        if not total:
            return ["no garbage collections"]
        ms_per_tick = 1000 / CLOCK_FREQUENCY
        g0, g1, g2 = self.collections
        pause, generation = self.longest
        line = (f"{total} collection{'s' if total > 1 else ''} (gen0 {g0}, gen1 {g1}, gen2 {g2}), "
                f"total pause {self.total_pause * ms_per_tick:.3f} ms, "
                f"longest {pause * ms_per_tick:.3f} ms (gen {generation})")
        if self.cut_short:
            line += f"; {self.cut_short} still running when tracing stopped"
        return [line]


#: Bytes per page, for the page counts of ``/proc/self/statm``.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: (pid, the psutil-based reader) of the last ``_rss_reader`` call off Linux.
_process: tuple | None = None


def _proc_rss() -> int:
    """This process's resident set size from ``/proc/self/statm``, 0 if it
    cannot be read.  Opened at each call (``/proc/self`` is the caller's,
    even in a forked child; a descriptor kept open could be closed, or its
    number reused, by the traced program).  ``os.pread``, not ``os.read``:
    the blocking hook replaces ``os.read``."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fields = os.pread(fd, 256, 0).split()
        finally:
            os.close(fd)
        return int(fields[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _rss_reader():
    """A function returning this process's RSS in bytes (0 if unknown).
    Off Linux, psutil's, made once per process rather than per trace:
    ``psutil.Process()`` reads the process table (~15 us), and ``pytest
    --pytrace`` starts a trace per test (issue 4).  A forked child gets its
    own."""
    global _process
    if sys.platform.startswith("linux"):
        return _proc_rss
    import psutil

    pid = os.getpid()
    if _process is None or _process[0] != pid:
        memory_info = psutil.Process(pid).memory_info

        def rss() -> int:
            try:
                return memory_info().rss
            except psutil.Error:
                return 0

        _process = (pid, rss)
    return _process[1]


def _where(frame) -> tuple | None:
    """``(code, line)`` of the innermost frame at or above ``frame`` that is
    not pytrace's (the first frame of the stack ``session.stack_id`` writes),
    or None if there is none."""
    while frame is not None and is_own_code(frame.f_code.co_filename):
        frame = frame.f_back
    return None if frame is None else (frame.f_code, frame.f_lineno or 0)


def _passing_ctrl_c(callback):
    """``callback`` for ``gc.callbacks``, but a Ctrl-C that lands inside it
    still reaches the program: ``gc`` would swallow the KeyboardInterrupt
    ("Exception ignored in ..."), so it is raised again in the main thread at
    its next bytecode."""
    def run(phase, info):
        try:
            callback(phase, info)
        except KeyboardInterrupt:
            _thread.interrupt_main()
    run.func = callback  # what it wraps, as Headroom's ``func``
    return run


def install(session):
    hook = GCHook(session)
    hook.install()
    return hook.uninstall
