"""Per-function call counts equal cProfile's for the same program.

cProfile is CPython's own account of calls (``sys.setprofile`` on 3.11,
``sys.monitoring`` on 3.12+), so it is the ground truth.  Like pytrace, it
counts a generator's resumptions as calls: a function's count is its
``CallEnter`` plus ``GenResume`` events.  Both of pstats' numbers are
checked: ``nc``, all calls, and ``cc``, the primitive ones, i.e. calls made
while no other call of the same function was open.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import Counter

import pytest

import call_programs as programs
from eventlog import BACKENDS, of_kind, record

PUSHES = ("CallEnter", "GenResume", "CCallEnter")
POPS = ("CallExit", "CallUnwind", "GenYield", "CCallExit")
FILE = programs.leaf.__code__.co_filename


def cprofile_counts(program) -> dict:
    """(first line, name) -> (primitive calls, calls) of the functions in ``FILE``."""
    profiler = cProfile.Profile()
    profiler.runcall(program)
    return {(line, name): (primitive, total)
            for (file, line, name), (primitive, total, *_) in pstats.Stats(profiler).stats.items()
            if file == FILE}


def trace_counts(trace) -> dict:
    """The same counts, from the trace's pushes and pops (C calls kept on the
    stack, left out of the counts: cProfile names them its own way)."""
    total, primitive = Counter(), Counter()
    stack = []
    for event in of_kind(trace, *PUSHES, *POPS):
        if event.name in PUSHES:
            func = event.arg("func")
            key = (func.line, func.name.rpartition(".")[2])
            if func.file == FILE:
                total[key] += 1
                primitive[key] += key not in stack
            stack.append(key)
        else:
            stack.pop()
    assert not stack, "every call of the program has returned"
    return {key: (primitive[key], total[key]) for key in total}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("program", [programs.everything, programs.parity],
                         ids=lambda p: p.__name__)
def test_call_counts_equal_cprofile(trace_path, backend, program):
    expected = cprofile_counts(program)
    trace = record(trace_path, program, calls=True, c_calls=True, backend=backend,
                   include=(programs.MODULE,))
    counts = trace_counts(trace)
    assert counts == expected
    # Mutual recursion: is_even(4) and is_odd(3) each reach is_even again.
    assert counts[(programs.is_even.__code__.co_firstlineno, "is_even")] == (2, 5)
