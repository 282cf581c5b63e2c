"""What recording one test's file costs outside pytest: the floor under
``pytest --pytrace``'s per-test figure (issue 4).

    python benchmarks/plugin_file_floor.py [--tests 1500] [--thrash-mib 8]

Per test, as the plugin does it in its default mode (parked hooks, one file
per test): ``start`` into the test's file, a task with the regions setup,
call and teardown, then ``park``.  Timed twice, in one process, medians per
test: in a tight loop, and with ``--thrash-mib`` of memory and 20,000 dicts
walked between tests, as pytest's own work between tests leaves the caches
cold.  The gap between these and the benchmark's added time per test
(``bench_pytest_plugin.py``) is the plugin's own hooks and bookkeeping and
what the hooks' presence costs pytest.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import pytrace
from pytrace import session
from pytrace.pytest_plugin import DEFAULT_SAMPLE_RATE
from pytrace.pytest_recording import LIGHT_BUFFER_SIZE, trace_file_name
from pytrace.options import Options


def record_tests(directory: str, count: int, between) -> float:
    """Median seconds to record one test's file; ``between()`` runs before each."""
    options = Options(calls=False, buffer_size=LIGHT_BUFFER_SIZE, sample_rate=DEFAULT_SAMPLE_RATE)
    regions = [pytrace.region(name) for name in ("setup", "call", "teardown")]
    paths = [os.path.join(directory, trace_file_name(f"test_floor.py::test_{i}"))
             for i in range(500)]
    times = []
    for i in range(count):
        between()
        start = time.perf_counter()
        session.start(paths[i % len(paths)], options=options)
        task = pytrace.task(f"test_floor.py::test_{i}").__enter__()
        for region in regions:
            region.__enter__()
            region.__exit__(None, None, None)
        task.__exit__(None, None, None)
        session.park()
        times.append(time.perf_counter() - start)
    session.unpark()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=1500)
    parser.add_argument("--thrash-mib", type=int, default=8)
    args = parser.parse_args()
    blocks = [bytearray(4096) for _ in range(args.thrash_mib * 256)]
    objects = [{"n": i, "s": str(i)} for i in range(20_000)]

    def thrash() -> None:
        for block in blocks:
            block[0] = block[2048] = 1
        for obj in objects:
            obj["n"] += 1

    with tempfile.TemporaryDirectory() as directory:
        record_tests(directory, 200, lambda: None)  # warm-up: imports, first start
        tight = record_tests(directory, args.tests, lambda: None)
        cold = record_tests(directory, args.tests, thrash)
    print(f"Python {sys.version.split()[0]}, core {pytrace.core.name}: one test's file "
          f"{tight * 1e6:.1f} us in a tight loop, {cold * 1e6:.1f} us with the caches "
          f"thrashed between tests (medians of {args.tests})")


if __name__ == "__main__":
    main()
