"""Run ``pytrace`` commands as a user does, in a child process, and measure its peak memory."""

import os
import subprocess
import sys


def run_pytrace(*args) -> int:
    """Run ``python -m pytrace ARGS`` to completion; return the child's peak RSS in bytes.

    The peak comes from ``os.wait4``'s resource usage of that one child
    (Linux reports ``ru_maxrss`` in KiB).  A failing command fails the
    benchmark with the child's stderr.
    """
    child = subprocess.Popen([sys.executable, "-m", "pytrace", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode()
    child.stderr.close()
    assert child.returncode == 0, f"pytrace {' '.join(map(str, args))} failed: {errors}"
    return usage.ru_maxrss * 1024
