"""Produce real trace files for the format tests, and take them apart to corrupt them.

Writing: ``write_trace`` runs one real thread per *script* against a real
``Recorder``.  Each thread writes the way the hooks do: it reaches its slot
through ``recorder.slots.current()`` at the moment it writes, interns strings,
functions and stacks through that slot, and retires its slot when it ends.
``expected_events`` says what ``pytrace.read`` must give back for a script.

A script is a list of ``Step``s.  Logical argument values, by the event
table's argument types: ``s`` a str; ``f`` a ``reader.Func``; ``k`` a tuple
of ``(Func, line)`` frames, innermost first (empty: no stack); ``i`` a signed
int; ``u`` and ``t`` unsigned ints.

Corrupting: ``scan`` parses a valid trace's layout (records and batches, as
``docs/format.md`` describes them) on its own, using only the varint primitive
of ``pytrace.wire``, so a corruption test does not ask the reader under test
where the bytes it breaks are.  ``rewrite_batch`` re-encodes one batch with a
new base or new records and re-seals its length and record count, so a test
breaks exactly one rule at a time.
"""

from __future__ import annotations

import struct
import threading
from typing import NamedTuple

from pytrace import events, wire
from pytrace.events import EventKind
from pytrace.reader import Frame, Func
from pytrace.recorder import CLOCK_FREQUENCY, MIN_BUFFER_SIZE, Recorder

#: Every kind a hook can emit through ``ThreadSlot.emit``.
TIMED_KINDS = tuple(kind for kind in events.TABLE if kind.timed)

NS_PER_SECOND = 1_000_000_000


# -- writing -----------------------------------------------------------------


class Step(NamedTuple):
    """One scripted event: the thread's clock advances ``dt`` ticks, then ``kind`` is emitted."""

    dt: int
    kind: EventKind
    args: tuple


class ScriptedClock(threading.local):
    """A clock each thread moves itself: calling it returns the caller's own ``ticks``.

    A shared counter would hand out values in whatever order the threads
    happen to interleave; a per-thread scripted clock makes every event's
    exact timestamp known in advance, whatever the interleaving, and is
    thread-safe by construction.
    """

    ticks = 0

    def __call__(self) -> int:
        return self.ticks


class Written(NamedTuple):
    """What ``write_trace`` produced."""

    path: str
    #: The pytrace thread id of each script's thread (None if it wrote nothing).
    tids: list
    #: tid -> (batches, records) as the writer counted them: what the footer must say.
    totals: dict


class Turns:
    """Makes real threads take their steps in a given order.

    ``schedule`` lists script indexes, one entry per step plus a last one
    for the thread's end (when its slot is retired and flushed): with scripts
    of one step each, ``[0, 1, 1, 0]`` means thread 0's step, thread 1's
    step, thread 1's end, thread 0's end.  Threads wait for their turn.  A
    test thus controls the interleaving (e.g. a thread using a string whose
    definition is still in another thread's unflushed buffer, then flushing
    first) instead of hoping for it.
    """

    def __init__(self, schedule) -> None:
        self.schedule = list(schedule)
        self.position = 0
        self.broken = False
        self.changed = threading.Condition()

    def wait_for(self, index: int) -> None:
        with self.changed:
            self.changed.wait_for(
                lambda: self.broken or self.schedule[self.position] == index)
            if self.broken:
                raise RuntimeError("another scripted thread failed")

    def done(self) -> None:
        with self.changed:
            self.position += 1
            self.changed.notify_all()

    def abort(self) -> None:
        with self.changed:
            self.broken = True
            self.changed.notify_all()


def write_trace(path, scripts, *, schedule=None, buffer_size: int = MIN_BUFFER_SIZE,
                start: int = 1_000_000, frequency: int = CLOCK_FREQUENCY) -> Written:
    """Write ``scripts`` (one list of ``Step``s per thread) from concurrent real threads.

    All threads are alive together (a barrier holds them until every one has
    started), so no two share a thread ident.  Without a ``schedule`` they
    interleave as the interpreter switches them; with one (see ``Turns``)
    they interleave exactly as it says.
    """
    if schedule is not None:
        assert sorted(schedule) == schedule_slots(scripts), \
            "a schedule names each script once per step and once for its end"
    turns = Turns(schedule) if schedule is not None else None
    clock = ScriptedClock()
    clock.ticks = start
    recorder = Recorder(path, buffer_size=buffer_size, clock=clock, frequency=frequency)
    tids = [None] * len(scripts)
    failures = []
    barrier = threading.Barrier(len(scripts))

    def take_turn(index: int, action) -> None:
        if turns is None:
            action()
        else:
            turns.wait_for(index)
            action()
            turns.done()

    def run(index: int) -> None:
        barrier.wait()
        try:
            clock.ticks = start
            for step in scripts[index]:
                take_turn(index, lambda: write_step(recorder, clock, step))
            if scripts[index]:
                tids[index] = recorder.slots.current().tid
            take_turn(index, lambda: recorder.slots.retire(threading.get_ident()))
        except BaseException as exc:  # re-raised in the calling thread below
            failures.append(exc)
            if turns is not None:
                turns.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scripts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    if failures:
        raise failures[0]
    totals = {tid: tuple(counts) for tid, counts in recorder.writer.totals.items()}
    return Written(recorder.path, tids, totals)


