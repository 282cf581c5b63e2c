"""``pytrace.start`` on one thread racing ``pytrace.stop`` on another.

The hooks patch module-wide names (``time.sleep``, ``threading.Lock``...)
and publish the session they record for.  If the new session installed its
hooks before the old session had taken its own out, the old uninstall would
unpublish the new hooks (a trace silently without blocking events) and leave
a wrapper in place for good.  ``start`` waits for a stop in progress.
"""

from __future__ import annotations

import sys
import threading
import time

import pytrace
from pytrace.hooks import blocking
from pytrace.session import TracerError

RACES = 150
#: With calls on, installing the hooks takes long enough for the race to show
#: (5 of 150 races lost their hooks before the fix).  Not on 3.11: there the
#: C core's setprofile backend can crash when a thread's profile function is
#: replaced in this race (a known bug, see the issue 3 note), which is not
#: what this test is about.
CALLS = sys.version_info >= (3, 12)


def test_a_start_racing_a_stop_on_another_thread_gets_working_hooks(tmp_path):
    original_sleep, original_lock = time.sleep, threading.Lock
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    unpublished = []
    try:
        for race in range(RACES):
            pytrace.start(tmp_path / "old.pytrace", calls=CALLS, flush_interval=0)
            barrier = threading.Barrier(2)
            started = []

            def stop_old():
                barrier.wait()
                pytrace.stop()

            def start_new():
                barrier.wait()
                while not started:
                    try:
                        started.append(pytrace.start(tmp_path / "new.pytrace", calls=CALLS,
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
