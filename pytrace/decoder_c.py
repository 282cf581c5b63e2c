"""``reader.Decoder`` with its two hot loops in C (``pytrace._core``).

Per record, ``Run.decode`` checks every timed event written inline (one to
three varints: nearly every event) and keeps only where each stretch of
them lies in the trace's bytes; anything else (definitions,
length-prefixed events, unknown or broken records) stops it, and the
Python decoder reads that record with its own checks and messages and
hands the loop back.  Per event, ``_core.resolve_events`` reads the
stretches again, resolves the arguments and merges the threads in time
order (ties in thread order, as the Python decoder's stable sort) into
``Event``s, with no per-event Python call and no sort.  Where the answer
would need the Python decoder's bookkeeping (an undefined id, a thread's
clock going backwards, a time beyond 64 bits), it returns None and the
Python resolution runs: ``tests/test_cores.py`` checks both give the same
Trace.
"""

from __future__ import annotations

from . import core, events, wire
from .reader import Decoder, Event


def _fast_type_bytes() -> bytes:
    """For each type byte: 1 if it is a timed event written inline with the
    varint count its row gives it, else 0 (the Python decoder's case)."""
    table = bytearray(256)
    for kind in events.TABLE:
        if kind.timed and 1 <= kind.varint_count <= wire.LENGTH_PREFIXED:
            table[kind.id | (kind.varint_count - 1) << 6] = 1
    return bytes(table)


#: See ``_fast_type_bytes``.
FAST = _fast_type_bytes()
#: The event kinds by id.
KINDS = tuple(events.BY_ID.get(i) for i in range(64))
#: For each kind id: its arguments' types (``events`` module doc) as a str.
PLANS = tuple(
    "".join(t for _, t in events.BY_ID[i].args) if i in events.BY_ID and events.BY_ID[i].timed
    else None
    for i in range(64))


class CDecoder(Decoder):
    """The same decoding as ``Decoder``, faster (see the module docstring)."""

    def __init__(self, data: bytes, path: str | None = None) -> None:
        # The runs point into the data until resolution: it must not change.
        super().__init__(data if type(data) is bytes else bytes(data), path)

    def _new_run(self, tid: int):
        return core.c_module.Run(tid, KINDS)

    def _decode_batch(self, info, out) -> tuple[int, int]:
        data, end = self.data, info.end
        p, ts, found = info.header_end, info.base, 0
        decode = out.decode
        while True:
            decoded, ts, p, done = decode(data, p, end, ts, FAST)
            found += decoded
            if done:
                return found, ts
            start = p
            found += 1
            try:
                p, ts = self._slow_record(data[p], start, p + 1, ts, info, out)
            except (wire.Truncated, wire.Malformed) as exc:
                self._bad_record(exc, start, info)
                return found, ts

    def _events(self, per_thread: dict, plan: dict, start_ticks: int, freq: int,
                using: list) -> list:
        runs = sorted(per_thread.items())
        trace = self.trace
        resolved = core.c_module.resolve_events(
            runs, PLANS, trace.strings, trace.funcs, trace.stacks, start_ticks, freq, Event)
        if resolved is None:
            return super()._events({tid: list(run) for tid, run in runs}, plan, start_ticks,
                                   freq, using)
        return resolved