def write_call_stream(path, calls: int) -> int:
    """Write ``calls`` CallEnter/CallExit pairs over 8 functions, as the call
    hooks write them for recursive fib, with the real clock; return the
    number of records."""
    enter = wire.inline_prefix(events.BY_NAME["CallEnter"])
    exit_ = wire.inline_prefix(events.BY_NAME["CallExit"])
    with Recorder(path) as recorder:
        slot = recorder.slots.current()
        funcs = [slot.func_id(("calls", i), f"fib{i}", "calls.py", i) for i in range(8)]
        for i in range(calls):
            slot.emit_small(enter, funcs[i & 7])
            slot.emit_small(exit_, -1)
    return 2 * calls


def schedule_slots(scripts) -> list:
    """Every script index, once per step and once for its end, sorted: the
    multiset a ``Turns`` schedule must be a permutation of."""
    return [index for index, script in enumerate(scripts) for _ in range(len(script) + 1)]


def write_step(recorder: Recorder, clock: ScriptedClock, step: Step) -> None:
    clock.ticks += step.dt
    emit(recorder, step.kind, step.args)


def emit(recorder: Recorder, kind: EventKind, args: tuple) -> None:
    """Write one event from the calling thread, interning its arguments first."""
    values = [_wire_value(recorder, typ, value) for (_, typ), value in zip(kind.args, args)]
    recorder.slots.current().emit(kind.id, *values)


def _wire_value(recorder: Recorder, typ: str, value) -> int:
    if typ == "s":
        return recorder.slots.current().string_id(value)
    if typ == "f":
        return _func_id(recorder, value)
    if typ == "k":
        frames = tuple((_func_id(recorder, func), line) for func, line in value)
        return recorder.slots.current().stack_id(frames)
    if typ == "i":
        return wire.zigzag(value)
    return value


def _func_id(recorder: Recorder, func: Func) -> int:
    return recorder.slots.current().func_id(func, func.name, func.file, func.line)


def expected_events(script, start: int, frequency: int = CLOCK_FREQUENCY) -> list:
    """``(ts, name, args)`` of each step, as ``events_by_thread`` gives them back."""
    out = []
    ticks = start
    for step in script:
        ticks += step.dt
        ts = (ticks - start) * NS_PER_SECOND // frequency
        out.append((ts, step.kind.name, expected_args(step.kind, step.args)))
    return out


def expected_args(kind: EventKind, args: tuple) -> tuple:
    """The arguments the reader resolves: stacks become ``Frame``s (no stack: None)."""
    resolved = []
    for (_, typ), value in zip(kind.args, args):
        if typ == "k":
            value = tuple(Frame(func.name, func.file, line) for func, line in value) or None
        resolved.append(value)
    return tuple(resolved)


def events_by_thread(trace) -> dict:
    """tid -> that thread's ``(ts, name, args)`` in the order the trace gives them."""
    out: dict = {}
    for event in trace.events:
        out.setdefault(event.tid, []).append((event.ts, event.name, event.args))
    return out


def sample_script(thread: int, rounds: int = 3) -> list:
    """A fixed script using every timed kind ``rounds`` times.

    Its strings, functions and stacks belong to this thread alone, so every
    definition comes before its first use in this thread's own batches: any
    prefix of the thread's batches is self-contained (what cut-trace tests need).
    """
    def value(typ: str, n: int):
        func = Func(f"t{thread}.func{n % 4}", f"/src/thread{thread}.py", 10 * (n % 4) + 1)
        if typ == "s":
            return f"t{thread}-name-{n % 5}"
        if typ == "f":
            return func
        if typ == "k":
            return tuple((func, func.line + depth) for depth in range(n % 3))
        if typ == "i":
            return -n if n % 2 else n * 1000
        return n * 7919

    return [
        Step(dt=(n * 37 + kind.id * 11) % 1000, kind=kind,
             args=tuple(value(typ, n + a) for a, (_, typ) in enumerate(kind.args)))
        for n in range(rounds)
        for kind in TIMED_KINDS
    ]


# -- taking a trace apart ----------------------------------------------------


class Record(NamedTuple):
    offset: int
    end: int
    kind_id: int
    #: The record's first varint: a definition's id, a timed event's tick delta.
    first: int | None


class Batch(NamedTuple):
    offset: int
    #: Where the batch's records start (after its fixed fields, tid and seq).
    header_end: int
    end: int
    tid: int
    seq: int
    base: int
    records: tuple

    @property
    def timed_events(self) -> int:
        return sum(1 for r in self.records if events.BY_ID[r.kind_id].timed)


