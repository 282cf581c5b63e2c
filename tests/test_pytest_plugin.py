"""The pytest plugin, through real inner pytest sessions (pytest's ``pytester``).

Inner sessions run in this process (``inline_run``/``runpytest``), except the
xdist one, which needs worker processes.  Where a test counts collections,
the inner session switches automatic collections off (``NO_AUTOMATIC_GC``)
so that only the ``gc.collect`` calls of its tests collect.
"""

from __future__ import annotations

import gc
import re
import time
import xml.etree.ElementTree as ET

import pytest

import pytrace
from eventlog import stack_names
from pytrace.analysis import collect_pauses
from pytrace.pytest_recording import (LIGHT_BUFFER_SIZE, MAX_NAME_BYTES, parse_duration,
                                      trace_file_name)

pytest_plugins = ["pytester"]

#: An inner conftest: only explicit ``gc.collect`` calls collect during the session.
NO_AUTOMATIC_GC = """
import gc

def pytest_configure(config):
    gc.disable()

def pytest_unconfigure(config):
    gc.enable()
"""


def trace_of(pytester, nodeid, directory=".pytrace"):
    return pytester.path / directory / trace_file_name(nodeid)


def kept_traces(pytester, directory) -> list[str]:
    return sorted(p.name for p in (pytester.path / directory).iterdir())


def pauses_of(path) -> list:
    return collect_pauses(pytrace.read(path))[0]


def outcomes(reprec) -> list[tuple]:
    """Every phase report of an inline run as (nodeid, phase, outcome, xfail reason)."""
    return [(r.nodeid, r.when, r.outcome, getattr(r, "wasxfail", None))
            for r in reprec.getreports("pytest_runtest_logreport")]


def names(events) -> list[tuple]:
    return [(e.name, *[a for a in e.args if isinstance(a, str)]) for e in events]


# -- file names --------------------------------------------------------------

@pytest.mark.parametrize("nodeid, readable", [
    ("tests/test_a.py::test_b", "tests-test_a.py-test_b"),
    ("test_a.py::TestK::test_m[1-2.5]", "test_a.py-TestK-test_m[1-2.5]"),
    ("test_a.py::test_p[a/b c]", "test_a.py-test_p[a-b_c]"),
    ("test_ü.py::test_名前[é]", "test_ü.py-test_名前[é]"),
    ("../up.py::test_x", "-up.py-test_x"),
])
def test_file_names_read_like_the_test_id(nodeid, readable):
    name = trace_file_name(nodeid)
    assert name.startswith(readable)
    assert re.fullmatch(r"-[0-9a-f]{8}\.pytrace", name[len(readable):])


def test_file_names_are_valid_and_unique_for_ids_that_read_alike():
    ids = ["t.py::t[a b]", "t.py::t[a_b]", "t.py::t[a/b]", "t.py::t[a-b]",
           "t.py::t[" + "x" * 500 + "1]", "t.py::t[" + "x" * 500 + "2]",
           "t.py::t[" + "é" * 300 + "]", "t.py::t[\ud800 lone surrogate]", "t.py::t[nul\0]"]
    files = [trace_file_name(i) for i in ids]
    assert len(set(files)) == len(ids)
    for name in files:
        assert "/" not in name and "\0" not in name and not name.startswith(".")
        assert len(name.encode("utf-8")) <= 255
        name.encode("utf-8")  # no lone surrogate left: a valid name on Linux
    long = files[4]
    assert long.startswith("t.py-t[xxxx") and len(long.encode()) <= MAX_NAME_BYTES + 18


def test_inner_session_writes_one_valid_trace_per_test_named_from_its_id(pytester):
    pytester.makepyfile(test_inner_names="""
        import pytest

        @pytest.mark.parametrize("x", ["a/b c", "a_b_c"])
        def test_param(x):
            pass

        @pytest.mark.parametrize("x", [1], ids=["long" * 100])
        def test_long_id(x):
            pass

        def test_ünïcode_名前():
            pass

        class TestGroup:
            def test_method(self):
                pass
    """)
    reprec = pytester.inline_run("--pytrace", "-p", "no:cacheprovider")
    reprec.assertoutcome(passed=5)
    nodeids = sorted({r.nodeid for r in reprec.getreports("pytest_runtest_logreport")})
    files = kept_traces(pytester, ".pytrace")
    assert files == sorted(trace_file_name(n) for n in nodeids)
    for nodeid in nodeids:
        assert pytrace.validate(trace_of(pytester, nodeid)).valid
    assert any("test_ünïcode_名前" in f for f in files)
    assert any(f.startswith("test_inner_names.py-test_long_id[longlong") for f in files)


