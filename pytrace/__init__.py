"""pytrace: a Go-style execution tracer for CPython.

Data flows one way: hooks -> per-thread slots (``buffer``) -> ``writer`` ->
file -> ``reader`` -> analyses -> faces (CLI, pytest plugin, exports).
"""

__version__ = "0.1.0"

from .errors import TraceFormatError, TraceWarning  # noqa: E402
from .reader import Trace, read  # noqa: E402
from .validate import ValidationReport, validate  # noqa: E402

__all__ = ["Trace", "TraceFormatError", "TraceWarning", "ValidationReport", "read", "validate"]
