"""Byte-level encoding shared by the writer and the reader (see docs/format.md).

Everything here is pure functions over bytes: no buffers, no files, no
threads.  The layouts implemented here are the ones ``docs/format.md``
specifies; the event ids come from ``pytrace.events``.
"""

from __future__ import annotations

import functools
import itertools
import struct

from . import events

#: The 16-byte file header: 8 bytes of magic, the format version (u16 LE) and
#: 6 reserved zero bytes.
MAGIC = b"PYTRACE\x00"
VERSION = 1
HEADER = MAGIC + struct.pack("<H", VERSION) + bytes(6)
HEADER_SIZE = len(HEADER)

#: Batch prefix: type byte, u32 LE length (bytes after this field), u32 LE
#: record count, u64 LE base ticks.  All three are fixed-width because they
#: are patched in place: length and count when the batch is sealed, the base
#: when the flush that started the batch makes it live (see buffer.py).
BATCH_PREFIX = struct.Struct("<BII")
BATCH_LENGTH_OFFSET = 1
BATCH_BASE = struct.Struct("<Q")
BATCH_BASE_OFFSET = BATCH_PREFIX.size  # 9
BATCH_FIXED_SIZE = BATCH_BASE_OFFSET + BATCH_BASE.size  # 17

#: Largest argument count code; code 3 means "uvarint length, then that many bytes".
LENGTH_PREFIXED = 3
#: A varint longer than this is corrupt (a u64 needs at most 10 bytes).
MAX_VARINT_BYTES = 10


def _encode_uvarint(value: int) -> bytes:
    if value < 0 or value >> 64:
        raise ValueError(f"uvarint cannot encode {value} (negative, or wider than 64 bits)")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: The encodings of the values below 128 (one byte each).
_ONE_BYTE: tuple[bytes, ...] = tuple([bytes((v,)) for v in range(0x80)])
#: Values below this encode in one or two bytes (see ``small_uvarints``).
SMALL_LIMIT = 1 << 14


@functools.cache
def small_uvarints() -> tuple[bytes, ...]:
    """The encodings of every value below ``SMALL_LIMIT``, for the pure-Python
    core's hot paths to index instead of encoding.  Built on first use, not
    at import: a process on the C core never needs it, and ``pytest
    --pytrace`` imports this module in every run (issue 4).  Built from the
    two byte layouts, at a third of the time of calling ``_encode_uvarint``
    16,384 times (~1 ms against ~3 ms): above 127, the low seven bits with
    the continuation bit, then the high seven, which is the little-endian u16
    ``high << 8 | 0x80 | low``; for each ``high``, the 128 values of ``low``
    are one run of consecutive u16s."""
    return (
        *_ONE_BYTE,
        *map(struct.Struct("<H").pack,
             itertools.chain.from_iterable(range(high << 8 | 0x80, (high + 1) << 8)
                                           for high in range(1, 0x80))),
    )


def uvarint(value: int) -> bytes:
    """Unsigned LEB128 encoding of ``value``."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if 0x80 <= value < SMALL_LIMIT:
        return bytes((value & 0x7F | 0x80, value >> 7))
    return _encode_uvarint(value)


def zigzag(value: int) -> int:
    """Map a signed integer onto an unsigned one (0, -1, 1, -2 -> 0, 1, 2, 3)."""
    return value * 2 if value >= 0 else -value * 2 - 1


def unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -(value >> 1) - 1


def record(kind_id: int, values) -> bytes:
    """A plain record: type byte with argument-count bits, then varints.

    One to three varints go inline (code 0-2, as Go does); more are
    length-prefixed (code 3) so that any reader can skip a record it does not
    know.
    """
    payload = b"".join(uvarint(v) for v in values)
    count = len(values)
    if 1 <= count <= LENGTH_PREFIXED:
        return bytes((kind_id | (count - 1) << 6,)) + payload
    return length_prefixed(kind_id, payload)


def inline_prefix(kind: events.EventKind) -> bytes:
    """The type byte of ``kind``'s plain record, all of whose varints (the
    time delta, if timed, then the arguments) are inline: what
    ``ThreadSlot.emit_small`` takes as its prefix, and what decoders match
    to take their fast path.  Only for kinds with one to three varints."""
    count = kind.varint_count
    if not 1 <= count <= LENGTH_PREFIXED:
        raise ValueError(f"{kind.name} has {count} varints: not an inline record")
    return bytes((kind.id | (count - 1) << 6,))


def length_prefixed(kind_id: int, payload: bytes) -> bytes:
    """A code-3 record: type byte, uvarint byte length, payload."""
    return bytes((kind_id | LENGTH_PREFIXED << 6,)) + uvarint(len(payload)) + payload


def string_record(string_id: int, text: str) -> bytes:
    return length_prefixed(
        events.STRING, uvarint(string_id) + text.encode("utf-8", "surrogatepass")
    )


def stack_record(stack_id: int, frames) -> bytes:
    """``frames``: ``(func_id, line)`` pairs, innermost first."""
    parts = [uvarint(stack_id), uvarint(len(frames))]
    for func_id, line in frames:
        parts.append(uvarint(func_id))
        parts.append(uvarint(line))
    return length_prefixed(events.STACK, b"".join(parts))


def meta_record(key: str, value: str) -> bytes:
    k = key.encode("utf-8", "surrogatepass")
    v = value.encode("utf-8", "surrogatepass")
    return length_prefixed(events.META, uvarint(len(k)) + k + uvarint(len(v)) + v)


def footer_record(totals) -> bytes:
    """``totals``: ``(tid, batches, events)`` triples."""
    parts = [uvarint(len(totals))]
    for tid, batches, count in totals:
        parts += [uvarint(tid), uvarint(batches), uvarint(count)]
    return length_prefixed(events.FOOTER, b"".join(parts))


def batch_header(tid: int, seq: int, base: int) -> bytearray:
    """A batch's opening bytes, with length and count still zero.

    ``seal_batch`` fills them in when the batch is handed to the writer;
    ``set_batch_base`` may replace ``base`` while the batch is live.
    """
    out = bytearray(BATCH_PREFIX.pack(events.BATCH, 0, 0))
    out += BATCH_BASE.pack(base)
    out += uvarint(tid)
    out += uvarint(seq)
    return out


def set_batch_base(batch: bytearray, base: int) -> None:
    """Patch the base ticks of a batch in place."""
    BATCH_BASE.pack_into(batch, BATCH_BASE_OFFSET, base)


def seal_batch(batch: bytearray, event_count: int) -> None:
    """Patch a finished batch's length and event count in place."""
    BATCH_PREFIX.pack_into(
        batch, 0, events.BATCH, len(batch) - BATCH_LENGTH_OFFSET - 4, event_count
    )


class Truncated(Exception):
    """The data ended inside a value: raised by the decoding helpers."""


class Malformed(Exception):
    """A value is impossible (e.g. an over-long varint)."""


def read_uvarint(data, pos: int, end: int) -> tuple[int, int]:
    """Decode one uvarint at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise Truncated(start)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise Malformed("varint wider than 64 bits")
            return result, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise Malformed(f"varint longer than {MAX_VARINT_BYTES} bytes")
