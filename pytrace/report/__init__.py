"""The HTML report: one self-contained page to explore a trace in a browser.

    from pytrace.report import write_report
    with open("report.html", "w", encoding="utf-8") as out:
        write_report(trace, out)

The page holds a zoomable timeline of every thread (calls, GC pauses,
blocking, syscalls and user regions, with GC pauses shaded across all
threads), the GC pause table, histogram and MMU curve, the thread states,
the function profile and the user task and region latencies.  Nothing is
fetched: CSS, JavaScript, data and charts are inline.  ``data`` gathers what
is shown (from ``pytrace.analysis``; see it for the size bound on big
traces), ``html`` renders it and documents how trace strings are escaped.
"""

from __future__ import annotations

from typing import TextIO

from ..reader import Trace
from .data import DEFAULT_MAX_SLICES, DEFAULT_TOP, report_data
from .html import render


def render_report(trace: Trace, max_slices: int = DEFAULT_MAX_SLICES, top: int = DEFAULT_TOP,
                  progress=None) -> str:
    """The report of ``trace`` as an HTML string."""
    return render(report_data(trace, max_slices, top, progress))


def write_report(trace: Trace, out: TextIO, max_slices: int = DEFAULT_MAX_SLICES,
                 top: int = DEFAULT_TOP, progress=None) -> None:
    """Write the report of ``trace`` to the text stream ``out``."""
    out.write(render_report(trace, max_slices, top, progress))


__all__ = ["DEFAULT_MAX_SLICES", "DEFAULT_TOP", "render_report", "write_report"]