# -- what a trace holds ----------------------------------------------------------

def test_setup_call_and_teardown_are_regions_of_a_task_named_after_the_test(pytester):
    pytester.makepyfile(test_inner_regions="""
        import time
        import pytest

        @pytest.fixture
        def slow():
            time.sleep(0.01)
            yield
            time.sleep(0.01)

        def test_uses_slow_fixture(slow):
            time.sleep(0.01)
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=1)
    nodeid = "test_inner_regions.py::test_uses_slow_fixture"
    trace = pytrace.read(trace_of(pytester, nodeid))
    annotations = [e for e in trace.events if e.name.startswith("User") or e.name == "Block"]
    assert names(annotations) == [
        ("UserTaskCreate", nodeid),
        ("UserRegionStart", "setup"), ("Block",), ("UserRegionEnd", "setup"),
        ("UserRegionStart", "call"), ("Block",), ("UserRegionEnd", "call"),
        ("UserRegionStart", "teardown"), ("Block",), ("UserRegionEnd", "teardown"),
        ("UserTaskEnd",),
    ]
    assert not [e for e in trace.events if e.name == "CallEnter"]  # light mode: no calls


def test_a_test_with_more_events_than_the_light_buffer_holds_keeps_them_all(pytester):
    """Light mode's per-thread buffer is small (``LIGHT_BUFFER_SIZE``): a
    test that outgrows it flushes batches along the way, and its trace
    still holds every event, valid and in order."""
    pytester.makepyfile(test_inner_many="""
        import pytrace

        def test_logs_a_lot():
            for n in range(3000):
                pytrace.log("many", f"entry {n:04d}")
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=1)
    path = trace_of(pytester, "test_inner_many.py::test_logs_a_lot")
    report = pytrace.validate(path)
    assert report.valid, report
    trace = pytrace.read(path)
    assert [e.arg("message") for e in trace.events if e.name == "UserLog"] == [
        f"entry {n:04d}" for n in range(3000)]
    assert path.stat().st_size > 3 * LIGHT_BUFFER_SIZE  # so several flushes


def test_a_long_test_s_events_reach_its_file_before_it_ends(pytester):
    """The periodic flusher works per test as in ``pytrace run`` (a test that
    hangs or kills the process keeps its events up to the last flush), and
    one flusher thread serves every test's file."""
    pytester.makepyfile(test_inner_long="""
        import os, threading, time
        import pytrace
        from pytrace.pytest_recording import trace_file_name

        def flushers():
            return [t for t in threading.enumerate() if t.name == "pytrace-flusher"]

        def test_first():
            pytrace.log("first", "quick")
            test_first.flusher = flushers()

        def test_waits_for_its_log_in_the_file():
            assert flushers() == test_first.flusher and len(flushers()) == 1
            pytrace.log("long", "written while the test runs")
            name = trace_file_name("test_inner_long.py::test_waits_for_its_log_in_the_file")
            path = os.path.join(".pytrace", name)
            deadline = time.monotonic() + 10
            while b"written while the test runs" not in open(path, "rb").read():
                assert time.monotonic() < deadline, "no periodic flush within 10 s"
                time.sleep(0.05)
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=2)
    trace = pytrace.read(trace_of(pytester, "test_inner_long.py::test_waits_for_its_log_in_the_file"))
    assert [e.arg("category") for e in trace.events if e.name == "UserLog"] == ["long"]


def test_calls_are_recorded_with_the_option_or_the_marker(pytester):
    pytester.makepyfile(test_inner_calls="""
        import pytest

        def helper():
            return 1

        @pytest.mark.pytrace(calls=True)
        def test_marked():
            helper()

        def test_plain():
            helper()
    """)

    def called(nodeid):
        trace = pytrace.read(trace_of(pytester, nodeid))
        return {e.arg("func").name for e in trace.events if e.name == "CallEnter"}

    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=2)
    assert {"test_marked", "helper"} <= called("test_inner_calls.py::test_marked")
    assert called("test_inner_calls.py::test_plain") == set()
    pytester.inline_run("--pytrace", "--pytrace-calls", "-p", "no:cacheprovider")
    assert {"test_plain", "helper"} <= called("test_inner_calls.py::test_plain")


def test_hooks_a_marker_asks_for_are_imported_before_its_tests_trace_starts(
        pytester, monkeypatch):
    """Importing the call hooks (a few ms, and collections, under pytest's
    assertion-rewriting loader) must not land in the first traced test that
    asks for calls: they are imported before its trace starts."""
    import pytrace.session

    # The inner conftest wraps ``start``; this puts the real one back after.
    monkeypatch.setattr(pytrace.session, "start", pytrace.session.start)
    pytester.makeconftest("""
        import sys
        import pytrace.session as tracing

        imported_at_start = []
        _start = tracing.start

        def start(path, **options):
            imported_at_start.append({name for name in sys.modules
                                      if name.startswith("pytrace.hooks.")})
            return _start(path, **options)

        tracing.start = start
    """)
    pytester.makepyfile(test_inner_first_calls="""
        import pytest
        import conftest

        def test_light():
            pass

        @pytest.mark.pytrace(calls=True)
        def test_with_calls():
            imported = conftest.imported_at_start[-1]
            assert "pytrace.hooks.calls" in imported
            assert {"monitoring", "monitoring_c", "setprofile", "setprofile_c"} & {
                name.rsplit(".", 1)[-1] for name in imported}
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=2)


