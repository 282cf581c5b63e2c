"""Call events from ``sys.monitoring`` with the C core's callbacks (3.12+).

The same backend as ``hooks/monitoring.py`` (tool id, local events, DISABLE,
restart_events, clean stop, and every cold path: the filter decision,
a thread's ``OpenFrames``, ``PY_THROW``'s first-start offset, C function
names), with the callbacks that run on every event replaced by the methods
of a ``pytrace._core.Calls`` object: one C call per event instead of a
Python function (see ``pytrace/_core.c`` for the hot paths and the
``c_*`` methods below for what they ask back).  The per-thread state lives
in C; ``MonitoringCalls`` keeps the per-code decisions.
"""

from __future__ import annotations

from . import monitoring
from .core_calls import CoreCalls
from .monitoring import DISABLE, E, MISSING

class CMonitoringCalls(CoreCalls, monitoring.MonitoringCalls):
    """``MonitoringCalls`` with the C callbacks."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.fast = self.make_fast(DISABLE, MISSING)

    def _callbacks(self) -> dict:
        fast = self.fast
        callbacks = {
            E.PY_START: fast.py_start,
            E.PY_RESUME: fast.py_resume,
            E.PY_RETURN: fast.py_return,
            E.PY_YIELD: fast.py_yield,
            E.PY_UNWIND: fast.py_unwind,
            E.PY_THROW: fast.py_throw,
        }
        if self.c_calls:
            callbacks.update({E.CALL: fast.call, E.C_RETURN: fast.c_return,
                              E.C_RAISE: fast.c_return})
        return callbacks

    def _state(self, innermost_open) -> None:
        """Only ``start`` asks for a state here: the calling thread's, in C."""
        self.fast.begin_thread(innermost_open)


BACKEND = CMonitoringCalls
