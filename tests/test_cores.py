"""The C core and the pure-Python core are interchangeable (``pytrace.core``).

- Byte-identical: the same stream of slot operations at the same clock
  readings gives the same file, byte for byte, from either core.
- The same ``ThreadSlot`` interface, including what the Python call hooks
  use inline (``slot.buf``, ``slot.count``, ``slot.last``).
- Choosing: ``PYTRACE_CORE`` forces a core; without it a missing C core
  means the Python core and exactly one warning; forcing a missing C core
  is a clear error.
- The C clock counts nanoseconds at the rate of ``time.perf_counter_ns``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytrace import buffer, core, events, reader, wire
from pytrace.decoder_c import CDecoder
from pytrace.hooks import calls
from pytrace.reader import Decoder
from pytrace.recorder import MIN_BUFFER_SIZE, Recorder
from pytrace.validate import validate
from eventlog import BACKENDS
from tracegen import (TIMED_KINDS, body_replacing, refooter, rewrite_batch, sample_script, scan,
                      write_trace)

START_TICKS = 5_000_000
U64_MAX = 2**64 - 1
#: Call-hook record prefixes, by whether their event has an argument.
PREFIXES_WITH_ARG = (calls.ENTER, calls.C_ENTER, calls.RESUME)
PREFIXES_WITHOUT_ARG = (calls.EXIT, calls.UNWIND, calls.YIELD, calls.C_EXIT)


class SettableClock:
    """A clock that reads whatever the test last set."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def requires_c_core() -> None:
    if core.c_module is None:
        pytest.fail("pytrace's C core is not built in this installation")


# -- byte-identical output -----------------------------------------------------

_values = st.one_of(st.integers(0, 200), st.integers(0, 2**14 + 5), st.integers(0, U64_MAX))
_texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "é", "\ud800", "x" * 300]))
_frames = st.lists(st.tuples(st.integers(1, 2**20), st.integers(0, 5000)), max_size=5)
_ops = st.one_of(
    st.tuples(st.just("tick"), st.integers(-1000, 2**40)),
    st.tuples(st.just("emit"), st.sampled_from([k.id for k in TIMED_KINDS]),
              st.lists(_values, max_size=7)),
    st.tuples(st.just("small"), st.sampled_from(PREFIXES_WITH_ARG), _values),
    st.tuples(st.just("small"), st.sampled_from(PREFIXES_WITHOUT_ARG), st.just(-1)),
    st.tuples(st.just("string"), _texts),
    st.tuples(st.just("func"), st.integers(0, 6), _texts, _texts, st.integers(0, 10**6)),
    st.tuples(st.just("stack"), _frames.map(tuple)),
    st.tuples(st.just("hook"), st.sampled_from(PREFIXES_WITH_ARG), _values.map(wire.uvarint)),
    st.tuples(st.just("hook"), st.sampled_from(PREFIXES_WITHOUT_ARG), st.just(b"")),
    st.tuples(st.just("flush")),
)


def apply(recorder: Recorder, clock: SettableClock, op: tuple):
    """Perform one operation on the calling thread's slot; return what it returned."""
    slot = recorder.slots.current()
    name, *args = op
    if name == "tick":
        clock.now = max(0, clock.now + args[0])
        return None
    if name == "emit":
        return slot.emit(args[0], *args[1])
    if name == "small":
        return slot.emit_small(*args)
    if name == "string":
        return slot.string_id(args[0])
    if name == "func":
        key, func, file, line = args
        return slot.func_id(("func", key), func, file, line)
    if name == "stack":
        return slot.stack_id(args[0])
    if name == "hook":  # the Python call hooks' inline append, on either core's slot
        return calls.emit(slot, *args)
    assert name == "flush"
    return slot.flush()


def write_with(core_name: str, path, ops, buffer_size: int):
    """Write ``ops`` with core ``core_name``; return the file's bytes and the results."""
    previous = core.use(core_name)
    try:
        clock = SettableClock(START_TICKS)
        with Recorder(path, buffer_size=buffer_size, clock=clock) as recorder:
            assert type(recorder.slots.current()) is core.slot_class()
            results = [apply(recorder, clock, op) for op in ops]
    finally:
        core.use(previous)
    return path.read_bytes(), results


