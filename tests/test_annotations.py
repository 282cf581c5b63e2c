"""The user API: ``pytrace.task``, ``region``, ``log`` and ``counter`` give
exactly the expected events, per thread and per asyncio task; they do nothing
without a trace, check their arguments the same way traced or not, and never
pass a tracer problem on to the caller."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest

import pytrace
from eventlog import QUIET, normalized, of_kind, record
from pytrace import buffer
from pytrace.session import TracerWarning

USER = ("UserTaskCreate", "UserTaskEnd", "UserRegionStart", "UserRegionEnd", "UserLog", "Counter")


def user_events(trace, tid=None) -> list[tuple]:
    return normalized(of_kind(trace, *USER, tid=tid))


def test_nested_tasks_regions_logs_and_counters(trace_path):
    ids = []

    def program():
        with pytrace.task("request") as outer:
            with pytrace.region("parse"):
                pytrace.log("input", "3 items")
            with pytrace.task("db") as inner:
                pytrace.counter("rows", 42)
                pytrace.counter("delta", -7)
                with pytrace.region("query"):
                    pass
            pytrace.log("done", "ok")
        pytrace.log("outside", "no task")
        ids.extend([outer.id, inner.id])

    trace = record(trace_path, program)
    o, i = ids
    assert 0 < o < i
    assert user_events(trace) == [
        ("UserTaskCreate", o, 0, "request"),
        ("UserRegionStart", o, "parse"),
        ("UserLog", o, "input", "3 items"),
        ("UserRegionEnd", o, "parse"),
        ("UserTaskCreate", i, o, "db"),
        ("Counter", "rows", 42),
        ("Counter", "delta", -7),
        ("UserRegionStart", i, "query"),
        ("UserRegionEnd", i, "query"),
        ("UserTaskEnd", i),
        ("UserLog", o, "done", "ok"),
        ("UserTaskEnd", o),
        ("UserLog", 0, "outside", "no task"),
    ]


@pytrace.region("fact")
def fact(n: int) -> int:
    return 1 if n <= 1 else n * fact(n - 1)


@pytrace.region("fails")
def fails() -> None:
    raise ValueError("boom")


def test_region_decorator_pairs_every_call_even_recursive_or_raising(trace_path):
    def program():
        assert fact(3) == 6
        with pytest.raises(ValueError, match="boom"):
            fails()

    trace = record(trace_path, program)
    assert fact.__name__ == "fact"
    assert user_events(trace) == [
        ("UserRegionStart", 0, "fact"), ("UserRegionStart", 0, "fact"),
        ("UserRegionStart", 0, "fact"), ("UserRegionEnd", 0, "fact"),
        ("UserRegionEnd", 0, "fact"), ("UserRegionEnd", 0, "fact"),
        ("UserRegionStart", 0, "fails"), ("UserRegionEnd", 0, "fails"),
    ]


def test_each_thread_has_its_own_task_stack(trace_path):
    both_open = threading.Barrier(2)
    ids = {}

    def worker(name):
        with pytrace.task(name) as mine:
            both_open.wait()
            with pytrace.region("work"):
                pytrace.log("step", name)
            both_open.wait()
        ids[name] = mine.id

    def program():
        with pytrace.task("main") as main:
            threads = [threading.Thread(target=worker, args=(name,)) for name in "ab"]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with pytrace.region("after"):
                pass
        ids["main"] = main.id

    trace = record(trace_path, program)
    per_thread = {events[0][-1]: events for events in
                  (user_events(trace, tid) for tid in {e.tid for e in of_kind(trace, *USER)})}
    assert per_thread == {
        "main": [("UserTaskCreate", ids["main"], 0, "main"),
                 ("UserRegionStart", ids["main"], "after"),
                 ("UserRegionEnd", ids["main"], "after"),
                 ("UserTaskEnd", ids["main"])],
        **{name: [("UserTaskCreate", ids[name], 0, name),
                  ("UserRegionStart", ids[name], "work"),
                  ("UserLog", ids[name], "step", name),
                  ("UserRegionEnd", ids[name], "work"),
                  ("UserTaskEnd", ids[name])] for name in "ab"},
    }


@pytrace.region("fetch")
async def fetch(name: str) -> str:
    await asyncio.sleep(0)
    return name


def test_each_asyncio_task_continues_its_creators_task_stack(trace_path):
    ids = {}

    async def job(name):
        with pytrace.task(name) as mine:
            ids[name] = mine.id
            assert await fetch(name) == name
            pytrace.log("step", name)

    async def main():
        with pytrace.task("main") as top:
            ids["main"] = top.id
            await asyncio.gather(job("a"), job("b"))

    trace = record(trace_path, lambda: asyncio.run(main()))
    m, a, b = ids["main"], ids["a"], ids["b"]
    assert user_events(trace) == [
        ("UserTaskCreate", m, 0, "main"),
        ("UserTaskCreate", a, m, "a"), ("UserRegionStart", a, "fetch"),
        ("UserTaskCreate", b, m, "b"), ("UserRegionStart", b, "fetch"),
        ("UserRegionEnd", a, "fetch"), ("UserLog", a, "step", "a"), ("UserTaskEnd", a),
        ("UserRegionEnd", b, "fetch"), ("UserLog", b, "step", "b"), ("UserTaskEnd", b),
        ("UserTaskEnd", m),
    ]


def test_without_a_trace_everything_is_a_no_op():
    assert pytrace.session.current() is None
    with pytrace.task("untraced") as untraced:
        with pytrace.region("r"):
            pytrace.log("category", "message")
            pytrace.counter("c", 1)
        assert fact(4) == 24
    assert untraced.id == 0


def test_only_what_began_in_the_running_trace_is_ended_in_it(trace_path, tmp_path):
    first_path, second_path = tmp_path / "first.pytrace", tmp_path / "second.pytrace"
    with pytrace.region("began untraced"):
        pytrace.start(first_path, **QUIET)
        with pytrace.task("first") as first:
            pytrace.stop()
            pytrace.start(second_path, **QUIET)
            pytrace.log("in", "second trace")
            with pytrace.task("second") as second:
                pass
    pytrace.stop()
    assert user_events(pytrace.read(first_path)) == [("UserTaskCreate", first.id, 0, "first")]
    assert user_events(pytrace.read(second_path)) == [
        ("UserLog", 0, "in", "second trace"),
        ("UserTaskCreate", second.id, 0, "second"),
        ("UserTaskEnd", second.id),
    ]


def test_counter_values_round_trip_over_the_whole_signed_64_bit_range(trace_path):
    values = [0, 1, -1, 2**31, -(2**40), 2**63 - 1, -(2**63)]
    trace = record(trace_path, lambda: [pytrace.counter("v", v) for v in values])
    assert user_events(trace) == [("Counter", "v", v) for v in values]


def generator_function():
    yield 1


BAD_CALLS = {
    "task name": (lambda: pytrace.task(3), TypeError, "task name must be a str, not int"),
    "region name": (lambda: pytrace.region(None), TypeError, "region name must be a str"),
    "log category": (lambda: pytrace.log(b"cat", "m"), TypeError, "category must be a str"),
    "log message": (lambda: pytrace.log("cat", 5), TypeError, "message must be a str, not int"),
    "counter name": (lambda: pytrace.counter(7, 1), TypeError, "counter name must be a str"),
    "float counter": (lambda: pytrace.counter("c", 1.5), TypeError,
                      "counter value must be an int, not float"),
    "huge counter": (lambda: pytrace.counter("c", 2**63), OverflowError, "64 signed bits"),
    "generator region": (lambda: pytrace.region("g")(generator_function), TypeError,
                         "cannot decorate the generator function generator_function"),
}


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arguments_raise_the_same_clear_error_traced_or_not(trace_path, call, traced):
    bad_call, error, message = call
    if traced:
        session = pytrace.start(trace_path, **QUIET)
    try:
        with pytest.raises(error, match=message):
            bad_call()
    finally:
        if traced:
            pytrace.stop()
    if traced:
        assert session.failure is None
        assert not user_events(pytrace.read(trace_path))


def test_reentering_an_active_task_is_refused_but_reuse_gets_a_new_id(trace_path):
    reused = pytrace.task("reused")
    ids = []

    def program():
        for _ in range(2):
            with reused:
                ids.append(reused.id)
                with pytest.raises(RuntimeError, match="already active"):
                    reused.__enter__()

    trace = record(trace_path, program)
    assert ids[0] != ids[1]
    assert user_events(trace) == [
        ("UserTaskCreate", ids[0], 0, "reused"), ("UserTaskEnd", ids[0]),
        ("UserTaskCreate", ids[1], 0, "reused"), ("UserTaskEnd", ids[1]),
    ]


def test_a_tracer_problem_stops_tracing_with_one_warning_and_never_reaches_the_caller(
        trace_path, monkeypatch):
    def broken_interning(point):
        if point == "intern:string":
            raise RuntimeError("injected tracer failure")

    session = pytrace.start(trace_path, **QUIET)
    pytrace.counter("before", 1)
    monkeypatch.setattr(buffer, "injector", broken_interning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pytrace.log("new category", "new message")  # interns new strings: fails inside
        pytrace.log("after", "the failure")
        with pytrace.region("after the failure"):
            pass
    monkeypatch.setattr(buffer, "injector", None)

    assert [w.category for w in caught] == [TracerWarning]
    assert "injected tracer failure" in str(caught[0].message)
    assert pytrace.session.current() is None
    assert isinstance(session.failure, RuntimeError)
    assert user_events(pytrace.read(trace_path)) == [("Counter", "before", 1)]
