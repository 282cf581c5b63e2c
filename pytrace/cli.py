"""The ``pytrace`` command: a thin face over the library API.

Exit codes: 0 success, 1 the input is bad (e.g. an invalid trace), 2 usage
error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import TraceFormatError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytrace", description="A Go-style execution tracer for CPython.")
    parser.add_argument("--version", action="version", version=f"pytrace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser("validate", help="check that trace files are whole and well-formed")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_validate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
