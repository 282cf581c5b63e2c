"""Go trace export, checked by Go's own tools: ``go tool trace -d`` parses it
(with the goroutine, GC and annotation events the mapping promises), the web
UI's pages load, the pprof profiles build, and no event sequence at all can
make Go reject the file.

Go's tools come from Debian's ``golang-1.19-go`` (the strictest reader of
this format, see shared/reference/go-trace-format.md); these tests skip only
when it is not installed.
"""

import gzip
import io
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, example, given, settings

import pytrace
from export_traces import (
    LOG_MESSAGE, announced_url, event_scripts, http_get, record_program, write_events,
    write_sample_trace,
)
from pytrace import wire
from pytrace.export import write_go
from pytrace.export.gotrace import HEADER
from pytrace.recorder import MIN_BUFFER_SIZE


def find_go_1_19():
    """Debian's Go 1.19, or a ``go`` on PATH that is 1.19; None if neither."""
    for candidate in ("/usr/lib/go-1.19/bin/go", shutil.which("go")):
        if candidate and os.path.exists(candidate):
            version = subprocess.run([candidate, "version"], capture_output=True, text=True)
            if " go1.19" in version.stdout:
                return candidate
    return None


GO = find_go_1_19()
needs_go = pytest.mark.skipif(
    GO is None, reason="Go 1.19 is not installed (Debian: apt-get install -y golang-1.19-go)")

#: One line of ``go tool trace -d``: "TS Name p=P g=G off=OFF args...".
DUMP_LINE = re.compile(
    r"^(?P<ts>\d+) (?P<name>\w+) p=(?P<p>\d+) g=(?P<g>\d+) off=\d+ ?(?P<args>.*)$")


@pytest.fixture(scope="module")
def go_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("gohome")
    return {**os.environ, "HOME": str(home), "GOCACHE": str(home / "cache"),
            "GO111MODULE": "off", "BROWSER": "/bin/true"}


def export(trace, path):
    with open(path, "wb") as out:
        write_go(trace, out)
    return path


def go_dump(go_env, path) -> list[dict]:
    """Go's parse of ``path`` as dicts (ts, name, p, g, args), after asserting it succeeded."""
    result = subprocess.run([GO, "tool", "trace", "-d", str(path)], capture_output=True,
                            text=True, env=go_env, timeout=120)
    assert result.returncode == 0 and "failed" not in result.stderr, result.stderr
    events = []
    for line in result.stdout.splitlines():
        match = DUMP_LINE.match(line)
        if match:
            events.append({**match.groupdict(), "ts": int(match["ts"]), "g": int(match["g"])})
    return events


