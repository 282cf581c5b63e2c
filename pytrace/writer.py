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

A failing disk (full, removed, unwritable) never reaches the traced program:
the first ``OSError`` is reported once as a ``TraceWriteWarning``, writing
stops, and what was already written stays a readable (cut-short) trace.
"""

from __future__ import annotations

import os
import threading
import warnings

from . import events, wire


class TraceWriteWarning(RuntimeWarning):
    """The trace file could not be written; tracing continues without it."""


class Writer:
    """Owns the trace file from header to footer."""

    def __init__(self, file, frequency: int, meta: dict[str, str]) -> None:
        self._file = file
        self._lock = threading.Lock()
        self.failed: OSError | None = None
        self.closed = False
        self.totals: dict[int, list[int]] = {}  # tid -> [batches, records]
        self._put(
            wire.HEADER
            + wire.record(events.FREQUENCY, (frequency,))
            + b"".join(wire.meta_record(k, v) for k, v in meta.items())
        )

    @classmethod
    def open(cls, path, frequency: int, meta: dict[str, str]) -> "Writer":
        """Create (or truncate) ``path``.  Raises ``OSError`` if impossible,
        so the caller can refuse to start with a clear message.

        The file is unbuffered: every batch goes to the OS at once (one
        ``write`` per 64 KiB batch), so a crash of the process loses nothing
        the writer was given, and a forked child holds no buffered copy of
        the parent's bytes that it could write a second time.
        """
        return cls(open(os.fspath(path), "wb", buffering=0), frequency, meta)

    def write_batch(self, tid: int, batch: bytearray, count: int) -> None:
        """Append the sealed ``batch`` (it holds ``count`` records) to the file."""
        with self._lock:
            if self.closed:
                # A thread was still flushing when the trace was closed: its
                # batch is dropped whole (and not counted in the footer).
                return
            # Count before writing: the write is a C call, and a Ctrl-C is
            # raised only after a call returns, so a batch that reached the
            # file is always counted in the footer.
            totals = self.totals.setdefault(tid, [0, 0])
            totals[0] += 1
            totals[1] += count
            self._put(batch)

    def close(self) -> None:
        """Write the footer and close the file.  Call after the final flush."""
        with self._lock:
            self.closed = True
            totals = sorted((tid, b, n) for tid, (b, n) in self.totals.items())
            self._put(wire.footer_record(totals))
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc)

    def abandon(self) -> None:
        """Close the file without writing anything more (a forked child's copy)."""
        self.closed = True
        self.failed = self.failed or OSError("abandoned in a forked child")
        try:
            self._file.close()
        except OSError:
            pass

    def _put(self, data) -> None:
        if self.failed is not None:
            return
        view = memoryview(data)
        try:
            while view:  # a raw write may take only part of the data
                written = self._file.write(view)
                view = view[written:]
        except OSError as exc:
            self._fail(exc)
        finally:
            view.release()

    def _fail(self, exc: OSError) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        name = getattr(self._file, "name", "the trace file")
        warnings.warn(
            f"pytrace could not write {name} ({exc.strerror or exc}); tracing "
            f"continues but the trace stops here and is cut short.",
            TraceWriteWarning,
            stacklevel=2,
        )
