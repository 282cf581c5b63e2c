"""The exact call events of small programs, on each backend.

Every program is in ``tests/call_programs.py`` and traced with
``include=(that module,)``, so the sequences below are the whole trace:
kind plus resolved function name, timestamps left out.  The semantics
(``pytrace/hooks/calls.py``): a generator's first run is a ``CallEnter``,
each suspension a ``GenYield``, each continuation a ``GenResume``.
"""

from __future__ import annotations

import itertools
import sys

import pytest

import call_programs as programs
import pytrace
from pytrace import buffer
from pytrace.filters import CallFilter
from pytrace.recorder import MIN_BUFFER_SIZE
from pytrace.session import TracerWarning
from eventlog import BACKENDS, QUIET, call_events, open_frames, record
from eventlog import (C_CALL_EXIT as C_EXIT, CALL_EXIT as EXIT, CALL_UNWIND as UNWIND,
                      GEN_YIELD as YIELD, c_call_enter as c_enter, call_enter as enter,
                      gen_resume as resume)

#: program -> its events with the default options.
EXPECTED = {
    programs.plain: [enter("plain"), enter("leaf"), EXIT, enter("leaf"), EXIT, EXIT],
    programs.recursion: [
        enter("recursion"), enter("countdown"), enter("countdown"), enter("countdown"),
        EXIT, EXIT, EXIT, EXIT],
    programs.caught: [enter("caught"), enter("fail"), UNWIND, EXIT],
    programs.propagated: [
        enter("propagated"), enter("middle"), enter("fail"), UNWIND, UNWIND, EXIT],
    programs.generator: [
        enter("generator"), enter("numbers"), YIELD, resume("numbers"), YIELD,
        resume("numbers"), enter("leaf"), EXIT, UNWIND, EXIT],
    programs.exhausted: [
        enter("exhausted"), enter("numbers"), YIELD, resume("numbers"), YIELD,
        resume("numbers"), enter("leaf"), EXIT, EXIT, EXIT],
    programs.coroutine: [
        enter("coroutine"), enter("parent"), enter("child"), enter("Suspend.__await__"),
        YIELD, YIELD, YIELD,
        resume("parent"), resume("child"), resume("Suspend.__await__"),
        EXIT, EXIT, EXIT, EXIT],
    programs.c_calls: [enter("c_calls"), enter("leaf"), EXIT, enter("leaf"), EXIT, EXIT],
}

WITH_LIBRARY_ALONE = [enter("with_library"), enter("leaf"), EXIT, EXIT]
WITH_COLORSYS = [
    enter("with_library"), enter("leaf"), EXIT,
    enter("hls_to_rgb"), enter("_v"), EXIT, enter("_v"), EXIT, enter("_v"), EXIT, EXIT,
    EXIT]


def traced(path, program, backend, **options) -> list[tuple]:
    options.setdefault("include", (programs.MODULE,))
    return call_events(record(path, program, calls=True, backend=backend, **options))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("program", list(EXPECTED), ids=lambda p: p.__name__)
