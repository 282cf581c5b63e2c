"""Deliberately wrong ``ThreadSlot`` variants, used only by tests.

Each class puts back one of the two bugs that Go's commit d58f4e9 ("fix
corrupted trace during StartTrace") fixed.  ``tests/test_reentrancy.py`` runs
the same scenarios and the same trace check against these slots as against
the real one: a check that cannot tell them apart proves nothing.

Tests install a variant by replacing ``pytrace.buffer.ThreadSlot`` (which
``Slots`` looks up each time it creates a slot) with ``monkeypatch``.
"""

from __future__ import annotations

from pytrace import buffer, events, wire
from pytrace.buffer import ThreadSlot

_BATCH_TYPE_BYTE = events.BATCH


class HeaderOnEmptySlot(ThreadSlot):
    """Rule 1 broken, as Go's ``traceEvent`` was before d58f4e9.

    ``flush`` leaves the next buffer empty, and only an *event* writer that
    finds the buffer empty writes a batch header.  So when the buffer is
    flushed while a String definition is written, and the next record is
    another definition, that batch goes out with no header: its records sit
    in the file outside any batch.  (The first buffer keeps the header the
    real slot gives it, so that only the flush path is wrong.)
    """

    __slots__ = ()

    def _start_batch_if_empty(self) -> None:
        if not self.buf:
            self.buf = wire.batch_header(self.tid, self.seq, self.last)

    def emit(self, kind_id: int, *args: int) -> None:
        self._start_batch_if_empty()
        super().emit(kind_id, *args)

    def emit_small(self, prefix: bytes, value: int) -> None:
        self._start_batch_if_empty()
        super().emit_small(prefix, value)

    def flush(self) -> None:
        if self.count == 0:
            return
        old, count = self.buf, self.count
        self.buf, self.count, self.seq = bytearray(), 0, self.seq + 1
        # Go wrote its buffer as it was.  Here a buffer that an event started
        # has a header whose length must be patched; one that a definition
        # started has none and goes out as raw records.
        if old[0] == _BATCH_TYPE_BYTE:
            wire.seal_batch(old, count)
        self.writer.write_batch(self.tid, old, count, self.seq - 1)


class HeldBufferSlot(ThreadSlot):
    """Rule 2 broken, as Go's ``traceString`` was before d58f4e9.

    String interning takes the live buffer into a local, then does something
    that can re-enter the tracer (the ``intern:string`` injection point
    stands for Go's traced allocation), then appends to the buffer it holds,
    which by then may have been flushed and detached.  ``flush`` flushes the
    buffer it is handed and has no guard against running twice, so a
    re-entrant flush of the same buffer writes it a second time.
    """

    __slots__ = ()

    def string_id(self, text: str) -> int:
        tables = self.tables
        sid = tables.strings.get(text)
        if sid is None:
            new = next(tables.string_ids)
            sid = tables.strings.setdefault(text, new)
            if sid == new:
                held = self.buf
                buffer._inject("intern:string")
                held += wire.string_record(sid, text)
                self.count += 1
                if len(held) >= self.limit:
                    self._flush_buffer(held)
        return sid

    def flush(self) -> None:
        if self.count:
            self._flush_buffer(self.buf)

    def _flush_buffer(self, held: bytearray) -> None:
        buffer._inject("flush:start")
        fresh = wire.batch_header(self.tid, self.seq + 1, 0)
        buffer._inject("flush:before-swap")
        count, self.buf, self.count, self.seq, base = (
            self.count, fresh, 0, self.seq + 1, self.last)
        wire.set_batch_base(fresh, base)
        buffer._inject("flush:after-swap")
        wire.seal_batch(held, count)
        self.writer.write_batch(self.tid, held, count, self.seq - 1)
        buffer._inject("flush:end")
