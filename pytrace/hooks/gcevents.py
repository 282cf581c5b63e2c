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
from a daemon thread too.  RSS comes from psutil, whose ``memory_info`` costs
about 10 us per call on this project's machine (a gen-0 collection pauses
40-120 us), measured with
``python -m timeit -s 'import psutil; p=psutil.Process()' 'p.memory_info().rss'``;
it is read after ``GCDone``, so it costs the program time but not the
recorded pause.  0 means psutil could not read it.

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
import sys
import threading
import time

import psutil

from .. import core, events
from ..recorder import CLOCK_FREQUENCY
from ..session import OWN_THREAD_PREFIX
from .sampler import Ticker

GC_START = events.BY_NAME["GCStart"].id
GC_DONE = events.BY_NAME["GCDone"].id
HEAP_COUNTERS = events.BY_NAME["HeapCounters"].id

#: Seconds the uninstall waits for collections running on other threads.
DRAIN_TIMEOUT = 2.0
#: A thread's state while its "start" callback runs, before GCStart is written.
_STARTING = "starting"
#: A thread's state while its "stop" callback writes GCDone.
_ENDING = "ending"


class GCHook:
    """The two ``gc.callbacks`` entries, the per-thread collection states and the summary."""

    def __init__(self, session) -> None:
        self.session = session
        self._memory_info = psutil.Process().memory_info
        #: False once uninstall began: collections starting after that are not recorded.
        self.recording = True
        #: thread ident -> _STARTING, (generation, GCStart ticks), or _ENDING.
        self._open: dict = {}
        self.collections = [0, 0, 0]
        self.cut_short = 0
        self.total_pause = 0
        self.longest = (0, 0)  # (ticks, generation)
        self._ticker = None

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
            stack = session.stack_id(slot, sys._getframe())
            slot.emit(GC_START, info["generation"], stack)
            self._open[ident] = (info["generation"], slot.last)
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

    def emit_heap_counters(self) -> None:
        gen0, gen1, gen2 = gc.get_count()
        self.session.slots.current().emit(
            HEAP_COUNTERS, gen0, gen1, gen2, gc.get_threshold()[0],
            sys.getallocatedblocks(), self._rss())

    def _rss(self) -> int:
        try:
            return self._memory_info().rss
        except psutil.Error:
            return 0

    def _account(self, started: tuple, done_ticks: int) -> None:
        generation, start_ticks = started
        pause = done_ticks - start_ticks
        self.collections[generation] += 1
        self.total_pause += pause
        if pause > self.longest[0]:
            self.longest = (pause, generation)

    # -- install / uninstall -------------------------------------------------

    def install(self) -> None:
        interval = self.session.options.heap_interval
        if interval > 0:  # first: if the thread cannot start, nothing is left registered
            self._ticker = Ticker(self.session, OWN_THREAD_PREFIX + "heap", interval,
                                  self.emit_heap_counters)
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

    def uninstall(self) -> None:
        self.recording = False
        if self._ticker is not None:
            self._ticker.stop()
        self._drain()
        gc.callbacks.remove(self.on_start)
        gc.callbacks.remove(self.on_stop)
        self._close_open_collections()

    def _drain(self) -> None:
        """Wait (bounded) for collections running on other threads to write their GCDone.

        Only live threads count: in a forked child the others are gone."""
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
