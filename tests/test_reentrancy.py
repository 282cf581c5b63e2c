"""The two rules of Go's commit d58f4e9, forced deterministically.

Rule 1 (batch-on-flush): the flush starts the next buffer with its batch
header, so a flush that happens while a String definition is written cannot
produce a batch without a header.

Rule 2 (no shared buffer reference): every writer reaches the buffer through
the thread's slot at the moment it writes, so an event emitted re-entrantly,
from a real gc callback or a real signal handler, at any injection point of
``pytrace.buffer`` is in the trace exactly once, and no definition is lost or
written twice, even when that event itself makes the buffer flush.  One more
test aims a real collection at the gap no injection point covers: between an
event's clock read and its append.

Each rule is also run against a deliberately wrong slot
(``tests/broken_slots.py``): the same check must catch it.

``Ledger`` and ``check_trace`` are shared with ``tests/test_stress.py``.
"""

from __future__ import annotations

import gc
import itertools
import signal
import struct
import time
from collections import Counter
from typing import NamedTuple

import pytest

from broken_slots import HeaderOnEmptySlot, HeldBufferSlot
from pytrace import buffer, events, wire
from pytrace.reader import Decoder, Frame, Trace, load
from pytrace.recorder import MIN_BUFFER_SIZE, Recorder
from pytrace.validate import validate
from tracegen import Layout, scan

USER_LOG = events.BY_NAME["UserLog"].id
ASYNC_TASK_CREATE = events.BY_NAME["AsyncTaskCreate"].id
#: The file name of every function the tests define (any constant would do).
FUNC_FILE = "workload.py"


class Ledger:
    """Every event a test emitted, in the form the reader must decode it to.

    Each event carries a unique token as its first (unsigned) argument, so a
    lost or duplicated event cannot hide behind an identical one.  The
    ledger is appended to with ``list.append``, which is atomic under the GIL,
    so threads and re-entrant callbacks may all write to it.
    """

    def __init__(self) -> None:
        self._tokens = itertools.count(1)
        self.emitted: list[tuple] = []

    def log(self, slot, category: str, message: str) -> None:
        """A UserLog event: exercises string interning."""
        token = next(self._tokens)
        slot.emit(USER_LOG, token, slot.string_id(category), slot.string_id(message))
        self.emitted.append((slot.tid, "UserLog", (token, category, message)))

    def task(self, slot, name: str, func: str, line: int) -> None:
        """An AsyncTaskCreate event: exercises string, function and stack interning."""
        token = next(self._tokens)
        func_id = slot.func_id((func, FUNC_FILE), func, FUNC_FILE, 1)
        stack_id = slot.stack_id(((func_id, line),))
        slot.emit(ASYNC_TASK_CREATE, token, slot.string_id(name), stack_id)
        self.emitted.append(
            (slot.tid, "AsyncTaskCreate", (token, name, (Frame(func, FUNC_FILE, line),))))


class TraceCheck(NamedTuple):
    problems: list[str]
    trace: Trace
    #: The file's layout as ``tracegen.scan`` finds it (None if it could not).
    layout: Layout | None


def check_trace(path, ledger: Ledger) -> TraceCheck:
    """Everything wrong with the trace at ``path``, given what was emitted.

    ``problems`` is empty only if ``validate`` finds the trace valid (every
    batch has its header, no id is defined twice, footer totals agree), an
    independent scan of the file's layout finds only file-level records
    outside batches and each thread's batch sequence numbers contiguous from
    0, and every emitted event is decoded exactly once with its strings,
    functions and stacks resolved.
    """
    problems = [str(p) for p in validate(path).problems]
    data = load(path)
    layout = _scan_layout(data, problems)
    trace = Decoder(data).decode()
    decoded = Counter((e.tid, e.name, e.args) for e in trace.events)
    expected = Counter(ledger.emitted)
    problems += [f"lost {n}x: {event}" for event, n in (expected - decoded).items()]
    problems += [f"extra {n}x: {event}" for event, n in (decoded - expected).items()]
    return TraceCheck(problems, trace, layout)


def _scan_layout(data: bytes, problems: list[str]) -> Layout | None:
    try:
        layout = scan(data)
    except (AssertionError, wire.Truncated, wire.Malformed, struct.error) as exc:
        problems.append(f"scan: the file's layout is broken ({exc!r})")
        return None
    for record in layout.file_records:
        kind = events.BY_ID.get(record.kind_id)
        if kind is None or not kind.top_level:
            name = kind.name if kind else f"type {record.kind_id}"
            problems.append(f"scan: {name} record outside any batch at byte {record.offset}")
    seqs: dict[int, list[int]] = {}
    for batch in layout.batches:
        seqs.setdefault(batch.tid, []).append(batch.seq)
    for tid, found in sorted(seqs.items()):
        if found != list(range(len(found))):
            problems.append(f"scan: thread {tid}'s batch sequence numbers are {found}")
    return layout


