"""Function profile on ``PROFILE_SCENARIO``, whose numbers are derived in ``analysis_traces``."""

import pytest
from hypothesis import given, settings

from analysis_traces import (FACT, GEN, HELPER, INNER, LEAF, LEN, MAIN, MAIN2, OUTER,
                             PROFILE_SCENARIO, RUN, arbitrary_rows, load, traced)
from pytrace.analysis import function_profile, jsonable


def key(func):
    return func[:2]


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "profile.pytrace"
    return function_profile(load(path, PROFILE_SCENARIO))


def numbers(stats):
    return (stats.calls, stats.total_time, stats.self_time, stats.exceptions, stats.unfinished)


def test_recursion_counts_inclusive_time_once(prof):
    fact = prof.functions[key(FACT)]
    assert numbers(fact) == (3, 90, 90, 0, 0)
    assert (fact.name, fact.file, fact.line, fact.c_function) == ("fact", "app.py", 10, False)
    assert numbers(prof.functions[key(MAIN)]) == (1, 200, 70, 0, 0)


def test_exit_by_exception_ends_the_call_and_is_counted(prof):
    assert numbers(prof.functions[key(HELPER)]) == (1, 40, 40, 1, 0)


def test_suspended_generator_time_is_not_its_own(prof):
    assert numbers(prof.functions[key(GEN)]) == (1, 30, 30, 0, 0)
    assert numbers(prof.functions[key(MAIN2)]) == (1, 120, 88, 0, 0)


def test_c_calls(prof):
    length = prof.functions[key(LEN)]
    assert numbers(length) == (1, 2, 2, 0, 0)
    assert length.c_function


def test_frames_open_at_start_and_end_of_a_live_thread_close_at_trace_end(prof):
    assert numbers(prof.functions[key(OUTER)]) == (0, 200, 0, 0, 1)
    inner = prof.functions[key(INNER)]
    assert numbers(inner) == (0, 200, 180, 0, 1)
    assert inner.line == 27  # the line OpenFrames saw: the only one known
    assert numbers(prof.functions[key(LEAF)]) == (1, 20, 20, 0, 0)


def test_open_call_of_an_ended_thread_closes_at_its_thread_end(prof):
    assert numbers(prof.functions[key(RUN)]) == (1, 45, 45, 0, 1)
    assert prof.threads[4].name == "runner"


def test_extra_pops_are_ignored_and_counted(prof):
    assert prof.threads[5].unmatched_pops == 1
    assert prof.threads[5].functions == {}
    assert all(prof.threads[tid].unmatched_pops == 0 for tid in (1, 2, 3, 4))


def test_callers_and_callees_with_recursion(prof):
    edges = {(e.caller, e.callee): (e.calls, e.total_time) for e in prof.edges}
    assert edges[key(MAIN), key(FACT)] == (1, 90)
    assert edges[key(FACT), key(FACT)] == (2, 40)
    assert edges[key(MAIN), key(HELPER)] == (1, 40)
    assert edges[key(MAIN2), key(GEN)] == (1, 30)  # one call, resumed twice
    assert edges[key(OUTER), key(INNER)] == (0, 200)
    assert [e.caller for e in prof.callers(key(FACT))] == [key(MAIN), key(FACT)]
    assert [e.callee for e in prof.callees(key(MAIN))] == [key(FACT), key(HELPER)]


def test_per_thread_and_overall(prof):
    assert sorted(prof.threads) == [1, 2, 3, 4, 5]
    assert set(prof.threads[1].functions) == {key(MAIN), key(FACT), key(HELPER)}
    # Self times partition the time each thread had a frame on its stack.
    assert prof.threads[1].busy_time == 200
    assert prof.threads[2].busy_time == 120
    assert prof.threads[3].busy_time == 200
    assert sum(f.self_time for f in prof.functions.values()) == \
        sum(t.busy_time for t in prof.threads.values())


def test_same_function_on_two_threads_adds_up(tmp_path):
    rows = [(0, tid, "CallEnter", FACT) for tid in (1, 2)]
    rows += [(10, 1, "CallExit"), (25, 2, "CallExit")]
    prof = function_profile(load(tmp_path / "t.pytrace", rows))
    assert numbers(prof.functions[key(FACT)]) == (2, 35, 35, 0, 0)
    assert numbers(prof.threads[2].functions[key(FACT)]) == (1, 25, 25, 0, 0)


def test_top_orders(prof):
    assert [f.name for f in prof.top("self", 3)] == ["inner", "fact", "main2"]
    assert [f.name for f in prof.top("total", 2)] == ["inner", "main"]  # ties: by name
    assert prof.top("calls")[0].name == "fact"
    assert [f.name for f in prof.top("self", thread=1)] == ["fact", "main", "helper"]
    with pytest.raises(ValueError):
        prof.top("name")


def test_profile_is_json_data(prof):
    data = jsonable(prof.top("self", 1))
    assert data == [{"name": "inner", "file": "lib.py", "line": 27, "c_function": False,
                     "calls": 0, "total_time": 200, "self_time": 180, "exceptions": 0,
                     "unfinished": 1}]


def factorial(n):
    return 1 if n <= 1 else n * factorial(n - 1)


def fails():
    raise KeyError("x")


def real_program():
    factorial(6)
    try:
        fails()
    except KeyError:
        pass


def test_a_real_recursive_program(trace_path):
    prof = function_profile(traced(trace_path, real_program))
    by_name = {f.name: f for f in prof.functions.values()}
    fact, program = by_name["factorial"], by_name["real_program"]
    assert fact.calls == 6 and fact.unfinished == 0
    # Counted once, the recursion's total fits inside its caller's.
    assert 0 < fact.self_time <= fact.total_time <= program.total_time
    edges = {(e.caller[0], e.callee[0]): e for e in prof.edges}
    assert edges["factorial", "factorial"].calls == 5
    assert edges["real_program", "factorial"].total_time == fact.total_time
    assert by_name["fails"].exceptions == 1


@settings(max_examples=60, deadline=None)
@given(rows=arbitrary_rows())
def test_any_event_sequence_gives_a_consistent_profile(tmp_path_factory, rows):
    trace = load(tmp_path_factory.mktemp("arbitrary") / "t.pytrace", rows)
    prof = function_profile(trace)
    span = trace.duration
    for f in prof.functions.values():
        assert 0 <= f.self_time <= f.total_time
        assert f.calls >= 0 and f.exceptions >= 0 and f.unfinished >= 0
    for thread in prof.threads.values():
        assert 0 <= thread.busy_time <= span
    totals = {key: f.total_time for key, f in prof.functions.items()}
    for edge in prof.edges:
        assert 0 <= edge.total_time <= totals[edge.callee]
