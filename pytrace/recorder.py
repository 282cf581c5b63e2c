"""A recording session: writer + shared tables + per-thread slots.

This is the seam between the hooks (which know Python) and the bytes (which
know the format).  Hooks call ``recorder.slots.current()`` at the moment they
write and use the slot's methods; they never keep a slot's buffer.
"""

from __future__ import annotations

import _thread
import json
import os
import platform
import sys
import threading
import time

from . import __version__, core, forks, wire
from .buffer import Slots, Tables
from .writer import Writer

#: Default per-thread buffer size: big enough that flushes are rare (one per
#: ~15,000 call events), small enough that 100 threads cost ~6 MiB.
DEFAULT_BUFFER_SIZE = 64 * 1024
#: The smallest legal buffer: a batch header plus one maximal varint record.
MIN_BUFFER_SIZE = wire.BATCH_FIXED_SIZE + 3 * wire.MAX_VARINT_BYTES + 1

#: Ticks per second of both cores' clocks (nanoseconds, ``pytrace.core``);
#: a recorder made without an explicit clock uses the active core's.
CLOCK_FREQUENCY = core.FREQUENCY


PYTHON_VERSION = platform.python_version()
PYTHON_IMPLEMENTATION = platform.python_implementation()


def process_metadata() -> tuple[tuple[str, str], ...]:
    """What a reader needs to know about the traced process, as ``(key,
    value)`` pairs: the same in every file the process writes (``pytest
    --pytrace`` writes one per test, issue 4), so the writer encodes them once
    (``writer._opening``).  Read afresh for each file all the same: a forked
    child has its own pid, and a program may change ``argv``."""
    return (
        ("pytrace_version", __version__),
        ("python_version", PYTHON_VERSION),
        ("python_implementation", PYTHON_IMPLEMENTATION),
        ("pid", _pid()),
        ("argv", _argv_json(sys.argv)),
    )


def file_metadata(start_ticks: int) -> tuple[tuple[str, str], ...]:
    """When this file began, on the wall clock and on the trace's clock."""
    return (("start_wall_ns", str(time.time_ns())), ("start_ticks", str(start_ticks)))


#: This process's id as text; a forked child reads its own (``_forget_pid``).
_pid_text: str | None = None


def _pid() -> str:
    """``str(os.getpid())``, read once per process: a system call less per
    file (``pytest --pytrace`` writes one per test, issue 4)."""
    global _pid_text
    if _pid_text is None:
        _pid_text = str(os.getpid())
    return _pid_text


def _forget_pid() -> None:
    global _pid_text
    _pid_text = None


forks.register(after_in_child=_forget_pid)


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


class PeriodicFlusher:
    """Flushes every thread's buffer of each open recorder every
    ``flush_interval`` seconds, so that even a quiet program's events reach
    the file, and a crash loses at most that interval.  Flushing another
    thread's slot is safe (see ``buffer.py``).

    One thread (``pytrace-flusher``) serves every recorder of the process,
    and may outlive them: ``pytest --pytrace`` opens a recorder per test, and
    starting and joining a thread for each cost more than the rest of a
    short test's recording.  The lock is never held while flushing: code
    that runs inside a flush on the flusher thread (a GC callback, a
    finalizer) may stop tracing, which removes a recorder.  ``wait_for``
    returns once no flush of a recorder is running, so its final flush and
    footer come after the flusher's last batch.
    """

    def __init__(self) -> None:
        # Reentrant: a collection can start on the flusher thread while it
        # holds the lock, and a GC callback may stop tracing, which comes
        # back here.  Built from ``_thread``: the blocking hook may have
        # replaced ``threading.RLock`` by its observing wrapper.
        self._changed = threading.Condition(_thread.RLock())
        self._due: dict = {}  # recorder -> monotonic time of its next flush
        self._flushing = None  # the recorder the thread is flushing now
        self._flusher: threading.Thread | None = None  # and the thread flushing it
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: When the thread wakes next: ``add`` wakes it early only if the new
        #: recorder is due before then (waking it for every file of a
        #: test-per-file run cost two thread switches a test).
        self._wake_at = 0.0

    def add(self, recorder) -> None:
        with self._changed:
            due = self._due[recorder] = time.monotonic() + recorder.flush_interval
            if self._thread is None:
                self._start()
            elif due < self._wake_at:
                self._changed.notify_all()

    def forget(self, recorder) -> None:
        """Flush ``recorder`` no more.  Never blocks (``dict.pop`` is atomic):
        a Ctrl-C cannot fall between it and the caller's ``try``."""
        self._due.pop(recorder, None)

    def wait_for(self, recorder) -> None:
        """Return once the thread is not flushing ``recorder`` (at once on
        the flusher thread itself: it is the one flushing)."""
        with self._changed:
            while self._flushing is recorder and self._flusher is not threading.current_thread():
                self._changed.wait()

    def end_if_idle(self) -> None:
        """End the thread if no recorder is left for it (``pytrace.stop()``
        leaves no pytrace thread behind)."""
        if not self._due:
            self.pause()

    def pause(self) -> None:
        """End the thread (before a fork: a process with one thread forks
        without Python's multi-threaded-fork warning)."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def resume(self) -> None:
        """Start the thread again if a recorder wants it (after a fork, in the parent)."""
        with self._changed:
            if self._due and self._thread is None:
                self._start()

    def forget_all(self) -> None:
        """In a forked child: the recorders and the thread are the parent's."""
        self.__init__()

    def _start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=OWN_THREAD_PREFIX + "flusher",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        changed = self._changed
        with changed:
            while not self._stopping and self._thread is me:
                now = time.monotonic()
                for recorder in [r for r, due in self._due.items() if due <= now]:
                    if recorder not in self._due:  # closed meanwhile
                        continue
                    self._flushing, self._flusher = recorder, me
                    changed.release()
                    try:
                        recorder.slots.flush_all()
                    except Exception:  # never let one file end flushing for all
                        pass
                    finally:
                        changed.acquire()
                        self._flushing = self._flusher = None
                        changed.notify_all()
                    if recorder in self._due:
                        self._due[recorder] = time.monotonic() + recorder.flush_interval
                    if self._stopping or self._thread is not me:
                        return
                # With nothing to flush, look again in a second: a file
                # added meanwhile is due no sooner than its own interval.
                self._wake_at = min(self._due.values(), default=now + IDLE_WAKE)
                changed.wait(max(self._wake_at - time.monotonic(), 0.0))


