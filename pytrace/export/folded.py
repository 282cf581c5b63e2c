"""Folded stacks ("collapsed" format): input for flamegraph.pl and speedscope.

One line per distinct stack, sorted::

    outer (app.py:1);inner (app.py:9) 1250

Frames go outermost first, separated by ``;``, then a space and a count:

* weight ``time`` (the default): the stack's **self time in microseconds**,
  summed over all threads, from the call events: time during which that
  stack was the innermost open one.  GC pauses, blocking and syscalls show
  as a pseudo-frame on top of the stack they interrupted (``[GC generation
  2]``, ``[blocked: lock]``, ``[syscall socket.recv]``), so a flame graph
  shows where the program waited; the enclosing call's self time excludes
  it.  Time with no open frame on a thread is not counted.  Totals are
  rounded to whole microseconds once per stack; stacks whose total rounds
  to 0 are left out.
* weight ``samples``: the number of CPUSample events with that stack
  (the trace must have been recorded with a sample rate).

A frame is ``name (file)``, or the bare name for C functions: functions are
keyed by name and file as in the function profile (``pytrace.analysis``), so
the frames of a sample, which carry the current line, and calls of the same
function meet.  ``;`` inside a name becomes ``:`` and line breaks become
spaces, so a name cannot break the format; characters that cannot be written
as UTF-8 (from undecodable file names) become U+FFFD.
"""

from __future__ import annotations

from typing import TextIO

from .. import events
from ..reader import Trace
from . import timeline

WEIGHTS = ("time", "samples")


def frame_label(frame) -> str:
    """A frame as it appears in a folded line: ``name (file)``, or the bare name for C code."""
    name, file, _line = frame
    return _clean(f"{name} ({file})" if file else name)


def _clean(text: str) -> str:
    return timeline.printable(text).replace(";", ":").replace("\n", " ").replace("\r", " ")


def _slice_label(s: timeline.Slice) -> str | None:
    if s.kind == timeline.CALL:
        return frame_label(s.site)
    if s.kind == timeline.GC:
        return f"[GC generation {s.args['generation']}]"
    if s.kind == timeline.BLOCK:
        return f"[blocked: {s.args['reason']}]"
    if s.kind == timeline.SYSCALL:
        return _clean(f"[syscall {s.name}]")
    return None  # regions are not frames


def self_times(trace: Trace) -> dict[tuple[str, ...], int]:
    """Self time in nanoseconds of every stack (outermost first) of ``trace``."""
    totals: dict[tuple[str, ...], int] = {}
    paths: dict[int, list] = {}  # tid -> [path tuple, time the path became innermost]
    labels: dict = {}

    def switch(ts: int, tid: int, new_path) -> None:
        state = paths.get(tid)
        if state is None:
            paths[tid] = [new_path, ts]
            return
        path, since = state
        if path and ts > since:
            totals[path] = totals.get(path, 0) + ts - since
        state[0], state[1] = new_path, ts

    def begin(ts, tid, s):
        label = labels.get(s.site) if s.kind == timeline.CALL else None
        if label is None:
            label = _slice_label(s)
            if label is None:
                return
            if s.kind == timeline.CALL:
                labels[s.site] = label
        state = paths.get(tid)
        path = state[0] if state else ()
        switch(ts, tid, path + (label,))

    def end(ts, tid, s, args):
        if s.kind == timeline.REGION:
            return
        switch(ts, tid, paths[tid][0][:-1])

    timeline.walk(trace, begin, end)
    return totals


def sample_counts(trace: Trace) -> dict[tuple[str, ...], int]:
    """Number of CPU samples of every stack (outermost first) of ``trace``."""
    sample = events.BY_NAME["CPUSample"].id
    counts: dict[tuple[str, ...], int] = {}
    for ev in trace.events:
        if ev.kind.id == sample and ev.args[1]:
            path = tuple(frame_label(f) for f in reversed(ev.args[1]))
            counts[path] = counts.get(path, 0) + 1
    return counts


def write_folded(trace: Trace, out: TextIO, weight: str = "time") -> int:
    """Write ``trace`` as folded stacks to ``out``; return the number of lines."""
    if weight == "time":
        counts = {path: (ns + 500) // 1000 for path, ns in self_times(trace).items()}
    elif weight == "samples":
        counts = sample_counts(trace)
    else:
        raise ValueError(f"unknown weight {weight!r}: choose one of {', '.join(WEIGHTS)}")
    lines = 0
    for path in sorted(counts):
        if counts[path] > 0:
            out.write(f"{';'.join(path)} {counts[path]}\n")
            lines += 1
    return lines
