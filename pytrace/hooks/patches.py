"""Replacing attributes of library modules and classes without being seen.

The thread, blocking and asyncio hooks observe the program by replacing
attributes that the program looks up at call time (``time.sleep``,
``threading.Thread.start``, ``asyncio.events.Handle._run`` ...).

- ``Patches`` puts them back exactly: an attribute a class only inherited
  is deleted again, not shadowed by a copy of the inherited one.  If
  someone else replaced the attribute after us (``unittest.mock.patch``
  still active at stop), ours is left where it is: theirs is not clobbered,
  and when they restore, they restore ours, which passes every call
  straight through once its hook is uninstalled.
- ``activate`` makes a hook's replacements all or nothing, publishes the
  hook, and gives back the ``uninstall`` that withdraws both.
- ``hide_own_frames`` keeps a replacement out of the tracebacks of the
  exceptions it lets through (a Ctrl-C in ``time.sleep``, ``queue.Empty``).
- ``Patches.when_imported`` patches a module the program has not imported
  yet right after its first import: pytrace imports none of the modules it observes
  only to patch them (``socket`` alone took ~1.5 ms of a run's start on
  3.13, issue 4).
"""

from __future__ import annotations

import _thread
import importlib.util
import sys
from typing import Callable

from ..session import is_own_code

_MISSING = object()


class Patches:
    """The replacements one hook made, undone together in reverse order, and
    the finders (``when_imported``) waiting to make more."""

    def __init__(self) -> None:
        self._made: list[tuple[object, str, object, object]] = []
        self._finders: list[AfterImport] = []

    def replace(self, owner, name: str, make):
        """Set ``owner.name`` to ``make(original)``, where ``original`` is what
        ``getattr(owner, name)`` gave before (inherited or not); return the
        replacement."""
        own = vars(owner).get(name, _MISSING)
        replacement = make(getattr(owner, name))
        setattr(owner, name, replacement)
        self._made.append((owner, name, own, replacement))
        return replacement

    def when_imported(self, name: str, then, fail) -> None:
        """``then(module)`` for the module ``name``: now if it is imported (an
        exception goes to the caller), else right after the program's first
        import of it, through an ``AfterImport`` (cancelled by ``undo``); an
        exception then goes to ``fail``, never to the program's import."""
        module = sys.modules.get(name)
        if module is not None:
            then(module)
            return

        def then_or_fail(module) -> None:
            try:
                then(module)
            except Exception as exc:
                fail(exc)

        finder = AfterImport(name, then_or_fail)
        self._finders.append(finder)
        finder.insert()

    def undo(self) -> None:
        """Cancel the waiting finders, then put every replaced attribute back
        as it was."""
        while self._finders:
            self._finders.pop().cancel()
        while self._made:
            owner, name, own, replacement = self._made.pop()
            if vars(owner).get(name, _MISSING) is not replacement:
                continue
            if own is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


def activate(hook, namespace: dict, patch) -> Callable[[], None]:
    """Run ``patch()``, which makes ``hook.patches``' replacements, then
    publish ``hook`` as ``namespace["_active"]`` (the hook module's
    ``globals()``: its replacements look the hook up there on every call);
    return the ``uninstall``.

    All or nothing: if ``patch`` fails, what it replaced is put back and the
    hook is never published.  ``uninstall`` unpublishes first, so every
    replacement (including one the program captured, like a
    ``from time import sleep`` done while tracing) passes straight through
    from then on, then puts the replaced attributes back.
    """
    try:
        patch()
    except BaseException:
        hook.patches.undo()
        raise
    namespace["_active"] = hook

    def uninstall() -> None:
        namespace["_active"] = None
        hook.patches.undo()

    return uninstall


def unwrapped(function):
    """The function behind ``functools.wraps`` wrappers (ours, while installed)."""
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function


def hide_own_frames(exc: BaseException) -> None:
    """Take pytrace's frames out of ``exc``'s traceback.

    A replacement calls this on an exception it lets through, then re-raises
    it with a bare ``raise`` (which adds no entry for the re-raising frame):
    the program sees the traceback it would see without pytrace.
    """
    entry = exc.__traceback__
    while entry is not None and is_own_code(entry.tb_frame.f_code.co_filename):
        entry = entry.tb_next
    exc.__traceback__ = entry
    while entry is not None:
        following = entry.tb_next
        while following is not None and is_own_code(following.tb_frame.f_code.co_filename):
            following = following.tb_next
        entry.tb_next = following
        entry = following


class AfterImport:
    """A ``sys.meta_path`` finder: lets the normal finders and loader import
    ``name``, then calls ``then(module)`` before the import returns to the
    program, once, unless cancelled first.

    It stays in ``sys.meta_path`` until an import of ``name`` actually runs
    (``importlib.util.find_spec`` only probing does not count), and ``then``
    and ``cancel`` exclude each other: an import racing with the hook's
    uninstall either patches before the undo, or not at all."""

    def __init__(self, name: str, then) -> None:
        self.name = name
        self.then = then
        self._finding = False
        self._done = False
        # From ``_thread``: the blocking hook replaces ``threading.RLock``.
        self._lock = _thread.RLock()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._finding:
            return None
        self._finding = True  # find_spec below asks every finder, this one too
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        loader = None if spec is None else spec.loader
        # A loader shared by many modules (a class, as the built-in and
        # frozen importers are) is not ours to patch.
        if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
            return None
        exec_module = loader.exec_module

        def exec_then(module):
            del loader.exec_module  # the loader is the module's own again
            exec_module(module)
            with self._lock:
                if not self._done:
                    self._done = True
                    self._remove()
                    self.then(module)

        loader.exec_module = exec_then
        return spec

    def insert(self) -> None:
        sys.meta_path.insert(0, self)

    def cancel(self) -> None:
        """Take the finder out; an import still under way calls nothing."""
        with self._lock:
            self._done = True
            self._remove()

    def _remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
