"""The writer: takes sealed batches from the slots and puts them in the file.

Writing is synchronous: the thread whose buffer filled writes the batch
itself, under one lock.  Measured with ``benchmarks/bench_writer.py`` (2
cores, CPython 3.12.1, 200 batches of 64 KiB between stretches of pure-Python
work): minimum 140.9 ms without writing, 145.3 ms writing synchronously,
141.6 ms queueing to a background writer thread; medians 156.6 / 154.3 /
145.1 ms.  The synchronous cost is at most ~22 us per 64 KiB batch (under 1%
of the time a pure-Python tracer takes to fill one) and the differences are
within this machine's noise, so the simpler design wins: per-thread order
comes for free (a thread's flushes are sequential), memory is bounded by
construction (nothing is queued: one buffer per live thread plus the file's
own buffer), and no extra thread competes for the GIL or must be joined at
exit.

The lock is never taken re-entrantly: only ``ThreadSlot.flush`` calls
``write_batch``, and a thread that is already flushing (any slot) starts no
other flush, so a GC callback or signal handler running inside a write
cannot reach the lock again.

A Ctrl-C can interrupt ``write_batch`` anywhere CPython runs a signal
handler: at the entry of a function, at a backward jump, right after a call
returns (the eval-breaker checks); and the lock's ``acquire`` runs handlers
while it waits.  So a slot keeps a batch it handed over ("unsent", see
``pytrace/buffer.py``) until ``write_batch`` returns, and offers it again
at its next flush if it did not.  ``write_batch`` makes that safe: it skips
a batch whose sequence number it has already taken for that thread, and it
takes a batch in one stretch of bytecode with no eval-breaker check in it,
from the footer's counts to the batch's place in ``_held``, the bytes taken
but not written yet; from there to the raw write there is none either (see
``_write_held``).  An interrupt before that stretch leaves the batch untaken
(it is offered again); one after it finds the batch taken (the offer is
skipped), and the held bytes go out with the next write, or at the close at
the latest.  So every batch is in the file exactly once, in sequence order,
and the footer counts exactly what is there.

A failing disk (full, removed, unwritable) never reaches the traced program:
the first ``OSError`` is reported once as a ``TraceWriteWarning``, writing
stops, and what was already written stays a readable (cut-short) trace.

The system calls go through a file object: ``SyncFile`` makes them on the
calling thread; on the C core, a file opened with ``background=True``
(``pytest --pytrace``'s file per test, see ``Session.resume``) is a
``_core.TraceFile``, whose truncation, writes and close a background
thread makes, in order, without the GIL (``pytrace/_files.c``: they were
a fifth of a short test's tracing cost).  Its failures surface at the next
write, or, for the calls queued by the close, in ``settle`` (at the next
resume, and at the session's stop); the files it still writes are waited
for at exit and before a fork.
"""

from __future__ import annotations

import _thread
import errno
import functools
import os
import warnings

from . import core, events, forks, wire


#: ``os.write`` as this module found it: the blocking hook replaces
#: ``os.write`` by a Python function that records it (and pytrace's own
#: writes are not to be recorded), and a Python call between the footer's
#: counts and the write would let a Ctrl-C fall between them (see
#: ``write_batch``).  This module is imported before any hook is installed
#: (``pytrace.session`` imports it through the recorder).
_write = os.write


@functools.lru_cache(maxsize=4)
def _opening(frequency: int, process_meta: tuple) -> bytes:
    """The file's first bytes: the header, the clock's frequency, then the
    process's metadata (``recorder.process_metadata``).  Remembered: they are
    the same in every file a process writes, and ``pytest --pytrace`` writes
    one per test (issue 4)."""
    return (wire.HEADER + wire.record(events.FREQUENCY, (frequency,))
            + b"".join([wire.meta_record(key, value) for key, value in process_meta]))


#: Most bytes of final batches the writer keeps to write with the footer (see ``Writer.hold``).
HOLD_LIMIT = 64 * 1024


class TraceWriteWarning(RuntimeWarning):
    """The trace file could not be written; tracing continues without it."""


class SyncFile:
    """A trace file whose system calls are made on the calling thread: the
    interface of ``_core.TraceFile`` (``pytrace/_files.c``), which queues
    them for a background thread.  ``start(data)`` writes the file's first
    bytes, ``write(data)`` more (both return how many bytes were written, as
    ``os.write``), ``close()`` ends it; ``sync()``, ``done`` and ``error``
    are for a background file's queued calls: here, nothing is ever queued
    (a failure raises at once).

    ``write`` is ``os.write`` bound to the descriptor by
    ``functools.partial``: a C call, with no Python frame where a signal
    handler could run (see ``Writer._write_held``)."""

    done = True
    error = None

    def __init__(self, path: str) -> None:
        """Create (or truncate) ``path``, as ``Writer.open`` says."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.ftruncate(fd, 1)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                os.close(fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.write = self.start = functools.partial(_write, fd)

    def close(self) -> None:
        """Close the descriptor, once: closing its number again could close
        a file the process opened since."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def sync(self) -> None:
        pass


