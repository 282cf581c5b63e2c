"""Why the writer is synchronous (see ``pytrace/writer.py``).

    .venv/bin/python -m pytest benchmarks/bench_writer.py --benchmark-only

Compares, for the thread that fills buffers, the cost of handing over 64 KiB
batches: written synchronously to the file, or queued to a background writer
thread (which then competes for the GIL).  The work between flushes stands in
for a traced program filling a buffer (~15,000 events).
"""

import queue
import threading

import pytest

BATCH = bytes(64 * 1024)
BATCHES = 200


def busy_work():
    """Pure-Python work, like the traced program between two flushes."""
    total = 0
    for i in range(20_000):
        total += i * i
    return total


def produce_sync(path):
    with open(path, "wb") as f:
        for _ in range(BATCHES):
            busy_work()
            f.write(BATCH)


def produce_background(path):
    pending = queue.SimpleQueue()

    def drain():
        with open(path, "wb") as f:
            while (batch := pending.get()) is not None:
                f.write(batch)

    writer = threading.Thread(target=drain)
    writer.start()
    for _ in range(BATCHES):
        busy_work()
        pending.put(BATCH)
    pending.put(None)
    writer.join()


def produce_nothing(path):
    for _ in range(BATCHES):
        busy_work()


@pytest.mark.parametrize("mode", [produce_nothing, produce_sync, produce_background],
                         ids=["no-writes", "synchronous", "background-thread"])
def test_handing_over_batches(benchmark, tmp_path, mode):
    benchmark.group = "writer"
    benchmark.pedantic(mode, args=(tmp_path / "out.bin",), rounds=7, iterations=1)
