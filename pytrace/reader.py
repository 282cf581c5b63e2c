"""Decode a trace file into a ``Trace``: events in one global time order, with
strings, functions and stacks resolved.

The reader knows nothing about hooks; it reads ``docs/format.md`` as encoded
by ``pytrace.events`` and ``pytrace.wire``.  It never trusts a length: every
length is checked against the bytes that are really there, so a corrupt file
costs at most its own size in memory and a single pass in time.

Problems are collected by ``Decoder`` as ``TraceFormatError``s.  ``read``
raises the first one; ``pytrace.validate`` reports them all.  A file cut short
(no footer, or a last batch that runs past the end) is not an error for
``read``: every complete batch is returned and a ``TraceWarning`` says where
the cut is.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
import warnings
from typing import NamedTuple

from . import core, events, wire
from .errors import TraceFormatError, TraceWarning
from .events import EventKind


class Func(NamedTuple):
    name: str
    file: str
    line: int


class Frame(NamedTuple):
    func: str
    file: str
    line: int


class Event(NamedTuple):
    """One timed event.  ``ts`` is nanoseconds since the trace started."""

    ts: int
    tid: int
    kind: EventKind
    args: tuple

    @property
    def name(self) -> str:
        return self.kind.name

    def arg(self, name: str):
        """The argument called ``name`` (see the event table)."""
        return self.args[self.kind.arg_names.index(name)]


class BatchInfo(NamedTuple):
    offset: int
    end: int
    tid: int
    seq: int
    base: int
    count: int
    header_end: int


class Trace:
    """A decoded trace.  ``events`` is sorted by time (ties keep file order per thread)."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.meta: dict[str, str] = {}
        self.frequency: int = 0
        self.events: list[Event] = []
        self.strings: dict[int, str] = {}
        self.funcs: dict[int, Func] = {}
        self.stacks: dict[int, tuple[Frame, ...]] = {}
        #: tid -> (batches, records) actually present in the file.
        self.threads: dict[int, tuple[int, int]] = {}
        #: tid -> (batches, records) as the footer states them; None if no footer.
        self.footer: dict[int, tuple[int, int]] | None = None
        self.warnings: list[str] = []
        self.batches: int = 0
        self.size: int = 0

    @property
    def complete(self) -> bool:
        """True if the trace ends with its footer (it was stopped cleanly)."""
        return self.footer is not None

    @property
    def duration(self) -> int:
        return self.events[-1].ts - self.events[0].ts if self.events else 0

    def __repr__(self) -> str:
        return (f"<Trace {self.path!r}: {len(self.events)} events, "
                f"{len(self.threads)} threads, {self.batches} batches>")