def _open_file(path: str, background: bool):
    """The file object for ``path``: a background one if asked for and the C
    core runs, else a ``SyncFile``."""
    if background and core.name == "c":
        return core.c_module.TraceFile(path)
    return SyncFile(path)


#: ``(writer, file)`` for each closed background file, until ``settle`` finds
#: its queued calls all made and reports their failure, if any.
_unsettled: list = []


def settle(wait: bool = False) -> None:
    """Report (``TraceWriteWarning``) the failure of every closed background
    file whose queued calls are all made; with ``wait``, wait for all of
    them first."""
    for entry in list(_unsettled):
        writer, file = entry
        if wait:
            file.sync()
        if file.done:
            try:
                _unsettled.remove(entry)
            except ValueError:  # another thread settled it meanwhile
                continue
            failure = file.error
            if failure is not None:
                writer._fail(failure)


# Before a fork, the background thread makes every queued call and ends (the
# child must not write its parent's bytes, and a process with other threads
# forks with a warning on 3.12+); after it, the parent's starts again, and
# the child drops what was queued meanwhile.  Registered at import, before
# the session's own fork callbacks: the child's start afresh runs before the
# session abandons its files there, and the parent's pause after the
# flusher thread's.  (At exit, ``_core`` itself waits for the queued calls.)
if core.c_module is not None:
    forks.register(before=core.c_module.pause_files,
                   after_in_parent=core.c_module.resume_files,
                   after_in_child=core.c_module.files_after_fork_in_child)


