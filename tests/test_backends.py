"""The call backends: which one runs, that they agree, threads, and how the
``sys.monitoring`` backend shares the interpreter with other tools."""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest

import call_programs as programs
import pytrace
from eventlog import BACKENDS, QUIET, call_events, open_frames, record
from eventlog import CALL_EXIT as EXIT, CALL_UNWIND as UNWIND, GEN_YIELD as YIELD
from eventlog import call_enter as enter
from pytrace.session import TracerError

MONITORING = sys.version_info >= (3, 12)
needs_monitoring = pytest.mark.skipif(not MONITORING, reason="sys.monitoring is new in Python 3.12")

#: Single-threaded programs both backends must record alike (``thrown`` is
#: the documented exception, see test_backends_differ_only_where_documented).
AGREEING_PROGRAMS = [
    programs.plain, programs.recursion, programs.parity, programs.caught, programs.propagated,
    programs.generator, programs.exhausted, programs.closed, programs.coroutine,
    programs.c_calls, programs.with_library,
]


def calls_of(path, program, backend, **options) -> list[tuple]:
    options.setdefault("include", (programs.MODULE, "colorsys"))
    return call_events(record(path, program, calls=True, backend=backend, **options))


# -- which backend ---------------------------------------------------------------


@pytest.mark.skipif(MONITORING, reason="the monitoring backend exists on 3.12+")
def test_monitoring_backend_is_refused_before_3_12(trace_path):
    refusal = r"needs sys\.monitoring \(Python 3\.12\+\).*'setprofile'"
    with pytest.raises(TracerError, match=refusal):
        pytrace.start(trace_path, **{**QUIET, "calls": True, "backend": "monitoring"})
    assert pytrace.session.current() is None


def hooks_in_use() -> tuple:
    """(holder of sys.monitoring's profiler id, class of this thread's profile
    function: the Python core's profiler method's object, or the C core's
    ``_core.Calls``, which ``sys.getprofile`` returns itself)."""
    holder = sys.monitoring.get_tool(sys.monitoring.PROFILER_ID) if MONITORING else None
    profiler = sys.getprofile()
    return holder, profiler and type(getattr(profiler, "__self__", profiler)).__name__


#: Stands for the profile function's class on the active core.
PROFILER = object()


@pytest.mark.parametrize("backend, expected", [
    ("auto", ("pytrace", None) if MONITORING else (None, PROFILER)),
    pytest.param("monitoring", ("pytrace", None), marks=needs_monitoring),
    ("setprofile", (None, PROFILER)),
])
def test_backend_in_use(trace_path, backend, expected, pytrace_core):
    profiler = "ThreadProfiler" if pytrace_core == "python" else "Calls"
    expected = tuple(profiler if part is PROFILER else part for part in expected)
    seen = []
    record(trace_path, lambda: seen.append(hooks_in_use()), calls=True, backend=backend)
    assert seen == [expected]
    assert hooks_in_use() == (None, None)


# -- agreement -------------------------------------------------------------------


@needs_monitoring
@pytest.mark.parametrize("program", AGREEING_PROGRAMS, ids=lambda p: p.__name__)
def test_backends_record_the_same_events(tmp_path, program):
    by_backend = [calls_of(tmp_path / f"{backend}.pytrace", program, backend, c_calls=True)
                  for backend in ("monitoring", "setprofile")]
    assert by_backend[0] == by_backend[1]
    assert by_backend[0][0] == enter(program.__name__)


@needs_monitoring
def test_backends_differ_only_where_documented(tmp_path):
    """An exception thrown into a generator: setprofile on 3.13 cannot see
    the throw, so the generator's exit at its yield looks like a yield."""
    monitoring, setprofile = (calls_of(tmp_path / f"{b}.pytrace", programs.thrown, b)
                              for b in ("monitoring", "setprofile"))
    if sys.version_info >= (3, 13):
        assert [YIELD if e == UNWIND else e for e in monitoring] == setprofile != monitoring
    else:
        assert monitoring == setprofile


