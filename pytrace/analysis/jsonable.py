"""Turn analysis results into plain JSON data, the one format every face shares.

The CLI's ``--json``, the HTML report and the pytest plugin all serialize the
same dataclasses; doing it in one place keeps their JSON identical.  Stack
frames (``reader.Frame``) become ``{"func", "file", "line"}`` objects rather
than bare arrays, so a consumer does not need to know the tuple order.
"""

from __future__ import annotations

import dataclasses


def jsonable(value):
    """``value`` as dicts, lists, strings, numbers, booleans and None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: jsonable(item) for name, item in zip(value._fields, value)}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value