# -- rule 1: the flush writes the next batch's header ------------------------


def flush_inside_string_definition(recorder: Recorder, ledger: Ledger) -> int:
    """Make a String definition fill the buffer, then define another string
    first thing in the next buffer (Go's failing case).  Returns that next
    batch's sequence number."""
    slot = recorder.slots.current()
    ledger.log(slot, "before", "the flush")
    seq = slot.seq
    slot.string_id("s" * recorder.slots.limit)  # its record alone fills the buffer
    assert slot.seq == seq + 1, "defining the string did not flush"
    ledger.log(slot, "after", "the flush")  # "after" is defined before the event
    return slot.seq


def test_flush_while_defining_a_string_starts_the_next_batch_with_its_header(trace_path):
    ledger = Ledger()
    with Recorder(trace_path, buffer_size=MIN_BUFFER_SIZE) as recorder:
        next_seq = flush_inside_string_definition(recorder, ledger)
    check = check_trace(trace_path, ledger)
    assert check.problems == []
    (next_batch,) = [b for b in check.layout.batches if b.seq == next_seq]
    assert next_batch.records[0].kind_id == events.STRING
    assert "after" in check.trace.strings.values()


def test_check_catches_a_slot_that_writes_headers_only_for_events(trace_path, monkeypatch):
    monkeypatch.setattr(buffer, "ThreadSlot", HeaderOnEmptySlot)
    ledger = Ledger()
    with Recorder(trace_path, buffer_size=MIN_BUFFER_SIZE) as recorder:
        flush_inside_string_definition(recorder, ledger)
    problems = check_trace(trace_path, ledger).problems
    assert any("String record outside any batch" in p for p in problems), problems
    assert any(p.startswith("lost") and "'after'" in p for p in problems), problems


# -- rule 2: nobody holds a buffer across re-entry ---------------------------

INJECTION_POINTS = buffer.FLUSH_POINTS + buffer.INTERN_POINTS
#: A buffer small enough that the workload flushes every couple of rounds.
SMALL_BUFFER = 128


