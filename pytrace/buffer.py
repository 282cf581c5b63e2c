"""Per-thread buffers: the only place where trace bytes are produced.

Two rules from Go's commit d58f4e9 ("fix corrupted trace during StartTrace")
shape this module, because in CPython re-entry is everywhere: a
``gc.callbacks`` callback or a signal handler can run between any two
bytecodes of this very code, and may emit events itself.

1. **The flush writes the batch header.**  ``ThreadSlot.flush`` builds the
   next buffer *with its header already in it* before anything can write into
   it.  No event writer ever asks "is the buffer empty?".
2. **Nobody holds a buffer.**  Every write reads ``slot.buf`` at the moment
   it appends, in one ``self.buf += data`` with the record fully built
   beforehand (or, in the call hooks' inline appends, in ``+=`` parts with
   no CALL between them: see ``pytrace/hooks/calls.py``), and the flush replaces ``buf`` (and the batch's record count)
   in one multi-assignment.  No CALL instruction separates an append from its
   count or the swap from the count reset, so on CPython's eval loop no
   callback, signal handler or thread switch can run between them.

A re-entrant flush (one that starts while the same slot, or any slot on the
same thread, is already flushing) returns at once: the outer flush is still
going to hand its buffer over, and the other buffer just grows a little past
its limit meanwhile.  So no thread ever re-enters the writer.

**The unsent batch.**  A signal handler's exception (Ctrl-C) can land
anywhere in a flush, including inside the writer's ``write_batch`` before it
has taken the batch or after it has.  So the swap that retires a batch also
stores it as the slot's ``unsent`` batch, in the same statement (no
callback can run between them), and ``unsent`` is cleared only once
``write_batch`` has returned.  Every flush, the final one at stop included,
first offers an ``unsent`` batch again, and swaps out a new batch only when
none is left: the new one has the next sequence number, so a thread's
batches still reach the writer in order, and the ``unsent`` batch is always
number ``seq - 1``.  The writer skips a sequence number it already took (see
``pytrace/writer.py``), so an offer repeated after the write is harmless.
Without this, a Ctrl-C at the writer's entry lost the batch (a gap in the
thread's sequence numbers: an invalid trace), and one between its counting
and its write left the footer counting a batch the file lacks.

Interning is shared by all threads (ids are global) and race-free without a
lock: the thread whose ``dict.setdefault`` wins defines the id, through its
own slot, exactly once.

Timestamps: a batch's base is the time of the thread's last event before the
swap (read in the swap statement), so deltas run on unbroken across batches.
An event reads the clock, then (with no CALL in between) the batch sequence
number and ``last``, and moves ``last`` to its time; it builds its record, and
appends it only if no flush has started a new batch since; otherwise it
appends the same record with delta 0, because the new batch's base already
includes its time.  Either way timestamps within a thread never go backwards,
and a re-entrant event that slips in between an outer event's clock read and
its append shifts the outer event by at most the re-entrant code's duration.
This also makes a flush from *another* thread (the periodic flusher, or
``stop``) safe: it is one more swap the owner may observe.
"""

from __future__ import annotations

import itertools
import threading
from _thread import get_ident

from . import core, events, wire

#: ``wire.small_uvarints()``, fetched by the first slot made (see
#: ``ThreadSlot.__init__``), so that a process on the C core never builds it.
_SMALL: tuple[bytes, ...] = ()
_BASE_PACK_INTO = wire.BATCH_BASE.pack_into
_SMALL_LIMIT = wire.SMALL_LIMIT

#: Test hook: when set, called with the name of each injection point inside
#: ``flush`` and interning (see ``tests/test_reentrancy.py``).  ``None`` in
#: production; only the cold paths (flush, first-time interning) test it.
#: ``flush:hand-over`` comes right before each call of the writer.
injector = None

#: The injection points of a flush, in the order a flush passes them, and of
#: first-time interning.  The C core calls the injector at the same points.
FLUSH_POINTS = ("flush:start", "flush:before-swap", "flush:after-swap", "flush:hand-over",
                "flush:end")
