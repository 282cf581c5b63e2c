"""The validator and the reader on broken traces.

Each test writes a real trace, breaks one rule of ``docs/format.md`` by
patching its bytes, and checks that ``validate`` names the problem and where
it is (byte offset, thread, batch, as far as they apply) and that ``read``
raises ``TraceFormatError`` for it, never a stray ``IndexError``,
``struct.error`` or ``UnicodeDecodeError``.  A trace cut short is the
exception: ``read`` returns every complete batch with a ``TraceWarning``.

The fuzz tests at the end feed random bytes and randomly mutated real traces
to both: only ``TraceFormatError`` may escape, and every input finishes.
"""

import re
import warnings
from datetime import timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytrace
from pytrace import TraceFormatError, TraceWarning, events, wire
from tracegen import (
    batch_body, body_replacing, events_by_thread, refooter, replace_footer, rewrite_batch,
    sample_script, scan, splice, with_record_count, write_trace,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid two-thread trace written with the smallest buffers (many batches)."""
    path = tmp_path_factory.mktemp("base") / "base.pytrace"
    written = write_trace(path, [sample_script(0), sample_script(1)])
    data = path.read_bytes()
    trace = pytrace.read(path)
    return SimpleNamespace(data=data, layout=scan(data), events=events_by_thread(trace),
                           written=written)


def save(tmp_path, data: bytes):
    path = tmp_path / "broken.pytrace"
    path.write_bytes(data)
    return path


def assert_reported(path, pattern: str, offset=None, tid=None, batch=None) -> None:
    """``validate`` reports a problem matching ``pattern`` at exactly that
    location, and ``read`` raises it (it is the first problem in the file)."""
    report = pytrace.validate(path)
    assert not report.valid
    matching = [p for p in report.errors if re.search(pattern, str(p))]
    assert matching, f"no problem matches {pattern!r}: {[str(p) for p in report.problems]}"
    problem = matching[0]
    assert (problem.offset, problem.tid, problem.batch) == (offset, tid, batch), str(problem)
    where = [f"{label} {value}" for label, value in
             (("byte", offset), ("thread", tid), ("batch", batch)) if value is not None]
    if where:
        assert str(problem).endswith(f"(at {', '.join(where)})"), str(problem)
    with pytest.raises(TraceFormatError, match=pattern) as raised:
        pytrace.read(path)
    assert (raised.value.offset, raised.value.tid, raised.value.batch) == (offset, tid, batch)


def first_definition(layout, kind_id):
    return layout.definitions(kind_id)[0]


def middle_batch(layout, *, with_neighbours=False):
    """A batch in the middle of the file; ``with_neighbours``: one with
    batches of its own thread before and after it."""
    candidates = [b for b in layout.batches
                  if not with_neighbours or 0 < b.seq < len(layout.thread_batches(b.tid)) - 1]
    return candidates[len(candidates) // 2]


def test_the_layout_walker_agrees_with_the_writer(base):
    """The corruption tests trust ``scan``; it must see what was written."""
    assert base.layout.totals() == base.written.totals
    assert base.layout.footer.kind_id == events.FOOTER
    timed = {tid: sum(b.timed_events for b in base.layout.thread_batches(tid))
             for tid in base.written.tids}
    assert timed == {tid: len(evs) for tid, evs in base.events.items()}
    assert pytrace.validate(base.written.path).valid


# -- the file as a whole -------------------------------------------------------


def test_bad_magic(base, tmp_path):
    path = save(tmp_path, splice(base.data, 0, 8, b"NOTATRCE"))
    assert_reported(path, r"not a pytrace trace: the file has the wrong magic bytes", offset=0)


def test_bad_version(base, tmp_path):
    path = save(tmp_path, splice(base.data, 8, 10, (2).to_bytes(2, "little")))
    assert_reported(path, r"unsupported trace format version 2", offset=8)


def test_empty_file(tmp_path):
    assert_reported(save(tmp_path, b""), r"not a pytrace trace: the file .*too short", offset=0)


@pytest.mark.parametrize("api", [pytrace.read, pytrace.validate], ids=["read", "validate"])
def test_a_directory_is_not_a_trace(tmp_path, api):
    with pytest.raises(TraceFormatError, match=rf"{re.escape(str(tmp_path))} is a directory"):
        api(tmp_path)


@pytest.mark.parametrize("api", [pytrace.read, pytrace.validate], ids=["read", "validate"])
def test_a_missing_file_is_named(tmp_path, api):
    missing = tmp_path / "nothing-here.pytrace"
    with pytest.raises(TraceFormatError, match=rf"{re.escape(str(missing))} does not exist"):
        api(missing)


def test_data_after_the_footer(base, tmp_path):
    path = save(tmp_path, base.data + b"\x02\x05")
    assert_reported(path, r"data follows the footer", offset=len(base.data))


def test_footer_totals_that_disagree(base, tmp_path):
    totals = base.layout.totals()
    tid = min(totals)
    batches, records = totals[tid]
    totals[tid] = (batches, records + 1)
    path = save(tmp_path, replace_footer(base.data, totals))
    assert_reported(
        path,
        rf"the footer says thread {tid} wrote {batches} batches with {records + 1} records; "
        rf"the file holds {batches} batches with {records} records",
        tid=tid)


# -- cut short: readable, with a warning --------------------------------------


def expected_prefix(base, complete_batches):
    """Each thread's events from ``complete_batches`` (a prefix of the file's batches)."""
    kept = {}
    for batch in complete_batches:
        kept[batch.tid] = kept.get(batch.tid, 0) + batch.timed_events
    return {tid: base.events[tid][:n] for tid, n in kept.items() if n}


def assert_cut(path, where: str, offset: int, expected: dict) -> None:
    report = pytrace.validate(path)
    assert not report.valid and report.errors == []
    assert re.search(rf"cut short {where}", str(report.cut)), str(report.cut)
    assert report.cut.offset == offset and str(report.cut).endswith(f"(at byte {offset})")
    with pytest.warns(TraceWarning, match=rf"cut short {where}"):
        trace = pytrace.read(path)
    assert not trace.complete
    assert events_by_thread(trace) == expected


@pytest.mark.parametrize("cut_at, where", [
    (lambda b: b.offset + 1, "inside a batch header"),
    (lambda b: (b.offset + b.end) // 2, "inside a batch"),
    (lambda b: b.end - 1, "inside a batch"),
], ids=["in-header", "middle", "last-byte"])
def test_cut_inside_a_batch_returns_every_complete_batch(base, tmp_path, cut_at, where):
    batches = base.layout.batches
    index = len(batches) // 2
    cut = batches[index]
    path = save(tmp_path, base.data[:cut_at(cut)])
    assert_cut(path, where, cut.offset, expected_prefix(base, batches[:index]))


@pytest.mark.parametrize("keep", ["half", "all"])
def test_cut_between_batches_means_no_footer(base, tmp_path, keep):
    batches = base.layout.batches
    kept = batches[:len(batches) // 2] if keep == "half" else batches
    end = kept[-1].end
    path = save(tmp_path, base.data[:end])
    assert_cut(path, "before the footer", end, expected_prefix(base, kept))


# -- batch order and time --------------------------------------------------------


def test_a_missing_batch_is_a_gap(base, tmp_path):
    dropped = middle_batch(base.layout, with_neighbours=True)
    assert_gap_reported(base, tmp_path, dropped,
                        rf"batch {dropped.seq + 1} of thread {dropped.tid} follows batch "
                        rf"{dropped.seq - 1}: batches {dropped.seq}..{dropped.seq} are missing")


def test_a_thread_missing_its_first_batch(base, tmp_path):
    """The message must not name a batch before 0 (there is none)."""
    dropped = base.layout.thread_batches(max(base.layout.totals()))[0]
    assert_gap_reported(base, tmp_path, dropped,
                        rf"^batch 1 of thread {dropped.tid} (?!.*batch -1).*batches 0\.\.0 are missing")


def assert_gap_reported(base, tmp_path, dropped, pattern: str) -> None:
    """Drop batch ``dropped``: the thread's next batch is reported, where it now is."""
    path = save(tmp_path, refooter(splice(base.data, dropped.offset, dropped.end)))
    following = next(b for b in base.layout.thread_batches(dropped.tid) if b.seq == dropped.seq + 1)
    assert_reported(path, pattern, offset=following.offset - (dropped.end - dropped.offset),
                    tid=dropped.tid, batch=following.seq)