@pytest.mark.skipif(pytest.version_tuple < (9,), reason="the subtests fixture is pytest 9's")
def test_the_call_region_covers_the_whole_call_phase_with_its_subtests(pytester):
    """Subtests report inside the call phase: the call region still ends when
    the phase does, and a phase cut short by ``pytest.exit`` still ends its
    region and task in the trace."""
    pytester.makepyfile(test_inner_sub="""
        import pytest
        import pytrace

        def test_with_subtests(subtests):
            for i in range(2):
                with subtests.test(i=i):
                    pytrace.log("sub", f"subtest {i}")
            pytrace.log("main", "after the subtests")

        def test_zexits():
            pytest.exit("stop here")
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider")

    def annotations(name):
        trace = pytrace.read(trace_of(pytester, f"test_inner_sub.py::{name}"))
        return [(e.name, e.args[-1]) for e in trace.events
                if e.name.startswith(("UserRegion", "UserLog", "UserTask"))]

    events = annotations("test_with_subtests")
    call = events.index(("UserRegionStart", "call"))
    assert [name for name, _ in events[call:]] == [
        "UserRegionStart", "UserLog", "UserLog", "UserLog", "UserRegionEnd",
        "UserRegionStart", "UserRegionEnd", "UserTaskEnd"]
    exits = annotations("test_zexits")
    assert [name for name, _ in exits[-3:]] == ["UserRegionStart", "UserRegionEnd",
                                                "UserTaskEnd"]
    assert exits[-3][1] == exits[-2][1] == "call"


def test_markers_of_the_module_and_class_apply_and_the_closest_wins(pytester):
    """A ``pytrace`` or ``gc_limits`` marker on a module (``pytestmark``) or
    a class covers its tests; one closer to the test wins."""
    # Only the tests' own gc.collect(2) calls may count: an automatic gen-2
    # collection (the call hook's first look at a code object allocates)
    # would break a limit of 0 by chance.
    pytester.makeconftest("""
        import gc

        def pytest_configure(config):
            gc.disable()

        def pytest_unconfigure(config):
            gc.enable()
    """)
    pytester.makepyfile(test_inner_levels="""
        import gc
        import pytest

        pytestmark = [pytest.mark.pytrace(calls=True),
                      pytest.mark.gc_limits(max_collections={2: 0})]

        def helper():
            return 1

        def test_module_level():
            helper()

        @pytest.mark.pytrace(calls=False)
        class TestQuiet:
            def test_in_class(self):
                helper()

            @pytest.mark.pytrace(calls=True)
            def test_marked_again(self):
                helper()

        @pytest.mark.gc_limits(max_collections={2: 1})
        class TestOneCollection:
            def test_collects_once(self):
                gc.collect(2)

            def test_collects_twice(self):
                gc.collect(2)
                gc.collect(2)
    """)

    def called(name):
        trace = pytrace.read(trace_of(pytester, f"test_inner_levels.py::{name}"))
        return {e.arg("func").name for e in trace.events if e.name == "CallEnter"}

    reprec = pytester.inline_run("--pytrace", "-p", "no:cacheprovider")
    assert "helper" in called("test_module_level")
    assert called("TestQuiet::test_in_class") == set()
    assert "helper" in called("TestQuiet::test_marked_again")
    called_outcomes = {nodeid.split("::", 1)[1]: outcome
                       for nodeid, when, outcome, _ in outcomes(reprec) if when == "call"}
    assert called_outcomes == {
        "test_module_level": "passed", "TestQuiet::test_in_class": "passed",
        "TestQuiet::test_marked_again": "passed",
        "TestOneCollection::test_collects_once": "passed",  # the class's limit, not the module's
        "TestOneCollection::test_collects_twice": "failed",
    }


def test_cpu_samples_by_default_at_the_sample_rate_option(pytester):
    """The default mode samples each traced thread 100 times a second (the
    sampler's thread stays from test to test); ``--pytrace-sample-rate``
    changes the rate, 0 turns sampling off."""
    pytester.makepyfile(test_inner_samples="""
        import time

        def spin(seconds):
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass

        def test_first():
            spin(0.3)

        def test_second():
            spin(0.3)
    """)

    def samples(name):
        trace = pytrace.read(trace_of(pytester, f"test_inner_samples.py::{name}"))
        return [e for e in trace.events if e.name == "CPUSample"]

    pytester.runpytest("--pytrace", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    for name in ("test_first", "test_second"):
        taken = samples(name)
        assert len(taken) >= 0.3 * 100 * 0.3  # a third of the rate, on a loaded machine
        innermost = [stack_names(e)[0] for e in taken]
        assert innermost.count("spin") >= 0.8 * len(taken)
    pytester.runpytest("--pytrace", "--pytrace-sample-rate=0",
                       "-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert samples("test_first") == samples("test_second") == []


@pytest.mark.parametrize("args, ini, message", [
    (["--pytrace-sample-rate=fast"], "", "*pytrace sample rate 'fast': give the CPU samples "
                                        "per second as a number, e.g. 100, or 0 for none*"),
    (["--pytrace-sample-rate=-5"], "", "*pytrace sample rate '-5': give the CPU samples*"),
    ([], "pytrace_sample_rate = nan\n", "*pytrace sample rate 'nan': give the CPU samples*"),
    ([], "pytrace_top = many\n", "*pytrace_top must be a whole number*"),
    ([], "pytrace_keep = some\n", "*pytrace_keep = 'some': use 'all' or 'failed'*"),
])
def test_a_wrong_option_value_is_one_usage_error(pytester, args, ini, message):
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile(test_inner_nothing="def test_nothing(): pass")
    result = pytester.runpytest("--pytrace", *args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_threads_and_asyncio_of_a_test_are_in_its_trace(pytester):
    pytester.makepyfile(test_inner_concurrency="""
        import asyncio
        import threading

        def test_thread():
            worker = threading.Thread(target=lambda: None, name="worker")
            worker.start()
            worker.join()

        def test_asyncio():
            async def child():
                await asyncio.sleep(0)

            async def main():
                await asyncio.create_task(child(), name="child")

            asyncio.run(main())
    """)
    pytester.inline_run("--pytrace", "-p", "no:cacheprovider").assertoutcome(passed=2)
    thread = pytrace.read(trace_of(pytester, "test_inner_concurrency.py::test_thread"))
    assert ("ThreadStart", "worker") in names(thread.events)
    assert "ThreadEnd" in {e.name for e in thread.events}
    tasks = pytrace.read(trace_of(pytester, "test_inner_concurrency.py::test_asyncio"))
    assert ("AsyncTaskCreate", "child") in names(tasks.events)


def test_a_bad_marker_fails_that_test_only(pytester):
    pytester.makepyfile(test_inner_bad="""
        import pytest

        @pytest.mark.pytrace(colls=True)
        def test_misspelled():
            pass

        @pytest.mark.gc_limits(max_pause=5)
        def test_no_unit():
            pass

        def test_fine():
            pass
    """)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*test_misspelled: unknown option 'colls'*",
                                 "*test_no_unit: cannot read the duration 5*"])


# -- reports, keep, summary ------------------------------------------------------

FAILING_SUITE = """
    import pytest

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture")

    def test_pass():
        pass

    def test_fail():
        assert False

    def test_error(broken):
        pass

    @pytest.mark.xfail
    def test_xfail():
        assert False

    @pytest.mark.skip
    def test_skip():
        pass
"""
#: The traces that ``--pytrace-keep=failed`` keeps of ``FAILING_SUITE``.
FAILURES_TRACES = sorted(trace_file_name(f"test_inner_suite.py::{name}")
                         for name in ("test_fail", "test_error"))


def test_keep_failed_keeps_only_the_traces_of_failures_and_errors(pytester):
    pytester.makepyfile(test_inner_suite=FAILING_SUITE)
    result = pytester.runpytest("--pytrace", "--pytrace-keep=failed", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1, skipped=1)
    assert kept_traces(pytester, ".pytrace") == FAILURES_TRACES
    result.stdout.fnmatch_lines([
        f"trace: {trace_of(pytester, 'test_inner_suite.py::test_fail')}",
        f"2 traces in {pytester.path / '.pytrace'} (keep=failed: 4 tests traced)*",
    ])


def test_every_report_carries_the_trace_path_of_a_kept_trace(pytester):
    pytester.makepyfile(test_inner_suite=FAILING_SUITE)
    reprec = pytester.inline_run("--pytrace", "-p", "no:cacheprovider", "--junitxml=out.xml")
    for report in reprec.getreports("pytest_runtest_logreport"):
        expected = trace_of(pytester, report.nodeid)
        properties = dict(report.user_properties)
        if report.nodeid.endswith("test_skip"):
            assert properties == {} and not expected.exists()
        else:
            assert properties == {"pytrace_trace": str(expected)} and expected.exists()
    junit = ET.parse(pytester.path / "out.xml")
    recorded = {case.get("name"): [p.get("value") for p in case.iter("property")]
                for case in junit.iter("testcase")}
    assert recorded["test_fail"] == [str(trace_of(pytester, "test_inner_suite.py::test_fail"))]
    assert recorded["test_skip"] == []


def test_summary_counts_the_collections_each_test_made(pytester):
    pytester.makeconftest(NO_AUTOMATIC_GC)
    pytester.makepyfile(test_inner_gc="""
        import gc

        def test_young():
            gc.collect(0); gc.collect(0); gc.collect(0)
            gc.collect(1)

        def test_full():
            gc.collect(2)
            gc.collect(2)

        def test_none():
            pass
    """)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    pauses = {name: pauses_of(trace_of(pytester, f"test_inner_gc.py::{name}"))
              for name in ("test_young", "test_full", "test_none")}
    assert [p.generation for p in pauses["test_young"]] == [0, 0, 0, 1]
    assert [p.generation for p in pauses["test_full"]] == [2, 2]
    assert pauses["test_none"] == []
    longest = max(pauses["test_full"] + pauses["test_young"], key=lambda p: p.duration)
    total = sum(p.duration for ps in pauses.values() for p in ps)
    # The writer counts the bytes it writes: the figure is the files' own size.
    sizes = [path.stat().st_size for path in (pytester.path / ".pytrace").iterdir()]
    result.stdout.fnmatch_lines([
        "*= pytrace =*",
        f"3 traces in {pytester.path / '.pytrace'}; {sum(sizes) / 3 / 1024:.1f} KiB per test trace",
        f"GC: 6 collections (gen0 3, gen1 1, gen2 2), {total / 1e6:.3f} ms paused = *% of * ms "
        f"in traced tests",
        "tests with the most GC pause time (top 5):",
        "*paused*share*gen0*gen1*gen2*test",
        "* ms *%*0*0*2*test_inner_gc.py::test_full",
        "* ms *%*3*1*0*test_inner_gc.py::test_young",
        "longest single pauses (top 5):",
        "*pause*gen*test, then where the collection began",
        f"*{longest.duration / 1e6:.3f} ms*2*test_inner_gc.py::test_full",
        "*at test_full (test_inner_gc.py:*)",
    ])
    assert "test_none" not in result.stdout.str().split("= pytrace =")[1]
    shorter = pytester.runpytest("--pytrace", "--pytrace-top=1", "-p", "no:cacheprovider")
    summary = shorter.stdout.str().split("= pytrace =")[1]
    assert "(top 1)" in summary and summary.count("test_inner_gc.py::") == 2  # one row per table


def test_more_longest_pauses_than_the_gc_hook_keeps_are_read_from_the_trace(
        pytester, monkeypatch):
    from pytrace.hooks import gcevents

    monkeypatch.setattr(gcevents, "LONGEST_KEPT", 1)
    pytester.makeconftest(NO_AUTOMATIC_GC)
    pytester.makepyfile(test_inner_many="""
        import gc

        def test_three():
            gc.collect(0); gc.collect(1); gc.collect(2)
    """)
    result = pytester.runpytest("--pytrace", "--pytrace-top=2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pauses = pauses_of(trace_of(pytester, "test_inner_many.py::test_three"))
    first, second = sorted(pauses, key=lambda p: -p.duration)[:2]
    result.stdout.fnmatch_lines([
        "longest single pauses (top 2):",
        "*",
        f"*{first.duration / 1e6:.3f} ms*{first.generation}*test_inner_many.py::test_three",
        "*at test_three (test_inner_many.py:*)",
        f"*{second.duration / 1e6:.3f} ms*{second.generation}*test_inner_many.py::test_three",
    ])


def test_inert_without_the_option(pytester):
    pytester.makepyfile(test_inner_inert="""
        import gc
        import pytest
        import pytrace.session

        @pytest.mark.gc_limits(max_collections={2: 0})
        def test_nothing_is_installed(request):
            gc.collect(2)
            assert pytrace.session.current() is None
            assert not hasattr(pytrace.start, "__wrapped__")
            assert request.config.pluginmanager.get_plugin("pytrace-recorder") is None
            assert not [c for c in gc.callbacks if "pytrace" in c.__module__]
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".pytrace").exists()
    assert "= pytrace =" not in result.stdout.str()


def test_an_inert_run_imports_no_recording_or_reading_module(pytester):
    """pytest imports the installed plugin in every run: without --pytrace,
    it must not import the tracer, the reader, or the plugin's own
    recording side (``pytrace.pytest_recording``) (issue 4)."""
    pytester.makepyfile(test_inner_lazy="""
        import sys

        def test_nothing_is_imported():
            loaded = {m for m in sys.modules if m.startswith("pytrace.")}
            # The core is chosen at import (a wrong PYTRACE_CORE fails there).
            assert loaded <= {"pytrace.pytest_plugin", "pytrace.core", "pytrace.events",
                              "pytrace._core"}
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)


ROTATION_CONFTEST = NO_AUTOMATIC_GC + """
import gc
import pytrace

def pytest_runtest_logreport(report):
    if report.when == "teardown":  # between two tests: in no test's trace
        pytrace.log("between", report.nodeid)
        gc.collect(2)
"""


def test_tests_share_the_hooks_yet_each_trace_holds_only_its_own_test(pytester):
    pytester.makeconftest(ROTATION_CONFTEST)
    pytester.makepyfile(test_inner_rotation="""
        import gc
        import time
        import pytest
        import pytrace

        installed = []

        def test_first():
            installed.append((time.sleep, list(gc.callbacks)))
            gc.collect(2)
            gc.collect(2)
            pytrace.log("test", "first")

        @pytest.mark.gc_limits(max_collections={2: 0})
        def test_second():
            # The hooks were not installed again: the GC hook's callbacks are the same objects.
            assert (time.sleep, gc.callbacks) == installed[0]
            pytrace.log("test", "second")

        @pytest.mark.pytrace(blocking=False)
        def test_other():
            assert time.sleep is not installed[0][0]
            assert gc.callbacks != installed[0][1]
            pytrace.log("test", "other")
    """)
    original_sleep, callbacks = time.sleep, list(gc.callbacks)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert time.sleep is original_sleep and gc.callbacks == callbacks  # all removed at the end
    for name in ("first", "second", "other"):
        path = trace_of(pytester, f"test_inner_rotation.py::test_{name}")
        assert pytrace.validate(path).valid
        trace = pytrace.read(path)
        assert [e.arg("message") for e in trace.events if e.name == "UserLog"] == [name]
        assert len(pauses_of(path)) == (2 if name == "first" else 0)
    result.stdout.fnmatch_lines(["GC: 2 collections (gen2 2), *"])


@pytest.mark.parametrize("ini_file, text", [
    ("pyproject.toml", '[tool.pytest.ini_options]\npytrace = true\n'
                       'pytrace_dir = "traces"\npytrace_keep = "failed"\n'),
    ("pytest.ini", "[pytest]\npytrace = true\npytrace_dir = traces\npytrace_keep = failed\n"),
])
def test_options_from_the_ini_file(pytester, ini_file, text):
    (pytester.path / ini_file).write_text(text)
    pytester.makepyfile(test_inner_suite=FAILING_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1, skipped=1)
    assert kept_traces(pytester, "traces") == FAILURES_TRACES


# -- gc_limits -------------------------------------------------------------------

GC_LIMITS_SUITE = """
    import gc
    import pytest

    @pytest.mark.gc_limits(max_collections={0: 2, 2: 1}, max_pause="10s", max_total="10s")
    def test_within_limits():
        gc.collect(0); gc.collect(0)
        gc.collect(2)

    @pytest.mark.gc_limits(max_collections={2: 0})
    def test_too_many_full_collections():
        gc.collect(0)
        gc.collect(2)

    @pytest.mark.gc_limits(max_pause="1ns", max_total="2ns")
    def test_pauses_too_long():
        gc.collect(1)
        gc.collect(1)
"""


def test_gc_limits_pass_within_and_fail_beyond_with_the_worst_pause(pytester):
    pytester.makeconftest(NO_AUTOMATIC_GC)
    pytester.makepyfile(test_inner_limits=GC_LIMITS_SUITE)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    full = trace_of(pytester, "test_inner_limits.py::test_too_many_full_collections")
    young = trace_of(pytester, "test_inner_limits.py::test_pauses_too_long")
    worst_full = max(pauses_of(full), key=lambda p: p.duration)
    result.stdout.fnmatch_lines([
        "*_ test_too_many_full_collections _*",
        "GC limits exceeded (@pytest.mark.gc_limits):",
        "  1 generation-2 collections > max_collections[2] = 0",
        f"worst pause: {worst_full.duration / 1e6:.3f} ms, generation {worst_full.generation}, "
        "triggered at (innermost first):",
        f"    test_too_many_full_collections ({pytester.path / 'test_inner_limits.py'}:12)",
        "    pytest_pyfunc_call (*_pytest*python.py:*)",
        "    ... * outer frames of pytest",
        f"trace: {full}",
        "*_ test_pauses_too_long _*",
        "GC limits exceeded (@pytest.mark.gc_limits):",
        "  longest pause * ms > max_pause 0.000 ms",
        "  total pause * ms > max_total 0.000 ms",
        "worst pause: * ms, generation 1, triggered at (innermost first):",
        f"    test_pauses_too_long ({pytester.path / 'test_inner_limits.py'}:1[67])",
        "*",
        f"trace: {young}",
    ])
    assert worst_full.generation == 2
    assert "-- pytrace --" not in result.stdout.str()  # the message already names the trace


def test_gc_limits_only_act_when_pytrace_records(pytester):
    pytester.makeconftest(NO_AUTOMATIC_GC)
    pytester.makepyfile(test_inner_limits=GC_LIMITS_SUITE)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


@pytest.mark.parametrize("text, ns", [("5ms", 5_000_000), ("200us", 200_000), ("1.5s", 1.5e9),
                                      ("7 ns", 7), ("0.5µs", 500)])
def test_durations_read_with_their_unit(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("value", [5, 0.005, "5", "5 min", "ms", "-1ms"])
def test_durations_without_a_known_unit_are_refused(value):
    with pytest.raises(ValueError, match="with a unit"):
        parse_duration(value)


# -- tests that trace themselves -----------------------------------------------

def test_a_test_that_starts_its_own_trace_keeps_it_and_gets_no_per_test_trace(pytester):
    pytester.makepyfile(test_inner_own="""
        import gc
        import pytrace

        def test_before():
            pass

        def test_traces_itself(tmp_path):
            with pytrace.region("before its own trace"):
                with pytrace.trace(tmp_path / "own.pytrace", calls=False):
                    gc.collect(2)
            own = pytrace.read(tmp_path / "own.pytrace")
            assert 2 in [e.arg("generation") for e in own.events if e.name == "GCStart"]

        def test_after():
            pass
    """)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert not trace_of(pytester, "test_inner_own.py::test_traces_itself").exists()
    assert pytrace.validate(trace_of(pytester, "test_inner_own.py::test_after")).valid
    result.stdout.fnmatch_lines([
        "2 traces in *",
        "tests without a trace of their own (1):",
        "  test_inner_own.py::test_traces_itself: the test recorded its own trace "
        "(pytrace.start inside the test)",
    ])
    assert pytrace.start is pytrace.session.start  # the plugin put the original back


def test_tests_run_inside_a_trace_already_running_go_to_that_trace(pytester, tmp_path):
    outer = tmp_path / "session.pytrace"
    pytester.makeconftest(f"""
        import pytest
        import pytrace

        @pytest.fixture(scope="session", autouse=True)
        def whole_session_trace():
            with pytrace.trace({str(outer)!r}, calls=False):
                yield
    """)
    pytester.makepyfile(test_inner_inside="""
        import pytrace

        def test_one():
            pytrace.log("test", "one")

        def test_two():
            pytrace.log("test", "two")
    """)
    result = pytester.runpytest("--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "0 traces in *",
        "tests without a trace of their own (2):",
        "  test_inner_inside.py::test_one: the test recorded its own trace*",
        f"  test_inner_inside.py::test_two: a trace was already running ({outer}); "
        "the test is in it",
    ])
    logs = [e.arg("message") for e in pytrace.read(outer).events if e.name == "UserLog"]
    assert logs == ["one", "two"]
    shorter = pytester.runpytest("--pytrace", "--pytrace-top=1", "-p", "no:cacheprovider")
    shorter.stdout.fnmatch_lines([
        "tests without a trace of their own (2):",
        "  test_inner_inside.py::test_one: *",
        "  ... and 1 more",
    ])
    assert "test_inner_inside.py::test_two:" not in shorter.stdout.str()


# -- the same outcomes with and without pytrace --------------------------------------

OUTCOMES_SUITE = """
    import asyncio
    import gc
    import threading
    import pytest
    import pytrace

    @pytest.fixture
    def broken_setup():
        raise RuntimeError("setup")

    @pytest.fixture
    def broken_teardown():
        yield
        raise RuntimeError("teardown")

    def test_pass():
        gc.collect()

    def test_fail():
        assert 1 == 2

    def test_setup_error(broken_setup):
        pass

    def test_teardown_error(broken_teardown):
        pass

    @pytest.mark.skip(reason="skipped")
    def test_skip():
        pass

    def test_skip_inside():
        pytest.skip("inside")

    @pytest.mark.xfail(reason="expected")
    def test_xfail():
        assert False

    @pytest.mark.xfail(reason="passes anyway")
    def test_xpass():
        pass

    @pytest.mark.xfail(strict=True, reason="strict")
    def test_xpass_strict():
        pass

    @pytest.mark.parametrize("n", [1, 2, 3])
    def test_param(n):
        assert n != 2

    def test_threads():
        results = []
        workers = [threading.Thread(target=results.append, args=(i,)) for i in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(results) == [0, 1, 2]

    def test_asyncio():
        async def main():
            return sum(await asyncio.gather(*(asyncio.sleep(0, i) for i in range(3))))
        assert asyncio.run(main()) == 3

    def test_own_trace(tmp_path):
        with pytrace.trace(tmp_path / "own.pytrace"):
            pass

    def test_own_region():
        with pytrace.region("mine"):
            pass

    class TestClass:
        def test_method(self):
            pass
"""


@pytest.mark.parametrize("extra", [[], ["-x"]], ids=["all", "exitfirst"])
def test_outcomes_are_identical_with_and_without_pytrace(pytester, extra):
    pytester.makepyfile(test_inner_outcomes=OUTCOMES_SUITE)
    without = outcomes(pytester.inline_run("-p", "no:cacheprovider", *extra))
    with_pytrace = outcomes(pytester.inline_run("--pytrace", "-p", "no:cacheprovider", *extra))
    assert with_pytrace == without
    assert len({nodeid for nodeid, *_ in without}) == (17 if not extra else 2)


def test_last_failed_reruns_the_same_tests_with_pytrace(pytester):
    pytester.makepyfile(test_inner_outcomes=OUTCOMES_SUITE)
    pytester.inline_run()  # fills the cache with the failures
    without = outcomes(pytester.inline_run("--lf"))
    with_pytrace = outcomes(pytester.inline_run("--lf", "--pytrace"))
    assert with_pytrace == without
    rerun = {nodeid for nodeid, *_ in without}
    assert "test_inner_outcomes.py::test_fail" in rerun
    assert "test_inner_outcomes.py::test_pass" not in rerun
    assert {p.name for p in (pytester.path / ".pytrace").iterdir()} == {
        trace_file_name(n) for n in rerun}


# -- xdist -----------------------------------------------------------------------

def test_xdist_workers_each_write_traces_and_the_controller_prints_one_summary(pytester):
    pytester.makeconftest(NO_AUTOMATIC_GC)
    pytester.makepyfile(test_inner_xdist="""
        import gc
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_collects(n):
            for _ in range(n % 3):
                gc.collect(0)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--pytrace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
    traces = [pytrace.read(trace_of(pytester, f"test_inner_xdist.py::test_collects[{n}]"))
              for n in range(8)]
    assert len({t.meta["pid"] for t in traces}) == 2
    output = result.stdout.str()
    assert output.count("= pytrace =") == 1
    result.stdout.fnmatch_lines([f"8 traces in {pytester.path / '.pytrace'}; *",
                                 "GC: 7 collections (gen0 7), *"])