INTERN_POINTS = ("intern:string", "intern:func", "intern:stack")


#: ``flushing`` per thread: a thread that is flushing any slot starts no
#: other flush.  A thread may flush another thread's slot (the periodic
#: flusher, ``stop``); a GC callback running inside that flush and filling the
#: flushing thread's own slot would otherwise re-enter the writer's lock.
_this_thread = threading.local()


def _inject(point: str) -> None:
    if injector is not None:
        injector(point)


class Tables:
    """Interned strings, functions and stacks, shared by every thread.

    The maps are plain dicts: ``get`` and ``setdefault`` are atomic under the
    GIL, which is all the race-freedom interning needs.
    """

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        #: Keyed by what the caller chooses; a code object by its ``id``
        #: (``code_func_id``).
        self.funcs: dict[object, int] = {}
        self.stacks: dict[tuple, int] = {}
        #: id -> code, for every code object ``funcs`` keys by its ``id``:
        #: held, so that no other code gets its id while the tables live.
        self.codes: dict[int, object] = {}
        self.string_ids = itertools.count(1)
        self.func_ids = itertools.count(1)
        self.stack_ids = itertools.count(1)


class ThreadSlot:
    """One thread's buffer, and the only way to write into it.

    ``buf`` is the live batch.  It always begins with its batch header.
    ``unsent`` is the batch a flush swapped out, until the writer has it
    (``None`` then), and ``unsent_count`` the records in it.
    """

    __slots__ = (
        "tid", "buf", "count", "last", "seq", "limit", "flushing",
        "unsent", "unsent_count", "writer", "tables", "clock",
    )

    def __init__(self, tid: int, writer, tables: Tables, clock, limit: int) -> None:
        global _SMALL
        if not _SMALL:
            _SMALL = wire.small_uvarints()
        self.tid = tid
        self.writer = writer
        self.tables = tables
        self.clock = clock
        self.limit = limit
        self.flushing = False
        self.seq = 0
        self.unsent = None
        self.unsent_count = 0
        now = clock()
        # The first buffer is started here, with its header, like every
        # later one is started by flush().
        self.buf = wire.batch_header(tid, 0, now)
        self.count = 0
        self.last = now

    # -- writing -----------------------------------------------------------

    def _append(self, data: bytes) -> None:
        """Append one complete record to the live buffer; flush if full."""
        self.buf += data
        self.count += 1
        if len(self.buf) >= self.limit:
            self.flush()

    def emit(self, kind_id: int, *args: int) -> None:
        """Write one timed event with already-resolved integer arguments."""
        now = self.clock()
        seq = self.seq  # read after the clock: nothing can run between here and ``self.last = now``
        last = self.last
        if now > last:
            self.last = now
            dt = now - last
        else:
            dt = 0
        data = wire.record(kind_id, (dt, *args))
        if_new_batch = wire.record(kind_id, (0, *args))
        # From the check to the append no CALL intervenes (see the module doc).
        if self.seq == seq:
            self.buf += data
        else:
            self.buf += if_new_batch
        self.count += 1
        if len(self.buf) >= self.limit:
            self.flush()

    def emit_small(self, prefix: bytes, value: int) -> None:
        """Hot path for a timed event with at most one argument.

        ``prefix`` is the type byte (with its count bits) the caller
        precomputed; ``value`` is its single argument, or -1 for none.
        """
        now = self.clock()
        seq = self.seq  # read after the clock: nothing can run between here and ``self.last = now``
        last = self.last
        if now > last:
            self.last = now
            dt = now - last
        else:
            dt = 0
        if value < 0:
            tail = b""
        else:
            tail = _SMALL[value] if value < _SMALL_LIMIT else wire.uvarint(value)
        data = prefix + (_SMALL[dt] if dt < _SMALL_LIMIT else wire.uvarint(dt)) + tail
        # From the check to the append no CALL intervenes (see the module doc).
        if self.seq == seq:
            self.buf += data
        else:
            self.buf += prefix + b"\x00" + tail
        self.count += 1
        if len(self.buf) >= self.limit:
            self.flush()

    # -- flushing ----------------------------------------------------------

    def flush(self) -> None:
        """Hand the live batch to the writer and start the next one.

        An empty batch stays live (there is nothing to hand over), but an
        ``unsent`` batch (see the module doc) is offered again first.

        The next buffer is complete with its header before it becomes live
        (rule 1); the swap is a single assignment (rule 2).
        """
        if (self.count == 0 and self.unsent is None) or getattr(_this_thread, "flushing", False):
            return
        # Claim the slot: the owner and another thread (the periodic
        # flusher, ``stop``) may both start a flush.  No CALL separates this
        # test from the assignment below, so no thread switch can fall
        # between them and only one flush gets past.  (With the ``getattr``
        # call between the test and the set, both got through and batches
        # reached the writer out of sequence order.)
        if self.flushing:
            return
        self.flushing = _this_thread.flushing = True
        try:
            if self.unsent is not None:
                self._hand_over()  # an earlier hand-over was interrupted
            if self.count == 0:
                return
            _inject("flush:start")
            fresh = wire.batch_header(self.tid, self.seq + 1, 0)
            _inject("flush:before-swap")
            self.unsent, self.unsent_count, self.buf, self.count, self.seq, base = (
                self.buf, self.count, fresh, 0, self.seq + 1, self.last)
            # The new batch's base is the time of the last event before the
            # swap, read in the same statement: deltas continue unbroken, and
            # no re-entrant event can make the base later than an event of
            # the previous batch.  The field is fixed-width, so setting it
            # now cannot disturb records appended since the swap.  It is a
            # C call, so no signal handler runs between the swap and it.
            _BASE_PACK_INTO(fresh, wire.BATCH_BASE_OFFSET, base)
            _inject("flush:after-swap")
            self._hand_over()
            _inject("flush:end")
        finally:
            self.flushing = _this_thread.flushing = False

    def _hand_over(self) -> None:
        """Seal the ``unsent`` batch and give it to the writer; forget it
        once the writer has it.  Sealing again after an interrupted offer
        writes the same length and count: nothing appends to a batch after
        its swap."""
        batch, count = self.unsent, self.unsent_count
        wire.seal_batch(batch, count)
        _inject("flush:hand-over")
        self.writer.write_batch(self.tid, batch, count, self.seq - 1)
        self.unsent = None

    # -- interning ---------------------------------------------------------

    def string_id(self, text: str) -> int:
        tables = self.tables
        sid = tables.strings.get(text)
        if sid is None:
            new = next(tables.string_ids)
            sid = tables.strings.setdefault(text, new)
            if sid == new:
                _inject("intern:string")
                self._append(wire.string_record(sid, text))
        return sid

    def func_id(self, key, name: str, filename: str, line: int) -> int:
        """Id of a function, defined on first use.  ``key`` identifies it
        (a code object, or any hashable the caller chooses)."""
        tables = self.tables
        fid = tables.funcs.get(key)
        if fid is None:
            name_id = self.string_id(name)
            file_id = self.string_id(filename)
            new = next(tables.func_ids)
            fid = tables.funcs.setdefault(key, new)
            if fid == new:
                _inject("intern:func")
                self._append(wire.record(events.FUNC, (fid, name_id, file_id, line)))
        return fid

    def code_func_id(self, code) -> int:
        """Id of a code object's function, defined on first use.  Keyed by
        the code's ``id``: a code object's hash is computed afresh at every
        lookup, from all of its bytecode on 3.12+, ~1 us for one of pytest's
        big functions (issue 4)."""
        key = id(code)
        fid = self.tables.funcs.get(key)
        if fid is None:
            self.tables.codes[key] = code
            fid = self.func_id(key, code.co_qualname, code.co_filename, code.co_firstlineno)
        return fid

    def frame_stack_id(self, frame, own_prefix: str, max_frames: int) -> int:
        """Id of the stack that starts at ``frame`` (innermost; None for
        none): up to ``max_frames`` ``(func_id, line)`` frames, leaving out
        those whose code's file name starts with ``own_prefix``, each
        function defined on first use; 0 if nothing is left."""
        funcs = self.tables.funcs
        frames = []
        while frame is not None and len(frames) < max_frames:
            code = frame.f_code
            if not code.co_filename.startswith(own_prefix):
                fid = funcs.get(id(code))
                if fid is None:
                    fid = self.code_func_id(code)
                frames.append((fid, frame.f_lineno or 0))
            frame = frame.f_back
        return self.stack_id(tuple(frames))

    def stack_id(self, frames: tuple) -> int:
        """Id of a stack of ``(func_id, line)`` frames, innermost first."""
        if not frames:
            return 0
        tables = self.tables
        kid = tables.stacks.get(frames)
        if kid is None:
            new = next(tables.stack_ids)
            kid = tables.stacks.setdefault(frames, new)
            if kid == new:
                _inject("intern:stack")
                self._append(wire.stack_record(kid, frames))
        return kid


