"""What ``pytest --pytrace`` does once it records: a trace per test, GC limits, the summary.

``pytrace.pytest_plugin``, the entry point pytest imports in every run,
imports this module only when pytrace is enabled; its docstring describes
the plugin as its users see it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import warnings
from typing import TYPE_CHECKING, NamedTuple

import _pytest
import pluggy
import pytest

import pytrace

# The tracer (``pytrace.session``, ``pytrace.options``, the hooks) is imported
# through ``_tracing`` and ``_options_module``, when first needed.
if TYPE_CHECKING:
    from .options import Options
    from .pytest_plugin import Settings
    from .session import Session

#: The user property that carries a test's trace path.
PATH_PROPERTY = "pytrace_trace"
#: The teardown report's attribute that carries a test's figures (a dict).
RESULT_ATTRIBUTE = "pytrace"
#: Longest readable part of a file name, in bytes (Linux allows 255 per name;
#: the hash and the suffix add 18).
MAX_NAME_BYTES = 180
#: Frames in these directories are pytest's own: a stack shown to the user
#: stops at the first of them.
RUNNER_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (_pytest, pluggy, pytest))
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
#: Per-thread buffer of a test traced in the light mode (see ``PytracePlugin.light``).
LIGHT_BUFFER_SIZE = 8 * 1024
#: Characters a trace file name keeps (``trace_file_name``); the others become ``_``.
_UNSAFE_NAME_CHARS = re.compile(r"[^\w.\-\[\]=,+]")


def trace_file_name(nodeid: str) -> str:
    """A readable, unique, valid Linux file name for a test id.

    ``::`` and ``/`` become ``-``; characters other than letters (of any
    script), digits and ``_.-[]=,+`` become ``_``; a readable part longer
    than ``MAX_NAME_BYTES`` is cut (at a character boundary).  A short hash
    of the full id always follows, so two ids whose readable parts coincide
    (``t[a b]`` and ``t[a_b]``, or two long ids cut to the same prefix) still
    get different files.
    """
    readable = nodeid.replace("::", "-").replace("/", "-")
    readable = _UNSAFE_NAME_CHARS.sub("_", readable).lstrip(".")
    if len(readable) > MAX_NAME_BYTES // 4:  # else short enough even in 4-byte characters
        readable = readable.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    digest = hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}.pytrace"


def parse_duration(value) -> int:
    """Nanoseconds from a string like ``'5ms'``, ``'200us'``, ``'1.5s'``.

    A bare number is refused: ``max_pause=5`` could mean seconds or
    milliseconds, and a limit read the wrong way passes silently.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)\s*", str(value))
    if isinstance(value, (int, float)) or not match:
        raise ValueError(f"cannot read the duration {value!r}; write it with a unit, "
                         f"e.g. '5ms', '200us' or '1.5s'")
    return round(float(match.group(1)) * _DURATION_UNITS[match.group(2)])


class GCLimits(NamedTuple):
    """The limits of a ``gc_limits`` marker, in nanoseconds and collections."""

    max_pause: int | None = None
    max_total: int | None = None
    #: generation -> most collections allowed.
    max_collections: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, mark) -> "GCLimits":
        """The limits of a ``gc_limits`` marker; ``ValueError`` names what is wrong."""
        if mark.args:
            raise ValueError("gc_limits takes keyword arguments only: "
                             "max_pause, max_total, max_collections")
        unknown = sorted(set(mark.kwargs) - {"max_pause", "max_total", "max_collections"})
        if unknown:
            raise ValueError(f"gc_limits: unknown limit {unknown[0]!r}; "
                             f"use max_pause, max_total or max_collections")
        pause, total = mark.kwargs.get("max_pause"), mark.kwargs.get("max_total")
        collections = mark.kwargs.get("max_collections") or {}
        if not isinstance(collections, dict) or not all(
                isinstance(g, int) and isinstance(n, int) and n >= 0
                for g, n in collections.items()):
            raise ValueError("gc_limits: max_collections maps a generation to the most "
                             "collections allowed, e.g. {2: 0}")
        return cls(None if pause is None else parse_duration(pause),
                   None if total is None else parse_duration(total),
                   tuple(sorted(collections.items())))

    def problems(self, pauses: "GCPauses") -> list[str]:
        """The limits that ``pauses`` exceed, as sentences."""
        found = []
        longest, total = pauses.longest_pause, pauses.total
        if self.max_pause is not None and longest > self.max_pause:
            found.append(f"longest pause {_ms(longest)} > max_pause {_ms(self.max_pause)}")
        if self.max_total is not None and total > self.max_total:
            found.append(f"total pause {_ms(total)} > max_total {_ms(self.max_total)}")
        counts = dict(pauses.collections)
        for generation, allowed in self.max_collections:
            count = counts.get(generation, 0)
            if count > allowed:
                found.append(f"{count} generation-{generation} collections > "
                             f"max_collections[{generation}] = {allowed}")
        return found


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


