"""Minimum mutator utilization: hand-computed values, and the banded search against brute force."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis_traces import GC_SCENARIO, load
from pytrace.analysis import MMUCurve, UtilizationSeries, analyze_gc, default_windows
from pytrace.analysis.timeline import merge_intervals


def window_utilization(series, start, window):
    """Mean utilization of ``[start, start + window)``, straight from the integral."""
    end = start + window
    return (series.integral(end, series.locate(end))
            - series.integral(start, series.locate(start))) / window


def brute_force_mmu(series, window):
    """Try every window whose left or right edge meets a step: the minimum is at one of them."""
    window = min(window, series.duration)
    starts = {t - shift for t in series.times for shift in (0, window)}
    return min(window_utilization(series, s, window)
               for s in starts if series.start <= s <= series.end - window)


def test_known_values_of_the_gc_scenario(trace_path):
    windows = [100, 1000, 1500, 2000, 10_000, 20_000]
    report = analyze_gc(load(trace_path, GC_SCENARIO), mmu_windows=windows)
    got = {point.window: point.utilization for point in report.mmu}
    # A window no longer than a pause fits inside it: nothing of the program ran.
    assert got[100] == 0.0 and got[1000] == 0.0
    assert got[1500] == 1 / 3
    assert got[2000] == 0.475
    # The whole trace is the only window: 1 - total pause / length.
    assert got[10_000] == (10_000 - 1950) / 10_000 == 0.805
    # A window longer than the trace is clamped to it.
    assert got[20_000] == 0.805
    assert {p.window: p.worst_start for p in report.mmu}[2000] == 7000


def test_worst_start_points_at_a_window_with_that_utilization(trace_path):
    report = analyze_gc(load(trace_path, GC_SCENARIO))
    series = UtilizationSeries.from_pauses(
        merge_intervals((p.start, p.end) for p in report.pauses), 0, 10_000)
    for point in report.mmu:
        window = min(point.window, series.duration)
        assert window_utilization(series, point.worst_start, window) == point.utilization


def test_series_from_pauses_touching_both_ends():
    series = UtilizationSeries.from_pauses([(0, 10), (40, 100)], 0, 100)
    assert series.times == [0, 10, 40, 100]
    assert series.utils == [0, 1, 0, 0]
    assert series.integrals == [0, 0, 30, 30]
    clipped = UtilizationSeries.from_pauses([(-5, 3), (90, 200)], 0, 100)
    assert (clipped.times, clipped.utils) == ([0, 3, 90, 100], [0, 1, 0, 0])


def test_no_window_leaves_the_trace():
    # Go's internal/trace would start a 4 ns window in the last band, at 9, and count
    # 10..13 beyond the end as 0 (0.25); the worst real window is 1..5 (0.75).
    series = UtilizationSeries([0, 4, 5, 10], [1, 0, 1, 0])
    point = MMUCurve(series, bands=4).mmu(4)
    assert point.utilization == 0.75 == brute_force_mmu(series, 4)


def test_degenerate_inputs():
    empty = MMUCurve(UtilizationSeries.from_pauses([], 50, 50))
    assert empty.mmu(1000).utilization == 1.0
    with pytest.raises(ValueError):
        MMUCurve(UtilizationSeries.from_pauses([], 0, 10)).mmu(0)


def test_default_windows_run_from_one_microsecond_to_the_trace_length():
    windows = default_windows(25_000_000)
    assert windows[0] == 1000 and windows[-1] == 25_000_000
    assert windows == sorted(set(windows))
    assert 10_000 in windows and 1_000_000 in windows  # every decade is hit exactly
    assert len([w for w in windows if 1000 <= w < 10_000]) == 10
    assert default_windows(500) == [500]
    assert default_windows(0) == []


pauses = st.lists(st.tuples(st.integers(-20, 400), st.integers(0, 60)), max_size=15)


@settings(max_examples=150, deadline=None)
@given(pauses=pauses, length=st.integers(1, 400), bands=st.sampled_from([1, 2, 3, 5, 8, 1000]),
       data=st.data())
def test_banded_search_equals_brute_force(pauses, length, bands, data):
    series = UtilizationSeries.from_pauses(
        merge_intervals((s, s + d) for s, d in pauses), 0, length)
    curve = MMUCurve(series, bands=bands)
    windows = data.draw(st.lists(st.integers(1, length + 10), min_size=1, max_size=8))
    for window in windows:
        point = curve.mmu(window)
        assert point.utilization == brute_force_mmu(series, window)
        assert window_utilization(series, point.worst_start,
                                  min(window, length)) == point.utilization
