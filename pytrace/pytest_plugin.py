"""``pytest --pytrace``: one trace per test, a GC-pause summary, and GC limits.

Registered through the ``pytest11`` entry point, the plugin is inert (it only
adds its options and markers; no hook is installed and no file written)
unless ``--pytrace`` or the ini option ``pytrace = true`` turns it on.

Per test, the trace runs from the start of setup to the end of teardown, in
the light Go-style mode (GC, threads, blocking, asyncio, user annotations,
CPU samples at ``--pytrace-sample-rate``, 100 a second by default;
``--pytrace-calls`` or ``@pytest.mark.pytrace(calls=True)`` add function
calls).  It holds one task named after the test, with the regions
``setup``, ``call`` and ``teardown``, so fixture cost is visible (as pytest
runs them, a module- or session-scoped fixture is set up in the first test
that uses it and torn down in the last).  The hooks stay installed from one
test to the next, inert in between (``pytrace.session.park``): installing
them was most of a test's tracing cost; a test whose options differ (a
``pytrace`` marker) gets its own installed.  The periodic flusher's thread
stays too (``Recorder.close(keep_flusher=True)``), so a test that hangs or
crashes the process still leaves its events up to the last flush interval
in its file; so does the CPU sampler's, asleep between tests.  Files go
to ``--pytrace-dir`` (default ``.pytrace`` in the root directory), one per
test, named by ``pytest_recording.trace_file_name``; a trace left there by
an earlier run of the same test is replaced, other files are left alone.
Each report carries the path as the user property ``pytrace_trace`` (which
``--junitxml`` records), and a failure's report shows it.  With
``--pytrace-keep=failed`` only the traces of tests that failed or errored
stay; a test skipped before its body ran leaves no trace.

The GC figures of each test travel on its teardown report (a plain dict
under ``report.pytrace``), so under pytest-xdist the controller, which sees
every worker's reports, prints one merged summary.

Tests that are not given a trace of their own, each listed in the summary:

- a test that starts while another trace is running (``pytrace run -m
  pytest``, or a trace left running by an earlier test): its events go to
  that trace;
- a test that calls ``pytrace.start``/``pytrace.trace`` itself: its own trace
  wins.  The per-test session is marked ``on_superseded``, so ``start``
  first calls ``PytracePlugin._yield_to_test_trace``, which ends the
  per-test trace (with a log entry saying why) and deletes it; the test's
  own trace then starts as if the plugin were not there.

Markers:

- ``@pytest.mark.pytrace(calls=True, ...)``: recording options for this test
  (any ``pytrace.options.Options`` field).
- ``@pytest.mark.gc_limits(max_pause="5ms", max_total="20ms",
  max_collections={2: 0})``: fail the test when a GC pause during its setup
  or call is longer than ``max_pause``, when their sum exceeds ``max_total``,
  or when a generation collects more often than allowed.  The message names
  the worst pause, its generation, its triggering stack and the trace file.
  The check reads the trace written so far right after the call, so the
  limits cover the collections the test's own fixtures and body caused.
  Like pytest-memray's limits, the marker only acts when pytrace records.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest

#: What ``--pytrace-keep`` takes.
KEEP_CHOICES = ("all", "failed")
#: CPU samples per second of each traced thread, unless told otherwise: Go's
#: CPU profiler's rate.  The sampler's thread stays from test to test, idle
#: between them (``hooks/sampler.py``).
DEFAULT_SAMPLE_RATE = 100.0


def pytest_addoption(parser):
    group = parser.getgroup("pytrace", "pytrace execution traces")
    group.addoption("--pytrace", action="store_true", default=None,
                    help="record an execution trace of every test")
    group.addoption("--pytrace-dir", default=None, metavar="DIR",
                    help="where to write the traces (default: .pytrace in the root directory)")
    group.addoption("--pytrace-calls", action="store_true", default=None,
                    help="also record Python function calls (default: the light Go-style mode)")
    group.addoption("--pytrace-keep", choices=KEEP_CHOICES, default=None,
                    help="keep the traces of all tests, or only of failed ones (default: all)")
    group.addoption("--pytrace-top", type=int, default=None, metavar="N",
                    help="rows in each table of the GC summary (default: 5)")
    group.addoption("--pytrace-sample-rate", default=None, metavar="HZ",
                    help=f"CPU samples of each traced thread per second, 0 for none "
                         f"(default: {DEFAULT_SAMPLE_RATE:g})")
    parser.addini("pytrace", type="bool", default=False, help="record a trace of every test")
    parser.addini("pytrace_dir", default=".pytrace",
                  help="where to write the traces, relative to the root directory")
    parser.addini("pytrace_calls", type="bool", default=False,
                  help="also record Python function calls")
    parser.addini("pytrace_keep", default="all", help="all | failed")
    parser.addini("pytrace_top", default="5", help="rows in each table of the GC summary")
    parser.addini("pytrace_sample_rate", default=f"{DEFAULT_SAMPLE_RATE:g}",
                  help="CPU samples of each traced thread per second (0: none)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pytrace(**options): pytrace recording options for this test "
                   "(e.g. calls=True)")
    config.addinivalue_line(
        "markers", "gc_limits(max_pause=None, max_total=None, max_collections=None): with "
                   "--pytrace, fail the test if its GC pauses exceed these limits "
                   "(durations like '5ms'; max_collections like {2: 0})")
    settings = Settings.from_config(config)
    if settings.enabled:
        # Imported only now: pytest imports this module in every run once
        # pytrace is installed, and the recording side's classes alone took
        # ~2 ms to make (issue 4: an inert plugin costs nothing).
        from .pytest_recording import PytracePlugin

        config.pluginmanager.register(PytracePlugin(settings), "pytrace-recorder")


class Settings(NamedTuple):
    """The plugin's options, from the command line and the ini file.  A
    named tuple, not a dataclass: making the class costs ~50 us, a
    dataclass's ~400 us, in every pytest run."""

    enabled: bool
    directory: str
    calls: bool
    keep: str
    top: int
    sample_rate: float = DEFAULT_SAMPLE_RATE

    @classmethod
    def from_config(cls, config) -> "Settings":
        """Command-line options win over ini ones.  A directory given on the
        command line is relative to where pytest was started; one from the ini
        file to the root directory (as pytest's ``cache_dir``)."""
        def pick(option, ini):
            value = config.getoption(option)
            return config.getini(ini) if value is None else value

        keep = pick("--pytrace-keep", "pytrace_keep")
        if keep not in KEEP_CHOICES:
            raise pytest.UsageError(f"pytrace_keep = {keep!r}: use 'all' or 'failed'")
        try:
            top = int(pick("--pytrace-top", "pytrace_top"))
        except ValueError:
            raise pytest.UsageError("pytrace_top must be a whole number") from None
        rate = pick("--pytrace-sample-rate", "pytrace_sample_rate")
        try:
            sample_rate = float(rate)
        except ValueError:
            sample_rate = -1.0
        if not 0 <= sample_rate < float("inf"):
            raise pytest.UsageError(f"pytrace sample rate {rate!r}: give the CPU samples per "
                                    f"second as a number, e.g. 100, or 0 for none")
        base = (config.invocation_params.dir if config.getoption("--pytrace-dir")
                else config.rootpath)
        directory = os.path.join(base, pick("--pytrace-dir", "pytrace_dir"))
        return cls(bool(pick("--pytrace", "pytrace")), os.path.normpath(directory),
                   bool(pick("--pytrace-calls", "pytrace_calls")), keep, top, sample_rate)
