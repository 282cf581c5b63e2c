"""The C decoder's events are the Python decoder's events (``pytrace.decoder_c``).

``tests/test_cores.py`` checks that both decoders give equal Traces.  Equal
is not all: the C decoder builds its ``Event``s itself (not through the
NamedTuple's constructor) and shares argument tuples, so these tests check
that what it returns is a real ``Event`` in every way a caller can see,
that it stays small in memory, and that a time too big for C's integers
goes to the Python decoder instead of failing.
"""

from __future__ import annotations

import copy
import gc
import pickle
import tracemalloc

import pytest

from pytrace import core, reader
from pytrace.decoder_c import CDecoder
from pytrace.reader import Event
from tracegen import rewrite_batch, sample_script, scan, write_call_stream, write_trace

def requires_c_core() -> None:
    if core.c_module is None:
        pytest.fail("pytrace's C core is not built in this installation")


def both(data: bytes) -> tuple[list, list]:
    requires_c_core()
    return decoded_events(reader.Decoder, data), decoded_events(CDecoder, data)


def decoded_events(decoder_class, data: bytes) -> list:
    decoder = decoder_class(data, "t")
    trace = decoder.decode()
    assert not decoder.errors, [str(e) for e in decoder.errors]
    return trace.events


def test_c_events_are_events_in_every_way(tmp_path):
    write_trace(tmp_path / "t.pytrace", [sample_script(0, 2), sample_script(1, 2)])
    python_events, c_events = both((tmp_path / "t.pytrace").read_bytes())
    assert c_events == python_events
    for mine, theirs in zip(c_events, python_events):
        assert type(mine) is Event
        assert repr(mine) == repr(theirs) and hash(mine) == hash(theirs)
        assert (mine.ts, mine.tid, mine.kind, mine.args) == tuple(theirs)
        assert mine.name == theirs.name and mine._asdict() == theirs._asdict()
        for twin in (pickle.loads(pickle.dumps(mine)), copy.deepcopy(mine)):
            assert type(twin) is Event and twin == mine
        moved = mine._replace(ts=mine.ts + 1)
        assert type(moved) is Event and moved[1:] == mine[1:] and moved.ts == mine.ts + 1


def test_c_events_are_small_and_never_traversed_by_the_collector(tmp_path):
    """An event of a call stream costs its Event, its time and its list
    slot: the arguments are shared (one tuple per function; the empty
    tuple), and no Event is tracked by the cycle collector."""
    requires_c_core()
    write_call_stream(tmp_path / "calls.pytrace", 10_000)
    data = (tmp_path / "calls.pytrace").read_bytes()
    tracemalloc.start()
    try:
        c_events = decoded_events(CDecoder, data)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    calls = [e for e in c_events if e.name in ("CallEnter", "CallExit")]
    assert len(calls) == 20_000
    assert len({id(e.args) for e in calls}) == 8 + 1
    assert not any(gc.is_tracked(e) or gc.is_tracked(e.args) for e in c_events)
    # Event (72 bytes with its GC header), time (28), list slot (8): 108.
    assert held / len(c_events) < 120, held / len(c_events)


def test_times_past_64_bits_go_to_the_python_decoder(tmp_path):
    """A batch based just below 2**64 ticks: its events' times only fit
    Python's ints.  The C decoder hands them over instead of failing."""
    write_trace(tmp_path / "t.pytrace", [sample_script(0, 3)])
    data = (tmp_path / "t.pytrace").read_bytes()
    data = rewrite_batch(data, scan(data).batches[-1], base=2**64 - 3)
    python_events, c_events = both(data)
    assert c_events == python_events
    assert python_events[-1].ts > 2**63  # past C's signed and unsigned 64-bit times