class Layout(NamedTuple):
    batches: list
    #: Frequency, Meta and Footer records, in file order.
    file_records: list

    @property
    def footer(self) -> Record:
        last = self.file_records[-1]
        assert last.kind_id == events.FOOTER, "the trace does not end with its footer"
        return last

    def definitions(self, kind_id: int):
        """``(batch, record)`` of every definition record of ``kind_id``, in file order."""
        return [(b, r) for b in self.batches for r in b.records if r.kind_id == kind_id]

    def thread_batches(self, tid: int) -> list:
        return [b for b in self.batches if b.tid == tid]

    def totals(self) -> dict:
        """tid -> (batches, records) really in the file: what a correct footer says."""
        counts: dict = {}
        for batch in self.batches:
            batches, records = counts.get(batch.tid, (0, 0))
            counts[batch.tid] = (batches + 1, records + len(batch.records))
        return counts


#: The fixed-width batch fields after the type byte: u32 length (of the rest
#: of the batch), u32 record count, u64 base ticks.
_BATCH_FIELDS = struct.Struct("<IIQ")
_BATCH_FIXED = 1 + _BATCH_FIELDS.size


def scan(data: bytes) -> Layout:
    """The layout of a valid trace (asserts that it is one, structurally)."""
    assert data[:wire.HEADER_SIZE] == wire.HEADER, "not a pytrace v1 header"
    batches, file_records = [], []
    pos = wire.HEADER_SIZE
    while pos < len(data):
        if data[pos] == events.BATCH:
            length, count, base = _BATCH_FIELDS.unpack_from(data, pos + 1)
            end = pos + 5 + length
            tid, p = wire.read_uvarint(data, pos + _BATCH_FIXED, end)
            seq, p = wire.read_uvarint(data, p, end)
            records = tuple(_records(data, p, end))
            assert len(records) == count, f"batch at byte {pos} miscounts its records"
            batches.append(Batch(pos, p, end, tid, seq, base, records))
            pos = end
        else:
            record = _record(data, pos)
            file_records.append(record)
            pos = record.end
    return Layout(batches, file_records)


def _records(data: bytes, pos: int, end: int):
    while pos < end:
        record = _record(data, pos)
        assert record.end <= end, f"record at byte {pos} overruns its batch"
        yield record
        pos = record.end


def _record(data: bytes, pos: int) -> Record:
    head = data[pos]
    kind_id, code = head & 0x3F, head >> 6
    p = pos + 1
    if code < wire.LENGTH_PREFIXED:
        first, p = wire.read_uvarint(data, p, len(data))
        for _ in range(code):
            _, p = wire.read_uvarint(data, p, len(data))
        return Record(pos, p, kind_id, first)
    length, p = wire.read_uvarint(data, p, len(data))
    first = wire.read_uvarint(data, p, p + length)[0] if length else None
    return Record(pos, p + length, kind_id, first)


def splice(data: bytes, start: int, end: int, insert: bytes = b"") -> bytes:
    """``data`` with bytes ``start:end`` replaced by ``insert``."""
    return data[:start] + insert + data[end:]


def batch_body(data: bytes, batch: Batch) -> bytes:
    """The batch's records, without its header."""
    return data[batch.header_end:batch.end]


def body_replacing(data: bytes, batch: Batch, record: Record, replacement: bytes = b"") -> bytes:
    """The batch's records with ``record`` replaced (by default: left out)."""
    return data[batch.header_end:record.offset] + replacement + data[record.end:batch.end]


def with_record_count(data: bytes, batch: Batch, count: int) -> bytes:
    """``data`` with ``batch``'s record count field set to ``count`` (and nothing else changed)."""
    field = batch.offset + 5  # after the type byte and the u32 length
    return splice(data, field, field + 4, count.to_bytes(4, "little"))


def rewrite_batch(data: bytes, batch: Batch, *, base: int | None = None,
                  body: bytes | None = None) -> bytes:
    """``data`` with ``batch`` re-encoded: a new ``base`` and/or ``body``, length and
    record count sealed to match, so the batch stays well-formed."""
    if body is None:
        body = batch_body(data, batch)
    ids = wire.uvarint(batch.tid) + wire.uvarint(batch.seq)
    count = len(list(_records(body, 0, len(body))))
    length = _BATCH_FIXED - 5 + len(ids) + len(body)
    sealed = (bytes((events.BATCH,))
              + _BATCH_FIELDS.pack(length, count, batch.base if base is None else base)
              + ids + body)
    return splice(data, batch.offset, batch.end, sealed)


def replace_footer(data: bytes, totals: dict) -> bytes:
    """``data`` with its footer saying ``totals`` (tid -> (batches, records))."""
    footer = scan(data).footer
    record = wire.footer_record(sorted((tid, b, n) for tid, (b, n) in totals.items()))
    return splice(data, footer.offset, footer.end, record)


def refooter(data: bytes) -> bytes:
    """``data`` with a footer that matches its batches again, so that a
    corruption test breaks only the rule it means to break."""
    return replace_footer(data, scan(data).totals())
