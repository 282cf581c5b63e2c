"""pytrace's fork callbacks, registered so that they keep no module alive at exit.

``os.register_at_fork`` keeps its callables until the interpreter is gone,
past the point where modules are torn down.  A function defined in a
pytrace module holds that module's globals.  Under pytest, every pytrace
module's ``__loader__`` is pytest's assertion-rewriting hook (pytest
rewrites the whole package of an installed plugin), which holds pytest's
``Config``, hence every plugin and module.  All of that then survived the
first of the collections the interpreter makes at exit, and ``pytest
--pytrace`` took ~7 ms longer to end on 3.11 (issue 4).

So the interpreter holds three functions of this module, one per phase,
each with empty globals, and they reach the callbacks through weak
references.  The order is ``os.register_at_fork``'s: ``before`` callbacks
run newest first, the others in the order they were registered.
"""

from __future__ import annotations

import functools
import os
import types
import weakref

#: Weak references to the callbacks of each phase, in the order they run.
_BEFORE: list = []
_AFTER_IN_PARENT: list = []
_AFTER_IN_CHILD: list = []


def register(*, before=None, after_in_parent=None, after_in_child=None) -> None:
    """As ``os.register_at_fork``, for module-level functions (a callback
    that nothing else keeps alive is dropped)."""
    if before is not None:
        _BEFORE.insert(0, weakref.ref(before))
    if after_in_parent is not None:
        _AFTER_IN_PARENT.append(weakref.ref(after_in_parent))
    if after_in_child is not None:
        _AFTER_IN_CHILD.append(weakref.ref(after_in_child))


def _call_each(references) -> None:
    """Call every callback still alive.  As with ``os.register_at_fork``, one
    that raises does not keep the others from running; the first exception
    then goes to the interpreter, which reports it as unraisable."""
    failure = None
    for reference in references:
        callback = reference()
        if callback is not None:
            try:
                callback()
            except BaseException as exc:
                failure = failure or exc
    if failure is not None:
        raise failure


# The same code with globals of its own (empty: it reads none), so that the
# interpreter's reference to it leads to no module.
_call_each = types.FunctionType(_call_each.__code__, {}, "_call_each")
os.register_at_fork(before=functools.partial(_call_each, _BEFORE),
                    after_in_parent=functools.partial(_call_each, _AFTER_IN_PARENT),
                    after_in_child=functools.partial(_call_each, _AFTER_IN_CHILD))