class GCPauses(NamedTuple):
    """The collections of one trace, as the figures and the limits need them.

    Taken from the GC hook, which counts them as it writes them
    (``of_session``); reading each test's trace back cost ~0.8 ms a test
    that collected (issue 4).  Read from the file (``of_trace``) when the
    hook cannot tell: more pauses asked for than it keeps.
    """

    #: Nanoseconds (pytrace's clocks count nanoseconds: ticks are ns).
    total: int = 0
    longest_pause: int = 0
    #: ((generation, collections), ...) for each generation that collected.
    collections: tuple = ()
    #: The longest pauses, longest first: ((duration, generation, innermost frame), ...).
    longest: tuple = ()

    @classmethod
    def of_session(cls, session, path: str, top: int) -> "GCPauses":
        hook = session.gc
        if hook is None or not any(hook.collections):  # GC not recorded, or no collection
            return NO_PAUSES
        longest = hook.longest_pauses(top)
        if longest is None:
            session.recorder.writer.sync()  # a background thread may still write the file
            return cls.of_trace(path, top)
        return cls(
            hook.total_pause, hook.longest[0],
            tuple((g, n) for g, n in enumerate(hook.collections) if n),
            tuple((ticks, generation, _code_frame(*where) if where else "")
                  for ticks, generation, where in longest))

    @classmethod
    def of_trace(cls, path: str, top: int) -> "GCPauses":
        pauses = _pauses_in(path)
        per_generation: dict[int, int] = {}
        for pause in pauses:
            per_generation[pause.generation] = per_generation.get(pause.generation, 0) + 1
        longest = sorted(pauses, key=lambda p: -p.duration)[:top]
        return cls(
            sum(p.duration for p in pauses), max((p.duration for p in pauses), default=0),
            tuple(sorted(per_generation.items())),
            tuple((p.duration, p.generation, _frame(p.stack[0]) if p.stack else "")
                  for p in longest))


#: The figures of a trace without collections (most tests' own).
NO_PAUSES = GCPauses()


class Recording:
    """The plugin's state for the test being run.  A plain class, not a
    dataclass: making a dataclass cost ~0.5 ms in every run that records.
    The class attributes are the defaults."""

    #: Why the test has no trace of its own (None if it has one).
    note: str | None = None
    #: What is wrong with the test's markers (None if nothing).
    error: str | None = None
    failed: bool = False
    #: The failure is the GC limits' own, whose message names the trace already.
    over_gc_limits: bool = False
    #: Skipped before its body ran: nothing worth keeping.
    skipped: bool = False
    #: The trace's collections, taken when it stopped.
    pauses: GCPauses | None = None
    #: Clock (ns) when the trace started and stopped.
    started: int = 0
    stopped: int = 0
    #: Bytes in the trace file once it stopped (the writer counts them: no ``stat``).
    size: int = 0
    #: The region of the phase under way, until its report.
    region: pytrace.region | None = None

    def __init__(self, item: pytest.Item, nodeid: str, path: str) -> None:
        self.item = item
        self.nodeid = nodeid
        self.path = path
        self.session: Session | None = None
        self.task: pytrace.task | None = None
        self.limits: GCLimits | None = None

    def recording(self) -> bool:
        """True while this test's own trace is the running one (the session
        object lives on, parked, for later tests' traces)."""
        return (self.session is not None and not self.stopped
                and self.session is _tracing().current())


