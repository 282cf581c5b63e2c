"""The event table: the single source of truth for every record pytrace writes.

Encoder (``pytrace.buffer``), decoder (``pytrace.reader``), the format spec
(``docs/format.md``, checked against this table by a test) and the exporters
all read this module.  Adding an event kind means adding a row here, giving it
an unused id below 64, and documenting it in ``docs/format.md``; old readers
skip it, because every record says how many bytes it occupies (Go's
argument-count bits, see ``docs/format.md``).

An argument's *type* tells the reader how to resolve it:

``u``  unsigned integer (LEB128 varint)
``i``  signed integer, zigzag-encoded before the varint
``s``  id of a String record
``f``  id of a Func record
``k``  id of a Stack record (0 = no stack)
``t``  a pytrace thread id (the ``tid`` of a Batch header)

Every *timed* event has an implicit first argument, the tick delta from the
previous event of its batch; it is not listed in ``args``.
"""

from __future__ import annotations

from typing import NamedTuple

#: Argument types a row may use (see the module docstring).
ARG_TYPES = frozenset("uisfkt")


class EventKind(NamedTuple):
    """One row of the event table.  A named tuple, not a frozen dataclass:
    the table is built in every process that imports pytrace (every pytest
    run once it is installed, issue 4), and the dataclass cost ~0.5 ms more."""

    id: int
    name: str
    #: ``(name, type)`` pairs, in wire order, after the timestamp delta.
    args: tuple[tuple[str, str], ...]
    #: True if the record carries a timestamp delta as its first varint.
    timed: bool = True
    #: True if the record may only appear outside batches (file level).
    top_level: bool = False
    #: One line for the spec and for ``pytrace`` listings.
    doc: str = ""

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.args)

    @property
    def varint_count(self) -> int:
        """Varints of a plain record: timestamp delta (if timed) plus args."""
        return len(self.args) + (1 if self.timed else 0)


def _kind(id, name, args="", timed=True, top_level=False, doc=""):
    parsed = tuple(tuple(a.split(":")) for a in args.split()) if args else ()
    return EventKind(id, name, parsed, timed, top_level, doc)


#: Blocking reasons carried by ``Block`` events (argument ``reason``).
BLOCK_REASONS = (
    "unknown",
    "sleep",
    "lock",
    "condition",
    "event",
    "semaphore",
    "queue",
    "select",
    "socket",
    "file",
    "subprocess",
    "join",
    "future",
)

