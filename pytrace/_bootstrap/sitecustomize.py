"""pytrace's bootstrap for child interpreters (see ``pytrace.children``).

``pytrace.children`` puts this directory first on ``PYTHONPATH`` of the
processes a traced program starts, so that ``site`` imports this module at
interpreter start-up: it starts tracing if ``PYTRACE_CHILDREN`` asks for it,
takes this directory out of ``sys.path`` again, and then runs the
``sitecustomize`` that would have run without pytrace, if there is one.
"""


def _bootstrap() -> None:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        from pytrace import children
    except ImportError:  # a Python without pytrace: run untraced
        pass
    else:
        children.start_in_child()
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_bootstrap()
del _bootstrap