class Slots:
    """Maps the running thread to its slot; keeps every slot for the final flush."""

    def __init__(self, writer, tables: Tables, clock, limit: int) -> None:
        self.writer = writer
        self.tables = tables
        self.clock = clock
        self.limit = limit
        self.by_ident: dict[int, ThreadSlot] = {}
        self.all: list[ThreadSlot] = []
        self._tids = itertools.count(1)

    def current(self) -> ThreadSlot:
        """The calling thread's slot, created on its first event."""
        slot = self.by_ident.get(get_ident())
        if slot is None:
            slot = self._create(get_ident(), self.reserve_tid())
        return slot

    def of(self, ident: int) -> ThreadSlot:
        """The slot of thread ``ident``, created on its first event: a ticker
        writes through its own thread's slot whichever thread takes its tick
        (see ``hooks/sampler.Ticker``)."""
        slot = self.by_ident.get(ident)
        if slot is None:
            slot = self._create(ident, self.reserve_tid())
        return slot

    def reserve_tid(self) -> int:
        """A fresh thread id, e.g. for a thread being created (ThreadCreate
        names the child before the child runs; the child then ``bind``s it)."""
        return next(self._tids)

    def bind(self, tid: int) -> ThreadSlot:
        """Give the calling thread a new slot with the reserved ``tid``,
        retiring a stale slot left by an earlier thread with the same ident."""
        self.retire(get_ident())
        return self._create(get_ident(), tid)

    def make_slot(self, tid: int) -> ThreadSlot:
        """A new, unpublished slot of the active core (``pytrace.core``)."""
        return core.slot_class()(tid, self.writer, self.tables, self.clock, self.limit)

    def publish(self, ident: int, slot: ThreadSlot) -> ThreadSlot:
        """Make ``slot`` the slot of thread ``ident`` unless that thread has
        one already; return the slot the thread has now.

        setdefault: if a re-entrant call, or the thread itself, published one
        first, that one is kept and ``slot`` is dropped unseen.  Only a slot
        that won is kept for the final flush.
        """
        kept = self.by_ident.setdefault(ident, slot)
        if kept is slot:
            self.all.append(slot)
        return kept

    def _create(self, ident: int, tid: int) -> ThreadSlot:
        return self.publish(ident, self.make_slot(tid))

    def retire(self, ident: int) -> None:
        """The thread ``ident`` has ended: flush its slot and forget the ident
        (the OS may give it to a new thread, which must get a new slot)."""
        slot = self.by_ident.pop(ident, None)
        if slot is not None:
            slot.flush()

    def flush_all(self) -> None:
        """Flush every slot, live threads and finished ones alike."""
        for slot in list(self.all):
            slot.flush()
