"""What the C core's call hooks (``monitoring_c``, ``setprofile_c``) share:
the driver side of a ``pytrace._core.Calls`` object.

``_core.Calls`` does what happens on every event; on cold paths it calls
back the ``c_*`` methods below (see the protocol in ``pytrace/_core.c``),
which answer with the Python backends' own logic, so both cores decide,
name and open frames identically.
"""

from __future__ import annotations

from .. import core, events
from ..session import is_own_thread
from .calls import CFunctions, first_start_offset, open_frames


def type_byte(name: str) -> bytes:
    """The type byte of the timed event ``name``, with its argument-count bits."""
    kind = events.BY_NAME[name]
    return bytes((kind.id | (kind.varint_count - 1) << 6,))


#: The call events' type bytes in the order ``_core.Calls`` expects them.
PREFIXES = b"".join(type_byte(name) for name in (
    "CallEnter", "CallExit", "CallUnwind", "GenYield", "GenResume", "CCallEnter", "CCallExit"))


class CoreCalls:
    """What ``_core.Calls`` asks its driver on cold paths.  Needs ``session``, ``max_depth``,
    ``entries``, ``c_functions`` and ``_traced_func_id`` from the backend it is
    mixed into."""

    c_functions: CFunctions

    def make_fast(self, disable=None, missing=None):
        return core.c_module.Calls(self, self.session.slots.by_ident, PREFIXES, self.max_depth,
                                   self.c_calls, disable, missing)

    def c_decide(self, code, frame) -> int:
        return self._traced_func_id(code, frame)

    def c_lookup(self, code):
        """``code``'s function id (0: not traced) if it was decided, else None."""
        decided = self.entries.get(id(code))
        if decided is None:
            return None
        return self.session.slots.current().code_func_id(code) if decided else 0

    def c_open_thread(self, frame):
        """``(slot, depth)`` of the calling thread's new state: its slot and
        the traced frames open from ``frame`` outwards (written as
        ``OpenFrames``); ``(None, 0)`` for pytrace's own threads (muted)."""
        if is_own_thread():
            return None, 0
        slot = self.session.slots.current()
        return slot, open_frames(slot, frame, self._traced_func_id, self.max_depth)

    def c_first_start(self, code) -> int:
        return first_start_offset(code)

    def c_function_id(self, slot, func) -> int:
        return self.c_functions.func_id(slot, func)

    def c_fail(self, exc) -> None:
        self.session.fail(exc)