# -- threads ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_started_before_and_after_start_are_traced(trace_path, backend):
    ready, go = threading.Event(), threading.Event()
    before = threading.Thread(target=programs.waiting_worker, args=(ready, go))
    before.start()
    ready.wait()
    try:
        with pytrace.trace(trace_path, **{**QUIET, "calls": True, "backend": backend,
                                          "include": (programs.MODULE,)}):
            after = threading.Thread(target=programs.worker)
            after.start()
            after.join()
            go.set()
            before.join()
    finally:
        go.set()
        before.join()
    trace = pytrace.read(trace_path)
    timelines = sorted(filter(None, (call_events(trace, tid) for tid in trace.threads)))
    started_after = [enter("worker"), enter("leaf"), EXIT, EXIT]
    running_before = [open_frames("waiting_worker"), enter("leaf"), EXIT, EXIT]
    if backend == "setprofile" and not MONITORING:
        # Documented: 3.11 cannot give a running thread a profile function.
        assert timelines == [started_after]
    else:
        assert timelines == sorted([started_after, running_before])


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_one_after_another_each_get_their_own_timeline(trace_path, backend):
    """Threads that end before the next starts often get the same ident from
    the OS; each must still have its own slot, its own balanced calls."""
    with pytrace.trace(trace_path, **{**QUIET, "threads": True, "calls": True,
                                      "backend": backend, "include": (programs.MODULE,)}):
        for _ in range(5):
            thread = threading.Thread(target=programs.worker)
            thread.start()
            thread.join()
    trace = pytrace.read(trace_path)
    workers = [tid for tid in trace.threads if call_events(trace, tid)]
    assert [call_events(trace, tid) for tid in workers] == [
        [enter("worker"), enter("leaf"), EXIT, EXIT]] * 5
    for tid in workers:
        assert [e.name for e in trace.events if e.tid == tid][0] == "ThreadStart"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thread_outliving_the_trace_stops_being_profiled(trace_path, backend):
    go = threading.Event()
    profile_after_stop = []

    def body():
        programs.leaf(1)
        go.wait()
        programs.leaf(2)
        profile_after_stop.append(sys.getprofile())

    with pytrace.trace(trace_path, **{**QUIET, "calls": True, "backend": backend,
                                      "include": (programs.MODULE,)}):
        thread = threading.Thread(target=body)
        thread.start()
    go.set()
    thread.join()
    assert profile_after_stop == [None]
    assert (sys.getprofile(), threading.getprofile()) == (None, None)
    trace = pytrace.read(trace_path)
    assert list(filter(None, (call_events(trace, tid) for tid in trace.threads))) == [
        [enter("leaf"), EXIT]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pytrace_own_threads_are_never_traced(trace_path, backend):
    # The flusher thread wakes every 5 ms into threading.Event.wait, which
    # the include globs would record if it were the program's.
    trace = record(trace_path, programs.napping, calls=True, backend=backend,
                   flush_interval=0.005, include=(programs.MODULE, "threading"))
    assert call_events(trace) == [enter("napping"), enter("leaf"), EXIT, EXIT]


# -- sys.monitoring manners ----------------------------------------------------------


@contextlib.contextmanager
def tools_holding(*tool_ids):
    """Occupy ``tool_ids`` as "dummy-<id>", like other tools would."""
    monitoring = sys.monitoring
    for tool in tool_ids:
        monitoring.use_tool_id(tool, f"dummy-{tool}")
    try:
        yield
    finally:
        for tool in tool_ids:
            monitoring.free_tool_id(tool)


@needs_monitoring
def test_takes_the_next_free_tool_id_and_leaves_the_holder_alone(trace_path):
    monitoring = sys.monitoring
    events = monitoring.events
    dummy_saw = []
    leaf = programs.leaf.__code__
    with tools_holding(monitoring.PROFILER_ID):
        monitoring.register_callback(2, events.PY_START, lambda code, offset: dummy_saw.append(1))
        monitoring.set_local_events(2, leaf, events.PY_START)
        try:
            seen = []
            trace = record(trace_path, lambda: (seen.append(monitoring.get_tool(4)),
                                                programs.plain()),
                           calls=True, backend="monitoring", include=(programs.MODULE,))
            programs.leaf(0)
            assert monitoring.get_tool(2) == "dummy-2"
        finally:
            monitoring.set_local_events(2, leaf, 0)
            monitoring.register_callback(2, events.PY_START, None)
    assert seen == ["pytrace"]
    assert monitoring.get_tool(4) is None
    assert call_events(trace)[:2] == [enter("plain"), enter("leaf")]
    assert len(dummy_saw) == 3  # two leaf calls while pytrace ran, one after


@needs_monitoring
def test_no_free_tool_id_names_every_holder(trace_path):
    with tools_holding(2, 3, 4):
        with pytest.raises(TracerError) as failure:
            pytrace.start(trace_path, **{**QUIET, "calls": True, "backend": "monitoring"})
        assert [sys.monitoring.get_tool(tool) for tool in (2, 3, 4)] == [
            "dummy-2", "dummy-3", "dummy-4"]
    message = str(failure.value)
    assert "2 by 'dummy-2', 4 by 'dummy-4', 3 by 'dummy-3'" in message
    assert "backend='setprofile'" in message
    assert pytrace.session.current() is None


@needs_monitoring
def test_stop_leaves_the_tool_id_clean_for_the_next_tool(trace_path):
    monitoring = sys.monitoring
    events = monitoring.events
    # colorsys is filtered out, so pytrace DISABLEs its code; c_calls uses
    # every event pytrace registers.
    record(trace_path, programs.with_library, calls=True, c_calls=True, backend="monitoring",
           include=(programs.MODULE,))
    assert monitoring.get_tool(2) is None
    seen = []
    with tools_holding(2):
        left_behind = [monitoring.register_callback(2, event, None) for event in (
            events.PY_START, events.PY_RESUME, events.PY_RETURN, events.PY_YIELD,
            events.PY_UNWIND, events.PY_THROW, events.CALL, events.C_RETURN, events.C_RAISE)]
        local = monitoring.get_local_events(2, programs.with_library.__code__)
        monitoring.register_callback(2, events.PY_START,
                                     lambda code, offset: seen.append(code.co_name))
        monitoring.set_events(2, events.PY_START)
        programs.with_library()
        monitoring.set_events(2, 0)
        monitoring.register_callback(2, events.PY_START, None)
    assert left_behind == [None] * 9
    assert local == 0
    assert seen == ["with_library", "leaf", "hls_to_rgb", "_v", "_v", "_v"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_session_records_what_the_first_filtered_out(tmp_path, backend):
    first = calls_of(tmp_path / "1.pytrace", programs.with_library, backend,
                     include=(programs.MODULE,))
    second = calls_of(tmp_path / "2.pytrace", programs.with_library, backend)
    third = calls_of(tmp_path / "3.pytrace", programs.with_library, backend,
                     include=(programs.MODULE,))
    assert first == third == [enter("with_library"), enter("leaf"), EXIT, EXIT]
    assert second == first[:3] + [
        enter("hls_to_rgb"), enter("_v"), EXIT, enter("_v"), EXIT, enter("_v"), EXIT, EXIT,
        EXIT]


EQUAL_CODE_SOURCE = "def f(x):\n    return x + 1\n"


def function_from(filename: str, module: str):
    namespace = {"__name__": module}
    exec(compile(EQUAL_CODE_SOURCE, filename, "exec"), namespace)
    return namespace["f"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_code_objects_are_decided_and_kept_apart(trace_path, backend):
    """Code equality ignores the file and the name: two such codes, one
    traced and one excluded, each keep their own decision, and both stay
    alive while it is kept (their ids key the lookups)."""
    from pytrace.hooks.calls import CallBackend

    session = pytrace.start(trace_path, **{**QUIET, "calls": True, "backend": backend,
                                           "exclude": ("skipme",)})
    try:
        kept, skipped = function_from("/x/keep.py", "keepme"), function_from("/x/skip.py", "skipme")
        assert kept.__code__ == skipped.__code__ and kept.__code__ is not skipped.__code__
        kept(1)
        skipped(1)
        calls = next(stop.__self__ for stop in session._uninstall
                     if isinstance(getattr(stop, "__self__", None), CallBackend))
        assert calls.codes[id(skipped.__code__)] is skipped.__code__
        assert calls.entries[id(kept.__code__)] and not calls.entries[id(skipped.__code__)]
        tool = getattr(calls, "tool", None)
    finally:
        pytrace.stop()
    if tool is not None:  # the monitoring backend leaves no local events behind
        assert sys.monitoring.get_local_events(tool, kept.__code__) == 0
    names = {(e.arg("func").name, e.arg("func").file) for e in pytrace.read(trace_path).events
             if e.name == "CallEnter"}
    assert ("f", "/x/keep.py") in names and ("f", "/x/skip.py") not in names
