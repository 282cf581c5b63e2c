"""``pytrace stats|gc|top``: the real command in a subprocess, on traces with known answers."""

import json
import os
import pty
import subprocess
import sys

import pytest

from analysis_traces import GC_SCENARIO, PROFILE_SCENARIO, THREAD_SCENARIO, write
from pytrace import read as pytrace_read
from pytrace import wire


def pytrace(*args, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "pytrace", *map(str, args)],
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=60)


def ok(*args):
    result = pytrace(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress line, and no warnings
    return result.stdout


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return {name: write(folder / f"{name}.pytrace", rows) for name, rows in
            (("gc", GC_SCENARIO), ("profile", PROFILE_SCENARIO), ("threads", THREAD_SCENARIO))}


def test_gc_json(traces):
    data = json.loads(ok("gc", traces["gc"], "--json", "--longest", "2"))
    assert data["overall"]["collections"] == 5
    assert data["overall"]["pauses"]["p50"] == 300
    assert data["gc_share"] == 0.195
    assert [p["duration"] for p in data["longest"]] == [1000, 500]
    assert data["longest"][0]["stack"][1] == {"func": "main", "file": "app.py", "line": 1}
    # --json carries the whole curve: 1 us up to the trace length.
    assert data["mmu"][0] == {"window": 1000, "utilization": 0.0, "worst_start": 8000}
    assert data["mmu"][-1]["window"] == 10_000 and data["mmu"][-1]["utilization"] == 0.805
    assert len(data["histogram"]) == 5


def test_gc_text(traces):
    out = ok("gc", traces["gc"])
    assert out.startswith("5 collections in 10.00 us: 1.95 us paused (19.50%)")
    assert "alloc (app.py:40)" in out and "collected 400, uncollectable 3" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["all"][1:3] == ["5", "1.95"]
    mmu = [line.split() for line in out.splitlines()[out.splitlines().index(
        "minimum mutator utilization (worst share of any window left to the program)") + 2:]]
    assert mmu == [["1.00", "us", "0.00%", "8.00", "us"], ["10.00", "us", "80.50%", "0", "ns"]]


def test_stats_text_and_json(traces):
    out = ok("stats", traces["threads"])
    assert "worker" in out and "request" in out and "parse" in out
    assert "  1 collection, 100 ns paused (10.00% of the trace)\n" in out
    data = json.loads(ok("stats", traces["threads"], "--json"))
    assert data["complete"] is True and data["events"] == 28
    assert data["events_by_kind"]["Block"] == 4
    worker = data["threads"][1]
    assert (worker["name"], worker["blocked"], worker["gc_stopped"]) == \
        ("worker", {"queue": 600}, 50)
    assert data["user"]["tasks"][0]["latency"]["p90"] == 620
    assert data["meta"]["python_version"]


def test_top_sorting_limit_and_thread(traces):
    data = json.loads(ok("top", traces["profile"], "--sort", "total", "--limit", "2", "--json"))
    assert (data["sort"], data["thread"]) == ("total", None)
    assert [f["name"] for f in data["functions"]] == ["inner", "main"]
    out = ok("top", traces["profile"], "--thread", "1", "--sort", "calls")
    lines = out.splitlines()
    assert lines[0] == "functions by calls (thread 1)"
    assert lines[2].split()[:4] == ["fact", "(app.py:10)", "3", "90"]
    assert [line.split()[0] for line in lines[2:]] == ["fact", "helper", "main"]


def test_every_command_takes_a_trace_without_events(tmp_path):
    empty = write(tmp_path / "empty.pytrace", [])
    assert ok("top", empty) == "no calls in this trace (was it recorded with --no-calls?)\n"
    assert ok("gc", empty).startswith("0 collections in 0 ns")
    assert json.loads(ok("stats", empty, "--json"))["events"] == 0


def test_top_unknown_thread_is_a_usage_error(traces):
    result = pytrace("top", traces["profile"], "--thread", "42")
    assert result.returncode == 2
    assert result.stderr == ("pytrace top: thread 42 made no calls in "
                             f"{traces['profile']} (threads with calls: 1, 2, 3, 4, 5)\n")


@pytest.mark.parametrize("command", ["stats", "gc", "top"])
def test_not_a_trace_is_bad_input(tmp_path, command):
    junk = tmp_path / "junk.pytrace"
    junk.write_bytes(b"not a trace at all")
    result = pytrace(command, junk)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"pytrace {command}: {junk}: not a pytrace trace")
    assert len(result.stderr.splitlines()) == 1
    missing = pytrace(command, tmp_path / "missing.pytrace")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_bad_limit_is_a_usage_error(traces):
    result = pytrace("top", traces["profile"], "--limit", "0")
    assert result.returncode == 2 and "expected a positive integer" in result.stderr


def test_a_trace_cut_short_is_analysed_with_one_warning(traces, tmp_path):
    whole = traces["gc"].read_bytes()
    footer = wire.footer_record([(tid, *totals) for tid, totals in
                                 pytrace_read(traces["gc"]).footer.items()])
    assert whole.endswith(footer)
    cut = tmp_path / "cut.pytrace"
    cut.write_bytes(whole[:-len(footer)])
    result = pytrace("gc", cut, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["overall"]["collections"] == 5
    [warning] = result.stderr.splitlines()
    assert warning.startswith("pytrace gc: warning: the trace was cut short")


def test_a_reader_that_goes_away_is_not_an_error(traces):
    child = subprocess.Popen([sys.executable, "-m", "pytrace", "gc", str(traces["gc"])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # like `| head` that has read enough, before the child writes
    errors = child.stderr.read().decode()
    child.stderr.close()
    assert child.wait(timeout=60) == 0
    assert errors == ""


def test_progress_goes_to_a_terminal_and_is_erased(traces):
    controller, terminal = pty.openpty()
    try:
        result = pytrace("stats", traces["profile"], stderr=terminal)
    finally:
        os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal side is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert result.returncode == 0 and "top functions by self time" in result.stdout
    assert b"pytrace: reading " in shown and b"pytrace: profiling calls..." in shown
    assert shown.endswith(b"\r\x1b[K")