class Figures(NamedTuple):
    """What the summary needs of one test.  It travels as a plain dict of
    these fields (``report.pytrace`` on the teardown report), so xdist can
    ship it; the summary folds each dict into its totals, and makes a
    ``Figures`` only for a test its tables may list (one with collections)."""

    nodeid: str
    #: The kept trace, or None (not kept, or the test had no trace).
    path: str | None = None
    size: int = 0
    #: From the start of the trace to its stop.
    wall_ns: int = 0
    gc_ns: int = 0
    #: Collections per generation: [[generation, count], ...].
    collections: tuple = ()
    #: The test's longest pauses: [[duration_ns, generation, innermost frame], ...].
    longest: tuple = ()
    note: str | None = None


#: The defaults of every field of ``Figures`` but ``nodeid``.
NO_FIGURES = dict(Figures._field_defaults)


class Summary:
    """The terminal summary's figures, folded in one test at a time: the
    totals, the notes of the first ``top`` tests without a trace of their
    own, and the tests with collections (the only rows the GC tables can
    show).  Holding a ``Figures`` per test cost an object per test and
    memory that grew with the suite."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.traced = 0
        self.kept = 0
        self.size = 0
        self.wall_ns = 0
        #: (nodeid, note) of the first ``top`` tests without a trace of their own.
        self.untraced: list[tuple[str, str]] = []
        self.untraced_count = 0
        #: The traced tests with collections, in the order they reported.
        self.collected: list[Figures] = []

    def add(self, figures: dict) -> None:
        """Fold in one test's figures (the dict of its teardown report)."""
        note = figures["note"]
        if note is not None:
            self.untraced_count += 1
            if len(self.untraced) < self.top:
                self.untraced.append((figures["nodeid"], note))
            return
        self.traced += 1
        self.kept += figures["path"] is not None
        self.size += figures["size"]
        self.wall_ns += figures["wall_ns"]
        if figures["collections"]:
            self.collected.append(Figures(**figures))