class Decoder:
    """One pass over a trace's bytes, collecting the trace and its problems."""

    def __init__(self, data: bytes, path: str | None = None) -> None:
        self.data = data
        self.end = len(data)
        self.trace = Trace()
        self.trace.path = path
        self.trace.size = self.end
        self.errors: list[TraceFormatError] = []
        #: Set when the file was cut short; a warning for ``read``, a problem for ``validate``.
        self.cut: TraceFormatError | None = None
        self._string_defs: dict[int, int] = {}  # id -> offset of its definition
        self._func_defs: dict[int, tuple] = {}
        self._stack_defs: dict[int, tuple] = {}
        self._unknown: set[int] = set()

    # -- entry point -------------------------------------------------------

    def decode(self) -> Trace:
        batches = self._scan_file()
        if batches is not None:
            per_thread = self._decode_batches(batches)
            self._check_footer()
            self._resolve(per_thread)
        return self.trace

    def _error(self, problem: str, offset=None, tid=None, batch=None) -> None:
        self.errors.append(TraceFormatError(problem, offset, tid, batch))

    # -- file level --------------------------------------------------------

    def _scan_file(self) -> list[BatchInfo] | None:
        data, end = self.data, self.end
        if end < wire.HEADER_SIZE or data[:len(wire.MAGIC)] != wire.MAGIC:
            what = "is too short" if end < wire.HEADER_SIZE else "has the wrong magic bytes"
            self._error(f"not a pytrace trace: the file {what}", 0)
            return None
        version = int.from_bytes(data[8:10], "little")
        if version != wire.VERSION:
            self._error(f"unsupported trace format version {version}; this pytrace "
                        f"reads version {wire.VERSION}", 8)
            return None
        batches: list[BatchInfo] = []
        pos = wire.HEADER_SIZE
        while pos < end:
            kind_id = data[pos] & 0x3F
            if self.trace.footer is not None:
                self._error("data follows the footer", pos)
                break
            if kind_id == events.BATCH:
                info = self._scan_batch(pos)
                if info is None:
                    break
                batches.append(info)
                pos = info.end
                continue
            kind = events.BY_ID.get(kind_id)
            if kind is not None and not kind.top_level:
                self._error(f"{kind.name} record outside any batch: a batch without its header",
                            pos)
                break
            try:
                values, body, pos_next = self._record(pos, end)
            except wire.Truncated:
                self._cut_at(pos, "inside a file-level record")
                break
            except wire.Malformed as exc:
                self._error(f"corrupt record: {exc}", pos)
                break
            if kind is None:
                self._skip_unknown(kind_id, pos)
            elif kind_id == events.FREQUENCY:
                self._frequency(values, pos)
            elif kind_id == events.META:
                self._meta(body, pos)
            elif kind_id == events.FOOTER:
                self._footer(body, pos)
            pos = pos_next
        if self.cut is None and self.trace.footer is None and not self.errors:
            self._cut_at(self.end, "before the footer")
        if not self.trace.frequency and not self.errors:
            self._error("the trace has no Frequency record", wire.HEADER_SIZE)
        return batches

    def _cut_at(self, offset: int, where: str) -> None:
        self.cut = TraceFormatError(
            f"the trace was cut short {where}: it was not stopped cleanly (crash, kill, "
            f"or still being written); every complete batch before byte {offset} is readable",
            offset)

    def _scan_batch(self, pos: int) -> BatchInfo | None:
        data, end = self.data, self.end
        if pos + wire.BATCH_FIXED_SIZE > end:
            self._cut_at(pos, "inside a batch header")
            return None
        _, length, count = wire.BATCH_PREFIX.unpack_from(data, pos)
        batch_end = pos + wire.BATCH_LENGTH_OFFSET + 4 + length
        if batch_end > end:
            self._cut_at(pos, "inside a batch")
            return None
        try:
            if batch_end < pos + wire.BATCH_FIXED_SIZE:
                raise wire.Malformed("batch shorter than its header")
            (base,) = wire.BATCH_BASE.unpack_from(data, pos + wire.BATCH_BASE_OFFSET)
            p = pos + wire.BATCH_FIXED_SIZE
            tid, p = wire.read_uvarint(data, p, batch_end)
            seq, p = wire.read_uvarint(data, p, batch_end)
        except (wire.Truncated, wire.Malformed):
            self._error("corrupt batch header", pos)
            return None
        return BatchInfo(pos, batch_end, tid, seq, base, count, p)

    def _record(self, pos: int, limit: int):
        """Bounds and values of the plain or length-prefixed record at ``pos``.

        Returns ``(varints, payload, next_pos)``: for code 0-2 the varints and
        ``None``; for code 3 ``None`` and the payload's ``(start, end)``.
        """
        data = self.data
        code = data[pos] >> 6
        p = pos + 1
        if code < wire.LENGTH_PREFIXED:
            values = []
            for _ in range(code + 1):
                v, p = wire.read_uvarint(data, p, limit)
                values.append(v)
            return values, None, p
        length, p = wire.read_uvarint(data, p, limit)
        if p + length > limit:
            raise wire.Truncated(pos)
        return None, (p, p + length), p + length

    def _varints(self, start: int, end: int) -> list[int]:
        data, values = self.data, []
        p = start
        while p < end:
            v, p = wire.read_uvarint(data, p, end)
            values.append(v)
        return values

    def _frequency(self, values, pos: int) -> None:
        if values is None or len(values) != 1 or values[0] == 0:
            self._error("Frequency record must hold one non-zero value", pos)
        elif self.trace.frequency:
            self._error("Frequency record appears twice", pos)
        else:
            self.trace.frequency = values[0]

    def _meta(self, body, pos: int) -> None:
        if body is None:
            self._error("Meta record must be length-prefixed", pos)
            return
        data = self.data
        start, end = body
        try:
            klen, p = wire.read_uvarint(data, start, end)
            key = bytes(data[p:p + klen]).decode("utf-8")
            p += klen
            vlen, p = wire.read_uvarint(data, p, end)
            value = bytes(data[p:p + vlen]).decode("utf-8")
            if p + vlen != end:
                raise wire.Malformed("lengths disagree")
        except (wire.Truncated, wire.Malformed, UnicodeDecodeError) as exc:
            self._error(f"corrupt Meta record ({exc.__class__.__name__})", pos)
            return
        self.trace.meta[key] = value

    def _footer(self, body, pos: int) -> None:
        if body is None:
            self._error("Footer record must be length-prefixed", pos)
            return
        try:
            values = self._varints(*body)
        except (wire.Truncated, wire.Malformed):
            values = []
        if not values or len(values) != 1 + 3 * values[0]:
            self._error("corrupt Footer record", pos)
            self.trace.footer = {}
            return
        self.trace.footer = {
            values[i]: (values[i + 1], values[i + 2]) for i in range(1, len(values), 3)
        }

    def _skip_unknown(self, kind_id: int, pos: int) -> None:
        if kind_id == 0:
            self._error("record type 0 is not valid (zeroed or corrupt data)", pos)
        elif kind_id not in self._unknown:
            self._unknown.add(kind_id)
            self.trace.warnings.append(
                f"skipped records of unknown type {kind_id} (written by a newer pytrace?)")

    # -- batches -----------------------------------------------------------

    def _decode_batches(self, batches: list[BatchInfo]) -> dict[int, list]:
        """Decode every batch; check sequence and time order per thread."""
        per_thread: dict[int, list] = {}
        last_seq: dict[int, int] = {}
        last_ts: dict[int, int] = {}
        counts: dict[int, list[int]] = {}
        for info in batches:
            tid, seq = info.tid, info.seq
            expected = last_seq.get(tid, -1) + 1
            if seq != expected:
                if seq < expected:
                    problem = f"batch {seq} of thread {tid} appears again (a repeated batch)"
                elif expected == 0:
                    problem = (f"batch {seq} of thread {tid} is its first in the file: "
                               f"batches 0..{seq - 1} are missing")
                else:
                    problem = (f"batch {seq} of thread {tid} follows batch {expected - 1}: "
                               f"batches {expected}..{seq - 1} are missing")
                self._error(problem, info.offset, tid, seq)
            last_seq[tid] = max(seq, last_seq.get(tid, -1))
            if info.base < last_ts.get(tid, 0):
                self._error(f"thread {tid}'s clock goes backwards: batch {seq} starts "
                            f"{last_ts[tid] - info.base} ticks before the previous batch ended",
                            info.offset, tid, seq)
            out = per_thread.get(tid)
            if out is None:
                out = per_thread[tid] = self._new_run(tid)
            found, ts = self._decode_batch(info, out)
            last_ts[tid] = max(ts, last_ts.get(tid, 0))
            if found != info.count:
                self._error(f"batch header says {info.count} records, the batch holds {found}",
                            info.offset, tid, seq)
            total = counts.setdefault(tid, [0, 0])
            total[0] += 1
            total[1] += found
        self.trace.threads = {tid: (b, n) for tid, (b, n) in counts.items()}
        self.trace.batches = len(batches)
        return per_thread

    def _new_run(self, tid: int) -> list:
        """A container for thread ``tid``'s decoded events (``_decode_batch``
        appends to it, ``_events`` resolves it)."""
        return []

    def _decode_batch(self, info: BatchInfo, out: list) -> tuple[int, int]:
        """Append the batch's events to ``out`` as ``(ticks, tid, kind, raw_args)``.

        Returns the number of records and the last timestamp.  The common
        case (a known timed event with one to three inline varints) takes a
        fast path; everything else goes through ``_slow_record``.
        """
        data = self.data
        end = info.end
        tid = info.tid
        ts = info.base
        p = info.header_end
        found = 0
        kinds = _KINDS_BY_ID
        inline_counts = _INLINE_COUNTS
        read_uvarint = wire.read_uvarint
        append = out.append
        while p < end:
            start = p
            head = data[p]
            p += 1
            found += 1
            if inline_counts[head] == 1:
                dt = data[p] if p < end else 0x80
                if dt < 0x80:
                    p += 1
                else:
                    try:
                        dt, p = read_uvarint(data, p, end)
                    except (wire.Truncated, wire.Malformed) as exc:
                        self._bad_record(exc, start, info)
                        break
                ts += dt
                append((ts, tid, kinds[head & 0x3F], ()))
            elif inline_counts[head] == 2:
                try:
                    dt, p = read_uvarint(data, p, end)
                    a, p = read_uvarint(data, p, end)
                except (wire.Truncated, wire.Malformed) as exc:
                    self._bad_record(exc, start, info)
                    break
                ts += dt
                append((ts, tid, kinds[head & 0x3F], (a,)))
            else:
                try:
                    p, ts = self._slow_record(head, start, p, ts, info, out)
                except (wire.Truncated, wire.Malformed) as exc:
                    self._bad_record(exc, start, info)
                    break
        if p > end:
            self._error("a record runs past the end of its batch", start, tid, info.seq)
        return found, ts

    def _bad_record(self, exc, start: int, info: BatchInfo) -> None:
        if isinstance(exc, wire.Truncated):
            self._error("a record runs past the end of its batch", start, info.tid, info.seq)
        else:
            self._error(f"corrupt record: {exc}", start, info.tid, info.seq)

    def _slow_record(self, head: int, start: int, p: int, ts: int, info: BatchInfo, out: list):
        """Any record but the common inline events; returns ``(next_pos, ts)``."""
        data, end, tid = self.data, info.end, info.tid
        kind_id = head & 0x3F
        code = head >> 6
        if code < 3:
            values = []
            for _ in range(code + 1):
                v, p = wire.read_uvarint(data, p, end)
                values.append(v)
            body = None
        else:
            length, p = wire.read_uvarint(data, p, end)
            if p + length > end:
                raise wire.Truncated(start)
            values = None
            body = (p, p + length)
            p += length
        kind = events.BY_ID.get(kind_id)
        if kind is None:
            self._skip_unknown(kind_id, start)
        elif kind.timed:
            if values is None:
                values = self._varints(*body)
            if len(values) != kind.varint_count:
                self._error(f"{kind.name} has {len(values)} values; the event table "
                            f"gives it {kind.varint_count}", start, tid, info.seq)
            else:
                ts += values[0]
                out.append((ts, tid, kind, tuple(values[1:])))
        elif kind.top_level:
            self._error(f"{kind.name} record inside a batch", start, tid, info.seq)
        else:
            self._definition(kind_id, values, body, start, tid, info.seq)
        return p, ts

    def _definition(self, kind_id, values, body, offset, tid, seq) -> None:
        """Record a String, Func or Stack definition (resolved after all batches)."""
        try:
            if kind_id == events.STRING:
                if body is None:
                    raise wire.Malformed("String must be length-prefixed")
                sid, p = wire.read_uvarint(self.data, body[0], body[1])
                table, key, value = self._string_defs, sid, (p, body[1], offset)
                name = "string"
            elif kind_id == events.FUNC:
                if values is None:
                    values = self._varints(*body)
                if len(values) != 4:
                    raise wire.Malformed("Func needs 4 values")
                table, key, value, name = self._func_defs, values[0], (*values[1:], offset), "function"
            else:
                if body is None:
                    raise wire.Malformed("Stack must be length-prefixed")
                values = self._varints(*body)
                if len(values) < 2 or len(values) != 2 + 2 * values[1]:
                    raise wire.Malformed("Stack frame count disagrees with its length")
                table, key, name = self._stack_defs, values[0], "stack"
                value = (tuple(zip(values[2::2], values[3::2])), offset)
        except (wire.Truncated, wire.Malformed) as exc:
            self._error(f"corrupt definition record: {exc}", offset, tid, seq)
            return
        if key == 0:
            self._error(f"{name} id 0 is reserved and cannot be defined", offset, tid, seq)
        elif key in table:
            self._error(f"{name} id {key} is defined twice", offset, tid, seq)
        else:
            table[key] = value

    # -- footer and resolution ---------------------------------------------

    def _check_footer(self) -> None:
        footer = self.trace.footer
        if not footer:
            return
        present = self.trace.threads
        for tid in sorted(set(footer) | set(present)):
            want = footer.get(tid, (0, 0))
            have = present.get(tid, (0, 0))
            if want != have:
                self._error(f"the footer says thread {tid} wrote {want[0]} batches with "
                            f"{want[1]} records; the file holds {have[0]} batches with "
                            f"{have[1]} records", None, tid)

    def _resolve(self, per_thread: dict[int, list]) -> None:
        trace = self.trace
        data = self.data
        undefined: dict[str, set] = {}
        # The thread whose events are being resolved, so that an undefined id
        # can be reported where it is first used (None: inside a definition).
        using = [None]
        first_use: dict[str, int | None] = {}

        def missing(what, ident):
            undefined.setdefault(what, set()).add(ident)
            first_use.setdefault(what, using[0])

        for sid, (start, end, offset) in self._string_defs.items():
            try:
                trace.strings[sid] = bytes(data[start:end]).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                self._error(f"string {sid} is not valid UTF-8", offset)
                trace.strings[sid] = bytes(data[start:end]).decode("utf-8", "replace")

        def string(sid):
            text = trace.strings.get(sid)
            if text is None:
                missing("string", sid)
                text = f"<undefined string {sid}>"
            return text

        for fid, (name_id, file_id, line, _offset) in self._func_defs.items():
            trace.funcs[fid] = Func(string(name_id), string(file_id), line)

        def func(fid):
            f = trace.funcs.get(fid)
            if f is None:
                missing("function", fid)
                f = Func(f"<undefined function {fid}>", "", 0)
            return f

        for kid, (frames, _offset) in self._stack_defs.items():
            trace.stacks[kid] = tuple(Frame(*func(f)[:2], line) for f, line in frames)

        def stack(kid):
            if kid == 0:
                return None
            s = trace.stacks.get(kid)
            if s is None:
                missing("stack", kid)
                s = ()
            return s

        resolvers = {"s": string, "f": func, "k": stack, "i": wire.unzigzag}
        plan = {kind.id: _resolver([resolvers.get(t) for _, t in kind.args])
                for kind in events.TABLE}

        start_ticks = _int(trace.meta.get("start_ticks"))
        if start_ticks is None:
            firsts = [evs[0][0] for evs in per_thread.values() if evs]
            start_ticks = min(firsts) if firsts else 0
        freq = trace.frequency or 1
        trace.events = self._events(per_thread, plan, start_ticks, freq, using)
        for what, ids in undefined.items():
            listed = ", ".join(map(str, sorted(ids)[:5]))
            problem = f"{len(ids)} {what} id(s) used but never defined: {listed}"
            if self.cut is not None:
                trace.warnings.append(problem + " (their definitions were lost in the cut)")
            else:
                self._error(problem, tid=first_use[what])


    def _events(self, per_thread: dict, plan: dict, start_ticks: int, freq: int,
                using: list) -> list:
        """Every thread's events resolved (``plan``: kind id -> resolver or
        None) and merged in time order.  ``using[0]`` names the thread being
        resolved, for the report of undefined ids."""
        make = tuple.__new__
        result = []
        append = result.append
        for tid, evs in sorted(per_thread.items()):
            using[0] = tid
            for ticks, tid, kind, raw in evs:
                resolve = plan[kind.id]
                if resolve is not None:
                    raw = resolve(raw)
                delta = ticks - start_ticks
                if freq != 1_000_000_000:
                    delta = delta * 1_000_000_000 // freq
                append(make(Event, (delta, tid, kind, raw)))
        # Each thread's events are already in time order: the sort merges
        # those runs (stable, so ties keep thread order).
        result.sort(key=_TS)
        return result