class Reentry:
    """Emits one event re-entrantly, from a real gc callback or a real signal
    handler, when ``fire()`` is called at an injection point.

    With ``flushing=True`` the event's message is longer than the buffer, so
    writing it must flush: the event itself triggers a nested flush.
    """

    def __init__(self, source: str, recorder: Recorder, ledger: Ledger, flushing: bool) -> None:
        self.source = source
        self.recorder = recorder
        self.ledger = ledger
        self.message = "m" * (recorder.slots.limit if flushing else 8)
        self.pending = False
        #: Batches the slot started while the re-entrant event was written.
        self.nested_flushes = 0

    def __enter__(self) -> "Reentry":
        if self.source == "gc":
            gc.callbacks.append(self._gc_callback)
        else:
            self._previous = signal.signal(signal.SIGUSR1, self._signal_handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.source == "gc":
            gc.callbacks.remove(self._gc_callback)
        else:
            signal.signal(signal.SIGUSR1, self._previous)

    def fire(self) -> None:
        self.pending = True
        if self.source == "gc":
            gc.collect()
        else:
            signal.raise_signal(signal.SIGUSR1)
        assert not self.pending, f"the {self.source} re-entry did not run synchronously"

    def _gc_callback(self, phase, info) -> None:
        if phase == "start" and self.pending:
            self._emit()

    def _signal_handler(self, signum, frame) -> None:
        if self.pending:
            self._emit()

    def _emit(self) -> None:
        self.pending = False
        slot = self.recorder.slots.current()
        seq = slot.seq
        self.ledger.log(slot, f"re-entered from {self.source}", self.message)
        self.nested_flushes = slot.seq - seq


def fire_once_at(point: str, reentry: Reentry):
    """An injector that fires ``reentry`` the first time ``point`` is reached."""
    reached = []

    def injector(at: str) -> None:
        if at == point and not reached:
            reached.append(at)
            reentry.fire()

    return injector, reached


def workload(recorder: Recorder, ledger: Ledger, rounds: int = 12) -> None:
    """Fresh strings, functions and stacks every round in a small buffer:
    every injection point is passed many times."""
    for i in range(rounds):
        slot = recorder.slots.current()
        ledger.log(slot, "workload", f"message {i}")
        ledger.task(slot, f"task {i}", f"func {i}", i + 1)


def run_reentrant(trace_path, monkeypatch, point: str, source: str, flushing: bool):
    ledger = Ledger()
    buffer_size = MIN_BUFFER_SIZE if flushing else SMALL_BUFFER
    with Recorder(trace_path, buffer_size=buffer_size) as recorder:
        with Reentry(source, recorder, ledger, flushing) as reentry:
            injector, reached = fire_once_at(point, reentry)
            monkeypatch.setattr(buffer, "injector", injector)
            workload(recorder, ledger)
            monkeypatch.setattr(buffer, "injector", None)
    assert reached == [point]
    return check_trace(trace_path, ledger), reentry


@pytest.mark.parametrize("flushing", [False, True], ids=["event", "event-that-flushes"])
@pytest.mark.parametrize("source", ["gc", "signal"])
@pytest.mark.parametrize("point", INJECTION_POINTS)
def test_reentrant_event_is_written_exactly_once(trace_path, monkeypatch, point, source, flushing):
    check, reentry = run_reentrant(trace_path, monkeypatch, point, source, flushing)
    assert check.problems == []
    reentered = [e for e in check.trace.events
                 if e.name == "UserLog" and e.arg("category") == f"re-entered from {source}"]
    assert len(reentered) == 1
    if point.startswith("flush:"):
        # Inside a flush the slot refuses a nested one: the buffer grows instead.
        assert reentry.nested_flushes == 0
    elif flushing:
        assert reentry.nested_flushes >= 1


@pytest.mark.parametrize("source", ["gc", "signal"])
@pytest.mark.parametrize("point", ["intern:string", "flush:start", "flush:before-swap"])
def test_check_catches_a_slot_that_holds_its_buffer(trace_path, monkeypatch, point, source):
    """At these points the held buffer is one that the re-entrant event's
    nested flush has already written: the broken slot writes it again (Go's
    "flush on the same buffer can occur twice"), and the check must see it."""
    monkeypatch.setattr(buffer, "ThreadSlot", HeldBufferSlot)
    check, _ = run_reentrant(trace_path, monkeypatch, point, source, flushing=True)
    assert any("appears again" in p for p in check.problems), check.problems
    assert any(p.startswith("lost") for p in check.problems), check.problems


class ArmingClock:
    """The real clock, able to aim a real collection at one event.

    When ``arm()``ed, the next clock read sets the collector's gen0
    threshold to 1, so the next container allocation starts a collection:
    on 3.11 right at that allocation, on 3.12+ at the next eval-breaker
    check.  After the clock read in ``ThreadSlot.emit``, both come before
    the event's record is appended: the gc callback runs between the
    event's clock read and its append, a gap no injection point covers.
    """

    def __init__(self) -> None:
        self._armed = False
        self.saved_threshold: tuple | None = None

    def arm(self) -> None:
        self._armed = True

    def __call__(self) -> int:
        now = time.perf_counter_ns()
        if self._armed:
            self._armed = False
            self.saved_threshold = gc.get_threshold()
            gc.set_threshold(1)
        return now


def test_flushing_gc_between_an_events_clock_read_and_its_append(trace_path):
    """The event's delta was taken in a batch that the callback's flush
    closed; written as it was into the new batch, it would shift every later
    timestamp of that batch past the next batch's base."""
    ledger = Ledger()
    clock = ArmingClock()
    with Recorder(trace_path, buffer_size=MIN_BUFFER_SIZE, clock=clock) as recorder:
        flushed = []

        def on_gc(phase, info) -> None:
            if phase == "start" and clock.saved_threshold is not None:
                gc.set_threshold(*clock.saved_threshold)
                clock.saved_threshold = None
                slot = recorder.slots.current()
                seq = slot.seq
                ledger.log(slot, "re-entered from gc", "m" * recorder.slots.limit)
                flushed.append(slot.seq - seq)

        workload(recorder, ledger, rounds=3)
        gc.callbacks.append(on_gc)
        try:
            clock.arm()  # the first clock read of this log is its emit's
            ledger.log(recorder.slots.current(), "interrupted", "event")
        finally:
            gc.callbacks.remove(on_gc)
            if clock.saved_threshold is not None:
                gc.set_threshold(*clock.saved_threshold)
        workload(recorder, ledger, rounds=3)
    assert flushed and flushed[0] >= 1, "the collection did not flush inside the event"
    assert check_trace(trace_path, ledger).problems == []