def test_a_repeated_batch(base, tmp_path):
    repeated = middle_batch(base.layout)
    copy = base.data[repeated.offset:repeated.end]
    path = save(tmp_path, refooter(splice(base.data, repeated.end, repeated.end, copy)))
    assert_reported(
        path, rf"batch {repeated.seq} of thread {repeated.tid} appears again \(a repeated batch\)",
        offset=repeated.end, tid=repeated.tid, batch=repeated.seq)


def test_a_batch_without_its_header(base, tmp_path):
    headless = middle_batch(base.layout)
    first = events.BY_ID[headless.records[0].kind_id].name
    path = save(tmp_path, splice(base.data, headless.offset, headless.header_end))
    assert_reported(path, rf"{first} record outside any batch: a batch without its header",
                    offset=headless.offset)


def test_timestamps_going_backwards_within_a_thread(base, tmp_path):
    late = middle_batch(base.layout, with_neighbours=True)
    assert late.base > 0
    path = save(tmp_path, rewrite_batch(base.data, late, base=0))
    assert_reported(path, rf"thread {late.tid}'s clock goes backwards: batch {late.seq} starts",
                    offset=late.offset, tid=late.tid, batch=late.seq)


def test_a_batch_that_miscounts_its_records(base, tmp_path):
    batch = middle_batch(base.layout)
    wrong = len(batch.records) + 1
    path = save(tmp_path, with_record_count(base.data, batch, wrong))
    assert_reported(path, rf"batch header says {wrong} records, "
                          rf"the batch holds {len(batch.records)}",
                    offset=batch.offset, tid=batch.tid, batch=batch.seq)


