"""Run real programs under ``pytrace run`` (or plain ``python``) in a
subprocess, and take apart the trace files they leave, cut short or not.

Shared by the robustness tests (crash safety, hostile environments, child
processes, coexistence with other tools).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter

from pytrace import events, wire
from tracegen import Layout, _record, scan

#: Generous: a noisy 2-core machine, and programs that start interpreters.
TIMEOUT = 120


def write_program(directory, name: str, source: str):
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def pytrace_run_argv(out, script, *args, flags=()) -> list[str]:
    return [sys.executable, "-m", "pytrace", "run", "-o", str(out), *flags, str(script), *args]


def run_python(script, *args, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=TIMEOUT, **kwargs)


def run_traced(out, script, *args, cwd, flags=(), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(pytrace_run_argv(out, script, *args, flags=flags), capture_output=True,
                          text=True, cwd=cwd, timeout=TIMEOUT, **kwargs)


def program_stderr(stderr: str) -> str:
    """The traced program's own stderr: pytrace's summary lines removed."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("pytrace: "))


def complete_prefix_end(data: bytes) -> int:
    """Where the complete part of a (possibly cut) trace ends: after the last
    file-level record or batch that is wholly in ``data``.  Walks the bytes by
    the lengths ``docs/format.md`` gives, independently of the reader."""
    pos = wire.HEADER_SIZE
    while pos < len(data):
        if data[pos] == events.BATCH:
            if pos + wire.BATCH_FIXED_SIZE > len(data):
                break
            length = int.from_bytes(data[pos + 1:pos + 5], "little")
            end = pos + 5 + length
        else:
            try:
                end = _record(data, pos).end
            except (wire.Truncated, IndexError):  # IndexError: a length past the end
                break
        if end > len(data):
            break
        pos = end
    return pos


def complete_layout(data: bytes) -> Layout:
    """The layout of the complete part of a trace (see ``complete_prefix_end``)."""
    return scan(data[:complete_prefix_end(data)])


def records_per_thread(layout: Layout) -> dict[int, tuple[int, int]]:
    """tid -> (batches, records), as ``Trace.threads`` states them."""
    batches, records = Counter(), Counter()
    for batch in layout.batches:
        batches[batch.tid] += 1
        records[batch.tid] += len(batch.records)
    return {tid: (batches[tid], records[tid]) for tid in batches}


def function_names(trace, kind: str = "CallEnter") -> set[str]:
    """Names of the functions with at least one ``kind`` event in ``trace``."""
    return {e.arg("func").name for e in trace.events if e.name == kind}
