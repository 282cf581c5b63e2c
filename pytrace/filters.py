"""Which code gets call events: include/exclude globs over module names and file paths.

A glob matches a code object if it matches

- its module name (the ``__name__`` of the globals it runs in) with
  ``fnmatch`` rules, where a plain name also covers the package's
  submodules: ``"json"`` matches ``json`` and ``json.decoder``,
  ``"app.*"`` matches ``app.models``; or
- its file path: ``"/src/app/*.py"`` matches that absolute path, and a
  relative glob matches at any directory boundary (``"app/*"`` matches
  ``/home/me/app/x.py``).  ``*`` crosses ``/`` here, as ``fnmatch`` does.

Code matching an ``exclude`` glob is never traced; with ``include`` globs,
only code matching one of them is.  pytrace's own code is never traced
(whatever the globs say), so the tracer never records itself.

The decision is taken once per code object: the call backends cache it in
the same per-code map that gives the hot path the function's id, so a
filtered-out function costs one dict lookup per event at most, and on
``sys.monitoring`` nothing after its first event.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase

from .session import is_own_code


def _module_matches(pattern: str, module: str) -> bool:
    return fnmatchcase(module, pattern) or fnmatchcase(module, pattern + ".*")


def _path_matches(pattern: str, filename: str) -> bool:
    if fnmatchcase(filename, pattern):
        return True
    return not os.path.isabs(pattern) and fnmatchcase(filename, "*/" + pattern)


class CallFilter:
    """The include/exclude decision for one session's options."""

    def __init__(self, include=(), exclude=()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def _matches(self, patterns, module, filename: str) -> bool:
        return any(
            (module is not None and _module_matches(p, module)) or _path_matches(p, filename)
            for p in patterns
        )

    def traces(self, module, filename: str) -> bool:
        """True if calls of code from ``filename`` running as module ``module``
        (its globals' ``__name__``; None or a non-string if it has none) are recorded."""
        if is_own_code(filename):
            return False
        if not isinstance(module, str):
            module = None
        if self.exclude and self._matches(self.exclude, module, filename):
            return False
        return not self.include or self._matches(self.include, module, filename)