# -- string, function and stack tables -----------------------------------------


@pytest.mark.parametrize("kind_id, name, duplicate", [
    (events.STRING, "string", lambda sid: wire.string_record(sid, "defined again")),
    (events.STACK, "stack", lambda kid: wire.stack_record(kid, ((1, 1),))),
], ids=["string", "stack"])
def test_an_id_defined_twice(base, tmp_path, kind_id, name, duplicate):
    _, definition = first_definition(base.layout, kind_id)
    last = base.layout.batches[-1]
    body = batch_body(base.data, last) + duplicate(definition.first)
    path = save(tmp_path, refooter(rewrite_batch(base.data, last, body=body)))
    assert_reported(path, rf"{name} id {definition.first} is defined twice",
                    offset=last.end, tid=last.tid, batch=last.seq)


@pytest.mark.parametrize("kind_id, name", [
    (events.STRING, "string"), (events.FUNC, "function"), (events.STACK, "stack"),
], ids=["string", "function", "stack"])
def test_an_id_used_but_never_defined(base, tmp_path, kind_id, name):
    batch, definition = first_definition(base.layout, kind_id)
    broken = rewrite_batch(base.data, batch, body=body_replacing(base.data, batch, definition))
    path = save(tmp_path, refooter(broken))
    # Located where it is first used: the thread of the event that refers to
    # it (a stack); nothing when the first user is another definition (a Func
    # names the string, a Stack names the function).
    where = batch.tid if name == "stack" else None
    assert_reported(path, rf"1 {name} id\(s\) used but never defined: {definition.first}",
                    tid=where)


def test_invalid_utf8_in_a_string(base, tmp_path):
    batch, definition = first_definition(base.layout, events.STRING)
    bad = wire.length_prefixed(events.STRING, wire.uvarint(definition.first) + b"\xff\xfe")
    body = body_replacing(base.data, batch, definition, bad)
    path = save(tmp_path, refooter(rewrite_batch(base.data, batch, body=body)))
    assert_reported(path, rf"string {definition.first} is not valid UTF-8",
                    offset=definition.offset)


# -- fuzz: only TraceFormatError, and every input finishes ----------------------


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.pytrace"


def read_and_validate(path, data: bytes) -> None:
    """Both entry points on ``data``; any exception but TraceFormatError fails the test."""
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        try:
            pytrace.read(path)
            raised = False
        except TraceFormatError:
            raised = True
    report = pytrace.validate(path)
    assert raised == bool(report.errors)


#: Generous for a noisy 2-core machine: a trace of a few KB decodes in milliseconds.
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow])

#: Prefixes that get random bytes past the header checks into records and batches.
PREFIXES = [b"", wire.HEADER, wire.HEADER + wire.record(events.FREQUENCY, (10**9,))]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=400))
def test_fuzz_random_bytes(fuzz_path, prefix, tail):
    read_and_validate(fuzz_path, prefix + tail)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_real_trace(base, fuzz_path, data):
    blob = bytearray(base.data)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        # sampled_from spreads positions evenly over the file; integers()
        # would favour the header, which the tests above already cover.
        pos = data.draw(st.sampled_from(range(len(blob))), label="position")
        action = data.draw(st.sampled_from(["set", "delete", "insert"]), label="action")
        if action == "set":
            blob[pos] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])
                                  | st.integers(0, 255), label="byte")
        elif action == "delete":
            del blob[pos:pos + data.draw(st.integers(1, 16), label="length")]
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
        if not blob:
            break
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[:data.draw(st.sampled_from(range(len(blob) + 1)), label="cut")]
    read_and_validate(fuzz_path, bytes(blob))