#: Seconds between the flusher's looks at an empty list of recorders.
IDLE_WAKE = 1.0

#: The process's periodic flusher (see ``PeriodicFlusher``).
FLUSHER = PeriodicFlusher()


class Recorder:
    """Writes one trace file.  ``close()`` flushes every thread and writes the footer."""

    def __init__(self, path, buffer_size: int = DEFAULT_BUFFER_SIZE, clock=None,
                 frequency: int = CLOCK_FREQUENCY, flush_interval: float = 0.0,
                 background: bool = False) -> None:
        """``background``: the file's system calls after its open may be made
        by a background thread (``Writer.open``)."""
        if buffer_size < MIN_BUFFER_SIZE:
            raise ValueError(
                f"buffer_size {buffer_size} is too small; use at least {MIN_BUFFER_SIZE} bytes"
            )
        self.path = os.fspath(path)
        if clock is None:
            clock = core.clock()
        self.clock = clock
        self.writer = Writer.open(self.path, frequency, process_metadata(),
                                  file_metadata(clock()), background)
        self.tables = Tables()
        self.slots = Slots(self.writer, self.tables, clock, buffer_size)
        self.closed = False
        self.flush_interval = flush_interval
        if flush_interval > 0:
            FLUSHER.add(self)

    def close(self, keep_flusher: bool = False) -> None:
        """``keep_flusher``: leave the flusher thread running even if no other
        recorder needs it (another file follows at once: ``Session.park``).
        Closing again only ends an idle flusher thread."""
        FLUSHER.forget(self)
        if self.closed:
            if not keep_flusher:
                FLUSHER.end_if_idle()
            return
        self.closed = True
        flushed = False
        try:
            FLUSHER.wait_for(self)
            self.writer.hold()  # the final batches go with the footer
            self.slots.flush_all()
            flushed = True
        finally:
            # A Ctrl-C in the final flush (or while waiting for the flusher)
            # must not cost the footer nor the batches: flushing again hands
            # over what it interrupted (a slot's unsent batch, the slots not
            # reached yet) and the footer follows; the KeyboardInterrupt goes
            # on to the program after.  A batch the flusher is handing over
            # must reach the writer before the footer: wait for it again.
            # (Uninterrupted, once is enough: the flusher was told to forget
            # this recorder before the wait.)
            try:
                if not flushed:
                    FLUSHER.wait_for(self)
                    self.slots.flush_all()
            finally:
                try:
                    self.writer.close()
                finally:
                    # An interrupt at the writer's close, before its write,
                    # must not cost the batches it holds for the footer.
                    self.writer.write_held()
                    if not keep_flusher:
                        FLUSHER.end_if_idle()

    def abandon(self) -> None:
        """In a forked child: stop without writing (the file is the parent's)."""
        self.closed = True
        self.writer.abandon()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
