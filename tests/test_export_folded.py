"""Folded stacks: exact lines on a trace with hand-computed self times, names
that try to break the format, and flamegraph.pl as the consumer."""

import io
import os
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

import pytrace
from export_traces import (
    SAMPLE_SAMPLE_COUNTS, SAMPLE_SELF_TIMES_US, event_scripts, record_program, write_events,
    write_sample_trace,
)
from pytrace.analysis import function_profile
from pytrace.export import write_folded

FLAMEGRAPH = shutil.which("flamegraph.pl") or "/usr/share/perl5/Devel/NYTProf/flamegraph.pl"
LINE = re.compile(r"^(?P<stack>[^\n]+) (?P<count>[1-9][0-9]*)$")


def folded(trace, weight="time") -> str:
    out = io.StringIO()
    write_folded(trace, out, weight)
    return out.getvalue()


def expected_text(counts) -> str:
    return "".join(f"{';'.join(path)} {n}\n" for path, n in sorted(counts.items()))


@pytest.fixture
def sample(trace_path):
    write_sample_trace(trace_path)
    return pytrace.read(trace_path)


def test_time_weight_gives_each_stack_its_self_time_in_microseconds(sample):
    assert folded(sample) == expected_text(SAMPLE_SELF_TIMES_US)


def test_samples_weight_counts_cpu_samples_per_stack(sample):
    assert folded(sample, "samples") == expected_text(SAMPLE_SAMPLE_COUNTS)


def test_unknown_weight_is_refused(sample):
    with pytest.raises(ValueError, match="unknown weight 'bytes'"):
        write_folded(sample, io.StringIO(), "bytes")


def test_separators_and_line_breaks_in_names_cannot_break_a_line(trace_path):
    write_events(trace_path, [
        (0, 1, "CallEnter", ("a;b\nc", "dir;x/m.py", 1)),
        (3000, 1, "SysCall", ("os;read\r", "", 0), None),
        (5000, 1, "SysCallEnd"),
        (6000, 1, "CallExit"),
    ])
    assert folded(pytrace.read(trace_path)) == (
        "a:b c (dir:x/m.py) 4\n"
        "a:b c (dir:x/m.py);[syscall os:read ] 2\n"
    )


def test_stacks_shorter_than_half_a_microsecond_are_left_out(trace_path):
    write_events(trace_path, [
        (0, 1, "CallEnter", ("f", "m.py", 1)),
        (400, 1, "CallEnter", ("g", "m.py", 5)),
        (800, 1, "CallExit"),
        (2000, 1, "CallExit"),
    ])
    # f: 400 + 1200 ns = 1.6 us -> 2; g: 400 ns -> 0, left out.
    assert folded(pytrace.read(trace_path)) == "f (m.py) 2\n"


def test_a_recorded_program_folds_its_calls(tmp_path):
    trace = pytrace.read(record_program(tmp_path))
    lines = folded(trace).splitlines()
    assert all(LINE.match(line) for line in lines)
    stacks = [line.rsplit(" ", 1)[0].split(";") for line in lines]
    program = str(tmp_path / "program.py")
    assert any(s[-2:] == [f"worker ({program})", "[blocked: lock]"] for s in stacks)
    assert any(s[-1].startswith("[GC generation ") for s in stacks)
    # The self times of the stacks with a call frame add up to the busy time the
    # function profile measures (to rounding: 1 us per line at most); the rest
    # is GC or waiting with no frame open (a stack of one pseudo-frame).
    in_calls = [int(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("[")]
    busy_ns = sum(t.busy_time for t in function_profile(trace).threads.values())
    assert abs(sum(in_calls) - busy_ns / 1000) <= len(in_calls)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=event_scripts())
def test_any_event_sequence_gives_well_formed_lines(tmp_path_factory, script):
    path = tmp_path_factory.mktemp("folded") / "t.pytrace"
    write_events(path, script)
    for weight in ("time", "samples"):
        for line in folded(pytrace.read(path), weight).splitlines():
            assert LINE.match(line), line


@pytest.mark.skipif(
    not os.path.exists(FLAMEGRAPH),
    reason="flamegraph.pl is not installed (Debian: apt-get install -y libdevel-nytprof-perl)")
def test_flamegraph_pl_draws_every_stack(sample, tmp_path):
    path = tmp_path / "stacks.folded"
    path.write_text(folded(sample))
    result = subprocess.run(["perl", FLAMEGRAPH, str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Ignored" not in result.stderr
    svg = result.stdout
    assert svg.startswith("<?xml") and "</svg>" in svg
    # Every frame is drawn (flamegraph.pl turns <> into ()), with the totals.
    assert f"<title>all ({sum(SAMPLE_SELF_TIMES_US.values())} samples, 100%)</title>" in svg
    assert "<title>(script)alert(1)(/script) (app.py) (4 samples" in svg
    assert "<script>alert" not in svg
    for title in ("run_worker (worker.py) (20 samples", "[blocked: lock] (8 samples",
                  "[GC generation 2] (2 samples"):
        assert f"<title>{title}" in svg