def test_program_events(trace_path, backend, program):
    assert traced(trace_path, program, backend) == EXPECTED[program]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exception_escaping_the_program_unwinds_every_frame(trace_path, backend):
    with pytest.raises(ValueError, match="raised in the callee"):
        record(trace_path, programs.escaping, calls=True, backend=backend,
               include=(programs.MODULE,))
    assert call_events(pytrace.read(trace_path)) == [
        enter("escaping"), enter("middle"), enter("fail"), UNWIND, UNWIND, UNWIND]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exception_thrown_into_generator(trace_path, backend):
    # setprofile on 3.13 cannot tell a throw from a send (documented in
    # pytrace/hooks/setprofile.py): the generator's exit looks like a yield.
    blind = backend == "setprofile" and sys.version_info >= (3, 13)
    assert traced(trace_path, programs.thrown, backend) == [
        enter("thrown"), enter("numbers_without_cleanup"), YIELD,
        resume("numbers_without_cleanup"), YIELD if blind else UNWIND, EXIT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_c_calls_when_asked(trace_path, backend):
    assert traced(trace_path, programs.c_calls, backend, c_calls=True) == [
        enter("c_calls"),
        c_enter("builtins.len"), C_EXIT,
        c_enter("dict.get"), C_EXIT,
        c_enter("builtins.sorted"), enter("leaf"), EXIT, enter("leaf"), EXIT, C_EXIT,
        EXIT]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("include, exclude, expected", [
    ((programs.MODULE,), (), WITH_LIBRARY_ALONE),
    ((programs.MODULE, "colorsys"), (), WITH_COLORSYS),
    (("call_*", "colors?s"), (), WITH_COLORSYS),
    ((programs.MODULE, "colorsys"), ("*/colorsys.py",), WITH_LIBRARY_ALONE),
    ((programs.MODULE, "colorsys"), ("colorsys",), WITH_LIBRARY_ALONE),
    (("*/tests/call_programs.py",), (), WITH_LIBRARY_ALONE),
    (("tests/call_programs.py",), (), WITH_LIBRARY_ALONE),
], ids=["module", "two-modules", "module-globs", "exclude-path", "exclude-module",
        "absolute-path-glob", "relative-path"])
def test_include_and_exclude(trace_path, backend, include, exclude, expected):
    assert traced(trace_path, programs.with_library, backend,
                  include=include, exclude=exclude) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_pytrace_never_traces_itself(trace_path, backend):
    trace = record(trace_path, programs.plain, calls=True, c_calls=True, backend=backend,
                   include=(programs.MODULE, "pytrace", "*/pytrace/*"))
    assert call_events(trace) == EXPECTED[programs.plain]
    assert {func.name for func in trace.funcs.values()} == {"plain", "leaf"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_depth(trace_path, backend):
    assert traced(trace_path, programs.recursion, backend, max_depth=2) == [
        enter("recursion"), enter("countdown"), EXIT, EXIT]
    # C calls count as a level, and so does everything below them.
    assert traced(trace_path, programs.c_calls, backend, c_calls=True, max_depth=2) == [
        enter("c_calls"), c_enter("builtins.len"), C_EXIT, c_enter("dict.get"), C_EXIT,
        c_enter("builtins.sorted"), C_EXIT, EXIT]


def traced_from_inside(path, program, backend, **options) -> list[tuple]:
    """Run ``program(start)`` where ``start()`` starts tracing; stop after it returns."""
    options = {**QUIET, "calls": True, "backend": backend, "include": (programs.MODULE,),
               **options}
    try:
        program(lambda: pytrace.start(path, **options))
    finally:
        pytrace.stop()
    return call_events(pytrace.read(path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_mid_stack_records_the_open_frames(trace_path, backend):
    assert traced_from_inside(trace_path, programs.outer, backend) == [
        open_frames("inner", "middle_frame", "outer"),
        enter("leaf"), EXIT, EXIT, EXIT, EXIT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_mid_stack_with_max_depth_keeps_the_outermost_frames(trace_path, backend):
    assert traced_from_inside(trace_path, programs.outer, backend, max_depth=2) == [
        open_frames("middle_frame", "outer"), EXIT, EXIT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_inside_a_c_call_never_closes_it(trace_path, backend):
    # sorted() began before tracing: its return must not pop anything.
    key = "start_inside_c_call.<locals>.key"
    assert traced_from_inside(trace_path, programs.start_inside_c_call, backend,
                              c_calls=True) == [
        open_frames(key, "start_inside_c_call"), enter("leaf"), EXIT, EXIT,
        enter(key), enter("leaf"), EXIT, EXIT,
        EXIT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_internal_error_stops_tracing_and_never_reaches_the_program(trace_path, backend,
                                                                    monkeypatch):
    flushes = []

    def fail_twentieth_flush(point):
        if point == "flush:start":
            flushes.append(point)
            if len(flushes) == 20:
                raise RuntimeError("injected flush failure")

    monkeypatch.setattr(buffer, "injector", fail_twentieth_flush)
    with pytest.warns(TracerWarning, match="injected flush failure"):
        record(trace_path, programs.everything, calls=True, backend=backend,
               buffer_size=MIN_BUFFER_SIZE, include=(programs.MODULE,))
    assert len(flushes) >= 20 and pytrace.session.current() is None
    assert sys.getprofile() is None
    if sys.version_info >= (3, 12):
        assert sys.monitoring.get_tool(sys.monitoring.PROFILER_ID) is None
    # What was recorded before the failure is a valid prefix: no pop unmatched.
    recorded = call_events(pytrace.read(trace_path))
    assert recorded[0] == enter("everything")
    pops = {EXIT, UNWIND, YIELD, C_EXIT}
    depths = itertools.accumulate(-1 if event in pops else 1 for event in recorded)
    assert min(depths) >= 0
    assert len(recorded) < len(traced(trace_path, programs.everything, backend))


@pytest.mark.parametrize("pattern, module, filename, matched", [
    ("json", "json", "/lib/json/__init__.py", True),
    ("json", "json.decoder", "/lib/json/decoder.py", True),  # a package covers its modules
    ("json", "jsonschema", "/site/jsonschema/__init__.py", False),
    ("app.*", "app.models", "/src/app/models.py", True),
    ("app.*", "application", "/src/application.py", False),
    ("*/src/app/*.py", "m", "/home/me/src/app/models.py", True),
    ("src/app/*.py", "m", "/home/me/src/app/models.py", True),  # relative: at a "/"
    ("src/app/*.py", "m", "/home/me/xsrc/app/models.py", False),
    ("__main__", None, "/src/script.py", False),  # no module name to match
])
def test_include_glob_matches_a_module_or_a_path(pattern, module, filename, matched):
    assert CallFilter(include=(pattern,)).traces(module, filename) is matched
    assert CallFilter(exclude=(pattern,)).traces(module, filename) is not matched