class PytracePlugin:
    """Registered only when pytrace is enabled: records, checks limits, summarizes."""

    def __init__(self, settings: Settings) -> None:
        from .options import Options

        self.settings = settings
        #: The options' defaults without calls (the light Go-style mode).
        #: Light mode also gets a smaller per-thread buffer: its events are
        #: few (a short test's trace is ~500 bytes), and a fresh 64 KiB
        #: buffer for every test's file cost ~10 us a test (its allocation
        #: and first writes); 8 KiB still holds ~400 light events per flush.
        self.light = Options(calls=settings.calls, sample_rate=settings.sample_rate,
                             **({} if settings.calls else {"buffer_size": LIGHT_BUFFER_SIZE}))
        self.current: Recording | None = None
        #: From every test's teardown report (this process's, or xdist workers').
        self.summary = Summary(settings.top)
        #: The regions of every test, made once (a region object can be
        #: entered again, by any test).
        self._regions = {name: pytrace.region(name) for name in ("setup", "call", "teardown")}
        #: Where each test's file goes, less its name (a test's file name
        #: never starts with ``/``: ``os.path.join`` is not needed).
        self._path_prefix = os.path.join(settings.directory, "")
        #: Options whose hooks are imported: the first test's trace must not
        #: hold their import (its time, and the collections it triggers).
        self._imported = {self.light}
        _tracing().hook_modules(self.light)

    def pytest_sessionstart(self, session):
        os.makedirs(self.settings.directory, exist_ok=True)

    def pytest_unconfigure(self, config):
        self._end_recording()  # a run interrupted in the middle of a test
        _tracing().unpark()

    # -- recording -----------------------------------------------------------

    # The setup and teardown regions start in the phase's own hook, ahead of
    # pytest's implementation (the fixtures), and end in the phase's report,
    # which follows every phase.  Not wrappers: a hook wrapper costs every
    # test a generator per phase (issue 4), and failing a setup from a
    # wrapper, before pytest's own setup wrappers (logging, capture) have
    # run, breaks their teardown.  The call phase keeps a wrapper: subtests
    # (pytest's ``subtests`` fixture, pytest-subtests) make reports inside it.

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        """Start the test's trace; fail the setup of a test whose markers are
        wrong before its fixtures run (the way pytest's own skip markers act)."""
        test = self.current = self._begin(item)
        if test.error is not None:
            pytest.fail(f"{item.nodeid}: {test.error}", pytrace=False)
        self._start_region(test, "setup")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item):
        test = self.current
        self._start_region(test, "call")
        try:
            return (yield)
        finally:
            if test is not None:
                self._end_region(test)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        self._start_region(self.current, "teardown")

    def _begin(self, item) -> Recording:
        """Start the test's trace, unless its markers are wrong.  The hooks
        stay installed from one test to the next (``session.park``), unless
        the test's options differ from the last traced test's."""
        tracing = _tracing()
        nodeid = item.nodeid
        path = self._path_prefix + trace_file_name(nodeid)
        test = Recording(item, nodeid, path)
        options_marks, limits_mark = _markers(item)
        try:
            options = self._options(options_marks)
            if limits_mark is not None:
                test.limits = GCLimits.of(limits_mark)
        except (_options_module().OptionsError, ValueError) as exc:
            test.error = str(exc)
            test.note = "its markers are wrong"
            return test
        running = tracing.current()
        if running is not None:
            test.note = f"a trace was already running ({running.path}); the test is in it"
            return test
        try:
            if options not in self._imported:  # a marker's options
                tracing.hook_modules(options)
                self._imported.add(options)
            test.session = tracing.start(path, options=options)
            test.session.on_superseded = self._yield_to_test_trace
        except tracing.TracerError as exc:
            test.note = f"pytrace could not start: {exc}"
            return test
        test.started = time.perf_counter_ns()
        test.task = pytrace.task(nodeid).__enter__()
        return test

    def _options(self, marks: list) -> Options:
        """The recording options of a test with these ``pytrace`` markers (closest first)."""
        if not marks:
            return self.light
        from .options import OptionsError

        values = {}
        for mark in reversed(marks):  # the closest wins
            if mark.args:
                raise OptionsError("@pytest.mark.pytrace takes keyword options only, "
                                   "e.g. calls=True")
            values.update(mark.kwargs)
        return self.light.replace(**values)

    def _start_region(self, test: Recording | None, name: str) -> None:
        """Start the phase's region in the test's own trace, if it has one."""
        if test is not None and test.recording():
            test.region = self._regions[name]
            test.region.__enter__()

    @staticmethod
    def _end_region(test: Recording) -> None:
        region, test.region = test.region, None
        if region is not None:
            region.__exit__(None, None, None)

    def _end_recording(self) -> None:
        test = self.current
        if test is None or test.session is None or test.stopped:
            return
        self._end_region(test)  # a phase cut short (pytest.exit, Ctrl-C) has no report
        recording = test.recording()
        test.stopped = time.perf_counter_ns()
        if recording:
            test.task.__exit__(None, None, None)
            _tracing().park()
        else:
            test.session.stop()
        # Now, while the (parked) session's GC counts and writer are this trace's.
        test.pauses = GCPauses.of_session(test.session, test.path, self.settings.top)
        test.size = test.session.recorder.writer.size

    def _yield_to_test_trace(self) -> None:
        """The test is about to start a trace of its own: end and drop ours."""
        test = self.current
        if test is None or not test.recording():
            return
        pytrace.log("pytrace", "the test starts its own trace: this per-test trace ends here")
        self._end_recording()
        test.note = "the test recorded its own trace (pytrace.start inside the test)"

    # -- reports -------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        test = self.current
        if test is None or test.item is not item:
            return (yield)
        # The phase is over: its region ends (the call's ends in its wrapper:
        # subtests report inside it); after teardown, the trace.
        if call.when != "call":
            self._end_region(test)
            if call.when == "teardown":
                self._end_recording()
        report = yield
        # ``report.outcome`` read directly: the ``passed``/``failed``/``skipped``
        # properties are a Python call each, on every phase of every test.
        when = call.when
        if when == "setup" and report.outcome == "skipped":
            test.skipped = True
        if when == "call" and test.limits is not None and report.outcome == "passed":
            self._check_gc_limits(test, report)
        failed = report.outcome == "failed"
        test.failed = test.failed or failed
        if when == "teardown":
            self.current = None
            figures = self._figures(test)
            if figures is not None:
                setattr(report, RESULT_ATTRIBUTE, figures)
            exists = figures is not None and figures["path"] is not None
        else:
            exists = test.note is None and not test.skipped
        if exists:
            report.user_properties.append((PATH_PROPERTY, test.path))
            if failed and not test.over_gc_limits:
                report.sections.append(("pytrace", f"trace: {test.path}"))
        return report

    def _check_gc_limits(self, test: Recording, report) -> None:
        """Fail a passed test whose setup and call broke its GC limits."""
        if not test.recording():
            report.outcome = "failed"
            report.longrepr = f"gc_limits cannot be checked: {test.note}"
            return
        problems = test.limits.problems(GCPauses.of_session(test.session, test.path, 0))
        if not problems:
            return
        test.session.slots.flush_all()
        test.session.recorder.writer.sync()  # the file holds every event now
        worst = max(_pauses_in(test.path), key=lambda p: p.duration)
        stack = "\n".join(f"    {line}" for line in _up_to_pytest(worst.stack or ()))
        test.over_gc_limits = True
        report.outcome = "failed"
        report.longrepr = (
            "GC limits exceeded (@pytest.mark.gc_limits):\n  " + "\n  ".join(problems)
            + f"\nworst pause: {_ms(worst.duration)}, generation {worst.generation}, "
              f"triggered at (innermost first):\n{stack or '    (no Python code)'}"
              f"\ntrace: {test.path}")

    def _figures(self, test: Recording) -> dict | None:
        """The test's ``Figures``, as the plain dict its report carries;
        deletes the trace if it is not to be kept.  None for a test skipped
        before its body ran: it does not count."""
        if test.note is not None or test.skipped:
            if test.session is not None:
                os.remove(test.path)
            return None if test.skipped else {**NO_FIGURES, "nodeid": test.nodeid,
                                                  "note": test.note}
        pauses = test.pauses
        kept = self.settings.keep == "all" or test.failed
        if not kept:
            os.remove(test.path)
        return {"nodeid": test.nodeid, "path": test.path if kept else None, "size": test.size,
                "wall_ns": test.stopped - test.started, "gc_ns": pauses.total,
                "collections": pauses.collections, "longest": pauses.longest, "note": None}

    # -- summary -------------------------------------------------------------

    def pytest_runtest_logreport(self, report):
        figures = getattr(report, RESULT_ATTRIBUTE, None)
        if figures is not None and report.when == "teardown":
            self.summary.add(figures)

    def pytest_terminal_summary(self, terminalreporter, config):
        if hasattr(config, "workerinput"):  # an xdist worker: the controller summarizes
            return
        terminalreporter.section("pytrace")
        for line in summary_lines(self.summary, self.settings.directory, self.settings.keep):
            terminalreporter.write_line(line)


