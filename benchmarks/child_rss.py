"""Run ``pytrace`` commands as a user does, in a child process, and measure its peak memory."""

import subprocess
import sys
import tempfile

#: Runs ``python -m pytrace ARGS`` and, at exit, writes the process's own peak
#: RSS (``VmHWM``, which starts afresh at exec) to the file named in argv[1].
_CHILD = """
import atexit, runpy, sys
report = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(report, "w") as out:
        out.write(kib)
atexit.register(peak)
sys.argv[0] = "pytrace"
runpy.run_module("pytrace", run_name="__main__", alter_sys=True)
"""


def run_pytrace(*args) -> int:
    """Run ``python -m pytrace ARGS`` to completion; return the child's peak RSS in bytes.

    The peak is the child's own ``VmHWM``: ``ru_maxrss`` from ``wait4`` would
    carry over the parent's (pytest's) peak across the fork and exec.  A
    failing command fails the benchmark with the child's stderr.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        child = subprocess.run([sys.executable, "-c", _CHILD, report.name, *map(str, args)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert child.returncode == 0, f"pytrace {' '.join(map(str, args))} failed: {child.stderr}"
        return int(report.read()) * 1024
