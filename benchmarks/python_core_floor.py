"""How close the pure-Python core is to what pure Python can do at all (issue 3).

    python benchmarks/python_core_floor.py [--rounds 7] [--n 25]

sys.monitoring (3.12+) only.  Recursive ``fib(n)`` runs untraced and under
each configuration in turns, in one process, ``--rounds`` times; the table
gives each median as a ratio to the untraced median.  Every configuration
but the last is a bare ``PY_START``/``PY_RETURN`` tool that does less than a
tracer must, so each row is a floor under pytrace's pure-Python core:

- ``empty callbacks``: the callbacks' own calls, nothing else;
- ``list append``: one tuple ``(kind, code, perf_counter_ns())`` appended
  to one list per event, no encoding, one thread (``sysmon_py`` of
  ``shared/reference/python-tracer-peers.md`` section 6);
- ``deferred encoding``: the code's record and the time appended to a list,
  encoded in bulk (``map``/``join``, no Python loop per event) into
  pytrace's call records every 8,192 events: the same work moved out of the
  callback;
- ``minimal encoder``: pytrace's call records appended to one bytearray
  inside the callbacks, the way the Python core does it, but for one
  thread, no per-thread state, no depth, no flush;
- ``pytrace Python core``: ``pytrace.start(calls=True)`` on the Python core
  (``PYTRACE_CORE=python``), writing a real trace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from itertools import compress, count, repeat
from operator import ge, getitem, itemgetter, sub

os.environ["PYTRACE_CORE"] = "python"

import pytrace  # noqa: E402 (the core is chosen at import)
from pytrace.hooks.calls import (CALL_ENTER, CALL_EXIT, DELTA_TABLE_SIZE,  # noqa: E402
                                 record_start, uvarint)

TOOL = 3
E = sys.monitoring.events if hasattr(sys, "monitoring") else None
clock = time.perf_counter_ns
ENTER_STARTS = CALL_ENTER.starts
EXIT_STARTS = CALL_EXIT.starts


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def empty_callbacks():
    def on_start(code, offset):
        pass

    def on_return(code, offset, value):
        pass

    return on_start, on_return


def list_append():
    events: list = []
    append = events.append

    def on_start(code, offset):
        append((0, code, clock()))

    def on_return(code, offset, value):
        append((1, code, clock()))

    return on_start, on_return


def deferred_encoding():
    """Records and times go to a list; ``encode`` turns them into bytes."""
    pending: list = []
    append = pending.append
    fids: dict = {}
    exit_record = (EXIT_STARTS, b"")
    out = bytearray()
    last = [clock()]

    def encode():
        items = pending[:]
        del pending[:]
        records, times = items[0::2], items[1::2]
        previous = [last[0]]
        previous += times
        deltas = list(map(sub, times, previous))
        # A delta beyond the table (rare) is cut to 0 here; a tracer would
        # encode it whole.  Deltas are never negative: one thread, no re-entry.
        for i in compress(count(), map(ge, deltas, repeat(DELTA_TABLE_SIZE))):
            deltas[i] = 0
        parts = [b""] * (2 * len(times))
        parts[0::2] = map(getitem, map(itemgetter(0), records), deltas)
        parts[1::2] = map(itemgetter(1), records)
        out.extend(b"".join(parts))
        last[0] = times[-1]
        del out[:]  # writing the bytes out is not part of the floor

    def on_start(code, offset):
        record = fids.get(id(code))
        if record is None:
            record = fids[id(code)] = (ENTER_STARTS, uvarint(len(fids) + 1))
        now = clock()
        append(record)
        append(now)
        if len(pending) >= 16384:
            encode()

    def on_return(code, offset, value):
        now = clock()
        append(exit_record)
        append(now)

    return on_start, on_return


class _Slot:
    __slots__ = ("buf", "last", "seq", "count")


def minimal_encoder():
    fids: dict = {}
    slot = _Slot()
    slot.buf, slot.last, slot.seq, slot.count = bytearray(), clock(), 0, 0

    def on_start(code, offset):
        fid = fids.get(id(code))
        if fid is None:
            fid = fids[id(code)] = uvarint(len(fids) + 1)
        now = clock()
        delta = now - slot.last
        slot.last = now
        buf = slot.buf
        buf += ENTER_STARTS[delta] if delta < DELTA_TABLE_SIZE else record_start(
            CALL_ENTER, slot, slot.seq, delta)
        buf += fid
        slot.count += 1

    def on_return(code, offset, value):
        now = clock()
        delta = now - slot.last
        slot.last = now
        buf = slot.buf
        buf += EXIT_STARTS[delta] if delta < DELTA_TABLE_SIZE else record_start(
            CALL_EXIT, slot, slot.seq, delta)
        slot.count += 1

    return on_start, on_return


def timed(n: int) -> float:
    start = time.perf_counter()
    fib(n)
    return time.perf_counter() - start


def traced_by_tool(make, n: int) -> float:
    on_start, on_return = make()
    monitoring = sys.monitoring
    monitoring.use_tool_id(TOOL, "floor")
    try:
        monitoring.register_callback(TOOL, E.PY_START, on_start)
        monitoring.register_callback(TOOL, E.PY_RETURN, on_return)
        monitoring.set_events(TOOL, E.PY_START | E.PY_RETURN)
        return timed(n)
    finally:
        monitoring.set_events(TOOL, 0)
        monitoring.register_callback(TOOL, E.PY_START, None)
        monitoring.register_callback(TOOL, E.PY_RETURN, None)
        monitoring.free_tool_id(TOOL)


def traced_by_pytrace(n: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        pytrace.start(os.path.join(folder, "floor.pytrace"), calls=True)
        try:
            return timed(n)
        finally:
            pytrace.stop()


CONFIGS = {
    "empty callbacks": lambda n: traced_by_tool(empty_callbacks, n),
    "list append": lambda n: traced_by_tool(list_append, n),
    "deferred encoding": lambda n: traced_by_tool(deferred_encoding, n),
    "minimal encoder": lambda n: traced_by_tool(minimal_encoder, n),
    "pytrace Python core": traced_by_pytrace,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=25, help="fib's argument")
    args = parser.parse_args()
    if E is None:
        raise SystemExit("python_core_floor.py needs sys.monitoring (Python 3.12 or newer)")
    untraced: list = []
    times: dict = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, run in CONFIGS.items():
            untraced.append(timed(args.n))
            times[name].append(run(args.n))
    base = statistics.median(untraced)
    print(f"Python {sys.version.split()[0]}, fib({args.n}), medians of {args.rounds} rounds, "
          f"ratio to untraced ({base * 1000:.0f} ms)")
    print()
    print("| configuration | fib |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