def split_preamble(data: bytes):
    """``(meta without the wall-clock start, everything after the Meta records)``."""
    meta = dict(Decoder(data).decode().meta)
    del meta["start_wall_ns"]  # the one value that differs between two recordings
    preamble_end = max(r.end for r in scan(data).file_records if r.kind_id == events.META)
    return meta, data[preamble_end:]


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_ops, max_size=60),
       buffer_size=st.sampled_from([MIN_BUFFER_SIZE, 64, 300, 64 * 1024]))
@example(ops=[("string", "x" * 300), ("string", "after"), ("emit", 34, [1, 2, 3, 4, 5])],
         buffer_size=MIN_BUFFER_SIZE)
@example(ops=[("tick", 10), ("hook", calls.ENTER, b"\x01"), ("tick", -5),
              ("small", calls.EXIT, -1), ("tick", 2**40), ("emit", 18, [U64_MAX] * 6)],
         buffer_size=64)
def test_both_cores_write_the_same_bytes(tmp_path_factory, ops, buffer_size):
    requires_c_core()
    folder = tmp_path_factory.mktemp("cores")
    python_bytes, python_results = write_with("python", folder / "py.pytrace", ops, buffer_size)
    c_bytes, c_results = write_with("c", folder / "c.pytrace", ops, buffer_size)
    assert c_results == python_results
    assert split_preamble(c_bytes) == split_preamble(python_bytes)


def test_a_real_session_records_the_same_events_on_both_cores(tmp_path):
    """End to end through ``pytrace.trace`` (call hooks, threads, gc): both
    cores record the same events, apart from timing.  (Calls of this module
    only: the interpreter runs stdlib code, e.g. finalizers of earlier
    threads, at moments no test controls.)"""
    requires_c_core()
    from eventlog import call_events, gc_disabled, record

    def program():
        def leaf(n):
            return n
        worker = threading.Thread(target=lambda: [leaf(i) for i in range(3)], name="w")
        worker.start()
        worker.join()
        gc.collect()
        return [leaf(i) for i in range(5)]

    found = {}
    # The first run imports what the program's threads need lazily: its
    # events differ from any later run's, so it only warms up.
    for name in ("python", *core.NAMES):
        previous = core.use(name)
        try:
            with gc_disabled():
                trace = record(tmp_path / f"{name}.pytrace", program, calls=True, gc=True,
                               threads=True, include=(__name__,))
        finally:
            core.use(previous)
        per_thread = sorted(call_events(trace, tid) for tid in trace.threads)
        found[name] = (per_thread, Counter(e.name for e in trace.events))
    assert found["c"] == found["python"]
    assert found["c"][1]["CallEnter"] >= 10
    assert found["c"][1]["GCStart"] >= 1


