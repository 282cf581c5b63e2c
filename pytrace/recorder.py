"""A recording session: writer + shared tables + per-thread slots.

This is the seam between the hooks (which know Python) and the bytes (which
know the format).  Hooks call ``recorder.slots.current()`` at the moment they
write and use the slot's methods; they never keep a slot's buffer.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time

from . import __version__, core, wire
from .buffer import Slots, Tables
from .writer import Writer

#: Default per-thread buffer size: big enough that flushes are rare (one per
#: ~15,000 call events), small enough that 100 threads cost ~6 MiB.
DEFAULT_BUFFER_SIZE = 64 * 1024
#: The smallest legal buffer: a batch header plus one maximal varint record.
MIN_BUFFER_SIZE = wire.BATCH_FIXED_SIZE + 3 * wire.MAX_VARINT_BYTES + 1

#: The Python core's clock: nanoseconds, so ticks per second is 1e9.  The C
#: core's clock counts nanoseconds too (``pytrace.core``); a recorder made
#: without an explicit clock uses the active core's.
CLOCK = time.perf_counter_ns
CLOCK_FREQUENCY = core.FREQUENCY


PYTHON_VERSION = platform.python_version()
PYTHON_IMPLEMENTATION = platform.python_implementation()


def metadata(start_ticks: int) -> dict[str, str]:
    """What a reader needs to know about the traced process.  Read afresh
    for each file (a forked child's pid, an ``argv`` the program changed),
    but the encoding of an unchanged ``argv`` is reused: ``pytest
    --pytrace`` writes a file per test (issue 4)."""
    return {
        "pytrace_version": __version__,
        "python_version": PYTHON_VERSION,
        "python_implementation": PYTHON_IMPLEMENTATION,
        "pid": str(os.getpid()),
        "argv": _argv_json(sys.argv),
        "start_wall_ns": str(time.time_ns()),
        "start_ticks": str(start_ticks),
    }


#: ``(argv, its JSON)`` of the last ``_argv_json`` call.
_last_argv: tuple = (None, "")


def _argv_json(argv) -> str:
    """``json.dumps(argv)``, reused while ``argv`` stays equal (compared, not
    hashed: a program may put anything in ``sys.argv``)."""
    global _last_argv
    if type(argv) is not list:
        return json.dumps(argv)
    last, text = _last_argv
    if argv != last:
        text = json.dumps(argv)
        _last_argv = (list(argv), text)
    return text


#: pytrace's own threads (flusher, sampler, heap ticker) have names with this
#: prefix: they are never traced (``session.is_own_thread``).
OWN_THREAD_PREFIX = "pytrace-"


class PeriodicFlusher(threading.Thread):
    """Flushes every thread's buffer every ``interval`` seconds, so that even a
    quiet program's events reach the file, and a crash loses at most that
    interval.  Flushing another thread's slot is safe (see ``buffer.py``)."""

    def __init__(self, slots, interval: float) -> None:
        super().__init__(name=OWN_THREAD_PREFIX + "flusher", daemon=True)
        self.slots = slots
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.slots.flush_all()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()


class Recorder:
    """Writes one trace file.  ``close()`` flushes every thread and writes the footer."""

    def __init__(self, path, buffer_size: int = DEFAULT_BUFFER_SIZE, clock=None,
                 frequency: int = CLOCK_FREQUENCY, flush_interval: float = 0.0) -> None:
        if buffer_size < MIN_BUFFER_SIZE:
            raise ValueError(
                f"buffer_size {buffer_size} is too small; use at least {MIN_BUFFER_SIZE} bytes"
            )
        self.path = os.fspath(path)
        if clock is None:
            clock = core.clock()
        self.clock = clock
        self.writer = Writer.open(self.path, frequency, metadata(clock()))
        self.tables = Tables()
        self.slots = Slots(self.writer, self.tables, clock, buffer_size)
        self.closed = False
        self.flush_interval = flush_interval
        self.flusher = None
        self.resume_flushing()

    def pause_flushing(self) -> None:
        """Stop the periodic flusher thread (before a fork: a process with one
        thread forks without Python's multi-threaded-fork warning)."""
        flusher, self.flusher = self.flusher, None
        if flusher is not None:
            flusher.stop()

    def resume_flushing(self) -> None:
        if self.flush_interval > 0 and self.flusher is None and not self.closed:
            self.flusher = PeriodicFlusher(self.slots, self.flush_interval)
            self.flusher.start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pause_flushing()
        try:
            self.slots.flush_all()
        finally:
            # A Ctrl-C in the final flush must not cost the footer nor the
            # batches: flushing again hands over what it interrupted (a
            # slot's unsent batch, the slots not reached yet) and the footer
            # follows; the KeyboardInterrupt goes on to the program after.
            try:
                self.slots.flush_all()
            finally:
                self.writer.close()

    def abandon(self) -> None:
        """In a forked child: stop without writing (the file is the parent's)."""
        self.closed = True
        self.writer.abandon()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