def _markers(item) -> tuple[list, object]:
    """The ``pytrace`` markers of ``item``, closest first, and its closest
    ``gc_limits`` marker (or None): one walk up its nodes for both, where
    ``iter_markers`` and ``get_closest_marker`` took one each.  The walk is
    ``iter_markers``' own (each node's ``own_markers``, from the item up its
    ``parent`` chain), without its generators: it runs for every test."""
    options, limits = [], None
    node = item
    while node is not None:
        for mark in node.own_markers:
            if mark.name == "pytrace":
                options.append(mark)
            elif mark.name == "gc_limits" and limits is None:
                limits = mark
        node = node.parent
    return options, limits


def _pauses_in(path) -> list:
    """Every collection in the trace at ``path``, which may still be recording."""
    from .analysis import collect_pauses  # on first use: an inert plugin imports no analysis
    from .errors import TraceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)  # no footer yet: "cut short"
        return collect_pauses(pytrace.read(path))[0]


@functools.cache
def _tracing():
    """``pytrace.session``, imported when first needed (see the imports).
    Cached: an import statement is ~1 us, and this runs several times a test."""
    from . import session

    return session


@functools.cache
def _options_module():
    """``pytrace.options``, imported when first needed (see the imports)."""
    from . import options

    return options


def _frame(frame) -> str:
    return f"{frame.func} ({frame.file}:{frame.line})"


