"""The one options object shared by the library API, the CLI and the pytest plugin."""

from __future__ import annotations

from .recorder import DEFAULT_BUFFER_SIZE, MIN_BUFFER_SIZE


class OptionsError(ValueError):
    """An option has a wrong name or value.  The message says which and what to do."""


BACKENDS = ("auto", "monitoring", "setprofile")

#: A numeric option's kind -> the types it takes, and how to say so.
_NUMBERS = {"float": ((int, float), "a number"), "int": (int, "a whole number")}


#: Every option in order: ``(name, default, kind)``.  ``kind`` is what the
#: value must be: "bool", a number kind of ``_NUMBERS``, or "" (checked below).
FIELDS = (
    #: Python function calls (enter/exit/unwind, generator yield/resume).
    ("calls", True, "bool"),
    #: C function calls too (only with ``calls``).
    ("c_calls", False, "bool"),
    #: Garbage collections and heap counters.
    ("gc", True, "bool"),
    #: Threads as goroutines (create/start/end).
    ("threads", True, "bool"),
    #: Blocking: sleep, locks, queues, select, I/O, subprocess waits.
    ("blocking", True, "bool"),
    #: asyncio tasks as goroutine-like timelines.
    ("asyncio", True, "bool"),
    #: CPU samples of all threads per second; 0 turns sampling off.
    ("sample_rate", 0.0, "float"),
    #: Seconds between heap-counter records besides those at each GC end; 0 = only at GC end.
    ("heap_interval", 0.0, "float"),
    #: Only trace code whose module name or file path matches one of these globs (empty = all).
    ("include", (), ""),
    #: Never trace code whose module name or file path matches one of these globs.
    ("exclude", (), ""),
    #: Deepest call depth recorded per thread; 0 = unlimited.
    ("max_depth", 0, "int"),
    #: Bytes per thread buffer.
    ("buffer_size", DEFAULT_BUFFER_SIZE, "int"),
    #: Seconds between flushes of every thread's buffer (a crash loses at most
    #: this much); 0 = flush only when a buffer is full and at stop.
    ("flush_interval", 1.0, "float"),
    #: Which call hook: sys.monitoring (3.12+), sys.setprofile, or the best available.
    ("backend", "auto", ""),
    #: Trace child processes running Python too, each into its own file
    #: (``<trace stem>.<pid>.pytrace``); see ``pytrace.children``.
    ("children", False, "bool"),
)
NAMES = tuple(name for name, _, _ in FIELDS)
DEFAULTS = {name: default for name, default, _ in FIELDS}


class Options:
    """What to record.  Every field has a safe default; see ``docs/options.md``
    and ``FIELDS``.

    Immutable, hashable, and equal when every field is.  A plain class, not
    a frozen dataclass: making that class cost ~1 ms in every process that
    records, every ``pytest --pytrace`` run included (issue 4).
    """

    __slots__ = (*NAMES, "_hash")

    def __init__(self, **values) -> None:
        unknown = sorted(set(values).difference(NAMES))
        if unknown:
            raise OptionsError(
                f"unknown option {unknown[0]!r}; known options: {', '.join(sorted(NAMES))}")
        for name, default, kind in FIELDS:
            value = values.get(name, default)
            if kind == "bool" and not isinstance(value, bool):
                raise OptionsError(f"option {name} must be True or False, not {value!r}")
            if kind in _NUMBERS:
                kinds, what = _NUMBERS[kind]
                if isinstance(value, bool) or not isinstance(value, kinds):
                    raise OptionsError(f"option {name} must be {what}, not {value!r}")
                if value < 0:
                    raise OptionsError(f"option {name} must not be negative, not {value!r}")
            object.__setattr__(self, name, value)
        if self.buffer_size < MIN_BUFFER_SIZE:
            raise OptionsError(f"buffer_size {self.buffer_size} is too small; "
                               f"use at least {MIN_BUFFER_SIZE} bytes")
        if self.backend not in BACKENDS:
            raise OptionsError(
                f"backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
        if isinstance(self.include, str) or isinstance(self.exclude, str):
            raise OptionsError("include and exclude take a list of globs, not a single string")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        try:
            object.__setattr__(self, "_hash", hash(self._values()))
        except TypeError:
            raise OptionsError("include and exclude take a list of globs (strings)") from None

    @classmethod
    def from_kwargs(cls, **kwargs) -> "Options":
        """Build options from keyword arguments, naming any unknown one."""
        return cls(**kwargs)

    def as_dict(self) -> dict:
        """``{name: value}`` of every option, in ``FIELDS`` order."""
        return {name: getattr(self, name) for name in NAMES}

    def replace(self, **changes) -> "Options":
        """These options with ``changes`` made (checked like any others)."""
        return Options(**{**self.as_dict(), **changes})

    def __reduce__(self):
        # pickle, copy and deepcopy: rebuilt from keyword arguments.
        return _from_dict, (self.as_dict(),)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in NAMES)

    def __eq__(self, other):
        if type(other) is not Options:
            return NotImplemented
        return self._hash == other._hash and self._values() == other._values()

    def __hash__(self) -> int:
        return self._hash

    def __setattr__(self, name, value):
        raise AttributeError(f"Options are immutable: cannot set {name}; make new Options")

    __delattr__ = __setattr__

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in NAMES) + ")"


def _from_dict(values: dict) -> Options:
    """``Options(**values)``: what pickle and copy call (``Options.__reduce__``)."""
    return Options(**values)
