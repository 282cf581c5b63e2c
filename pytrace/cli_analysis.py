"""``pytrace stats``, ``gc`` and ``top``: text and ``--json`` faces of ``pytrace.analysis``.

Every command reads one trace (exit 1 with one sentence if it is not a valid
trace; exit 2 for an argument that does not fit it), runs library analyses and prints either aligned tables or, with
``--json``, the analyses' dataclasses through ``analysis.jsonable``.  A trace
cut short is still analysed; the reader's warning goes to stderr as one line.
While reading and analysing, a status line on stderr says what is going on,
only if stderr is a terminal (it is erased when the work is done, so it never
mixes with the output or lands in a log).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from . import analysis
from .errors import TraceFormatError, TraceWarning
from .reader import collector_paused, read

#: Window sizes ``pytrace gc`` prints the MMU for (ns): 1 us .. 1 s, then the whole trace.
MMU_WINDOWS = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)


def add_parsers(commands) -> None:
    """Add ``stats``, ``gc`` and ``top`` to the ``pytrace`` command's subparsers."""
    p = commands.add_parser("stats", help="overview: duration, threads, events, GC, top functions")
    _common(p)
    p.add_argument("--limit", type=_positive, default=10, metavar="N",
                   help="functions to list (default 10)")
    p.set_defaults(func=_stats)

    p = commands.add_parser("gc", help="GC pauses per generation, longest pauses, MMU")
    _common(p)
    p.add_argument("--longest", type=_positive, default=10, metavar="N",
                   help="longest pauses to list with their stacks (default 10)")
    p.set_defaults(func=_gc)

    p = commands.add_parser("top", help="function profile: calls, total and self time")
    _common(p)
    p.add_argument("--sort", choices=analysis.profile.SORT_KEYS, default="self",
                   help="order by self time, total (inclusive) time or calls (default self)")
    p.add_argument("--limit", type=_positive, default=20, metavar="N",
                   help="rows to list (default 20)")
    p.add_argument("--thread", type=int, metavar="TID", help="only this pytrace thread id")
    p.set_defaults(func=_top)


def _common(parser) -> None:
    parser.add_argument("file", metavar="FILE", help="a trace written by pytrace")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# -- running a command ----------------------------------------------------------