@contextmanager
def go_trace_server(go_env, path):
    """``go tool trace -http`` on 127.0.0.1 serving ``path``; yields its base URL."""
    server = subprocess.Popen([GO, "tool", "trace", "-http=127.0.0.1:0", str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=go_env)
    try:
        yield announced_url(server, r"listening on (http://127\.0\.0\.1:\d+)")
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()


@pytest.fixture
def sample(trace_path):
    write_sample_trace(trace_path)
    return pytrace.read(trace_path)


def test_header_events_and_frequency_bytes(sample, tmp_path):
    data = export(sample, tmp_path / "t.gotrace").read_bytes()
    assert data.startswith(b"go 1.19 trace\x00\x00\x00") and len(HEADER) == 16
    assert data[16:19] == b"\x41\x00\x00"  # batch of P 0 at base tick 0
    assert data.endswith(b"\x02" + wire.uvarint(1_000_000_000))  # frequency: ns ticks


def test_a_trace_without_events_is_refused(trace_path):
    write_events(trace_path, [])
    with pytest.raises(ValueError, match="no events"):
        write_go(pytrace.read(trace_path), io.BytesIO())


def concerning(events, g):
    """(ts, name) of the events about goroutine ``g`` (its own, and those targeting it)."""
    picked = []
    for ev in events:
        target = re.match(r"g=(\d+)", ev["args"])
        about = int(target[1]) if ev["name"] in {"GoCreate", "GoUnblock"} else ev["g"]
        if about == g:
            picked.append((ev["ts"], ev["name"]))
    return picked


@needs_go
def test_go_parses_threads_tasks_and_gc_as_the_mapping_says(sample, tmp_path, go_env):
    events = go_dump(go_env, export(sample, tmp_path / "t.gotrace"))
    # Times are ns from the first event (1000 in the pytrace trace).
    assert concerning(events, 1) == [
        (0, "GoCreate"), (0, "GoStart"), (0, "Gomaxprocs"),
        (2000, "UserTaskCreate"), (2000, "UserRegion"), (7000, "HeapAlloc"),
        (9000, "UserLog"), (10000, "UserLog"), (11000, "GoBlockSync"),
        (19000, "GoUnblock"), (19000, "GoStart"), (20000, "UserRegion"),
        (21000, "UserTaskEnd"), (24000, "GoSched"), (25000, "GoStart"), (26000, "GoSched"),
        (27000, "GoStart"), (28000, "UserRegion"), (31000, "UserLog"), (31000, "GoSched"),
    ]
    # The worker thread: created by the main thread, a syscall, a sleep, CPU samples.
    assert concerning(events, 2) == [
        (3000, "GoCreate"), (4000, "GoStart"), (8000, "GoSysCall"), (8000, "GoSysBlock"),
        (14000, "GoSysExit"), (14000, "GoStart"), (15000, "GoSleep"), (15500, "CPUSample"),
        (16000, "GoUnblock"), (16000, "GoStart"), (18500, "CPUSample"), (18600, "CPUSample"),
        (25000, "GoEnd"),
    ]
    # The asyncio task is a goroutine of its own with two run slices.
    assert concerning(events, 3) == [
        (23000, "GoCreate"), (24000, "GoStart"), (25000, "GoBlock"), (26000, "GoUnblock"),
        (26000, "GoStart"), (27000, "GoEnd"),
    ]
    gc = [(ev["ts"], ev["name"]) for ev in events if ev["name"].startswith("GC")]
    assert gc == [(5000, "GCStart"), (5000, "GCSTWStart"), (7000, "GCSTWDone"), (7000, "GCDone")]
    args = {(ev["ts"], ev["name"]): ev["args"] for ev in events}
    assert "taskid=1 pid=0" in args[(2000, "UserTaskCreate")]
    assert args[(2000, "UserRegion")].endswith("mode=0 typeid=2 name=phase <b>")
    assert args[(20000, "UserRegion")].endswith("mode=1 typeid=2 name=phase <b>")
    assert args[(9000, "UserLog")].endswith(f"category=http message={LOG_MESSAGE}")
    assert args[(10000, "UserLog")].endswith("category=queue depth message=-3")
    assert args[(7000, "HeapAlloc")] == "mem=30000000"
    assert args[(0, "Gomaxprocs")] == "procs=2"
    assert [ev["name"] for ev in events[-2:]] == ["GoSched", "ProcStop"]


@needs_go
def test_go_web_ui_pages_load(sample, tmp_path, go_env):
    path = export(sample, tmp_path / "t.gotrace")
    with go_trace_server(go_env, path) as base:
        pages = {}
        for page in ("/", "/trace", "/goroutines", "/usertasks", "/userregions", "/mmu",
                     "/mmuPlot?flags=stw", "/jsontrace", "/usertask?type=request"):
            status, body = http_get(base + page)
            assert status == 200, (page, body[:500])
            # (/mmu's own script holds the words "failed to load plot": its data is /mmuPlot.)
            assert page == "/mmu" or "failed" not in body, (page, body[:500])
            pages[page] = body
        goroutines = dict(re.findall(r'<a href="(/goroutine\?id=\d+)">([^<]*)</a>',
                                     pages["/goroutines"]))
        assert sorted(goroutines.values()) == ["&lt;module&gt;", "fetch", "run_worker"]
        for link in goroutines:
            status, body = http_get(base + link)
            assert status == 200 and "failed" not in body
        assert "<td>request</td>" in pages["/usertasks"]
        assert "phase &lt;b&gt;" in pages["/userregions"] and "left open" in pages["/userregions"]
        # Go's MMU: 0 for windows inside the 2 us collection, 1 - 2/31 for the whole trace.
        curve = json.loads(pages["/mmuPlot?flags=stw"])["curve"]
        assert curve[0][1] == 0 and curve[-1] == [31000, pytest.approx(1 - 2000 / 31000)]
        timeline = json.loads(pages["/jsontrace"])["traceEvents"]
        assert any(e.get("name") == "GC" and e.get("ph") == "X" for e in timeline)


@needs_go
@pytest.mark.parametrize("profile, expected", [
    ("sync", [b"main", b"app.py"]),
    ("syscall", [b"socket.recv", b"run_worker", b"worker.py"]),
    ("sched", [b"main", b"app.py"]),  # the worker waited from its GoCreate in main
])
def test_go_pprof_profiles_name_python_functions(sample, tmp_path, go_env, profile, expected):
    path = export(sample, tmp_path / "t.gotrace")
    result = subprocess.run([GO, "tool", "trace", f"-pprof={profile}", str(path)],
                            capture_output=True, env=go_env, timeout=120)
    assert result.returncode == 0, result.stderr
    data = gzip.decompress(result.stdout)  # a pprof protobuf: names are in its string table
    for name in expected:
        assert name in data


@needs_go
def test_a_recorded_program_converts(tmp_path, go_env):
    """A real program under ``pytrace run``: its threads, asyncio tasks and
    annotations reach Go's goroutine, task and region pages."""
    path = export(pytrace.read(record_program(tmp_path)), tmp_path / "program.gotrace")
    events = go_dump(go_env, path)
    assert {"GoCreate", "GoBlockSync", "GoSleep", "GCStart", "UserTaskCreate", "UserRegion",
            "UserLog", "GoEnd"} <= {ev["name"] for ev in events}
    with go_trace_server(go_env, path) as base:
        status, goroutines = http_get(base + "/goroutines")
        assert status == 200
        groups = dict(re.findall(r'>([^<]*)</a> N=(\d+)', goroutines))
        assert groups["&lt;module&gt;"] == "1" and groups["worker"] == "1"
        assert groups["fetch"] == "3" and groups["fetch_all"] == "1"
        assert "demo &#34;task&#34;" in http_get(base + "/usertasks")[1]
        assert "work &lt;w&gt;" in http_get(base + "/userregions")[1]
        for page in ("/jsontrace", "/mmuPlot?flags=stw"):
            assert http_get(base + page)[0] == 200


@needs_go
def test_a_cut_trace_still_converts(tmp_path, go_env):
    """A trace cut short (no footer, calls and blocks left open) is read with
    a warning; its export must still satisfy Go's parser and web UI."""
    whole = tmp_path / "whole.pytrace"
    write_sample_trace(whole, buffer_size=MIN_BUFFER_SIZE)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pytrace"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.warns(pytrace.TraceWarning):
        trace = pytrace.read(cut)
    assert trace.events and not trace.complete
    path = export(trace, tmp_path / "cut.gotrace")
    go_dump(go_env, path)
    with go_trace_server(go_env, path) as base:
        for page in ("/goroutines", "/usertasks", "/userregions", "/jsontrace"):
            assert http_get(base + page)[0] == 200


@needs_go
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=event_scripts())
@example(script=[(0, 0, "GCStart", 0, None), (0, 1, "GCDone", 0, 0)])  # done on another thread, same tick
def test_any_event_sequence_gives_a_trace_go_accepts(tmp_path_factory, go_env, script):
    """Unbalanced pairs, ends before starts, events after a thread's end,
    tasks running on two threads: Go's parser and its web UI, whose startup
    panics on unclosed slices, must accept every export."""
    directory = tmp_path_factory.mktemp("go")
    write_events(directory / "t.pytrace", script)
    path = export(pytrace.read(directory / "t.pytrace"), directory / "t.gotrace")
    go_dump(go_env, path)
    with go_trace_server(go_env, path) as base:
        for page in ("/jsontrace", "/goroutines", "/usertasks", "/userregions"):
            status, body = http_get(base + page)
            assert status == 200, (page, body[:500])
