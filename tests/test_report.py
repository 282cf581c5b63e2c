"""The HTML report: self-contained, every trace string escaped, the analyses'
numbers in its tables, a bounded timeline, and, in a real headless Chromium,
a page that loads without console errors, draws its timeline, shows trace
strings as text and zooms.

Chromium is driven through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3 and 4), so
the test needs nothing but Debian's ``chromium`` package.
"""

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings

import pytrace
from export_traces import (
    EVIL, REGION, event_scripts, record_program, write_events, write_sample_trace,
)
from pytrace.report import render_report
from pytrace.report.data import build_timeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
GC_RED = (214, 39, 40)


# -- a minimal DevTools-protocol client --------------------------------------------


class Browser:
    """A headless Chromium and one page in it, driven over ``--remote-debugging-pipe``."""

    def __init__(self, profile_dir) -> None:
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()

        def give_pipes_fds_3_and_4():  # in the child, before exec
            read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--user-data-dir={profile_dir}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=give_pipes_fds_3_and_4, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.pending = b""
        self.last_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=self.session)

    def call(self, method: str, session=None, timeout: float = 60, **params):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._receive(deadline):
                if reply.get("id") == self.last_id:
                    assert "error" not in reply, reply["error"]
                    return reply["result"]
                self._event(reply)

    def page(self, method: str, **params):
        return self.call(method, session=self.session, **params)

    def _event(self, event: dict) -> None:
        self.events.append(event)
        if event.get("method") == "Page.javascriptDialogOpening":  # it would block the page
            message = {"id": 0, "method": "Page.handleJavaScriptDialog",
                       "params": {"accept": True}, "sessionId": self.session}
            os.write(self.to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> list[dict]:
        while b"\0" not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            if select.select([self.from_browser], [], [], left)[0]:
                chunk = os.read(self.from_browser, 1 << 20)
                assert chunk, "Chromium closed its DevTools pipe"
                self.pending += chunk
        *messages, self.pending = self.pending.split(b"\0")
        return [json.loads(m) for m in messages]

    def load(self, path) -> None:
        self.events.clear()
        self.page("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            for event in self._receive(deadline):
                self._event(event)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def problems(self) -> list[dict]:
        """Console errors, uncaught exceptions, error log entries and dialogs seen so far."""
        return [e for e in self.events if e.get("method") in (
            "Runtime.exceptionThrown", "Page.javascriptDialogOpening")
            or (e.get("method") == "Runtime.consoleAPICalled"
                and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        finally:
            self.process.wait(timeout=30)
            os.close(self.to_browser)
            os.close(self.from_browser)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def next_frame(browser) -> None:
    """Let the page run its pending animation frame (the timeline redraws there)."""
    browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


# -- PNG decoding (enough for Chromium's 8-bit RGB/RGBA screenshots) ----------------


def png_pixels(data: bytes) -> list[tuple]:
    """Every pixel of a non-interlaced 8-bit RGB or RGBA PNG, as RGB tuples."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    pixels = []
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for i in range(stride):
            left = row[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                    else corner)) & 0xFF
        pixels.extend(tuple(row[i:i + 3]) for i in range(0, stride, channels))
        previous = row
    return pixels


def canvas_screenshot(browser) -> list[tuple]:
    rect = browser.evaluate("(() => { const r = document.getElementById('timeline')"
                            ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    x, y, width, height = rect
    shot = browser.page("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": x, "y": y, "width": width, "height": height, "scale": 1})
    return png_pixels(base64.b64decode(shot["data"]))


# -- reading the report's HTML -------------------------------------------------------


class Tables(HTMLParser):
    """The text of every table cell, per table, keyed by the table's class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.current = self.tables.setdefault(dict(attrs).get("class", ""), [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.current[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def tables_of(page: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


@pytest.fixture
def sample(trace_path):
    write_sample_trace(trace_path)
    return pytrace.read(trace_path)


@pytest.fixture
def sample_report(sample, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_report(sample), encoding="utf-8")
    return path


# -- the page as a file --------------------------------------------------------------


def test_the_report_is_one_file_that_fetches_nothing(sample_report):
    page = sample_report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<link rel=\"stylesheet\"" not in page and "@import" not in page
    (csp,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert "default-src 'none'" in csp
    # The only script allowed to run is the report's own, by its hash.
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_trace_strings_are_escaped_everywhere(tmp_path):
    quoted = "q\"uo'te & <i>"
    write_events(tmp_path / "t.pytrace", [
        (0, 1, "ThreadStart", 1, 1, "<b>\"thread\"</b>"),
        (0, 1, "CallEnter", (EVIL, "</script><script>alert(2)</script>", 1)),
        (1000, 1, "CallEnter", (quoted, "x.py", 2)),
        (2000, 1, "UserRegionStart", 0, "</script>"),
        (2500, 1, "GCStart", 0, [(EVIL, "x.py", 3)]),
        (3000, 1, "GCDone", 0, 0),
        (3000, 1, "UserRegionEnd", 0, "</script>"),
        (4000, 1, "CallExit"),
        (5000, 1, "CallExit"),
    ])
    page = render_report(pytrace.read(tmp_path / "t.pytrace"))
    assert "alert(" not in page.replace("alert(1)&lt;", "").replace("alert(2)&lt;", "") \
        .replace("alert(1)\\u003c", "").replace("alert(2)\\u003c", "")
    assert page.count("<script") == 2  # the JSON data block and the report's script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "q&quot;uo&#x27;te &amp; &lt;i&gt;" in page
    assert "&lt;b&gt;&quot;thread&quot;&lt;/b&gt;" in page
    data = re.search(r'<script type="application/json" id="pytrace-data">(.*?)</script>',
                     page, re.S)[1]
    assert "<" not in data and ">" not in data
    strings = json.loads(data)["strings"]
    assert {EVIL, quoted, "</script>"} <= set(strings)


def test_tables_show_the_analyses(sample_report):
    tables = tables_of(sample_report.read_text(encoding="utf-8"))
    assert tables["gc-generations"][1:] == [
        ["2", "1", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "42", "1"],
        ["all", "1", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "2.00 us", "42", "1"],
    ]
    (longest,) = tables["gc-longest"][1:]
    assert longest[:6] == ["2.00 us", "5.00 us", "2", "1", "42", "1"]
    assert longest[6].splitlines() == [f"{EVIL} (app.py:21)", "main (app.py:13)",
                                       "<module> (app.py:30)"]
    threads = {row[0]: row[1:] for row in tables["threads"][1:]}
    assert threads["MainThread (1)"][:6] == ["31.00 us", "21.00 us", "8.00 us", "0 ns", "0 ns",
                                             "2.00 us"]
    assert threads["worker (2)"][:6] == ["21.00 us", "12.00 us", "0 ns", "1.00 us", "6.00 us",
                                         "2.00 us"]
    profile = {row[0]: row[1:] for row in tables["profile"][1:]}
    # Self time: run_worker was the innermost frame 5-18 and 21-25 us (waits included).
    assert profile["run_worker"] == ["worker.py:1", "1", "20.00 us", "17.00 us", "0", "0"]
    assert profile["recurse"] == ["worker.py:40", "2", "3.00 us", "3.00 us", "1", "0"]
    regions = [row for table in tables.values() for row in table if row and row[0] == REGION]
    assert regions == [[REGION, "1", "18.00 us", "18.00 us", "18.00 us", "18.00 us", "18.00 us",
                        "0"]]


def test_the_timeline_keeps_the_longest_slices_and_counts_the_rest(sample):
    full = build_timeline(sample)
    assert len(full.slices) == 15 and full.omitted == 0
    capped = build_timeline(sample, max_slices=3)
    names = sorted(capped.strings[s[5]] for s in capped.slices)
    # GC, blocking, syscalls and regions come before calls, longest first.
    assert names == ["blocked: lock", "phase <b>", "socket.recv"]
    assert capped.omitted == 12
    assert {t.name: (t.slices, t.omitted) for t in capped.threads} == {
        "MainThread": (2, 8), "worker": (1, 4)}


def test_a_big_trace_makes_a_bounded_page(tmp_path):
    script, now = [], 0
    for i in range(20_000):
        script += [(now, 1, "CallEnter", (f"f{i % 50}", "m.py", i % 50)),
                   (now + 500, 1, "CallExit")]
        now += 1000
    write_events(tmp_path / "big.pytrace", script)
    trace = pytrace.read(tmp_path / "big.pytrace")
    small = render_report(trace, max_slices=1000)
    assert len(small) < 150_000
    assert "19,000 shorter slices are not drawn" in small


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=event_scripts())
def test_any_event_sequence_gives_a_consistent_timeline(tmp_path_factory, script):
    path = tmp_path_factory.mktemp("report") / "t.pytrace"
    write_events(path, script)
    trace = pytrace.read(path)
    page = render_report(trace)
    data = json.loads(re.search(r'id="pytrace-data">(.*?)</script>', page, re.S)[1])
    rows = data["threads"]
    for row, start, length, depth, kind, name, detail in data["slices"]:
        assert 0 <= start and length >= 0 and start + length <= data["span"]
        assert 0 <= depth <= rows[row]["depth"] and 0 <= kind <= 4
        assert 0 <= name < len(data["strings"]) and 0 <= detail < len(data["strings"])
    assert sum(r["slices"] for r in rows) == len(data["slices"])


# -- the page in Chromium ------------------------------------------------------------


@needs_chromium
def test_the_page_loads_without_errors_and_draws_the_timeline(browser, sample_report):
    browser.load(sample_report)
    assert browser.problems() == []
    assert browser.evaluate("document.getElementById('timeline').dataset.drawn") == "15"
    pixels = canvas_screenshot(browser)
    colours = set(pixels)
    assert len(colours) > 20, "the timeline looks blank"
    assert sum(p != (255, 255, 255) for p in pixels) > len(pixels) // 20
    assert GC_RED in colours  # the GC pause slice


@needs_chromium
def test_hovering_a_slice_shows_its_name_as_text(browser, sample_report):
    browser.load(sample_report)
    width = browser.evaluate("document.getElementById('timeline').getBoundingClientRect().width")
    top = browser.evaluate("document.getElementById('timeline').getBoundingClientRect().top")
    x = width * 6 / 31  # inside EVIL's call, 4 to 8 us into the 31 us trace
    tips = set()
    for dy in range(0, 120, 3):  # sweep down the main thread's rows
        browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=top + dy)
        tips.add(browser.evaluate("(() => { const t = document.getElementById('tooltip');"
                                  " return t.hidden ? '' : t.textContent; })()"))
    assert f"{EVIL}\ncall · 4 µs at 4 µs\napp.py:20" in tips
    assert "GC (generation 2)\nGC pause · 2 µs at 5 µs\ngeneration 2" in tips
    assert browser.problems() == []


@needs_chromium
def test_zooming_changes_the_view_and_redraws(browser, sample_report):
    browser.load(sample_report)
    label = "document.getElementById('view-range').textContent"
    drawn = "document.getElementById('timeline').dataset.drawn"
    assert browser.evaluate(label) == "0 ns – 31 µs  (31 µs shown)"
    browser.evaluate("document.getElementById('zoom-in').click()")
    next_frame(browser)
    assert browser.evaluate(label) == "7.75 µs – 23.25 µs  (15.5 µs shown)"
    assert browser.evaluate(drawn) == "10"  # GC, fetch, left open and tail are out of view
    browser.evaluate("document.getElementById('zoom-reset').click()")
    next_frame(browser)
    assert browser.evaluate(drawn) == "15"
    assert browser.problems() == []


@needs_chromium
def test_a_trace_without_events_still_makes_a_page(browser, tmp_path):
    write_events(tmp_path / "empty.pytrace", [])
    path = tmp_path / "empty.html"
    path.write_text(render_report(pytrace.read(tmp_path / "empty.pytrace")), encoding="utf-8")
    browser.load(path)
    assert browser.problems() == []
    assert browser.evaluate("document.getElementById('timeline').dataset.drawn") == "0"
    assert "No garbage collection ran" in browser.evaluate("document.body.textContent")


@needs_chromium
def test_the_report_of_a_recorded_program_loads(browser, tmp_path):
    path = tmp_path / "program.html"
    path.write_text(render_report(pytrace.read(record_program(tmp_path))), encoding="utf-8")
    browser.load(path)
    assert browser.problems() == []
    assert int(browser.evaluate("document.getElementById('timeline').dataset.drawn")) > 100
    text = browser.evaluate("document.body.textContent")
    assert re.search(r"worker <1> \(\d+\)", text)  # the thread table, as text
    assert 'demo "task"' in text and "work <w>" in text
