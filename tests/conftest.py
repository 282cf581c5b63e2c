"""Run selected tests once per core (``pytrace.core``: C and pure Python).

The whole suite runs on the core that ``PYTRACE_CORE`` selects (the C core
unless it is unavailable or ``PYTRACE_CORE=python``).  The tests listed in
``EACH_CORE`` run in addition on every available core, in one process, with
ids ``[core=c]`` / ``[core=python]``: they are the ones whose subject is the
slot itself (re-entrancy, stress) or the events a backend writes, where the
two cores must behave identically.  Tests in ``PYTHON_CORE_ONLY`` run on
the Python core only (see there why).

Without the C core (e.g. no compiler), ``[core=c]`` cases fail with the
reason: a missing C core is a broken installation, not a skip.
"""

from __future__ import annotations

import pytest

from pytrace import core

#: module name -> test names run once per core (None: every test of the module).
EACH_CORE: dict[str, set[str] | None] = {
    "test_reentrancy": None,
    "test_stress": None,
    "test_calls": None,
    "test_backends": None,
    "test_call_counts": None,
    "test_sampler": None,
}

#: module name -> tests that only make sense on the Python core: the broken
#: slots are Python subclasses, and the C core has no gap between an event's
#: clock read and its append for a collection to fall into (no Python code
#: runs there), so that scenario cannot be produced on it.
PYTHON_CORE_ONLY: dict[str, set[str]] = {
    "test_reentrancy": {
        "test_check_catches_a_slot_that_writes_headers_only_for_events",
        "test_check_catches_a_slot_that_holds_its_buffer",
        "test_flushing_gc_between_an_events_clock_read_and_its_append",
    },
}


def _cores_for(module: str, test: str) -> tuple[str, ...]:
    if test in PYTHON_CORE_ONLY.get(module, ()):
        return ("python",)
    if module in EACH_CORE and (EACH_CORE[module] is None or test in EACH_CORE[module]):
        return core.NAMES
    return ()


def pytest_generate_tests(metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    cores = _cores_for(module, metafunc.function.__name__)
    if cores:
        metafunc.parametrize("pytrace_core", cores, indirect=True,
                             ids=[f"core={name}" for name in cores])


@pytest.fixture(autouse=True)
def pytrace_core(request):
    """The active core's name; for a test parametrized by core, that core is
    made the active one for the test's recorders.  (Autouse, so that
    ``pytest_generate_tests`` can parametrize any test through it.)"""
    wanted = getattr(request, "param", None)
    if wanted is None:
        yield core.name
        return
    previous = core.use(wanted)
    try:
        yield wanted
    finally:
        core.use(previous)


@pytest.fixture(autouse=True)
def no_trace_left_running():
    """A test that leaves a trace running fails (in teardown) and the trace
    is stopped, so that one failure cannot fail every later test with
    "a trace is already being recorded"."""
    from pytrace import session

    running_before = session.current()  # e.g. the suite itself runs under `pytrace run`
    yield
    leftover = session.current()
    if leftover is not None and leftover is not running_before:
        session.stop()
        pytest.fail(f"the test left a trace running ({leftover.path})")
