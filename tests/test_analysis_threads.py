"""Thread states and user task/region latencies on ``THREAD_SCENARIO`` (see ``analysis_traces``)."""

import threading
import time

import pytest
from hypothesis import given, settings

import pytrace
from analysis_traces import MAIN, THREAD_SCENARIO, arbitrary_rows, load, traced
from pytrace.analysis import Distribution, thread_infos, thread_times, user_annotations
from pytrace.analysis.threads import block_reason


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return load(tmp_path_factory.mktemp("threads") / "threads.pytrace", THREAD_SCENARIO)


def test_thread_lifetimes_and_names(trace):
    infos = thread_infos(trace)
    assert [(i.tid, i.name, i.start, i.end, i.ended) for i in infos.values()] == [
        (1, "thread 1", 0, 1000, False), (2, "worker", 200, 950, True)]
    assert infos[2].events == 9


def test_main_thread_states(trace):
    main = thread_times(trace)[0]
    assert (main.sleeping, main.syscall, main.gc_stopped, main.running) == (200, 100, 100, 450)
    assert main.blocked == {"lock": 50, "socket": 100}
    assert main.running + main.sleeping + main.syscall + main.gc_stopped + \
        main.blocked_total == main.lifetime == 1000


def test_a_blocked_thread_is_not_delayed_by_a_collection(trace):
    worker = thread_times(trace)[1]
    assert worker.blocked == {"queue": 600}
    assert (worker.gc_stopped, worker.running, worker.sleeping, worker.lifetime) == \
        (50, 100, 0, 750)


def test_waits_open_at_the_end_count_until_it(tmp_path):
    trace = load(tmp_path / "t.pytrace", [
        (0, 1, "CallEnter", MAIN), (10, 1, "Block", 99, None),  # a reason this pytrace lacks
        (50, 2, "ThreadStart", 1, 1, ""), (60, 2, "Unblock"), (70, 2, "SysCallEnd"),
        (100, 2, "CallEnter", MAIN)])
    first, second = thread_times(trace)
    assert first.blocked == {"reason 99": 90} and first.running == 10
    assert second.name == "thread 2"  # an empty name falls back
    assert second.running == 50 and second.blocked == {}  # stray ends are ignored


def test_block_reason_names():
    assert block_reason(1) == "sleep" and block_reason(2) == "lock"
    assert block_reason(-1) == "reason -1"


def test_task_latencies(trace):
    [request] = user_annotations(trace).tasks
    assert request.name == "request"
    assert request.latency == Distribution(count=2, total=880, mean=440.0, min=260, p50=260,
                                           p90=620, p99=620, max=620)
    assert request.unfinished == 1


def test_region_latencies_match_nested_regions_innermost_first(trace):
    regions = {r.name: r for r in user_annotations(trace).regions}
    assert sorted(regions) == ["db", "parse"]
    parse = regions["parse"]
    assert (parse.latency.count, parse.latency.min, parse.latency.max) == (2, 10, 70)
    assert parse.unfinished == 0
    assert (regions["db"].latency.total, regions["db"].unfinished) == (40, 1)


def nap_in_a_thread():
    def nap():
        with pytrace.task("nap"), pytrace.region("sleeping"):
            time.sleep(0.05)

    napper = threading.Thread(target=nap, name="napper")
    napper.start()
    napper.join()


def test_a_real_sleeping_thread(trace_path):
    trace = traced(trace_path, nap_in_a_thread, calls=False)
    napper = next(t for t in thread_times(trace) if t.name == "napper")
    assert napper.ended and napper.sleeping >= 50_000_000
    assert napper.sleeping <= napper.lifetime
    user = user_annotations(trace)
    [task], [region] = user.tasks, user.regions
    assert (task.name, task.latency.count, region.name, region.latency.count) == \
        ("nap", 1, "sleeping", 1)
    assert region.latency.total >= 50_000_000


@settings(max_examples=60, deadline=None)
@given(rows=arbitrary_rows())
def test_any_event_sequence_splits_each_lifetime_exactly(tmp_path_factory, rows):
    trace = load(tmp_path_factory.mktemp("arbitrary") / "t.pytrace", rows)
    for t in thread_times(trace):
        parts = [t.running, t.sleeping, t.syscall, t.gc_stopped, *t.blocked.values()]
        assert all(part >= 0 for part in parts)
        assert sum(parts) == t.lifetime >= 0
    user = user_annotations(trace)
    for stats in user.tasks + user.regions:
        assert stats.latency.count + stats.unfinished > 0
        assert 0 <= stats.latency.min <= stats.latency.p50 <= stats.latency.max
