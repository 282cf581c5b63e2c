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
"""

from __future__ import annotations

from typing import Callable

from ..session import is_own_code

_MISSING = object()


class Patches:
    """The replacements one hook made, undone together in reverse order."""

    def __init__(self) -> None:
        self._made: list[tuple[object, str, object, object]] = []

    def replace(self, owner, name: str, make):
        """Set ``owner.name`` to ``make(original)``, where ``original`` is what
        ``getattr(owner, name)`` gave before (inherited or not); return the
        replacement."""
        own = vars(owner).get(name, _MISSING)
        replacement = make(getattr(owner, name))
        setattr(owner, name, replacement)
        self._made.append((owner, name, own, replacement))
        return replacement

    def undo(self) -> None:
        """Put every replaced attribute back as it was."""
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
