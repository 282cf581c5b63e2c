"""Minimum mutator utilization (MMU), computed exactly as Go's ``internal/trace`` does.

The *mutator utilization* of a time window is the fraction of it in which the
program (the mutator) ran rather than the garbage collector.  The MMU for a
window size ``w`` is the worst such fraction over every window of size ``w``
inside the trace; the MMU curve plots it against ``w``.  It answers "what is
the least work my program is guaranteed to get done in any ``w``-long
stretch", which a pause histogram cannot: ten 1 ms pauses in a 12 ms window
hurt more than one 10 ms pause a second.

In CPython a collection stops every thread (it holds the GIL, or on
free-threaded builds stops the world), so one utilization series describes
the whole program: 1 while no collection runs, 0 during a pause.  Values are
kept as integers, so integrals are exact nanosecond counts and a window's
utilization is one correctly rounded division.

The algorithm (the one Go's ``MMUCurve`` uses, re-derived here): the
windowed utilization ``u(t) = (I(t + w) - I(t)) / w``, with ``I`` the running
integral of the step function, is piecewise linear in ``t`` and bends only
where an edge of the window meets a step, so its minimum lies at one of
those alignments and evaluating there is exact, not sampled.  To avoid
visiting every alignment for every window size, the span is cut into at most
1000 equal *bands*; for each band a cheap lower bound on ``u`` over all
windows starting in it is computed from per-band minima and exact prefix
integrals, and bands are refined (walked alignment by alignment) in order of
their bound only while the bound is below the best minimum found so far.
Inside a band, the walk skips ahead by ``(u - best) * w``: ``u`` falls at
most ``1 / w`` per nanosecond, so nothing in between can beat ``best``.

One deliberate difference from Go: Go may evaluate a window that starts in
the last bands and runs past the end of the trace, counting the time beyond
as utilization 0 (a too-low MMU for windows near the trace length); here a
window never leaves the trace, which the property test against brute force
in ``tests/test_analysis_mmu.py`` checks.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass

#: Go's ``bandsPerSeries``: more bands make bounds tighter and setup slower.
DEFAULT_BANDS = 1000


class UtilizationSeries:
    """A step function: ``utils[i]`` holds on ``[times[i], times[i + 1])``.

    The last point marks the end of the span and has utilization 0 (as in
    Go), so integrating past the end adds nothing.
    """

    def __init__(self, times: list[int], utils: list[int]) -> None:
        if not times or len(times) != len(utils):
            raise ValueError("a utilization series needs matching, non-empty times and utils")
        self.times = times
        self.utils = utils
        integrals = [0] * len(times)
        for i in range(1, len(times)):
            integrals[i] = integrals[i - 1] + utils[i - 1] * (times[i] - times[i - 1])
        #: ``integrals[i]`` is the integral from ``times[0]`` to ``times[i]``.
        self.integrals = integrals

    @classmethod
    def from_pauses(cls, pauses, start: int, end: int) -> "UtilizationSeries":
        """Utilization 0 inside the sorted, disjoint ``pauses``, 1 elsewhere in ``[start, end]``."""
        times = [start]
        utils = [1]
        for pause_start, pause_end in pauses:
            pause_start, pause_end = max(pause_start, start), min(pause_end, end)
            if pause_end <= pause_start:
                continue
            if pause_start == times[-1]:
                utils[-1] = 0
            else:
                times.append(pause_start)
                utils.append(0)
            if pause_end < end:
                times.append(pause_end)
                utils.append(1)
        if times[-1] == end:
            utils[-1] = 0
        else:
            times.append(end)
            utils.append(0)
        return cls(times, utils)

    @property
    def start(self) -> int:
        return self.times[0]

    @property
    def end(self) -> int:
        return self.times[-1]

    @property
    def duration(self) -> int:
        return self.times[-1] - self.times[0]

    def locate(self, t: int, hint: int = 0) -> int:
        """Index of the last step at or before ``t`` (searching from ``hint``)."""
        return bisect_right(self.times, t, hint) - 1

    def integral(self, t: int, pos: int) -> int:
        """Integral from the start to ``t``, where ``pos == locate(t)``."""
        return self.integrals[pos] + self.utils[pos] * (t - self.times[pos])

    def next_change(self, pos: int) -> int | float:
        """Time of the step after index ``pos`` (infinity after the last)."""
        return self.times[pos + 1] if pos + 1 < len(self.times) else math.inf


@dataclass(frozen=True)
class MMUPoint:
    """The MMU for one window size, and where (one of) the worst windows starts."""

    window: int
    utilization: float
    worst_start: int


class MMUCurve:
    """Answers ``mmu(window)`` for any window size over one utilization series."""

    def __init__(self, series: UtilizationSeries, bands: int = DEFAULT_BANDS) -> None:
        self.series = series
        count = max(1, min(bands, len(series.times)))
        width = max(1, -(-series.duration // count))
        self.band_width = width
        # count + 1 bands, the extra one holding the integral at the end.
        self.band_min: list[int] = []
        self.band_integral: list[int] = []
        self.band_pos: list[int] = []
        times, utils = series.times, series.utils
        pos = 0
        for i in range(count + 1):
            band_start = series.start + i * width
            pos = series.locate(band_start, pos)
            lowest = utils[pos]
            j = pos + 1
            while j < len(times) and times[j] < band_start + width:
                lowest = min(lowest, utils[j])
                j += 1
            self.band_min.append(lowest)
            self.band_integral.append(series.integral(band_start, pos))
            self.band_pos.append(pos)

    def mmu(self, window: int) -> MMUPoint:
        """The minimum utilization over every ``window``-long window in the span.

        A window longer than the span is clamped to it (the whole trace is the
        only window).  A span of zero length has utilization 1: nothing ran
        and nothing paused.
        """
        if window <= 0:
            raise ValueError(f"an MMU window must be positive, not {window}")
        series = self.series
        if series.duration == 0:
            return MMUPoint(window, 1.0, series.start)
        effective = min(window, series.duration)
        best = [1.0, series.start]
        candidates = self._band_bounds(effective)
        heapq.heapify(candidates)
        while candidates and candidates[0][0] < best[0]:
            _, band = heapq.heappop(candidates)
            if self._refine_band(band, effective, best):
                break
        return MMUPoint(window, best[0], best[1])

    def curve(self, windows) -> list[MMUPoint]:
        return [self.mmu(window) for window in windows]

    def _band_bounds(self, window: int) -> list[tuple[float, int]]:
        """``(lower bound of utilization, band)`` for windows starting in each band.

        A window starting in band ``i`` fully covers bands ``i+1 .. i+fewest-2``
        (their exact integral counts) and partly covers band ``i`` and one or
        two bands at its right end; of those partial pieces, at most one band
        width can sit at the lowest band minimum and the rest (``window mod
        width``) at no less than the second lowest.
        """
        width = self.band_width
        fewest = -(-window // width)
        most = (window + 2 * (width - 1)) // width
        tail = window % width
        band_min, band_integral = self.band_min, self.band_integral
        bounds = []
        for i in range(max(0, len(band_min) - most + 1)):
            left, right1, right2 = band_min[i], band_min[i + fewest - 1], band_min[i + most - 1]
            lowest = min(left, right1, right2)
            if fewest == 1:
                total = lowest * window
            else:
                if lowest == left:
                    second = min(right1, right2)
                elif lowest == right1:
                    second = min(left, right2)
                else:
                    second = min(left, right1)
                total = lowest * width + second * tail
            if fewest > 2:
                total += band_integral[i + fewest - 1] - band_integral[i + 1]
            bounds.append((total / window, i))
        return bounds

    def _refine_band(self, band: int, window: int, best: list) -> bool:
        """Walk every alignment of windows starting in ``band``; update ``best``.

        Returns True once a window of utilization 0 is found: nothing can be lower.
        """
        series = self.series
        start = series.start + band * self.band_width
        last = min(start + self.band_width, series.end - window)
        if start > last:
            return False  # every window starting here would leave the trace
        left_pos = right_pos = self.band_pos[band]
        t = start
        while True:
            left_pos = series.locate(t, left_pos)
            right_pos = series.locate(t + window, max(right_pos, left_pos))
            covered = series.integral(t + window, right_pos) - series.integral(t, left_pos)
            utilization = covered / window
            if utilization < best[0]:
                best[0], best[1] = utilization, t
                if utilization == 0:
                    return True
            if t == last:
                return False
            skip_to = t + int((utilization - best[0]) * window)
            aligned = min(series.next_change(left_pos),
                          series.next_change(right_pos) - window)
            t = min(max(aligned, skip_to), last)


def default_windows(duration: int, per_decade: int = 10, smallest: int = 1000) -> list[int]:
    """Window sizes for an MMU curve: log-spaced from ``smallest`` ns (1 us) to ``duration``.

    ``per_decade`` points per factor of ten, rounded to whole nanoseconds, and
    the full duration as the last point (there the MMU is ``1 - GC share``).
    """
    if duration <= 0:
        return []
    windows = []
    k = 0
    while True:
        window = round(smallest * 10 ** (k / per_decade))
        if window >= duration:
            break
        if not windows or window > windows[-1]:
            windows.append(window)
        k += 1
    windows.append(duration)
    return windows