class Writer:
    """Owns the trace file from header to footer."""

    def __init__(self, file, path: str, frequency: int, process_meta: tuple,
                 file_meta: tuple) -> None:
        #: The file (``SyncFile`` or ``_core.TraceFile``), not a Python file
        #: object: that adds nothing to unbuffered writes, and making one
        #: costs an ``fstat`` and a few microseconds per file (``pytest
        #: --pytrace`` writes one file per test, issue 4).
        self._file = file
        self._file_closed = False
        #: ``file.write``, a C call (see ``_write_held``).
        self._file_write = file.write
        self.path = path
        #: Bytes written to the file so far (its size, once closed).
        self.size = 0
        # From ``_thread``, not ``threading.Lock``: a trace started while
        # the blocking hook is installed would get its observed stand-in,
        # which costs a Python call per acquire and has nothing to observe
        # (pytrace's own waits are not recorded).
        self._lock = _thread.allocate_lock()
        self.failed: OSError | None = None
        self.closed = False
        self.totals: dict[int, list[int]] = {}  # tid -> [batches, records]
        #: The thread inside ``write_batch``, holding the lock: code it runs
        #: there (a GC callback, a finalizer) may stop tracing, and its
        #: ``close`` must not wait for the lock its own thread holds.
        self._writing_thread: int | None = None
        #: Set by ``hold``: batches are kept in ``_held`` (up to
        #: ``HOLD_LIMIT`` bytes) instead of written, to go with the footer.
        self._holding = False
        #: Batches taken but not written yet, in the order taken; whatever
        #: is written next (a batch, the footer) goes after them in the same
        #: system call, so the file keeps that order.
        self._held = b""
        first = (_opening(frequency, process_meta)
                 + b"".join([wire.meta_record(key, value) for key, value in file_meta]))
        try:
            written = file.start(first)
        except OSError as exc:
            self._fail(exc)
        else:
            self.size += written
            self._put(first, written)

    @classmethod
    def open(cls, path, frequency: int, process_meta: tuple, file_meta: tuple,
             background: bool = False) -> "Writer":
        """Create (or truncate) ``path``.  Raises ``OSError`` if impossible,
        so the caller can refuse to start with a clear message.  With
        ``background``, on the C core, the calls after the open are made by
        a background thread (see the module's docstring).

        The file is unbuffered: every batch goes to the OS at once (one
        ``write`` per 64 KiB batch), so a crash of the process loses nothing
        the writer was given, and a forked child holds no buffered copy of
        the parent's bytes that it could write a second time.  The one
        exception is the final flush, inside the recorder's close: its
        batches wait for the footer (``hold``).

        An existing regular file is cut to one byte, not to zero, before the
        header overwrites that byte: ext4 writes a file that was truncated
        to zero and rewritten out to disk when it is closed (its
        ``auto_da_alloc`` guard for "replace by truncate"), which cost
        ~100 us per file here against ~10 us (``pytest --pytrace``
        rewrites one trace per test on every run).  A file that cannot be
        cut (``EINVAL``: ``/dev/null``, a FIFO) is written as it is; asking
        ``ftruncate`` instead of ``fstat`` first saves a system call per file.
        (A background file is cut by its thread, before the header.)
        """
        path = os.fspath(path)
        return cls(_open_file(path, background), path, frequency, process_meta, file_meta)

    def write_batch(self, tid: int, batch: bytearray, count: int, seq: int) -> None:
        """Append the sealed ``batch`` (it holds ``count`` records) to the file.

        ``seq`` is the batch's sequence number, so offering a batch
        again is harmless: a batch whose ``seq`` this thread's batches
        already reached is in the file and is skipped (a thread's batches
        are taken in sequence order, so the next one due is ``seq ==
        batches taken``).
        """
        with self._lock:
            if self.closed:
                # A thread was still flushing when the trace was closed: its
                # batch is dropped whole (and not counted in the footer).
                return
            self._writing_thread = _thread.get_ident()
            try:
                totals = self.totals.setdefault(tid, [0, 0])
                if seq < totals[0]:
                    return  # taken already: an interrupt hit after it was taken
                held = self._held
                hold = self._holding and len(held) + len(batch) <= HOLD_LIMIT
                # From here to the batch's place in ``_held`` nothing may be
                # a call, a function entry or a backward jump: a signal
                # handler (Ctrl-C) would run there and leave the batch
                # counted but not in the writer's hands.
                totals[0] += 1
                totals[1] += count
                if self.failed is None:
                    self._held = held + batch
                    if not hold:
                        self._write_held()
            finally:
                self._writing_thread = None
                if self.closed:  # closed from inside the write: finish here
                    self._finish()

    def hold(self) -> None:
        """The final flush follows: keep its batches (up to ``HOLD_LIMIT``
        bytes) and write them with the footer, in one system call instead of
        one per batch plus one (``pytest --pytrace`` closes a file per test,
        issue 4).  Nothing the program does runs between the final flush
        and the footer: the close is one call of the recorder."""
        self._holding = True

    def close(self) -> None:
        """Write the footer and close the file.  Call after the final flush.

        Called from inside ``write_batch`` on the same thread, it only marks
        the writer closed: the footer follows when that write ends."""
        if self._writing_thread == _thread.get_ident():
            self.closed = True
            return
        with self._lock:
            self.closed = True
            self._finish()

    def sync(self) -> None:
        """Return once the file holds every byte handed to the writer so far
        (a background file's queued calls are made)."""
        self._file.sync()

    def write_held(self) -> None:
        """Write whatever batches are still held: after a ``close`` that an
        interrupt cut before its write, the trace then lacks only its footer."""
        if self._held:
            with self._lock:
                self._write_held()

    def _finish(self) -> None:
        totals = sorted((tid, b, n) for tid, (b, n) in self.totals.items())
        self._write_held(wire.footer_record(totals))
        try:
            self._close_file()
        except OSError as exc:
            self._fail(exc)

    def _write_held(self, tail: bytes = b"") -> None:
        """Write the held batches, then ``tail``, in one system call.  The
        held bytes stay in ``_held`` until the statement before the write,
        with no call in between: a Ctrl-C that comes first leaves them for
        the next write, or the close; one that comes after finds them in the
        file.  The write is a C call: a handler runs once it has returned.
        (A signal does not interrupt a write to a regular file, and such a
        write is short only when the file cannot grow: the rest then fails
        too, and the trace is cut short there either way.)"""
        data = self._held + tail
        self._held = b""
        if self.failed is not None:
            return
        try:
            written = self._file_write(data)
        except OSError as exc:
            self._fail(exc)
        else:
            self.size += written
            if written < len(data):
                self._put(data, written)

    def abandon(self) -> None:
        """Close the file without writing anything more (a forked child's copy)."""
        self.closed = True
        self.failed = self.failed or OSError("abandoned in a forked child")
        try:
            self._close_file()
        except OSError:
            pass

    def _close_file(self) -> None:
        """Close the file, once (e.g. a forked child abandons a parked
        session, whose file is closed).  A background file is left to
        ``settle``, which reports a failure of its last calls: listed before
        its close is queued, so that no interrupt or thread switch between
        the two can lose it."""
        if self._file_closed:
            return
        self._file_closed = True
        if type(self._file) is not SyncFile:
            _unsettled.append((self, self._file))
        self._file.close()

    def _put(self, data, start: int = 0) -> None:
        """Write ``data[start:]``, all of it: a raw write may take only part."""
        if self.failed is not None:
            return
        view = memoryview(data)[start:]
        try:
            while view:
                written = self._file_write(view)
                self.size += written
                view = view[written:]
        except OSError as exc:
            self._fail(exc)
        finally:
            view.release()

    def _fail(self, exc: OSError) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        warnings.warn(
            f"pytrace could not write {self.path} ({exc.strerror or exc}); tracing "
            f"continues but the trace stops here and is cut short.",
            TraceWriteWarning,
            stacklevel=2,
        )
