"""Whatever threads write through their slots, ``pytrace.read`` gives back exactly.

For any scripts (every timed kind of the event table, random arguments of
every argument type, 1-4 real threads writing concurrently, either as the
interpreter switches them or in an order hypothesis chooses, any buffer size
from the minimum up), each thread's events come back with the same kind,
resolved arguments, order and exact timestamp; the footer's totals are what
the writer counted and what the file holds; ``validate`` calls the file valid.
"""

import os
import tempfile
import warnings

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pytrace
from pytrace import events, wire
from pytrace.reader import Func
from pytrace.recorder import CLOCK_FREQUENCY, MIN_BUFFER_SIZE
from tracegen import (
    TIMED_KINDS, Step, events_by_thread, expected_events, schedule_slots, write_trace,
)

#: Strings that are easy to get wrong (empty, non-ASCII, NUL, lone and paired
#: surrogates, which the writer encodes with "surrogatepass"), plus any text.
names = st.one_of(
    st.sampled_from(["", "main", "λ→∂", "a\x00b", "\ud800", "\ud83d\ude00"]),
    st.text(max_size=12),
)
unsigned = st.integers(0, 2**63)
funcs = st.builds(Func, names, names, unsigned)

#: One strategy per argument type of the event table (see ``pytrace.events``).
ARGUMENTS = {
    "u": unsigned,
    "t": unsigned,
    "i": st.integers(-(2**63), 2**63 - 1),
    "s": names,
    "f": funcs,
    "k": st.lists(st.tuples(funcs, unsigned), max_size=4).map(tuple),
}

#: Tick advances: none (equal timestamps), around the one-byte/two-byte
#: varint limits of the hot path, and long pauses.
deltas = st.one_of(st.just(0), st.integers(0, 2**14 + 1), st.integers(0, 2**40))

steps = st.sampled_from(TIMED_KINDS).flatmap(
    lambda kind: st.builds(
        Step, deltas, st.just(kind), st.tuples(*(ARGUMENTS[typ] for _, typ in kind.args))
    )
)


def test_the_small_varint_table_holds_the_encoding_of_every_value_below_2_to_the_14():
    """The Python core's table and ``uvarint``'s short cuts (both built from
    the byte layouts, not by encoding) give what the encoding loop and the
    reader agree on, for all 16,384 values and past them."""
    table = wire.small_uvarints()
    assert len(table) == wire.SMALL_LIMIT == 1 << 14
    for value in range(wire.SMALL_LIMIT + 300):
        encoded = wire._encode_uvarint(value)
        assert wire.uvarint(value) == encoded
        assert value >= wire.SMALL_LIMIT or table[value] == encoded
        assert wire.read_uvarint(encoded, 0, len(encoded)) == (value, len(encoded))


@st.composite
def threads(draw):
    """1-4 scripts, and the order their steps run in: free (None) or a schedule."""
    scripts = draw(st.lists(st.lists(steps, max_size=40), min_size=1, max_size=4))
    return scripts, draw(st.none() | st.permutations(schedule_slots(scripts)))


def test_every_argument_type_has_a_strategy():
    """A new argument type in the event table must not go untested silently."""
    assert set(ARGUMENTS) == set(events.ARG_TYPES)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    threads=threads(),
    buffer_size=st.one_of(st.integers(MIN_BUFFER_SIZE, 256), st.integers(MIN_BUFFER_SIZE, 1 << 16)),
    frequency=st.one_of(st.just(CLOCK_FREQUENCY), st.integers(1, 10**10)),
    start=st.integers(0, 2**62),
)
@example(  # a negative signed argument, every run
    threads=([[Step(5, events.BY_NAME["Counter"], ("depth", -5))]], None),
    buffer_size=MIN_BUFFER_SIZE, frequency=CLOCK_FREQUENCY, start=0,
)
def test_every_thread_reads_back_exactly_what_it_wrote(threads, buffer_size, frequency, start):
    scripts, schedule = threads
    with tempfile.TemporaryDirectory() as tmp:
        written = write_trace(os.path.join(tmp, "roundtrip.pytrace"), scripts, schedule=schedule,
                              buffer_size=buffer_size, start=start, frequency=frequency)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a complete trace reads without any warning
            trace = pytrace.read(written.path)
        report = pytrace.validate(written.path)

    got = events_by_thread(trace)
    assert got == {
        tid: expected_events(script, start, frequency)
        for tid, script in zip(written.tids, scripts) if script
    }
    for thread_events in got.values():
        stamps = [ts for ts, _, _ in thread_events]
        assert stamps == sorted(stamps)
    assert [e.ts for e in trace.events] == sorted(e.ts for e in trace.events)

    assert trace.footer == trace.threads == written.totals
    # Every record is an event or a definition, and each definition is written once.
    definitions = len(trace.strings) + len(trace.funcs) + len(trace.stacks)
    assert sum(records for _, records in trace.threads.values()) == len(trace.events) + definitions

    assert report.valid, [str(p) for p in report.problems]
    assert (report.events, report.threads, report.batches) == (
        len(trace.events), len(got), sum(batches for batches, _ in trace.threads.values()))


def test_a_trace_written_over_a_longer_one_keeps_none_of_its_bytes(trace_path):
    """The writer reuses an existing file (cut to one byte, then overwritten:
    see ``Writer.open``); the old, longer trace must leave nothing behind."""
    with pytrace.trace(trace_path, calls=False):
        for i in range(2000):
            pytrace.log("long", f"message {i}")
    long_size = trace_path.stat().st_size
    with pytrace.trace(trace_path, calls=False):
        pytrace.log("short", "one message")
    assert trace_path.stat().st_size < long_size
    trace = pytrace.read(trace_path)
    assert trace.complete
    assert [e.arg("message") for e in trace.events if e.name == "UserLog"] == ["one message"]
