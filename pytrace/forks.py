"""pytrace's fork callbacks, registered so that they keep no module alive at exit.

``os.register_at_fork`` keeps its callables until the interpreter is gone,
past the point where modules are torn down.  A function defined in a
pytrace module holds that module's globals.  Under pytest, with pytrace
installed as a regular package, every pytrace module's ``__loader__`` is
pytest's assertion-rewriting hook (pytest rewrites the whole package of an
installed plugin), which holds pytest's ``Config``, hence every plugin and
module.  All of that then survived the first of the collections the
interpreter makes at exit, and ``pytest --pytrace`` took ~7 ms longer to
end on 3.11 (issue 4).

So each callback is registered as a call, through a weak reference, of a
function whose globals are empty.  Everything else is
``os.register_at_fork``'s own: the order, and an exception in one callback
reported without keeping the others from running.
"""

from __future__ import annotations

import functools
import os
import types
import weakref


def register(*, before=None, after_in_parent=None, after_in_child=None) -> None:
    """As ``os.register_at_fork``, for module-level functions: the callbacks
    are held weakly, so a bound method or a lambda that nothing else keeps
    would be dropped at once."""
    phases = {"before": before, "after_in_parent": after_in_parent,
              "after_in_child": after_in_child}
    os.register_at_fork(**{phase: functools.partial(_call_if_alive, weakref.ref(callback))
                           for phase, callback in phases.items() if callback is not None})


def _call_if_alive(reference) -> None:
    callback = reference()
    if callback is not None:
        callback()


# The same code with globals of its own (empty: it reads none), so that the
# interpreter's reference to it leads to no module.
_call_if_alive = types.FunctionType(_call_if_alive.__code__, {}, "_call_if_alive")
