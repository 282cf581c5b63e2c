"""GC pause analysis on traces whose answers are derived by hand in ``analysis_traces``."""

import gc
import json

import pytest
from hypothesis import given, settings

from analysis_traces import ALLOC, GC_SCENARIO, MAIN, arbitrary_rows, load, traced
from pytrace.analysis import Distribution, analyze_gc, jsonable, percentile
from pytrace.analysis.gc import HistogramBin, histogram
from pytrace.reader import Frame


@pytest.fixture
def report(trace_path):
    return analyze_gc(load(trace_path, GC_SCENARIO), longest=3)


def test_nearest_rank_percentiles_are_observed_values():
    values = [10, 20, 30, 40]
    assert [percentile(values, p) for p in (1, 25, 26, 50, 51, 90, 99, 100)] == \
        [10, 10, 20, 20, 30, 40, 40, 40]
    assert percentile([7], 50) == 7
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_distribution_of_nothing_is_all_zero():
    assert Distribution.of([]) == Distribution(0, 0, 0.0, 0, 0, 0, 0, 0)


def test_pauses_per_generation(report):
    by_gen = {g.generation: g for g in report.generations}
    assert sorted(by_gen) == [0, 1, 2]
    gen0 = by_gen[0]
    assert gen0.collections == 3
    assert gen0.pauses == Distribution(count=3, total=450, mean=150.0, min=50, p50=100,
                                       p90=300, p99=300, max=300)
    assert (gen0.collected, gen0.uncollectable) == (35, 1)
    assert by_gen[1].pauses.total == 500 and by_gen[1].collected == 30
    assert by_gen[2].pauses.max == 1000 and by_gen[2].uncollectable == 3


def test_all_generations_together(report):
    overall = report.overall
    assert overall.generation is None and overall.collections == 5
    assert overall.pauses == Distribution(count=5, total=1950, mean=390.0, min=50, p50=300,
                                          p90=1000, p99=1000, max=1000)
    assert (overall.collected, overall.uncollectable) == (465, 4)


def test_longest_pauses_carry_their_triggering_stack(report):
    assert [p.duration for p in report.longest] == [1000, 500, 300]
    worst = report.longest[0]
    assert (worst.tid, worst.generation, worst.start, worst.end) == (1, 2, 8000, 9000)
    assert worst.stack == (Frame(*ALLOC), Frame(*MAIN))
    assert worst.complete
    assert report.longest[2].tid == 2  # the worker's own collection


def test_gc_share_overall_and_per_thread(report):
    assert report.span.duration == 10_000
    assert report.gc_time == 1950
    assert report.gc_share == 0.195
    shares = {t.tid: t for t in report.threads}
    assert (shares[1].name, shares[1].lifetime, shares[1].gc_time) == ("thread 1", 10_000, 1950)
    # Every collection stops every thread, whichever thread ran it.
    assert (shares[2].name, shares[2].lifetime, shares[2].gc_time) == ("worker", 4000, 800)
    assert shares[2].share == 0.2


def test_pause_histogram_bins_are_1_2_5(report):
    assert report.histogram == [HistogramBin(50, 100, 1), HistogramBin(100, 200, 1),
                                HistogramBin(200, 500, 1), HistogramBin(500, 1000, 1),
                                HistogramBin(1000, 2000, 1)]
    assert histogram([0, 1, 3, 3]) == [HistogramBin(1, 2, 2), HistogramBin(2, 5, 2)]
    assert histogram([0]) == [HistogramBin(1, 2, 1)]
    assert histogram([]) == []


def test_collection_open_at_the_end_closes_there_and_stray_done_is_ignored(trace_path):
    trace = load(trace_path, [
        (0, 1, "GCDone", 1, 0),  # its GCStart was before the trace: ignored
        (100, 1, "GCStart", 2, None),
        (150, 2, "CallEnter", MAIN),
        (400, 2, "CallExit"),
    ])
    report = analyze_gc(trace)
    assert report.unmatched_done == 1
    [pause] = report.pauses
    assert (pause.start, pause.end, pause.duration, pause.complete) == (100, 400, 300, False)
    assert report.gc_share == 0.75


def test_no_collections(trace_path):
    report = analyze_gc(load(trace_path, [(0, 1, "CallEnter", MAIN), (5000, 1, "CallExit")]))
    assert report.pauses == [] and report.longest == [] and report.histogram == []
    assert report.overall.collections == 0 and report.gc_share == 0.0
    assert report.mmu and all(point.utilization == 1.0 for point in report.mmu)


def test_report_is_json_data_with_named_frame_fields(report):
    data = json.loads(json.dumps(jsonable(report)))
    assert data["longest"][0]["stack"][0] == {"func": "alloc", "file": "app.py", "line": 40}
    assert data["overall"]["pauses"]["p90"] == 1000
    assert data["mmu"][-1] == {"window": 10_000, "utilization": 0.805, "worst_start": 0}


def collect_cycles():
    for _ in range(10):
        cycle = []
        cycle.append(cycle)
    del cycle
    gc.collect()


def test_a_real_collection(trace_path):
    report = analyze_gc(traced(trace_path, collect_cycles, calls=False))
    [ours] = [p for p in report.pauses if p.stack and p.stack[0].func == "collect_cycles"]
    assert ours.generation == 2 and ours.complete
    assert ours.collected >= 10 and ours.duration > 0
    assert 0 < report.gc_share < 1
    whole = report.mmu[-1]
    assert whole.window == report.span.duration
    assert whole.utilization == (report.span.duration - report.gc_time) / report.span.duration


@settings(max_examples=60, deadline=None)
@given(rows=arbitrary_rows())
def test_any_event_sequence_gives_a_consistent_report(tmp_path_factory, rows):
    report = analyze_gc(load(tmp_path_factory.mktemp("arbitrary") / "t.pytrace", rows))
    span = report.span.duration
    assert 0 <= report.gc_time <= span
    assert report.overall.collections == len(report.pauses) == \
        sum(bin.count for bin in report.histogram)
    assert all(0 <= t.gc_time <= t.lifetime for t in report.threads)
    assert all(0.0 <= point.utilization <= 1.0 for point in report.mmu)
    if span:
        assert report.mmu[-1].utilization == (span - report.gc_time) / span