TABLE: tuple[EventKind, ...] = (
    # File-level records (outside batches).  Layouts of Batch, Meta and
    # Footer are special and described in docs/format.md.
    _kind(1, "Batch", "tid:t seq:u base:u", timed=False, top_level=True,
          doc="starts a batch: thread, per-thread sequence number, absolute base ticks"),
    _kind(2, "Frequency", "ticks_per_second:u", timed=False, top_level=True,
          doc="clock ticks per second of every timestamp in the file"),
    _kind(3, "Meta", "key:raw value:raw", timed=False, top_level=True,
          doc="one metadata key/value pair (UTF-8 strings)"),
    _kind(4, "Footer", "totals:raw", timed=False, top_level=True,
          doc="per-thread totals of batches and events, written at clean stop"),
    # Table records (inside batches, through the writing thread's slot).
    _kind(5, "String", "id:u bytes:raw", timed=False,
          doc="defines string id (UTF-8)"),
    _kind(6, "Func", "id:u name:s file:s line:u", timed=False,
          doc="defines function id: qualified name, file, first line"),
    _kind(7, "Stack", "id:u frames:raw", timed=False,
          doc="defines stack id: frames (func id, line), innermost first"),
    # Python execution.
    _kind(8, "CallEnter", "func:f", doc="a Python function starts (PY_START / 'call')"),
    _kind(9, "CallExit", "", doc="the innermost open call returns"),
    _kind(10, "CallUnwind", "", doc="the innermost open call exits by an exception"),
    _kind(11, "GenYield", "", doc="the innermost generator/coroutine yields"),
    _kind(12, "GenResume", "func:f", doc="a generator/coroutine resumes"),
    _kind(13, "CCallEnter", "func:f", doc="a C function is called"),
    _kind(14, "CCallExit", "", doc="the innermost C call returns or raises"),
    _kind(15, "OpenFrames", "stack:k",
          doc="frames already open when tracing started on this thread (outermost last)"),
    # Garbage collector and heap.
    _kind(16, "GCStart", "generation:u stack:k", doc="a collection starts (stop-the-world)"),
    _kind(17, "GCDone", "collected:u uncollectable:u", doc="the collection ends"),
    _kind(18, "HeapCounters", "gen0:u gen1:u gen2:u threshold0:u allocated_blocks:u rss:u",
          doc="gc counts, gen0 threshold, sys.getallocatedblocks(), RSS bytes"),
    # Threads as goroutines.
    _kind(19, "ThreadCreate", "child:t name:s stack:k", doc="this thread starts another"),
    _kind(20, "ThreadStart", "ident:u native_id:u name:s", doc="this thread starts running"),
    _kind(21, "ThreadEnd", "", doc="this thread exits"),
    # Blocking.
    _kind(22, "Block", "reason:u stack:k", doc="the thread blocks (reason: BLOCK_REASONS index)"),
    _kind(23, "Unblock", "", doc="the thread's innermost block ends"),
    _kind(24, "SysCall", "func:f stack:k", doc="a call into C that may block begins"),
    _kind(25, "SysCallEnd", "", doc="the innermost syscall returns"),
    # asyncio tasks as goroutine-like timelines.
    _kind(26, "AsyncTaskCreate", "task:u name:s stack:k", doc="an asyncio task is created"),
    _kind(27, "AsyncTaskRun", "task:u", doc="a task starts a run slice on this thread"),
    _kind(28, "AsyncTaskPause", "task:u", doc="the task's run slice ends (it awaits)"),
    _kind(29, "AsyncTaskDone", "task:u", doc="the task finished"),
    # User annotations (pytrace.task / region / log / counter).
    _kind(30, "UserTaskCreate", "task:u parent:u name:s", doc="pytrace.task() begins"),
    _kind(31, "UserTaskEnd", "task:u", doc="pytrace.task() ends"),
    _kind(32, "UserRegionStart", "task:u name:s", doc="pytrace.region() begins"),
    _kind(33, "UserRegionEnd", "task:u name:s", doc="pytrace.region() ends"),
    _kind(34, "UserLog", "task:u category:s message:s", doc="pytrace.log()"),
    _kind(35, "Counter", "name:s value:i", doc="pytrace.counter(): a named integer sample"),
    # Sampling.
    _kind(36, "CPUSample", "thread:t stack:k", doc="a sampled stack of a thread"),
)

# Not a real arg type: marks the special layouts handled by name in the codec.
_RAW = "raw"

BY_ID: dict[int, EventKind] = {k.id: k for k in TABLE}
BY_NAME: dict[str, EventKind] = {k.name: k for k in TABLE}


def _check_table() -> None:
    """Fail at import if the table contradicts itself: cheap, and it runs everywhere."""
    ids = [k.id for k in TABLE]
    names = [k.name for k in TABLE]
    assert len(set(ids)) == len(ids), "duplicate event id"
    assert len(set(names)) == len(names), "duplicate event name"
    for k in TABLE:
        assert 0 < k.id < 64, f"{k.name}: id must fit 6 bits and be non-zero"
        for _, typ in k.args:
            assert typ in ARG_TYPES or typ == _RAW, f"{k.name}: bad arg type {typ}"


_check_table()

# Ids used by the encoder and decoder without going through a dict lookup.
BATCH = BY_NAME["Batch"].id
FREQUENCY = BY_NAME["Frequency"].id
META = BY_NAME["Meta"].id
FOOTER = BY_NAME["Footer"].id
STRING = BY_NAME["String"].id
FUNC = BY_NAME["Func"].id
STACK = BY_NAME["Stack"].id


def markdown_table() -> str:
    """The event list of ``docs/format.md``, generated from this table
    (``tests/test_spec.py`` keeps the spec in sync and prints the fix)."""
    lines = [
        "| id | name | timed | arguments (after the delta) | meaning |",
        "|---:|---|:---:|---|---|",
    ]
    for k in TABLE:
        args = ", ".join(f"`{n}`:{t}" for n, t in k.args) or "—"
        lines.append(f"| {k.id} | {k.name} | {'yes' if k.timed else 'no'} | {args} | {k.doc} |")
    lines.append("")
    lines.append("Blocking reasons (`Block.reason`): "
                 + ", ".join(f"{i} {r}" for i, r in enumerate(BLOCK_REASONS)) + ".")
    return "\n".join(lines)
