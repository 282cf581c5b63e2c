"""Which core does the per-event work: the C extension ``pytrace._core`` or pure Python.

The C core is the thread slots (``_core.ThreadSlot``), the call hooks'
callbacks (``hooks/monitoring_c.py``, ``hooks/setprofile_c.py``) and the
reader's hot loops (``decoder_c.py``).  Like coverage.py's CTracer and
PyTracer, the two cores are interchangeable: the same ``ThreadSlot`` methods
and semantics, the same bytes for the same events at the same clock
readings, the same events from the same program, the same ``Trace`` from
the same file (``tests/test_cores.py`` checks each).  The C core is only
faster.

The choice is made once, at import:

- ``PYTRACE_CORE=c`` forces the C core (an error if it cannot be imported);
- ``PYTRACE_CORE=python`` forces the pure-Python core;
- unset (or empty), the C core is used if it imports, else the Python core
  with one ``CoreWarning`` saying why (e.g. no compiler at install time).

The clocks differ only in cost: the Python core reads ``time.perf_counter_ns``,
the C core ``_core.clock`` (also nanoseconds, on the same epoch, read from
the CPU's timestamp counter where the kernel uses it, ~18 ns a read on this
project's machines against ~45 ns for clock_gettime; ``PYTRACE_CLOCK=monotonic``
makes it use CLOCK_MONOTONIC instead; see ``_core.c``).  A
``Recorder`` given an explicit clock (tests script one) uses it with either
core, which is what makes byte-for-byte comparison possible.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings

from . import events

#: Nanosecond clocks: every timestamp either core writes is in these ticks.
FREQUENCY = 1_000_000_000
NAMES = ("c", "python")


class CoreWarning(RuntimeWarning):
    """The C core is unavailable; pytrace runs on its (slower) pure-Python core."""


class CoreError(ImportError):
    """``PYTRACE_CORE`` asks for a core that cannot be used."""


def _load_c():
    """The C extension module, checked against the event table it hard-codes."""
    # import_module, not "from . import _core": inside the package's own
    # import, the latter reports a missing extension as a circular import.
    _core = importlib.import_module(f"{__package__}._core")
    for name in ("Batch", "String", "Func", "Stack"):
        if getattr(_core, f"EV_{name.upper()}") != events.BY_NAME[name].id:
            raise ImportError(f"pytrace._core was built for another event table ({name}); "
                              f"reinstall pytrace to rebuild it")
    return _core


def _choose(requested: str):
    """``(active core name, C module or None)`` for the ``PYTRACE_CORE`` value
    ``requested``.  The C module is returned whenever it imports, even with
    the Python core forced: tests compare both cores in one process."""
    if requested not in ("", *NAMES):
        raise CoreError(f"PYTRACE_CORE={requested!r} is not a core; use 'c' or 'python'")
    try:
        module = _load_c()
    except ImportError as exc:
        if requested == "c":
            raise CoreError(
                f"PYTRACE_CORE=c but pytrace's C core cannot be imported ({exc}); reinstall "
                f"pytrace with a C compiler available (pip install --force-reinstall "
                f"pytrace-exec), or unset PYTRACE_CORE to use the Python core") from exc
        if requested == "":
            warnings.warn(
                f"pytrace's C core is unavailable ({exc}); using the pure-Python core, which "
                f"adds several times more overhead.  Reinstall pytrace with a C compiler "
                f"available to get it; set PYTRACE_CORE=python to silence this warning.",
                CoreWarning, stacklevel=2)
        return "python", None
    return ("python" if requested == "python" else "c"), module


#: The active core's name, "c" or "python".
name, c_module = _choose(os.environ.get("PYTRACE_CORE", "").strip().lower())


def use(core: str) -> str:
    """Make ``core`` ("c" or "python") the active one for the recorders, call
    hooks and readers made from now on; return the previous name.  For tests
    and benchmarks that compare the cores in one process."""
    global name
    if core not in NAMES:
        raise CoreError(f"unknown core {core!r}; use 'c' or 'python'")
    if core == "c" and c_module is None:
        raise CoreError("pytrace's C core is not available in this installation")
    previous, name = name, core
    return previous


def slot_class() -> type:
    """The active core's ``ThreadSlot``.  For the Python core it is looked up
    in ``pytrace.buffer`` at each call, so that tests may replace it.  (Through
    ``sys.modules``, not an import statement: this runs when a traced thread
    gets its slot, and the import machinery's Python code would be traced.)"""
    if name == "c":
        return c_module.ThreadSlot
    return sys.modules[f"{__package__}.buffer"].ThreadSlot


def clock():
    """The active core's clock (a callable returning nanoseconds)."""
    return c_module.clock if name == "c" else time.perf_counter_ns
