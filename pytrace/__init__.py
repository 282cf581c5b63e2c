"""pytrace: a Go-style execution tracer for CPython.

Data flows one way: hooks -> per-thread slots (``buffer``) -> ``writer`` ->
file -> ``reader`` -> analyses -> faces (CLI, pytest plugin, exports).

The public names below are imported on first use, not with the package:
pytest imports ``pytrace.pytest_plugin`` (hence this package) in every run
once pytrace is installed, and importing the tracer and the reader eagerly
cost each of those runs ~25 ms even without ``--pytrace`` (issue 4).
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# Eager, as the one exception: it chooses the core (``PYTRACE_CORE``), and
# a wrong choice is an error at ``import pytrace``, not at the first trace.
from . import core  # noqa: E402,F401

#: Public name -> the submodule that defines it.
_PUBLIC = {
    "counter": "annotations", "log": "annotations", "region": "annotations",
    "task": "annotations",
    "TraceFormatError": "errors", "TraceWarning": "errors",
    "Trace": "reader", "read": "reader",
    "start": "session", "stop": "session", "trace": "session",
    "ValidationReport": "validate", "validate": "validate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})


class _Package(types.ModuleType):
    """``pytrace.validate`` is the function, as it was when this package
    imported it eagerly: importing the submodule of the same name (the CLI
    does) binds the name to the module, and this puts the function back."""

    def __setattr__(self, name: str, value) -> None:
        if name == "validate" and isinstance(value, types.ModuleType):
            value = value.validate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
