"""The ``pytrace`` command: a thin face over the library API.

Exit codes: 0 success, 1 the input is bad (e.g. an invalid trace), 2 usage
error (argparse's convention).  ``pytrace run`` exits with the traced
program's own status.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import TraceFormatError
from .options import DEFAULTS, Options, OptionsError
from .session import TracerError


def _validate(args) -> int:
    from .validate import validate

    status = 0
    for path in args.files:
        try:
            report = validate(path)
        except TraceFormatError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(report.summary())
        for problem in report.problems:
            print(f"  error: {problem}")
        for warning in report.warnings:
            print(f"  warning: {warning}")
        if not report.valid:
            status = 1
    return status


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """The recording options as command-line flags (``pytrace run``)."""
    parser.add_argument("--no-calls", dest="calls", action="store_false",
                        help="light Go-style mode: no function call events")
    parser.add_argument("--c-calls", action="store_true", help="also record calls of C functions")
    parser.add_argument("--no-gc", dest="gc", action="store_false", help="do not record GC")
    parser.add_argument("--no-threads", dest="threads", action="store_false",
                        help="do not record thread create/start/end")
    parser.add_argument("--no-blocking", dest="blocking", action="store_false",
                        help="do not record sleeps, lock waits and I/O waits")
    parser.add_argument("--no-asyncio", dest="asyncio", action="store_false",
                        help="do not record asyncio tasks")
    parser.add_argument("--sample-rate", type=float, default=0.0, metavar="HZ",
                        help="CPU samples of all threads per second (default 0: off)")
    parser.add_argument("--heap-interval", type=float, default=0.0, metavar="SECONDS",
                        help="heap counters every SECONDS besides each GC end (default 0: off)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                        help="only trace modules or files matching GLOB (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="never trace modules or files matching GLOB (repeatable)")
    parser.add_argument("--max-depth", type=int, default=0, metavar="N",
                        help="record calls at most N deep (default 0: unlimited)")
    parser.add_argument("--buffer-size", type=int, default=DEFAULTS["buffer_size"], metavar="BYTES",
                        help=f"bytes per thread buffer (default {DEFAULTS['buffer_size']})")
    parser.add_argument("--flush-interval", type=float, default=DEFAULTS["flush_interval"],
                        metavar="SECONDS", help="flush every thread's buffer this often, so a "
                        "crash loses at most that much "
                        f"(default {DEFAULTS['flush_interval']}; 0: off)")
    parser.add_argument("--backend", choices=("auto", "monitoring", "setprofile"), default="auto",
                        help="call hook: sys.monitoring (3.12+) or sys.setprofile (default: best)")
    parser.add_argument("--children", action="store_true",
                        help="also trace child processes running Python, each into "
                        "<trace stem>.<pid>.pytrace")


def options_from_args(args) -> Options:
    return Options(
        calls=args.calls, c_calls=args.c_calls, gc=args.gc, threads=args.threads,
        blocking=args.blocking, asyncio=args.asyncio, sample_rate=args.sample_rate,
        heap_interval=args.heap_interval, include=tuple(args.include),
        exclude=tuple(args.exclude), max_depth=args.max_depth, buffer_size=args.buffer_size,
        flush_interval=args.flush_interval, backend=args.backend, children=args.children)


def _run(args) -> int:
    from .run import run_program

    if not args.program:
        print("pytrace run: give a script (pytrace run app.py) or a module (pytrace run -m pkg)",
              file=sys.stderr)
        return 2
    target, rest = args.program[0], args.program[1:]
    output = args.output
    if output is None:
        stem = target if args.module else os.path.splitext(os.path.basename(target))[0]
        output = f"{stem}.pytrace"
    try:
        options = options_from_args(args)
        return run_program(target, rest, module=args.module, path=output, options=options)
    except (OptionsError, TracerError) as exc:
        print(f"pytrace run: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytrace", description="A Go-style execution tracer for CPython.")
    parser.add_argument("--version", action="version", version=f"pytrace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser("run", help="run a Python program under the tracer",
                            usage="pytrace run [options] (script.py | -m module) [args...]")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the trace (default: <script or module>.pytrace)")
    p.add_argument("-m", dest="module", action="store_true", help="run a module, like python -m")
    add_option_flags(p)
    p.add_argument("program", nargs=argparse.REMAINDER, help="script or module, then its arguments")
    p.set_defaults(func=_run)

    p = commands.add_parser("validate", help="check that trace files are whole and well-formed")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_validate)
    from . import cli_analysis; cli_analysis.add_parsers(commands)  # stats, gc, top
    from . import cli_export; cli_export.add_parsers(commands)  # export, report, view
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
