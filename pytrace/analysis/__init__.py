"""Analyses over a decoded ``Trace``: plain functions returning plain dataclasses.

The CLI (``pytrace stats|gc|top``), the HTML report, the pytest plugin and
the exporters are faces over these; ``jsonable`` turns any result into JSON
data.  Times are nanoseconds since the trace started, like ``Event.ts``.

- ``analyze_gc``: pauses per generation, longest pauses with stacks, GC share
  per thread and overall, pause histogram, MMU curve (``gc``, ``mmu``).
- ``function_profile``: calls, total and self time per function, per thread and
  overall, callers and callees (``profile``).
- ``thread_times`` and ``user_annotations``: running / blocked / sleeping /
  syscall / GC-stopped time per thread; task and region latencies (``threads``).
- ``summarize``: the overview of ``pytrace stats`` (``summary``).
"""

from .distribution import Distribution, percentile
from .gc import GCPause, GCReport, analyze_gc, collect_pauses
from .jsonable import jsonable
from .mmu import MMUCurve, MMUPoint, UtilizationSeries, default_windows
from .profile import CallEdge, FunctionStats, Profile, function_profile
from .summary import TraceSummary, summarize
from .threads import LatencyStats, ThreadTimes, UserAnnotations, thread_times, user_annotations
from .timeline import Span, ThreadInfo, thread_infos, trace_span

__all__ = [
    "CallEdge", "Distribution", "FunctionStats", "GCPause", "GCReport", "LatencyStats",
    "MMUCurve", "MMUPoint", "Profile", "Span", "ThreadInfo", "ThreadTimes", "TraceSummary",
    "UserAnnotations", "UtilizationSeries", "analyze_gc", "collect_pauses", "default_windows",
    "function_profile", "jsonable", "percentile", "summarize", "thread_infos", "thread_times",
    "trace_span", "user_annotations",
]
