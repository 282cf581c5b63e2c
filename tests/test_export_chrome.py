"""Chrome / Perfetto JSON: the Trace Event Format's structure (valid JSON,
required fields, every B closed by an E on its thread, async pairs), exact
slices on a trace with known contents, and streaming output."""

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings

import pytrace
from export_traces import (
    EVIL, LOG_MESSAGE, REGION, event_scripts, record_program, write_events, write_sample_trace,
)
from pytrace.export import write_chrome

PHASES = {"M", "B", "E", "i", "C", "b", "e"}


def chrome_text(trace) -> str:
    out = io.StringIO()
    write_chrome(trace, out)
    return out.getvalue()


def check_structure(doc) -> list[dict]:
    """Assert the Trace Event Format rules the writer promises; return the
    slices as dicts (tid, name, cat, start, end in us, B and E args merged)."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    open_slices: dict[int, list] = {}
    open_async: dict[tuple, list] = {}
    slices = []
    last_ts = float("-inf")
    for ev in doc["traceEvents"]:
        ph = ev["ph"]
        assert ph in PHASES, ev
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int), ev
        if ph == "M":
            assert ev["name"] in {"process_name", "thread_name", "thread_sort_index"}, ev
            continue
        ts = ev["ts"]
        assert isinstance(ts, (int, float)) and ts >= last_ts, ev  # written in time order
        last_ts = ts
        if ph == "B":
            assert isinstance(ev["name"], str) and isinstance(ev["cat"], str), ev
            open_slices.setdefault(ev["tid"], []).append(ev)
        elif ph == "E":
            stack = open_slices.get(ev["tid"])
            assert stack, f"E without B on thread {ev['tid']}: {ev}"
            begin = stack.pop()
            slices.append({"tid": ev["tid"], "name": begin["name"], "cat": begin["cat"],
                           "start": begin["ts"], "end": ts,
                           "args": {**begin.get("args", {}), **ev.get("args", {})}})
        elif ph == "i":
            assert isinstance(ev["name"], str) and ev["s"] in {"t", "p", "g"}, ev
        elif ph == "C":
            assert isinstance(ev["name"], str), ev
            assert all(isinstance(v, (int, float)) for v in ev["args"].values()), ev
        else:
            key = (ev["cat"], ev["id"])
            stack = open_async.setdefault(key, [])
            if ph == "b":
                stack.append(ev["name"])
            else:
                assert stack and stack.pop() == ev["name"], f"async end without begin: {ev}"
    assert not any(open_slices.values()), f"B without E: {open_slices}"
    assert not any(open_async.values()), f"async begin without end: {open_async}"
    return slices


@pytest.fixture
def sample(trace_path):
    write_sample_trace(trace_path)
    return pytrace.read(trace_path)


@pytest.fixture
def sample_doc(sample):
    return json.loads(chrome_text(sample))


def events_named(doc, ph, name=None):
    return [e for e in doc["traceEvents"] if e["ph"] == ph and (name is None or e["name"] == name)]


def test_sample_follows_the_trace_event_format(sample_doc):
    check_structure(sample_doc)
    assert sample_doc["displayTimeUnit"] == "ns"


def test_processes_and_threads_are_named(sample, sample_doc):
    names = {e["tid"]: e["args"]["name"] for e in events_named(sample_doc, "M", "thread_name")}
    assert names == {1: "MainThread", 2: "worker"}
    (process,) = events_named(sample_doc, "M", "process_name")
    assert process["args"]["name"].startswith("python ")
    assert {e["pid"] for e in sample_doc["traceEvents"]} == {int(sample.meta["pid"])}


def test_worker_thread_slices_are_exact(sample_doc):
    slices = [(s["name"], s["cat"], s["start"], s["end"], s["args"])
              for s in check_structure(sample_doc) if s["tid"] == 2]
    assert sorted(slices, key=lambda s: (s[2], -s[3])) == [
        ("run_worker", "call", 5.0, 25.0, {"file": "worker.py", "line": 1}),
        ("socket.recv", "syscall", 9.0, 15.0,
         {"function": "socket.recv", "stack": ["run_worker (worker.py:3)"]}),
        ("blocked: sleep", "block", 16.0, 17.0, {"reason": "sleep", "stack": None}),
        ("recurse", "call", 18.0, 21.0,
         {"file": "worker.py", "line": 40, "ended_by": "exception"}),
        ("recurse", "call", 19.0, 20.0, {"file": "worker.py", "line": 40}),
    ]


def test_main_thread_gc_blocking_regions_and_unfinished_slices(sample_doc):
    slices = {(s["name"], s["start"]): s for s in check_structure(sample_doc) if s["tid"] == 1}
    gc = slices[("GC (generation 2)", 6.0)]
    assert (gc["cat"], gc["end"]) == ("gc", 8.0)
    assert gc["args"] == {"generation": 2, "collected": 42, "uncollectable": 1, "stack": [
        f"{EVIL} (app.py:21)", "main (app.py:13)", "<module> (app.py:30)"]}
    assert slices[(EVIL, 5.0)]["end"] == 9.0
    lock = slices[("blocked: lock", 12.0)]
    assert (lock["cat"], lock["end"], lock["args"]["reason"]) == ("block", 20.0, "lock")
    region = slices[(REGION, 3.0)]
    assert (region["cat"], region["end"], region["args"]) == ("region", 21.0, {"task": 1})
    fetch_runs = [(s["start"], s["end"], s["args"].get("ended_by"))
                  for s in slices.values() if s["name"] == "fetch"]
    assert sorted(fetch_runs) == [(25.0, 26.0, "yield"), (27.0, 28.0, None)]
    for name, start in (("<module>", 1.0), ("left open", 29.0), ("tail", 30.0)):
        assert slices[(name, start)]["end"] == 32.0
        assert slices[(name, start)]["args"]["unfinished"] is True


def test_tasks_logs_counters_and_samples(sample_doc):
    asyncs = [(e["ph"], e["name"], e["id"], e["ts"]) for e in events_named(sample_doc, "b")
              + events_named(sample_doc, "e")]
    assert sorted(asyncs, key=lambda a: (a[3], a[0] == "b")) == [
        ("b", "request", "task-1", 3.0),
        ("e", "request", "task-1", 22.0),
        ("b", "Task-1", "asyncio-7", 24.0),
        ("b", "run", "asyncio-7", 25.0),
        ("e", "run", "asyncio-7", 26.0),
        ("b", "run", "asyncio-7", 27.0),
        ("e", "run", "asyncio-7", 28.0),
        ("e", "Task-1", "asyncio-7", 28.0),
    ]
    (log,) = events_named(sample_doc, "i", "http")
    assert (log["tid"], log["ts"]) == (1, 10.0)
    assert log["args"] == {"task": 1, "category": "http", "message": LOG_MESSAGE}
    depth = [(e["ts"], e["args"]) for e in events_named(sample_doc, "C", "queue depth")]
    assert depth == [(11.0, {"value": -3}), (32.0, {"value": 5})]
    (counts,) = events_named(sample_doc, "C", "gc counts")
    assert counts["args"] == {"gen0": 700, "gen1": 3, "gen2": 1}
    (rss,) = events_named(sample_doc, "C", "rss bytes")
    assert rss["args"] == {"rss": 30_000_000}
    samples = [(e["tid"], e["ts"], len(e["args"]["stack"]))
               for e in events_named(sample_doc, "i", "cpu sample")]
    assert samples == [(2, 16.5, 1), (2, 19.5, 3), (2, 19.6, 3)]
    (create,) = events_named(sample_doc, "i", "start thread worker")
    assert (create["tid"], create["ts"], create["args"]["child"]) == (1, 4.0, 2)


def test_timestamps_are_exact_microseconds(sample):
    text = chrome_text(sample)
    assert '"ts":19.500,' in text and '"ts":19.600,' in text


def test_the_json_is_written_event_by_event(sample):
    """The writer streams: no write holds more than one event, so a large
    trace never needs its whole JSON in memory."""
    writes = []

    class Recording(io.StringIO):
        def write(self, text):
            writes.append(len(text))
            return super().write(text)

    out = Recording()
    write_chrome(sample, out)
    assert len(json.loads(out.getvalue())["traceEvents"]) <= len(writes)
    assert max(writes) < 1024


def test_a_region_left_open_across_a_yield_is_split_so_slices_nest(trace_path):
    write_events(trace_path, [
        (0, 1, "CallEnter", ("gen", "g.py", 1)),
        (1000, 1, "UserRegionStart", 0, "r"),
        (2000, 1, "GenYield"),
        (3000, 1, "UserRegionEnd", 0, "r"),
    ])
    slices = check_structure(json.loads(chrome_text(pytrace.read(trace_path))))
    assert sorted((s["name"], s["start"], s["end"]) for s in slices) == [
        ("gen", 0.0, 2.0), ("r", 1.0, 2.0), ("r", 2.0, 3.0)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=event_scripts())
def test_any_event_sequence_gives_a_well_formed_trace(tmp_path_factory, script):
    path = tmp_path_factory.mktemp("chrome") / "t.pytrace"
    write_events(path, script)
    check_structure(json.loads(chrome_text(pytrace.read(path))))


def test_a_recorded_program_exports_its_threads_tasks_and_gc(tmp_path):
    doc = json.loads(chrome_text(pytrace.read(record_program(tmp_path))))
    slices = check_structure(doc)
    names = {e["args"]["name"] for e in events_named(doc, "M", "thread_name")}
    assert {"MainThread", "worker <1>"} <= names
    cats = {s["cat"] for s in slices}
    assert {"call", "gc", "block", "region"} <= cats
    assert any(s["name"] == "worker" and s["cat"] == "call" and s["tid"] != 1 for s in slices)
    assert [e["name"] for e in events_named(doc, "b") if e["cat"] == "task"] == ['demo "task"']
    assert len([e for e in events_named(doc, "b") if e["cat"] == "asyncio"
                and e["name"] != "run"]) >= 4  # fetch_all, three fetches
