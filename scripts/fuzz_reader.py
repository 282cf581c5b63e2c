#!/usr/bin/env python3
"""The long fuzz run of the trace reader: many broken inputs, one rule.

    python scripts/fuzz_reader.py [--inputs 100000] [--seed 1] [--memory-mib 512]

Every input goes through ``pytrace.read`` (once with each available decoder:
the C one and the pure-Python one, see ``pytrace.core``) and through
``pytrace.validate``.  The rule: nothing may escape but ``TraceFormatError``
(a ``TraceWarning`` for a cut trace is fine), no input may take more than 1 s
(a timer interrupts it), and no input may make a huge allocation (the
process's address space is capped at what it uses after setup plus
``--memory-mib``, so a corrupt length field that is trusted ends in
``MemoryError``, which counts as a failure).

Inputs are built from real traces recorded here (threads, calls, GC, user
annotations; some with tiny buffers, so there are many batches): each input
is either a real trace truncated at a random byte, a real trace with 1-8
random mutations (byte set to a boundary or random value, bytes deleted,
bytes inserted, a length/count field overwritten) and maybe truncated, or
random bytes behind a valid header prefix.  The run prints its figures and
exits 1 on the first failure, with its traceback, saving the input as
``fuzz_failure.pytrace`` to replay with ``--replay-file``.

The test suite has the short version of this (hypothesis, in
``tests/test_validate.py``); this script is the long run.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import warnings

import pytrace
from pytrace import TraceFormatError, TraceWarning, core, events, wire

#: Where a failing input is saved (the base traces differ from run to run:
#: threads interleave differently, so a seed alone does not replay it).
FAILURE_FILE = "fuzz_failure.pytrace"

#: Longest any single input may take (read with every decoder, and validate).
TIME_LIMIT = 1.0


class InputTooSlow(Exception):
    """Raised by the timer inside an input that ran past ``TIME_LIMIT``."""


def _busy_program() -> None:
    """What the base traces record: calls, threads, a generator, GC, annotations."""
    import gc

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def numbers():
        yield from range(20)

    def worker(k):
        with pytrace.region(f"work-{k}"):
            fib(12)
            sum(numbers())
            pytrace.log("worker", f"done {k}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    fib(10)
    gc.collect()
    pytrace.counter("items", 42)
    for t in threads:
        t.join()


def base_traces(directory: str) -> list[bytes]:
    """Real traces: default buffers (few big batches) and tiny ones (many small)."""
    from pytrace.recorder import MIN_BUFFER_SIZE

    traces = []
    for i, buffer_size in enumerate((MIN_BUFFER_SIZE, 4096, 65536)):
        path = os.path.join(directory, f"base{i}.pytrace")
        with pytrace.trace(path, buffer_size=buffer_size, flush_interval=0):
            _busy_program()
        with open(path, "rb") as f:
            traces.append(f.read())
    return traces


INTERESTING_BYTES = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF)
INTERESTING_U32 = (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20)


def leb128(value: int) -> bytes:
    """An unsigned LEB128 varint of any width (``wire.uvarint`` refuses
    more than 64 bits, which is exactly what a reader must survive)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mutate(rng: random.Random, data: bytes) -> bytes:
    blob = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not blob:
            break
        pos = rng.randrange(len(blob))
        action = rng.random()
        if action < 0.4:
            blob[pos] = rng.choice(INTERESTING_BYTES) if rng.random() < 0.5 else rng.randrange(256)
        elif action < 0.6:
            del blob[pos:pos + rng.randint(1, 32)]
        elif action < 0.8:
            blob[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif pos + 4 <= len(blob):
            # A length or record count (u32 LE) or a varint made huge.
            struct.pack_into("<I", blob, pos, rng.choice(INTERESTING_U32))
        else:
            blob[pos:pos] = leb128(rng.choice((2**32, 2**63, 2**64 - 1, 2**70)))
    if rng.random() < 0.3:
        blob = blob[:rng.randint(0, len(blob))]
    return bytes(blob)


def make_input(seed: int, bases: list[bytes]) -> bytes:
    rng = random.Random(seed)
    kind = rng.random()
    base = rng.choice(bases)
    if kind < 0.15:
        return base[:rng.randint(0, len(base))]
    if kind < 0.9:
        return mutate(rng, base)
    prefix = rng.choice((b"", wire.HEADER, wire.HEADER + wire.record(events.FREQUENCY, (10**9,))))
    return prefix + rng.randbytes(rng.randint(0, 600))


def check(path: str, data: bytes, decoders: tuple[str, ...]) -> bool:
    """Read ``data`` with every decoder and validate it; True if it is
    rejected.  Any exception but TraceFormatError propagates."""
    with open(path, "wb") as f:
        f.write(data)
    outcomes = set()
    for name in decoders:
        core.use(name)
        try:
            pytrace.read(path)
            outcomes.add(False)
        except TraceFormatError:
            outcomes.add(True)
    report = pytrace.validate(path)
    outcomes.add(bool(report.errors))
    if len(outcomes) != 1:
        raise AssertionError(f"read and validate disagree on this input: {outcomes}")
    return outcomes.pop()


def _on_timer(signum, frame):
    raise InputTooSlow(f"an input took more than {TIME_LIMIT} s")


def cap_memory(extra_mib: int) -> int:
    """Limit the address space to what the process maps now plus ``extra_mib``."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + extra_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return limit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--replay-file", metavar="FILE", help="run only this saved input")
    args = parser.parse_args(argv)

    decoders = tuple(name for name in core.NAMES if name == "python" or core.c_module is not None)
    with tempfile.TemporaryDirectory() as directory:
        bases = base_traces(directory)
        path = os.path.join(directory, "input.pytrace")
        limit = cap_memory(args.memory_mib)
        signal.signal(signal.SIGALRM, _on_timer)
        warnings.simplefilter("ignore", TraceWarning)
        seeds = [None] if args.replay_file else \
            range(args.seed * 10**9, args.seed * 10**9 + args.inputs)
        rejected = slowest = 0.0
        started = time.perf_counter()
        for count, seed in enumerate(seeds, 1):
            if args.replay_file:
                with open(args.replay_file, "rb") as f:
                    data = f.read()
            else:
                data = make_input(seed, bases)
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
            try:
                rejected += check(path, data, decoders)
            except BaseException:
                signal.setitimer(signal.ITIMER_REAL, 0)
                with open(FAILURE_FILE, "wb") as f:
                    f.write(data)
                traceback.print_exc()
                print(f"FAILED on input seed {seed} ({len(data)} bytes), saved as "
                      f"{FAILURE_FILE}; replay: python {sys.argv[0]} --replay-file "
                      f"{FAILURE_FILE}", file=sys.stderr)
                return 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - t0)
            if count % 10_000 == 0:
                print(f"  {count} inputs...", flush=True)
        elapsed = time.perf_counter() - started
    print(f"fuzzed the reader with {count} inputs (seed {args.seed}) in {elapsed:.0f} s: "
          f"decoders {', '.join(decoders)} + validate; {int(rejected)} rejected with "
          f"TraceFormatError, {count - int(rejected)} read (whole or cut); no other exception; "
          f"slowest input {slowest * 1000:.1f} ms (limit {TIME_LIMIT * 1000:.0f} ms); "
          f"address space capped at {limit / 2**20:.0f} MiB "
          f"(+{args.memory_mib} MiB over setup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