def c_calls_program():
    """C calls of every kind the backends name: module functions, method
    descriptors, bound builtin methods (fresh objects each time, cached by
    class and name), classmethods of two classes, one name on two types."""
    import collections
    import re as regex

    d = {"a": 1}
    match = regex.compile(r"\w").match
    for _ in range(3):
        len(d)
        d.get("a")
        getter = d.get
        getter("b")
        match("x")
        dict.fromkeys("ab")
        collections.OrderedDict.fromkeys("ab")
        [1].copy()
        {1: 2}.copy()
        sorted([2, 1], key=abs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_cores_name_c_calls_alike(tmp_path, backend):
    requires_c_core()
    from eventlog import call_events, record

    found = {}
    for name in core.NAMES:
        previous = core.use(name)
        try:
            trace = record(tmp_path / f"{name}.pytrace", c_calls_program, calls=True,
                           c_calls=True, backend=backend, include=(__name__,))
        finally:
            core.use(previous)
        found[name] = call_events(trace)
    assert found["c"] == found["python"]
    names = {event[1] for event in found["c"] if event[0] == "CCallEnter"}
    assert {"builtins.len", "dict.get", "list.copy", "dict.copy"} <= names, names


# -- the C decoder --------------------------------------------------------------

TRACE_FIELDS = ("meta", "frequency", "events", "strings", "funcs", "stacks", "threads",
                "footer", "warnings", "batches", "size")


def decoded_with_each_decoder(data: bytes) -> dict:
    """decoder name -> everything the decoder produced: the Trace's fields,
    its problems and where the trace was cut."""
    requires_c_core()
    out = {}
    for decoder_class in (reader.Decoder, CDecoder):
        decoder = decoder_class(data, "trace")
        trace = decoder.decode()
        out[decoder_class.__name__] = (
            {field: getattr(trace, field) for field in TRACE_FIELDS},
            [str(problem) for problem in decoder.errors], str(decoder.cut))
    return out


@settings(max_examples=25, deadline=None)
@given(threads=st.integers(1, 4), rounds=st.integers(0, 4),
       frequency=st.sampled_from([10**9, 3_000_000_000, 1_000_003]),
       buffer_size=st.sampled_from([MIN_BUFFER_SIZE, 200, 64 * 1024]))
def test_both_decoders_give_the_same_trace(tmp_path_factory, threads, rounds, frequency,
                                           buffer_size):
    path = tmp_path_factory.mktemp("decoders") / "t.pytrace"
    scripts = [sample_script(thread, rounds) for thread in range(threads)]
    write_trace(path, scripts, buffer_size=buffer_size, frequency=frequency)
    decoded = decoded_with_each_decoder(path.read_bytes())
    assert decoded["CDecoder"] == decoded["Decoder"]
    assert len(decoded["Decoder"][0]["events"]) == threads * rounds * len(TIMED_KINDS)


@pytest.mark.parametrize("damage", ["cut", "undefined", "backwards", "unknown-kind"])
def test_both_decoders_report_a_damaged_trace_alike(tmp_path, damage):
    """Damage takes the C decoder off its fast paths (a record it cannot
    read, an undefined id, a thread's clock going backwards): the Python
    decoder's checks and messages take over, with the same result."""
    path = tmp_path / "t.pytrace"
    write_trace(path, [sample_script(0, 3), sample_script(1, 3)])
    data = path.read_bytes()
    layout = scan(data)
    first, last = layout.batches[0], layout.batches[-1]
    if damage == "cut":
        data = data[:last.offset + (last.end - last.offset) // 2]
    elif damage == "undefined":  # the first batch's definitions go missing
        timed = b"".join(data[r.offset:r.end] for r in first.records
                         if events.BY_ID[r.kind_id].timed)
        data = refooter(rewrite_batch(data, first, body=timed))
    elif damage == "backwards":
        data = rewrite_batch(data, last, base=0)
    else:  # a record of a kind this pytrace does not know, amid the events
        middle = last.records[len(last.records) // 2]
        data = rewrite_batch(data, last, body=body_replacing(data, last, middle, b"\x3c\x05"))
    decoded = decoded_with_each_decoder(data)
    assert decoded["CDecoder"] == decoded["Decoder"]
    fields, problems, cut = decoded["Decoder"]
    assert problems or cut != "None" or fields["warnings"]


def test_read_uses_the_c_decoder_on_the_c_core(trace_path):
    requires_c_core()
    write_trace(trace_path, [sample_script(0, 1)])
    for name, expected in (("c", CDecoder), ("python", reader.Decoder)):
        previous = core.use(name)
        try:
            assert reader.decoder_class() is expected
            assert len(reader.read(trace_path).events) == len(TIMED_KINDS)
        finally:
            core.use(previous)


# -- the interface ---------------------------------------------------------------


def public_names(cls) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def nested(depth: int, then):
    """``then(frame)`` from ``depth`` calls below this one."""
    return nested(depth - 1, then) if depth else then(sys._getframe())


def frame_stacks_with(core_name: str, path, frame, cases):
    """Each ``(own_prefix, max_frames)`` case's ``frame_stack_id(frame, ...)``
    on core ``core_name``; the file's bytes and the ids."""
    previous = core.use(core_name)
    try:
        with Recorder(path, clock=SettableClock(START_TICKS)) as recorder:
            slot = recorder.slots.current()
            ids = [slot.frame_stack_id(frame, prefix, cap) for prefix, cap in cases]
    finally:
        core.use(previous)
    return path.read_bytes(), ids


def test_both_cores_take_the_same_stack_from_a_frame(tmp_path):
    """The stack walk (in C on the C core): the same functions, lines, ids
    and bytes, frames of files under the own prefix left out, at most
    ``max_frames`` kept, and 0 for no frame or nothing left."""
    requires_c_core()
    here = test_both_cores_take_the_same_stack_from_a_frame.__code__.co_filename
    cases = [("/nowhere/", 64), ("/nowhere/", 3), (here, 64), ("/nowhere/", 64), ("", 64)]
    results = {}
    for name in core.NAMES:
        path = tmp_path / f"{name}.pytrace"
        results[name] = nested(70, lambda frame: frame_stacks_with(name, path, frame, cases))
        results[name] += (reader.read(path),)
    (c_bytes, c_ids, _), (py_bytes, py_ids, trace) = results["c"], results["python"]
    assert c_ids == py_ids and split_preamble(c_bytes) == split_preamble(py_bytes)
    whole, capped, outside, again, empty = py_ids
    assert again == whole and empty == 0 and len({whole, capped, outside}) == 3
    assert frame_stacks_with("c", tmp_path / "none.pytrace", None, cases)[1] == [0] * 5
    funcs = {kid: [(f.func, f.file, f.line) for f in frames] for kid, frames in trace.stacks.items()}
    assert [f[0] for f in funcs[whole]] == ["nested"] * 64  # 71 deep, 64 kept
    assert funcs[capped] == funcs[whole][:3]
    assert funcs[outside] and all(file != here for _, file, _ in funcs[outside])


@pytest.mark.parametrize("core_name", core.NAMES)
def test_a_dropped_functions_code_never_lends_its_id_to_a_new_one(tmp_path, core_name):
    """Functions are keyed by their code's address (a code object's hash is
    computed from its whole bytecode at every lookup): a code object that
    dies while the trace runs must not pass its function id on to a new code
    that CPython allocates at the same address."""
    if core_name == "c":
        requires_c_core()
    previous = core.use(core_name)
    path = tmp_path / "t.pytrace"
    names, ids = [], []
    try:
        with Recorder(path) as recorder:
            slot = recorder.slots.current()
            for i in range(50):
                namespace = {}
                exec(f"def made_{i}(then):\n    return then(__import__('sys')._getframe())",
                     namespace)
                ids.append(namespace[f"made_{i}"](
                    lambda frame: slot.frame_stack_id(frame, "/nowhere/", 1)))
                names.append(f"made_{i}")
                del namespace
                gc.collect()
            codes = {id(code) for code in recorder.tables.codes.values()}
    finally:
        core.use(previous)
    trace = reader.read(path)
    assert [trace.stacks[kid][0].func for kid in ids] == names
    assert len(codes) == 50


def test_the_c_slot_has_the_python_slots_interface():
    requires_c_core()
    from pytrace.buffer import ThreadSlot

    python_names = public_names(ThreadSlot)
    c_names = public_names(core.c_module.ThreadSlot)
    assert python_names <= c_names, python_names - c_names


def test_a_c_slot_refuses_what_the_python_slot_cannot_encode(trace_path):
    requires_c_core()
    previous = core.use("c")
    try:
        with Recorder(trace_path) as recorder:
            slot = recorder.slots.current()
            with pytest.raises(ValueError):
                slot.emit(events.BY_NAME["UserLog"].id, -1, 1, 1)
            with pytest.raises(ValueError):
                slot.emit(events.BY_NAME["UserLog"].id, 2**64, 1, 1)
            with pytest.raises(TypeError):
                slot.string_id(b"bytes")
            with pytest.raises(TypeError):
                slot.buf = b"not a bytearray"
            assert slot.count == 0  # nothing half-written
    finally:
        core.use(previous)


@pytest.mark.parametrize("core_name", core.NAMES)
def test_a_thread_flushing_another_threads_slot_starts_no_flush_of_its_own(
        trace_path, monkeypatch, core_name):
    """While this thread flushes another thread's slot (as the periodic
    flusher does), an event that fills this thread's own slot (e.g. from a
    GC callback inside the writer) must not flush it: that flush would
    re-enter the writer's lock.  The buffer grows instead, and flushes later."""
    if core_name == "c":
        requires_c_core()
    user_log = events.BY_NAME["UserLog"].id
    previous = core.use(core_name)
    try:
        with Recorder(trace_path, buffer_size=MIN_BUFFER_SIZE) as recorder:
            other = []
            worker = threading.Thread(target=lambda: other.append(recorder.slots.current()))
            worker.start()
            worker.join()
            word = other[0].string_id("w")
            other[0].emit(user_log, 1, word, word)
            mine = recorder.slots.current()
            seqs = []

            def fill_my_slot(point):
                if point == "flush:start" and not seqs:
                    seqs.append(mine.seq)
                    text = mine.string_id("x" * MIN_BUFFER_SIZE)  # fills it: a flush is due
                    mine.emit(user_log, 2, text, text)
                    seqs.append(mine.seq)

            monkeypatch.setattr(buffer, "injector", fill_my_slot)
            other[0].flush()
            monkeypatch.setattr(buffer, "injector", None)
            assert seqs[0] == seqs[1], "the flushing thread flushed its own slot inside the flush"
            mine.emit(user_log, 3, word, word)  # the next event flushes it as usual
            assert mine.seq == seqs[0] + 1
    finally:
        core.use(previous)
    report = validate(trace_path)
    assert report.valid, [str(p) for p in report.problems]


def test_misusing_the_c_objects_raises_instead_of_crashing(trace_path):
    requires_c_core()
    c = core.c_module
    code = test_misusing_the_c_objects_raises_instead_of_crashing.__code__
    with pytest.raises(ValueError, match="not initialised"):
        c.Calls.__new__(c.Calls).py_start(code, 0)
    with pytest.raises(ValueError, match="not initialised"):
        c.ThreadSlot.__new__(c.ThreadSlot).emit(21)
    with pytest.raises(ValueError, match="not initialised"):
        c.Run.__new__(c.Run).append((1, 1, events.BY_NAME["CallExit"], ()))
    previous = core.use("c")
    try:
        with Recorder(trace_path) as recorder:
            slot = recorder.slots.current()
            slot.emit(21)
            slot.buf = bytearray(b"short")  # a buffer with no room for a batch header
            with pytest.raises(ValueError, match="lost its batch header"):
                slot.flush()
    finally:
        core.use(previous)


def call_at_the_recursion_limit(callback):
    """What ``callback()`` gives when called from the deepest frame a
    recursion can reach (the RecursionError, if it fails)."""
    def down():
        try:
            return down()
        except RecursionError:
            try:
                return callback()
            except RecursionError as exc:
                return exc

    return down()


def test_headroom_lets_a_callback_run_at_the_recursion_limit():
    """For pytrace's Python callbacks that the interpreter calls wherever the
    program is (gc.callbacks): ``_core.Headroom`` gives them room above the
    recursion limit, and gives it back."""
    requires_c_core()
    limit = sys.getrecursionlimit()

    def callback():
        return "ran"

    assert isinstance(call_at_the_recursion_limit(callback), RecursionError)
    assert call_at_the_recursion_limit(core.c_module.Headroom(callback)) == "ran"
    assert sys.getrecursionlimit() == limit


# -- choosing a core ---------------------------------------------------------------

#: Makes ``import pytrace._core`` fail in a child interpreter, as it does
#: where the extension was never built.
HIDE_C_CORE = "import sys; sys.modules['pytrace._core'] = None\n"


def run_child(code: str, core_env: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTRACE_CORE"}
    if core_env is not None:
        env["PYTRACE_CORE"] = core_env
    return subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
                          env=env, capture_output=True, text=True, timeout=60)


REPORT_CORE = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import pytrace
    from pytrace import core
    from pytrace.recorder import Recorder
    with Recorder({path!r}) as recorder:
        slot = recorder.slots.current()
        slot.emit(21)
print(core.name, type(slot).__module__)
print(len(caught))
for w in caught:
    print(w.category.__name__, w.message)
"""


@pytest.mark.parametrize("core_env, expected", [
    (None, "c pytrace._core"), ("c", "c pytrace._core"), ("python", "python pytrace.buffer")])
def test_pytrace_core_selects_the_core(trace_path, core_env, expected):
    requires_c_core()
    child = run_child(REPORT_CORE.format(path=str(trace_path)), core_env)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[:2] == [expected, "0"]


def test_without_the_c_core_pytrace_warns_once_and_uses_python(trace_path):
    child = run_child(HIDE_C_CORE + REPORT_CORE.format(path=str(trace_path)), None)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[:2] == ["python pytrace.buffer", "1"]
    assert lines[2].startswith("CoreWarning pytrace's C core is unavailable")
    assert "PYTRACE_CORE=python" in lines[2]
    assert Decoder(trace_path.read_bytes()).decode().events[0].name == "ThreadEnd"


def test_forcing_a_missing_c_core_is_a_clear_error():
    child = run_child(HIDE_C_CORE + "import pytrace", "c")
    assert child.returncode != 0
    assert "CoreError: PYTRACE_CORE=c but pytrace's C core cannot be imported" in child.stderr


def test_an_unknown_core_name_is_a_clear_error():
    child = run_child("import pytrace", "fortran")
    assert child.returncode != 0
    assert "CoreError: PYTRACE_CORE='fortran' is not a core; use 'c' or 'python'" in child.stderr


# -- the C clock ----------------------------------------------------------------


def test_the_c_clock_counts_nanoseconds_at_perf_counters_rate():
    """Each C reading is sandwiched between two perf_counter_ns readings, so a
    preemption can only widen the bounds; the calibration error is ~1e-5."""
    requires_c_core()
    clock = core.c_module.clock
    clock()  # calibrated on first use
    a0, c0, b0 = time.perf_counter_ns(), clock(), time.perf_counter_ns()
    time.sleep(0.05)
    a1, c1, b1 = time.perf_counter_ns(), clock(), time.perf_counter_ns()
    assert (a1 - b0) * 0.999 <= c1 - c0 <= (b1 - a0) * 1.001
    assert core.c_module.clock_info()["source"] in ("tsc", "monotonic")


def test_the_c_clock_switches_to_the_counter_without_a_step_back():
    """A fresh process: the clock reads CLOCK_MONOTONIC while it measures the
    counter's rate (~4 ms, without waiting for it), then the counter; the
    readings around the switch still only go forward, at perf_counter's rate."""
    requires_c_core()
    probe = textwrap.dedent("""
        import json, time
        from pytrace import _core
        readings, perf = [], []
        start = time.perf_counter_ns()
        while time.perf_counter_ns() - start < 20_000_000:
            perf.append(time.perf_counter_ns())
            readings.append(_core.clock())
        print(json.dumps([readings, perf, _core.clock_info()["source"]]))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    readings, perf, source = json.loads(done.stdout)
    assert readings == sorted(readings)
    assert source in ("tsc", "monotonic")
    span = readings[-1] - readings[0]
    assert (perf[-1] - perf[1]) * 0.999 <= span + 100_000  # a hair of slack for the ends
    assert span <= (perf[-1] - perf[0]) * 1.001 + 100_000


def test_the_c_clock_never_goes_backwards_across_threads():
    requires_c_core()
    clock = core.c_module.clock
    readings = []

    def read_many():
        readings.append([clock() for _ in range(20000)])

    threads = [threading.Thread(target=read_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run in readings:
        assert run == sorted(run)