class Status:
    """A one-line, self-erasing progress message on stderr, shown only on a terminal."""

    def __init__(self) -> None:
        self.stream = sys.stderr
        self.enabled = _isatty(self.stream)
        self.shown = False

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[Kpytrace: {message}...")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def mmu_windows(span_duration: int) -> list[int]:
    """``MMU_WINDOWS`` shorter than the trace, then the whole trace."""
    if span_duration <= 0:
        return []
    return [w for w in MMU_WINDOWS if w < span_duration] + [span_duration]


def _run(args, analyse, render) -> int:
    """Read ``args.file``, ``analyse(trace, args, status)``, print it as text or JSON."""
    status = Status()
    try:
        with warnings.catch_warnings(record=True) as caught, collector_paused():
            warnings.simplefilter("always", TraceWarning)
            status(f"reading {args.file} ({_megabytes(args.file)})")
            trace = read(args.file)
            result = analyse(trace, args, status)
    except TraceFormatError as exc:
        print(f"pytrace {args.command}: {args.file}: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"pytrace {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        status.clear()
    for warning in caught:
        if issubclass(warning.category, TraceWarning):
            print(f"pytrace {args.command}: warning: {warning.message}", file=sys.stderr)
    try:
        if args.json:
            json.dump(analysis.jsonable(result), sys.stdout, indent=2)
            print()
        else:
            for line in render(result, args):
                print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``pytrace top FILE | head``): not a failure.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _megabytes(path) -> str:
    try:
        return f"{os.path.getsize(path) / 1e6:.1f} MB"
    except OSError:
        return "size unknown"


class UsageError(Exception):
    """An argument that does not fit the trace (exit 2)."""


def _stats(args) -> int:
    return _run(args, lambda trace, args, status: analysis.summarize(trace, args.limit, status),
                render_stats)


def _gc(args) -> int:
    def analyse(trace, args, status):
        status("analysing GC pauses and MMU")
        # JSON gets the whole MMU curve; text shows a few round window sizes.
        windows = None if args.json else mmu_windows(analysis.trace_span(trace).duration)
        return analysis.analyze_gc(trace, longest=args.longest, mmu_windows=windows)

    return _run(args, analyse, render_gc)


def _top(args) -> int:
    def analyse(trace, args, status):
        status("profiling calls")
        prof = analysis.function_profile(trace)
        if args.thread is not None and args.thread not in prof.threads:
            known = ", ".join(map(str, sorted(prof.threads))) or "none"
            raise UsageError(f"thread {args.thread} made no calls in {args.file} "
                             f"(threads with calls: {known})")
        return {"sort": args.sort, "thread": args.thread,
                "functions": prof.top(args.sort, args.limit, args.thread)}

    return _run(args, analyse, render_top)


# -- text output ------------------------------------------------------------------


def duration(ns: float) -> str:
    """A duration in the unit that keeps 3-4 significant digits (``1.50 ms``)."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.0f} ns"


def collections(count: int) -> str:
    return f"{count} collection" + ("" if count == 1 else "s")


def percent(share: float) -> str:
    return f"{share * 100:.2f}%"


def table(headers, rows, left: int = 1) -> list[str]:
    """Aligned columns: the first ``left`` (names) left-aligned, the rest (numbers) right."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(cell.ljust(width) if i < left else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return [line([str(h) for h in headers]), *(line(r) for r in rows)]


def frame_text(frame) -> str:
    return f"{frame.func} ({frame.file}:{frame.line})"


def _function_name(f) -> str:
    if f.c_function or not f.file:
        return f.name
    return f"{f.name} ({os.path.basename(f.file)}:{f.line})"


def _generation_rows(generations):
    rows = []
    for g in generations:
        d = g.pauses
        rows.append(["all" if g.generation is None else g.generation, g.collections,
                     duration(d.total), duration(d.mean), duration(d.p50), duration(d.p90),
                     duration(d.p99), duration(d.max), g.collected, g.uncollectable])
    return rows


_GENERATION_HEADERS = ("gen", "collections", "total", "mean", "p50", "p90", "p99", "max",
                       "collected", "uncollectable")


def render_stats(s, args) -> list[str]:
    fields = {"trace": f"{s.path}" + ("" if s.complete else "  (cut short: no footer)"),
              "duration": f"{duration(s.span.duration)}  ({s.events} events)", **s.meta}
    width = max(map(len, fields))
    out = [f"{key:<{width}}  {value}" for key, value in fields.items()]
    out += ["", "threads"]
    out += _indent(table(
        ("tid", "name", "lifetime", "running", "blocked", "sleeping", "syscall", "gc"),
        [[t.tid, t.name, duration(t.lifetime), duration(t.running), duration(t.blocked_total),
          duration(t.sleeping), duration(t.syscall), duration(t.gc_stopped)] for t in s.threads],
        left=2))
    out += ["", "events"]
    out += _indent(table(("kind", "count"), list(s.events_by_kind.items())))
    gc = s.gc
    out += ["", "gc", f"  {collections(gc.collections)}, {duration(gc.gc_time)} paused "
                      f"({percent(gc.gc_share)} of the trace)"]
    if gc.longest is not None:
        p = gc.longest
        trigger = frame_text(p.stack[0]) if p.stack else "no stack recorded"
        out.append(f"  longest pause {duration(p.duration)} (generation {p.generation}, "
                   f"thread {p.tid}) in {trigger}")
    if gc.collections:
        out += _indent(table(_GENERATION_HEADERS, _generation_rows(gc.generations)))
    if s.top_functions:
        out += ["", "top functions by self time"]
        out += _indent(_profile_table(s.top_functions))
    for title, latencies in (("user tasks", s.user.tasks), ("user regions", s.user.regions)):
        if latencies:
            out += ["", title]
            out += _indent(_latency_table(latencies))
    return out


def render_gc(r, args) -> list[str]:
    out = [f"{collections(r.overall.collections)} in {duration(r.span.duration)}: "
           f"{duration(r.gc_time)} paused ({percent(r.gc_share)}); every thread is stopped "
           f"during a collection"]
    if r.unmatched_done:
        out.append(f"({r.unmatched_done} GCDone events had no GCStart and were ignored)")
    if not r.pauses:
        return out
    out.append("")
    out += table(_GENERATION_HEADERS, _generation_rows([*r.generations, r.overall]))
    out += ["", "GC share per thread"]
    out += _indent(table(("tid", "name", "lifetime", "paused", "share"),
                         [[t.tid, t.name, duration(t.lifetime), duration(t.gc_time),
                           percent(t.share)] for t in r.threads], left=2))
    out += ["", "longest pauses (innermost frame first)"]
    for p in r.longest:
        note = "" if p.complete else ", still running at the end of the trace"
        out.append(f"  {duration(p.duration)} at {duration(p.start)}: generation {p.generation}, "
                   f"thread {p.tid}, collected {p.collected}, uncollectable {p.uncollectable}"
                   f"{note}")
        out += [f"      {frame_text(frame)}" for frame in p.stack or ()]
    out += ["", "minimum mutator utilization (worst share of any window left to the program)"]
    out += _indent(table(("window", "MMU", "worst window starts at"),
                         [[duration(m.window), percent(m.utilization), duration(m.worst_start)]
                          for m in r.mmu]))
    return out


def render_top(result, args) -> list[str]:
    if not result["functions"]:
        return ["no calls in this trace (was it recorded with --no-calls?)"]
    scope = "all threads" if args.thread is None else f"thread {args.thread}"
    return [f"functions by {args.sort} time ({scope})" if args.sort != "calls"
            else f"functions by calls ({scope})", *_profile_table(result["functions"])]


def _profile_table(functions) -> list[str]:
    return table(("function", "calls", "total", "self", "exceptions", "unfinished"),
                 [[_function_name(f), f.calls, duration(f.total_time), duration(f.self_time),
                   f.exceptions, f.unfinished] for f in functions])


def _latency_table(latencies) -> list[str]:
    return table(("name", "count", "total", "mean", "p50", "p90", "max", "unfinished"),
                 [[l.name, l.latency.count, duration(l.latency.total), duration(l.latency.mean),
                   duration(l.latency.p50), duration(l.latency.p90), duration(l.latency.max),
                   l.unfinished] for l in latencies])


def _indent(lines) -> list[str]:
    return ["  " + line for line in lines]
