"""Write traces with exactly the events and timestamps a test wants.

Analyses and exporters are tested on traces with known answers: this builder
writes them through the real ``Recorder`` (so they are real trace files), with
a scripted clock and one slot per scripted thread.

    with Synthetic(path) as s:
        s.emit(1000, 1, "GCStart", 0, [("f", "a.py", 3)])
        s.emit(1500, 1, "GCDone", 10, 0)
    trace = pytrace.read(path)   # GCStart at ts=1000, GCDone at ts=1500

or, from a list of ``(ts, tid, event name, *args)`` rows,
``write_events(path, rows)``; ``timed(steps)`` turns the ``(dt, tid, (name,
*args))`` steps that property tests draw into such rows.

Argument conventions, by the event table's argument types: ``s`` a str,
``f`` a ``(name, file, line)`` tuple, ``k`` a list of ``(name, file, line)``
frames (innermost first) or ``None``, ``i`` a signed int, ``u``/``t`` ints.
"""

from __future__ import annotations

from pytrace import events, wire
from pytrace.buffer import ThreadSlot
from pytrace.recorder import Recorder


class Synthetic:
    def __init__(self, path, buffer_size: int = 64 * 1024) -> None:
        self.now = 0
        self.recorder = Recorder(path, buffer_size=buffer_size, clock=lambda: self.now)
        self._slots: dict[int, ThreadSlot] = {}

    def slot(self, tid: int) -> ThreadSlot:
        slot = self._slots.get(tid)
        if slot is None:
            r = self.recorder
            slot = ThreadSlot(tid, r.writer, r.tables, r.clock, r.slots.limit)
            r.slots.all.append(slot)
            self._slots[tid] = slot
        return slot

    def emit(self, ts: int, tid: int, name: str, *args) -> None:
        """Write event ``name`` at ``ts`` ns on thread ``tid`` (timestamps per thread must not decrease)."""
        kind = events.BY_NAME[name]
        if len(args) != len(kind.args):
            raise TypeError(f"{name} takes {kind.arg_names}, got {len(args)} values")
        self.now = ts  # before the slot exists: a new slot's first batch starts at ts
        slot = self.slot(tid)
        values = [self._value(slot, typ, v) for (_, typ), v in zip(kind.args, args)]
        slot.emit(kind.id, *values)

    def _value(self, slot: ThreadSlot, typ: str, value) -> int:
        if typ == "s":
            return slot.string_id(value)
        if typ == "f":
            return self._func(slot, value)
        if typ == "k":
            if not value:
                return 0
            return slot.stack_id(tuple((self._func(slot, f), f[2]) for f in value))
        if typ == "i":
            return wire.zigzag(value)
        return value

    @staticmethod
    def _func(slot: ThreadSlot, func) -> int:
        name, file, line = func
        return slot.func_id(("synthetic", name, file, line), name, file, line)

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> "Synthetic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_events(path, rows, buffer_size: int = 64 * 1024) -> None:
    """Write ``(ts, tid, event name, *args)`` rows (time-ordered per thread)
    as a trace at ``path`` (a small ``buffer_size`` spreads each thread over
    many batches)."""
    with Synthetic(path, buffer_size) as synthetic:
        for ts, tid, name, *args in rows:
            synthetic.emit(ts, tid, name, *args)


def timed(steps) -> list[tuple]:
    """Rows from ``(dt, tid, (name, *args))`` steps, each ``dt`` ns after the
    one before (the first ``dt`` after 0): time never goes backwards."""
    rows, now = [], 0
    for dt, tid, (name, *args) in steps:
        now += dt
        rows.append((now, tid, name, *args))
    return rows
