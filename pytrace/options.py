"""The one options object shared by the library API, the CLI and the pytest plugin."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .recorder import DEFAULT_BUFFER_SIZE, MIN_BUFFER_SIZE


class OptionsError(ValueError):
    """An option has a wrong name or value.  The message says which and what to do."""


BACKENDS = ("auto", "monitoring", "setprofile")

#: A numeric field's annotation -> the types it takes, and how to say so.
_NUMBERS = {"float": ((int, float), "a number"), "int": (int, "a whole number")}


@dataclass(frozen=True)
class Options:
    """What to record.  Every field has a safe default; see ``docs/options.md``."""

    #: Python function calls (enter/exit/unwind, generator yield/resume).
    calls: bool = True
    #: C function calls too (only with ``calls``).
    c_calls: bool = False
    #: Garbage collections and heap counters.
    gc: bool = True
    #: Threads as goroutines (create/start/end).
    threads: bool = True
    #: Blocking: sleep, locks, queues, select, I/O, subprocess waits.
    blocking: bool = True
    #: asyncio tasks as goroutine-like timelines.
    asyncio: bool = True
    #: CPU samples of all threads per second; 0 turns sampling off.
    sample_rate: float = 0.0
    #: Seconds between heap-counter records besides those at each GC end; 0 = only at GC end.
    heap_interval: float = 0.0
    #: Only trace code whose module name or file path matches one of these globs (empty = all).
    include: tuple[str, ...] = ()
    #: Never trace code whose module name or file path matches one of these globs.
    exclude: tuple[str, ...] = ()
    #: Deepest call depth recorded per thread; 0 = unlimited.
    max_depth: int = 0
    #: Bytes per thread buffer.
    buffer_size: int = DEFAULT_BUFFER_SIZE
    #: Seconds between flushes of every thread's buffer (a crash loses at most
    #: this much); 0 = flush only when a buffer is full and at stop.
    flush_interval: float = 1.0
    #: Which call hook: sys.monitoring (3.12+), sys.setprofile, or the best available.
    backend: str = "auto"
    #: Trace child processes running Python too, each into its own file
    #: (``<trace stem>.<pid>.pytrace``); see ``pytrace.children``.
    children: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise OptionsError(f"option {f.name} must be True or False, not {value!r}")
            if f.type in _NUMBERS:
                kinds, what = _NUMBERS[f.type]
                if isinstance(value, bool) or not isinstance(value, kinds):
                    raise OptionsError(f"option {f.name} must be {what}, not {value!r}")
                if value < 0:
                    raise OptionsError(f"option {f.name} must not be negative, not {value!r}")
        if self.buffer_size < MIN_BUFFER_SIZE:
            raise OptionsError(
                f"buffer_size {self.buffer_size} is too small; use at least {MIN_BUFFER_SIZE} bytes")
        if self.backend not in BACKENDS:
            raise OptionsError(
                f"backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        if isinstance(self.include, str) or isinstance(self.exclude, str):
            raise OptionsError("include and exclude take a list of globs, not a single string")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def from_kwargs(cls, **kwargs) -> "Options":
        """Build options from keyword arguments, naming any unknown one."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionsError(
                f"unknown option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
        return cls(**kwargs)
