"""``pytrace export``, ``report`` and ``view``: faces of ``pytrace.export`` and ``pytrace.report``.

    pytrace export FILE --format chrome|go|folded [-o OUT] [--weight time|samples]
    pytrace report FILE [-o report.html] [--max-slices N]
    pytrace view FILE [--port N] [--no-browser]

Reading, progress on a terminal, warnings for a trace cut short and exit
codes are the analysis commands' (``cli_analysis``): 1 with one sentence for
a file that is not a valid trace (or a trace Go cannot take: one without
events), 2 for a bad argument (an unknown format, an output path that cannot
be written, a busy port).  Files are written next to their final name and
renamed into place when complete, so an interrupted export leaves no
truncated file.  ``-o -`` writes to standard output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .cli_analysis import UsageError, _run as run_command
from .errors import TraceFormatError
from .export import FORMATS
from .export.folded import WEIGHTS
from .report import DEFAULT_MAX_SLICES, render_report
from .report.serve import serve_report

#: Output name suffixes when ``-o`` is not given.
SUFFIXES = {"chrome": ".json", "go": ".gotrace", "folded": ".folded"}


def add_parsers(commands) -> None:
    """Add ``export``, ``report`` and ``view`` to the ``pytrace`` command's subparsers."""
    p = commands.add_parser(
        "export", help="convert a trace for Perfetto/Chrome, go tool trace or flame graphs",
        description="chrome: Trace Event JSON for ui.perfetto.dev and chrome://tracing; "
                    "go: a Go 1.19 execution trace for `go tool trace`; folded: folded "
                    "stacks for flamegraph.pl and speedscope.")
    p.add_argument("file", metavar="FILE", help="a trace written by pytrace")
    p.add_argument("--format", "-f", choices=sorted(FORMATS), required=True)
    p.add_argument("-o", "--output", metavar="OUT",
                   help="where to write (default: FILE with .json/.gotrace/.folded; - for stdout)")
    p.add_argument("--weight", choices=WEIGHTS,
                   help="folded only: self time in microseconds (default) or CPU sample counts")
    p.set_defaults(func=_export, json=False)

    p = commands.add_parser("report", help="write a self-contained HTML report")
    p.add_argument("file", metavar="FILE", help="a trace written by pytrace")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="where to write (default: FILE with .html; - for stdout)")
    p.add_argument("--max-slices", type=_count, default=DEFAULT_MAX_SLICES, metavar="N",
                   help=f"most slices the timeline draws, longest first (default "
                        f"{DEFAULT_MAX_SLICES})")
    p.set_defaults(func=_report, json=False)

    p = commands.add_parser("view", help="serve the HTML report on 127.0.0.1 and open a browser")
    p.add_argument("file", metavar="FILE", help="a trace written by pytrace")
    p.add_argument("--port", type=_port, default=0,
                   help="port on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--no-browser", action="store_true",
                   help="only print the address, do not open a browser")
    p.set_defaults(func=_view, json=False)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of slices, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0-65535), got {text!r}")
    return int(text)


def _output_path(args, suffix: str) -> str:
    if args.output:
        path = args.output
    else:
        stem, _ = os.path.splitext(args.file)
        path = stem + suffix
    if path != "-" and os.path.realpath(path) == os.path.realpath(args.file):
        raise UsageError(f"writing {path} would overwrite the trace itself; choose another -o")
    return path


def _write(path: str, binary: bool, write) -> str:
    """Call ``write(stream)`` on ``path`` (``-`` is stdout); return what to tell the user."""
    if path == "-":
        write(sys.stdout.buffer if binary else sys.stdout)
        (sys.stdout.buffer if binary else sys.stdout).flush()
        return ""
    partial = f"{path}.partial"
    try:
        stream = open(partial, "wb") if binary else open(partial, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with stream:
            write(stream)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    return f"wrote {path} ({os.path.getsize(path):,} bytes)"


def _export(args) -> int:
    if args.weight is not None and args.format != "folded":
        print("pytrace export: --weight applies to --format folded only", file=sys.stderr)
        return 2
    writer, binary = FORMATS[args.format]

    def export(trace, args, status):
        path = _output_path(args, SUFFIXES[args.format])
        if args.format == "go" and not trace.events:
            raise TraceFormatError("the trace has no events, and Go's tools reject an empty trace")
        status(f"writing {args.format} export")
        if args.format != "folded":
            return _write(path, binary, lambda out: writer(trace, out))
        weight = args.weight or "time"
        lines = []
        said = _write(path, binary, lambda out: lines.append(writer(trace, out, weight)))
        if said and not lines[0]:
            missing = "CPU samples (record with --sample-rate)" if weight == "samples" else "calls"
            said += f"; it is empty: the trace has no {missing}"
        return said

    return run_command(args, export, _said)


def _report(args) -> int:
    def report(trace, args, status):
        path = _output_path(args, ".html")
        page = render_report(trace, args.max_slices, progress=status)
        status("writing the report")
        return _write(path, False, lambda out: out.write(page))

    return run_command(args, report, _said)


def _said(message: str, args) -> list[str]:
    return [message] if message else []


def _view(args) -> int:
    pages: list[str] = []

    def render(trace, args, status):
        pages.append(render_report(trace, progress=status))
        return ""

    status = run_command(args, render, _said)
    if status:
        return status
    try:
        serve_report(pages[0], args.port, open_browser=not args.no_browser,
                     announce=lambda url: print(f"pytrace view: the report is at {url} "
                                                "(Ctrl-C to stop)", flush=True))
    except OSError as exc:
        print(f"pytrace view: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