def _code_frame(code, line: int) -> str:
    """``_frame`` of the frame that the trace writes for ``code`` at ``line``."""
    return f"{code.co_qualname} ({code.co_filename}:{line})"


def _up_to_pytest(stack) -> list[str]:
    """The frames of ``stack`` (innermost first) up to the first of pytest's
    own, then how many outer frames were left out."""
    lines = []
    for depth, frame in enumerate(stack):
        lines.append(_frame(frame))
        if frame.file.startswith(RUNNER_DIRS):
            if depth + 1 < len(stack):
                lines.append(f"... {len(stack) - depth - 1} outer frames of pytest")
            break
    return lines


def _shorter(frame_text: str) -> str:
    """A frame with its file relative to the current directory, when inside it."""
    return frame_text.replace(os.getcwd() + os.sep, "")


def summary_lines(summary: Summary, directory: str, keep: str) -> list[str]:
    """The terminal summary: where the traces are, then the GC pause tables."""
    top, traced = summary.top, summary.traced
    lines = [f"{summary.kept} trace{'s' * (summary.kept != 1)} in {directory}"
             + (f" (keep=failed: {traced} tests traced)" if keep == "failed" else "")
             + (f"; {summary.size / traced / 1024:.1f} KiB per test trace" if traced else "")]
    if summary.untraced_count:
        lines.append(f"tests without a trace of their own ({summary.untraced_count}):")
        lines += [f"  {nodeid}: {note}" for nodeid, note in summary.untraced]
        if summary.untraced_count > top:
            lines.append(f"  ... and {summary.untraced_count - top} more")
    collected = summary.collected
    collections: dict[int, int] = {}
    for f in collected:
        for generation, count in f.collections:
            collections[generation] = collections.get(generation, 0) + count
    if not collections:
        lines.append("no garbage collections during the traced tests")
        return lines
    gc_ns, wall_ns = sum(f.gc_ns for f in collected), summary.wall_ns
    lines.append(
        f"GC: {sum(collections.values())} collections ("
        + ", ".join(f"gen{g} {n}" for g, n in sorted(collections.items()))
        + f"), {_ms(gc_ns)} paused = {_share(gc_ns, wall_ns)} of {_ms(wall_ns)} in traced tests")
    lines.append(f"tests with the most GC pause time (top {top}):")
    lines.append(f"  {'paused':>12}  {'share':>6}  {'gen0':>5} {'gen1':>5} {'gen2':>5}  test")
    for f in sorted(collected, key=lambda f: -f.gc_ns)[:top]:
        if not f.gc_ns:
            break
        counts = dict(f.collections)
        lines.append(f"  {_ms(f.gc_ns):>12}  {_share(f.gc_ns, f.wall_ns):>6}  "
                     + " ".join(f"{counts.get(g, 0):>5}" for g in (0, 1, 2)) + f"  {f.nodeid}")
    lines.append(f"longest single pauses (top {top}):")
    lines.append(f"  {'pause':>12}  gen  test, then where the collection began")
    pauses = sorted(((p, f.nodeid) for f in collected for p in f.longest), key=lambda x: -x[0][0])
    for (duration, generation, where), nodeid in pauses[:top]:
        lines.append(f"  {_ms(duration):>12}  {generation:>3}  {nodeid}")
        lines.append(f"  {'':>12}       at {_shorter(where) if where else '(no Python code)'}")
    return lines


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"
