"""Exports of a trace to other tools' formats.

``chrome``  Chrome Trace Event / Perfetto JSON (ui.perfetto.dev, chrome://tracing)
``go``      Go 1.19 execution trace (``go tool trace``)
``folded``  folded stacks (flamegraph.pl, speedscope)

Each writer streams its output and reads only the decoded ``Trace``;
``timeline`` rebuilds the per-thread slices they share.
"""

from .chrome import write_chrome
from .folded import write_folded
from .gotrace import write_go

#: Format name -> (writer, opens its output in binary mode).
FORMATS = {
    "chrome": (write_chrome, False),
    "go": (write_go, True),
    "folded": (write_folded, False),
}

__all__ = ["FORMATS", "write_chrome", "write_folded", "write_go"]
