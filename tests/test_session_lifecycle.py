"""``pytrace.start`` on one thread racing ``pytrace.stop`` on another.

The hooks patch module-wide names (``time.sleep``, ``threading.Lock``...)
and publish the session they record for.  If the new session installed its
hooks before the old session had taken its own out, the old uninstall would
unpublish the new hooks (a trace silently without blocking events) and leave
a wrapper in place for good.  ``start`` waits for a stop in progress.

The same race, with calls on, crashed CPython 3.11 about one run in four:
a profile function that a garbage collection's callbacks replaced while
CPython was about to call it (see "Keeping replaced profile functions
alive" in ``pytrace/hooks/setprofile.py``).  The two subprocess tests make
that collection happen where it did, deterministically, on each core.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

import pytrace
from pytrace import core
from pytrace.hooks import blocking
from pytrace.session import TracerError
from traced_processes import run_python, write_program

#: With calls on, installing the hooks takes long enough for the race to show
#: (5 of 150 races lost their hooks before the fix).
RACES = 150


def test_a_start_racing_a_stop_on_another_thread_gets_working_hooks(tmp_path):
    original_sleep, original_lock = time.sleep, threading.Lock
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    unpublished = []
    try:
        for race in range(RACES):
            pytrace.start(tmp_path / "old.pytrace", calls=True, flush_interval=0)
            barrier = threading.Barrier(2)
            started = []

            def stop_old():
                barrier.wait()
                pytrace.stop()

            def start_new():
                barrier.wait()
                while not started:
                    try:
                        started.append(pytrace.start(tmp_path / "new.pytrace", calls=True,
                                                     flush_interval=0))
                    except TracerError:  # the old trace is still running: try again
                        pass

            threads = [threading.Thread(target=stop_old), threading.Thread(target=start_new)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            active = blocking._active
            if active is None or active.session is not started[0]:
                unpublished.append(race)
            pytrace.stop()
    finally:
        sys.setswitchinterval(switch_interval)
    assert unpublished == []
    assert time.sleep is original_sleep and threading.Lock is original_lock


#: A program that starts and stops tracing ``CYCLES`` times, each time with a
#: collection due within the next few allocations, so that in some cycle it
#: falls on the frame object CPython makes for the first profile event of a
#: thread (``call_trace``, between reading the thread's profile function and
#: calling it).  pytrace's GC hook runs Python code in that collection, so the
#: thread's bootstrap runs there first and hands the thread over.  Before the
#: fix, 3.11 then called the freed bootstrap: a crash within a few cycles.
#: The event that collection interrupted reaches the bootstrap afterwards:
#: the thread's stack is still opened once (one ``OpenFrames``).
PRELUDE = """
    import gc, sys, threading
    import pytrace
    from pytrace.validate import validate

    CYCLES = 60
    path = sys.argv[1]
    thresholds = gc.get_threshold()
    invalid = []

    def work():
        return [[] for _ in range(3)]
"""

COLLECTION_IN_A_HAND_OVER = PRELUDE + """
    for cycle in range(CYCLES):
        gc.set_threshold(1 + cycle % 6)
        pytrace.start(path, calls=True, backend="setprofile", flush_interval=0)
        work()
        gc.set_threshold(*thresholds)
        pytrace.stop()
        opened = sum(event.name == "OpenFrames" for event in pytrace.read(path).events)
        if not validate(path).valid or opened != 1:
            invalid.append(cycle)
    print("invalid traces:", invalid)
"""

#: Likewise for the first event of another thread after ``stop`` (3.11 cannot
#: remove its profile function from outside): a collection's callback (here a
#: plain ``gc.callbacks`` entry: pytrace's GC hook is gone) makes the stopped
#: profile function remove itself there, and CPython then called it, freed.
COLLECTION_IN_A_REMOVAL = PRELUDE + """
    gc.callbacks.append(lambda phase, info: None)
    for cycle in range(CYCLES):
        pytrace.start(path, calls=True, backend="setprofile", flush_interval=0)
        handed_over, stopped = threading.Event(), []

        def worker():
            work()
            handed_over.set()
            while not stopped:  # no profile event until stop
                pass
            work()  # the first event after stop, in a frame not made yet

        thread = threading.Thread(target=worker)
        thread.start()
        handed_over.wait()
        pytrace.stop()
        if not validate(path).valid:
            invalid.append(cycle)
        gc.set_threshold(1 + cycle % 6)
        stopped.append(True)
        thread.join()
        gc.set_threshold(*thresholds)
    print("invalid traces:", invalid)
"""


@pytest.mark.parametrize("core_name", core.NAMES)
@pytest.mark.parametrize("program", [COLLECTION_IN_A_HAND_OVER, COLLECTION_IN_A_REMOVAL],
                         ids=["hand-over", "removal"])
def test_a_collection_inside_a_profile_event_leaves_the_profile_function_alive(
        tmp_path, program, core_name):
    script = write_program(tmp_path, "collections", program)
    env = {**os.environ, "PYTRACE_CORE": core_name}
    result = run_python(script, str(tmp_path / "cycle.pytrace"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["invalid traces: []"], result.stderr[-2000:]
