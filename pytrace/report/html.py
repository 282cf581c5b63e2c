"""Render ``ReportData`` as one self-contained HTML page.

Everything is inline (CSS, JavaScript, the timeline's data as JSON, the
charts as SVG): the page works offline and fetches nothing, which its
Content-Security-Policy enforces (``default-src 'none'``).

Escaping, because every string in a trace (function names, files, thread,
task and region names, log messages) comes from the traced program:

* text and attributes: ``html.escape`` (quotes too);
* the timeline's JSON: a ``<script type="application/json">`` block with
  ``<``, ``>`` and ``&`` written as ``\\u003c``-style escapes, so no string
  can close the block; the script reads it with ``JSON.parse`` and shows
  strings only through ``textContent`` and canvas text, never as HTML;
* and as a second wall, the CSP allows only the report's own script, by
  its SHA-256: an injected ``<script>`` would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from importlib import resources

from ..cli_analysis import duration, percent
from ..export.timeline import printable
from .data import ReportData

_ASSETS = resources.files(__package__)

#: Innermost frames shown for each of the longest GC pauses.
STACK_FRAMES_SHOWN = 12


def _asset(name: str) -> str:
    return _ASSETS.joinpath(name).read_text(encoding="utf-8")


def esc(value) -> str:
    return html.escape(printable(str(value)), quote=True)


def json_for_script(value) -> str:
    """JSON that cannot end the ``<script>`` block it sits in."""
    text = printable(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def short_duration(ns: float) -> str:
    """A compact axis label: ``500 ns``, ``20 µs``, ``1.5 ms``."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def table(headers, rows, text=(0,), css: str = "") -> str:
    """An HTML table; every cell is escaped, columns not in ``text`` are numbers (right-aligned)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f"<td>{esc(c)}</td>" if i in text else f'<td class="num">{esc(c)}</td>'
            for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -- charts (inline SVG) -------------------------------------------------------------

_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 560, 240, 56, 44, 14, 14


def _svg(title: str, body: str, chart_id: str) -> str:
    return (f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" '
            f'height="{_H}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>'
            f"{body}</svg>")


def histogram_svg(bins) -> str:
    """GC pause durations: one bar per 1-2-5 bin."""
    if not bins:
        return ""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    top = max(b.count for b in bins)
    bar_w = plot_w / len(bins)
    parts = [_axes(plot_w, plot_h)]
    for i, b in enumerate(bins):
        h = plot_h * b.count / top
        x = _PAD_L + i * bar_w
        parts.append(f'<rect class="bar" x="{x + 1:.1f}" y="{_PAD_T + plot_h - h:.1f}" '
                     f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}"><title>'
                     f"{esc(short_duration(b.low))} – {esc(short_duration(b.high))}: "
                     f"{b.count} pauses</title></rect>")
        if b.count:
            parts.append(f'<text class="count" x="{x + bar_w / 2:.1f}" '
                         f'y="{_PAD_T + plot_h - h - 3:.1f}">{b.count}</text>')
    step = max(1, math.ceil(len(bins) / 8))
    for i in range(0, len(bins) + 1, step):
        edge = bins[i].low if i < len(bins) else bins[-1].high
        parts.append(f'<text class="tick" x="{_PAD_L + i * bar_w:.1f}" '
                     f'y="{_H - _PAD_B + 16}">{esc(short_duration(edge))}</text>')
    parts.append(f'<text class="label" x="{_PAD_L + plot_w / 2}" y="{_H - 6}">pause duration'
                 f"</text>")
    parts.append(f'<text class="label" x="14" y="{_PAD_T + plot_h / 2}" '
                 f'transform="rotate(-90 14 {_PAD_T + plot_h / 2})">pauses</text>')
    return _svg("GC pause histogram", "".join(parts), "gc-histogram")


def mmu_svg(points) -> str:
    """Minimum mutator utilization against window size (log scale)."""
    points = [p for p in points if p.window > 0]
    if not points:
        return ""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    lo, hi = math.log10(points[0].window), math.log10(points[-1].window)
    span = (hi - lo) or 1.0

    def x(window):
        return _PAD_L + plot_w * (math.log10(window) - lo) / span

    def y(util):
        return _PAD_T + plot_h * (1 - util)

    parts = [_axes(plot_w, plot_h)]
    for util in (0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line class="grid" x1="{_PAD_L}" x2="{_PAD_L + plot_w}" '
                     f'y1="{y(util):.1f}" y2="{y(util):.1f}"/>')
    for util in (0, 0.5, 1.0):
        parts.append(f'<text class="tick" x="{_PAD_L - 6}" y="{y(util) + 4:.1f}" '
                     f'text-anchor="end">{util:g}</text>')
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        parts.append(f'<text class="tick" x="{x(10 ** decade):.1f}" y="{_H - _PAD_B + 16}">'
                     f"{esc(short_duration(10 ** decade))}</text>")
    line = " ".join(f"{x(p.window):.1f},{y(p.utilization):.1f}" for p in points)
    parts.append(f'<polyline class="mmu" points="{line}"/>')
    parts.append(f'<text class="label" x="{_PAD_L + plot_w / 2}" y="{_H - 6}">window</text>')
    parts.append(f'<text class="label" x="14" y="{_PAD_T + plot_h / 2}" '
                 f'transform="rotate(-90 14 {_PAD_T + plot_h / 2})">MMU</text>')
    return _svg("Minimum mutator utilization", "".join(parts), "mmu-curve")


def _axes(plot_w: float, plot_h: float) -> str:
    return (f'<line class="axis" x1="{_PAD_L}" y1="{_PAD_T + plot_h}" x2="{_PAD_L + plot_w}" '
            f'y2="{_PAD_T + plot_h}"/><line class="axis" x1="{_PAD_L}" y1="{_PAD_T}" '
            f'x2="{_PAD_L}" y2="{_PAD_T + plot_h}"/>')


# -- sections -------------------------------------------------------------------------


def _header(data: ReportData) -> str:
    trace, tl = data.trace, data.timeline
    facts = {
        "trace": os.path.basename(trace.path or "") or "(unnamed)",
        "duration": duration(tl.end - tl.start),
        "events": f"{len(trace.events):,}",
        "threads": len(tl.threads),
        **data.meta,
    }
    if not trace.complete:
        facts["note"] = "the trace was cut short (no footer): it ends at its last complete batch"
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts.items())
    return f'<header><h1>pytrace report</h1><dl class="facts">{items}</dl></header>'


def _timeline_section(data: ReportData) -> str:
    tl = data.timeline
    note = ""
    if tl.omitted:
        note = (f"<p class=\"note\">{tl.omitted:,} shorter slices are not drawn: the report "
                f"keeps the {len(tl.slices):,} longest (GC, blocking and regions first).</p>")
    legend = "".join(f'<span class="key {kind}">{label}</span>' for kind, label in (
        ("call", "call"), ("gc", "GC pause"), ("block", "blocked"), ("syscall", "syscall"),
        ("region", "user region"), ("stw", "all threads stopped (GC)")))
    return (
        '<section id="timeline-section"><h2>Timeline</h2>'
        '<div class="controls"><button type="button" id="zoom-in">Zoom in</button>'
        '<button type="button" id="zoom-out">Zoom out</button>'
        '<button type="button" id="zoom-reset">Whole trace</button>'
        '<span id="view-range"></span></div>'
        '<p class="hint">Wheel or the buttons zoom, drag pans, double-click shows the whole '
        f'trace; hover a slice for details.</p><div class="legend">{legend}</div>{note}'
        '<div id="timeline-box"><canvas id="timeline"></canvas>'
        '<div id="tooltip" hidden></div></div></section>')


def _gc_section(data: ReportData) -> str:
    gc = data.gc
    parts = ['<section id="gc"><h2>GC pauses</h2>']
    if not gc.pauses:
        parts.append("<p>No garbage collection ran during this trace.</p></section>")
        return "".join(parts)
    count = gc.overall.collections
    parts.append(f"<p>{count} collection{'' if count == 1 else 's'} paused the program for "
                 f"{esc(duration(gc.gc_time))} ({esc(percent(gc.gc_share))} of the trace); "
                 f"every thread is stopped during a collection.</p>")
    rows = []
    for g in [*gc.generations, gc.overall]:
        d = g.pauses
        rows.append(["all" if g.generation is None else g.generation, g.collections,
                     *(duration(v) for v in (d.total, d.mean, d.p50, d.p90, d.p99, d.max)),
                     g.collected, g.uncollectable])
    parts.append(table(("generation", "collections", "total", "mean", "p50", "p90", "p99",
                        "max", "collected", "uncollectable"), rows, css="gc-generations"))
    parts.append('<div class="charts"><figure><figcaption>Pause durations</figcaption>'
                 f"{histogram_svg(gc.histogram)}</figure><figure><figcaption>Minimum mutator "
                 "utilization: the worst share of any window left to the program"
                 f"</figcaption>{mmu_svg(gc.mmu)}</figure></div>")
    rows = []
    for p in gc.longest:
        frames = [f"{f.func} ({f.file}:{f.line})" for f in p.stack or ()]
        if len(frames) > STACK_FRAMES_SHOWN:
            hidden = len(frames) - STACK_FRAMES_SHOWN
            frames[STACK_FRAMES_SHOWN:] = [f"({hidden} outer frames not shown)"]
        stack = "\n".join(frames) or "(no stack)"
        rows.append([duration(p.duration), duration(p.start - data.timeline.start),
                     p.generation, p.tid, p.collected, p.uncollectable, stack])
    parts.append("<h3>Longest pauses</h3>")
    parts.append(table(("pause", "at", "generation", "thread", "collected", "uncollectable",
                        "triggered in (innermost first)"), rows, text=(6,), css="gc-longest"))
    parts.append("<h3>GC share per thread</h3>")
    parts.append(table(("thread", "lifetime", "paused", "share"),
                       [[f"{t.name} ({t.tid})", duration(t.lifetime), duration(t.gc_time),
                         percent(t.share)] for t in gc.threads], css="gc-threads"))
    parts.append("</section>")
    return "".join(parts)


def _threads_section(data: ReportData) -> str:
    rows = [[f"{t.name} ({t.tid})", duration(t.lifetime), duration(t.running),
             duration(t.blocked_total), duration(t.sleeping), duration(t.syscall),
             duration(t.gc_stopped),
             ", ".join(f"{reason} {duration(ns)}" for reason, ns in sorted(t.blocked.items()))]
            for t in data.threads]
    return ('<section id="threads"><h2>Threads</h2>'
            + table(("thread", "lifetime", "running", "blocked", "sleeping", "syscall",
                     "GC stopped", "blocked by reason"), rows, text=(0, 7), css="threads")
            + "</section>")


def _profile_section(data: ReportData) -> str:
    if not data.functions:
        return ('<section id="profile"><h2>Function profile</h2>'
                "<p>The trace has no call events.</p></section>")
    rows = [[f.name, f"{f.file}:{f.line}" if f.file else "(C)", f.calls, duration(f.total_time),
             duration(f.self_time), f.exceptions, f.unfinished] for f in data.functions]
    return (f'<section id="profile"><h2>Function profile</h2><p>The {len(rows)} functions with '
            "the most self time (all threads); total time counts a recursive function once."
            "</p>" + table(("function", "where", "calls", "total", "self", "exceptions",
                           "unfinished"), rows, text=(0, 1), css="profile")
            + "</section>")


def _user_section(data: ReportData) -> str:
    user = data.user
    if not user.tasks and not user.regions:
        return ""
    parts = ['<section id="user"><h2>User tasks and regions</h2>']
    for title, latencies in (("Tasks", user.tasks), ("Regions", user.regions)):
        if latencies:
            rows = [[s.name, s.latency.count, duration(s.latency.mean), duration(s.latency.p50),
                     duration(s.latency.p90), duration(s.latency.p99), duration(s.latency.max),
                     s.unfinished] for s in latencies]
            parts.append(f"<h3>{title}</h3>")
            parts.append(table(("name", "count", "mean", "p50", "p90", "p99", "max",
                                "unfinished"), rows))
    parts.append("</section>")
    return "".join(parts)


def render(data: ReportData) -> str:
    """The whole page."""
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
           "img-src data:")
    title = os.path.basename(data.trace.path or "") or "trace"
    sections = [("timeline-section", "Timeline"), ("gc", "GC pauses"), ("threads", "Threads"),
                ("profile", "Function profile")]
    if data.user.tasks or data.user.regions:
        sections.append(("user", "Tasks and regions"))
    nav = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pytrace report: {esc(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{_asset('report.css')}</style></head><body>"
        f"{_header(data)}<nav>{nav}</nav><main>"
        f"{_timeline_section(data)}{_gc_section(data)}{_threads_section(data)}"
        f"{_profile_section(data)}{_user_section(data)}</main>"
        '<script type="application/json" id="pytrace-data">'
        f"{json_for_script(data.timeline.to_json())}</script>"
        f"<script>{script}</script></body></html>\n")
