"""Call events from the interpreter's profile hook, with the C core's
profile function (3.11; selectable on 3.12+).

The same backend as ``hooks/setprofile.py``: a thread's first event reaches
the Python ``bootstrap`` (``threading.setprofile`` for new threads, and on
3.12+ ``sys._setprofileallthreads`` for running ones), which here installs
the C profile function of a ``pytrace._core.Calls`` object in that thread
(``PyEval_SetProfile``) instead of a Python one.  The event mapping
(``f_lasti`` at a return or a yield, throws into generators, C calls
matched to their frame) is ``setprofile.py``'s, done in C; the per-code
decisions stay in ``SetprofileCalls.entries``.  At stop, a thread whose
profile function could not be removed from outside (3.11) removes it at
its next event.  What keeps the C profile function's object alive while
CPython 3.11 may still call it is ``setprofile.HELD``'s, as for the Python
profile functions.
"""

from __future__ import annotations

import sys

from ..session import is_own_thread
from . import setprofile
from .core_calls import CoreCalls, type_byte

GEN_YIELD = type_byte("GenYield")


class CSetprofileCalls(CoreCalls, setprofile.SetprofileCalls):
    """``SetprofileCalls`` with the C profile function."""

    def __init__(self, session) -> None:
        super().__init__(session)
        self.fast = self.make_fast()

    def stop(self) -> None:
        self.fast.stop_profiling()
        super().stop()

    def bootstrap(self, frame, event, arg) -> None:
        """A thread's first profile event: hand the thread over to C.  (Again
        for an interrupted event, see ``setprofile.HELD``: the thread's state
        in C is made once.)"""
        try:
            setprofile.HELD.keep(self, sys.getprofile())
            if self.stopped or is_own_thread():
                sys.setprofile(None)
                return
            setprofile.HELD.keep(self, self.fast)
            self.fast.install_profile(frame, event, arg)
        except Exception as exc:
            self.session.fail(exc)

    def c_first_start(self, code) -> int:
        start = self._entry(code)[2]
        return -1 if start is None else start

    def c_exits(self, code) -> dict:
        """``f_lasti`` -> True at a yield, False at a return (else: unwind)."""
        return {lasti: record.prefix == GEN_YIELD
                for lasti, record in self._entry(code)[1].items()}

    def _entry(self, code) -> tuple:
        return self.entries[id(code)]


BACKEND = CSetprofileCalls
