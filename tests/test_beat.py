"""The tickers' clocks: ``PythonBeat`` and the C core's ``_core.Beat``
(``pytrace/hooks/sampler.py``, ``pytrace/_beat.c``), driven directly."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import pytest

from pytrace import core
from pytrace.hooks.sampler import PythonBeat

BEATS = {"python": PythonBeat}
if core.c_module is not None:
    BEATS["c"] = core.c_module.Beat
INTERVAL = 0.002


@pytest.fixture(params=sorted(BEATS))
def beat_class(request):
    return BEATS[request.param]


class Running:
    """A beat whose ``run()`` runs on a thread of its own, as a Ticker's does."""

    def __init__(self, beat_class, interval=INTERVAL):
        self.ticks = []
        self.beat = beat_class(interval, self.tick)
        self.beat.begin()
        self.thread = threading.Thread(target=self.beat.run)
        self.thread.start()

    def tick(self):
        self.ticks.append(threading.get_ident())

    def stop(self):
        self.beat.halt()
        self.thread.join(10)
        assert not self.thread.is_alive(), "run() did not return after halt()"


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_ticks_go_on_while_the_main_thread_waits(beat_class):
    running = Running(beat_class)
    time.sleep(0.2)  # waits in C, without the GIL: no eval-breaker check
    running.stop()
    assert len(running.ticks) >= 0.3 * 0.2 / INTERVAL
    # Not by the sleeping thread (it may take one as it wakes): by the beat's
    # own thread, or on 3.12 by any other thread that runs Python meanwhile.
    assert running.ticks.count(threading.get_ident()) <= 1


def test_held_it_does_not_tick_and_released_it_ticks_again(beat_class):
    running = Running(beat_class)
    spin(0.05)
    running.beat.hold()
    spin(0.01)  # a tick under way when held may still end
    held_at = len(running.ticks)
    spin(0.1)
    assert len(running.ticks) == held_at
    running.beat.release()
    spin(0.1)
    running.stop()
    assert len(running.ticks) > held_at


def test_halt_ends_a_held_run_and_begin_lets_it_run_again(beat_class):
    running = Running(beat_class)
    running.beat.hold()
    time.sleep(0.02)  # asleep until released
    running.stop()
    running.beat.release()
    running.beat.begin()  # as a Ticker restarts its thread after a fork
    again = threading.Thread(target=running.beat.run)
    again.start()
    time.sleep(0.05)
    running.beat.halt()
    again.join(10)
    assert not again.is_alive()
    assert again.ident in running.ticks


def needs_the_c_beat_on_the_main_thread():
    if "c" not in BEATS or threading.current_thread() is not threading.main_thread():
        pytest.fail("needs the C core, on the main thread")


def stat_in_a_loop(seconds: float) -> None:
    """Python code that makes system calls, as a test suite does (each one
    lets the GIL go and takes it back)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        os.stat(".")


def test_the_c_beat_hands_its_ticks_to_the_main_thread_while_it_runs_python():
    """No thread waits for the GIL: the main thread runs each tick between two
    of its bytecodes (a Python thread waking for each tick cost the program
    two thread switches per system call it made meanwhile)."""
    needs_the_c_beat_on_the_main_thread()
    running = Running(BEATS["c"])
    stat_in_a_loop(0.2)
    running.stop()
    assert len(running.ticks) >= 0.3 * 0.2 / INTERVAL
    assert running.ticks.count(threading.get_ident()) >= 0.9 * len(running.ticks)


def test_the_c_beat_ticks_through_pure_python_computation():
    """3.12+ interrupt the main thread's Python code for a queued tick; 3.11
    notices it only at its next GIL switch, so there the beat's own thread
    takes the ticks, one per switch interval at least."""
    needs_the_c_beat_on_the_main_thread()
    running = Running(BEATS["c"])
    spin(0.2)
    running.stop()
    if sys.version_info >= (3, 12):
        assert len(running.ticks) >= 0.3 * 0.2 / INTERVAL
        assert running.ticks.count(threading.get_ident()) >= 0.9 * len(running.ticks)
    else:
        assert len(running.ticks) >= 0.3 * 0.2 / sys.getswitchinterval()


def test_a_c_beat_dropped_while_its_tick_is_queued_outlives_the_tick():
    """The main thread takes a queued tick only when it runs Python again,
    maybe after the beat was halted and dropped: the beat must still be
    there (under AddressSanitizer with ``PYTHONMALLOC=malloc``, as
    ``scripts/sanitize`` runs, a freed one is an error), and tick no more."""
    needs_the_c_beat_on_the_main_thread()
    running = Running(BEATS["c"])
    time.sleep(0.05)  # no eval-breaker check: the last tick queued stays queued
    running.beat.halt()
    running.thread.join()
    ticks = running.ticks
    del running
    gc.collect()
    taken = len(ticks)
    spin(0.01)  # the queued tick runs now, on a halted beat: no tick
    assert len(ticks) == taken > 0


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan"), 2e6])
def test_the_c_beat_refuses_a_wrong_interval(interval):
    if "c" not in BEATS:
        pytest.fail("needs the C core")
    with pytest.raises(ValueError, match="interval"):
        BEATS["c"](interval, print)


def test_a_c_beat_whose_tick_drops_it_outlives_the_tick():
    """A tick may stop tracing: halt the beat, join its thread and drop the
    last reference, all from inside the pending call that runs it.  The call
    must hold the beat until it is done (under AddressSanitizer with
    ``PYTHONMALLOC=malloc``, as ``scripts/sanitize`` runs, a freed one is an
    error)."""
    needs_the_c_beat_on_the_main_thread()
    held = {}

    def tick():
        if threading.current_thread() is threading.main_thread() and "beat" in held:
            beat = held.pop("beat")
            beat.halt()
            held.pop("thread").join()
            del beat

    beat = BEATS["c"](INTERVAL, tick)
    thread = threading.Thread(target=beat.run)
    held.update(beat=beat, thread=thread)
    del beat
    thread.start()
    end = time.perf_counter() + 10
    while "beat" in held and time.perf_counter() < end:  # takes the ticks (3.11: at a
        os.stat(".")                                      # system call)
    assert "beat" not in held
    gc.collect()
