"""pytrace: a Go-style execution tracer for CPython.

Data flows one way: hooks -> per-thread slots (``buffer``) -> ``writer`` ->
file -> ``reader`` -> analyses -> faces (CLI, pytest plugin, exports).
"""

__version__ = "0.1.0"

from .annotations import counter, log, region, task  # noqa: E402
from .errors import TraceFormatError, TraceWarning  # noqa: E402
from .reader import Trace, read  # noqa: E402
from .session import start, stop, trace  # noqa: E402
from .validate import ValidationReport, validate  # noqa: E402

__all__ = [
    "Trace", "TraceFormatError", "TraceWarning", "ValidationReport", "counter", "log", "read",
    "region", "start", "stop", "task", "trace", "validate",
]