def _inline_counts() -> list[int]:
    """For each possible type byte: the varint count if it is a known timed
    event with one or two inline varints (the decoder's fast path), else 0."""
    counts = [0] * 256
    for kind in events.TABLE:
        if kind.timed and kind.varint_count in (1, 2):
            counts[wire.inline_prefix(kind)[0]] = kind.varint_count
    return counts


_INLINE_COUNTS = _inline_counts()
_TS = operator.itemgetter(0)


def _resolver(fns):
    """A function turning raw argument ids into values, or None if there is
    nothing to resolve.  Specialised for the common arities: it runs once per event."""
    if not any(fns):
        return None
    if len(fns) == 1:
        (f,) = fns
        return lambda raw: (f(raw[0]),)
    if len(fns) == 2:
        f0, f1 = fns
        if f0 is None:
            return lambda raw: (raw[0], f1(raw[1]))
        if f1 is None:
            return lambda raw: (f0(raw[0]), raw[1])
        return lambda raw: (f0(raw[0]), f1(raw[1]))
    return lambda raw: tuple(f(v) if f else v for f, v in zip(fns, raw))
_KINDS_BY_ID = [events.BY_ID.get(i) for i in range(64)]


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def collector_paused():
    """Pause Python's cycle collector while millions of small tuples are made.

    None of them forms a cycle, but each allocation counts towards a
    collection, and the collections (which traverse every tuple made so far)
    made decoding 1M events ~3x slower.  One collection still comes soon
    after the collector is enabled again (the count is far past its
    threshold), and it visits every event of the new ``Trace.events`` list
    once: about a fifth of ``read``'s time for a call stream, the price of
    a list the collector tracks.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(path) -> bytes:
    """Read a trace file's bytes, turning OS errors into ``TraceFormatError``."""
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise TraceFormatError(f"{path} is a directory, not a trace file") from None
    except FileNotFoundError:
        raise TraceFormatError(f"{path} does not exist") from None
    except OSError as exc:
        raise TraceFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def read(path) -> Trace:
    """Read and check a trace file.

    Raises ``TraceFormatError`` (with offset, thread and batch where they
    apply) if the file is not a valid trace.  A trace cut short is returned
    with every complete batch, and a ``TraceWarning``.
    """
    decoder = decoder_class()(load(path), os.fspath(path))
    with collector_paused():
        trace = decoder.decode()
    if decoder.errors:
        first = decoder.errors[0]
        if len(decoder.errors) > 1:
            first.args = (f"{first.args[0]} (and {len(decoder.errors) - 1} more problems; "
                          f"`pytrace validate` lists them all)",)
        raise first
    if decoder.cut is not None:
        trace.warnings.insert(0, str(decoder.cut))
    for message in trace.warnings:
        warnings.warn(message, TraceWarning, stacklevel=2)
    return trace


def decoder_class() -> type:
    """The decoder ``read`` uses: with the C core active (``pytrace.core``),
    the one whose hot loops are in C (``pytrace.decoder_c``); both give the
    same ``Trace``."""
    return CDecoder if core.name == "c" else Decoder


# At the end: decoder_c subclasses Decoder.
from .decoder_c import CDecoder  # noqa: E402
