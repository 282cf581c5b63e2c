"""What ``pytest --pytrace`` (default light mode) costs a suite of many short tests (issue 4).

    .venv/bin/python -m pytest benchmarks/bench_pytest_plugin.py --benchmark-only

Targets: at most 1 ms added per test, and at most 1.15x the suite's wall time.

Each round runs the same generated suite (``TESTS`` short tests: plain,
parametrized, and with a function-scoped fixture) twice in child processes,
once without and once with ``--pytrace``, alternating which goes first, so
both see the same machine.  The figures are medians over the rounds:

- ``wall``: the whole ``python -m pytest`` process, start-up and collection included;
- ``loop``: pytest's run-test loop only (timed by the suite's own conftest), where
  the per-test cost lives; ``added_ms_per_test`` is the median of the rounds'
  ``(loop with - loop without) / TESTS``;
- ``kib_per_trace``: disk used per test trace (the run's ``.pytrace`` directory).

The printed line is the README's figure; ``--benchmark-json`` also holds it
under ``extra_info``.
"""

import json
import os
import statistics
import subprocess
import sys
import time

TESTS = 300
ROUNDS = 15

SUITE = '''
import pytest


@pytest.fixture
def record():
    yield {"id": 1}


def make_test(i):
    def test(record):
        assert record["id"] + i > 0
    return test


for _i in range(TESTS // 3):
    globals()[f"test_fixture_{_i}"] = make_test(_i)
    globals()[f"test_plain_{_i}"] = lambda: None


@pytest.mark.parametrize("n", range(TESTS // 3))
def test_param(n):
    assert sum(range(n)) == n * (n - 1) // 2
'''

CONFTEST = '''
import json, os, time
import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        with open(os.environ["LOOP_TIME_FILE"], "w") as f:
            json.dump(time.perf_counter() - start, f)
'''


def make_suite(directory):
    (directory / "test_short.py").write_text(f"TESTS = {TESTS}\n" + SUITE)
    (directory / "conftest.py").write_text(CONFTEST)


def run_suite(directory, *flags) -> tuple[float, float]:
    """Wall time of the pytest process and of its run-test loop, in seconds."""
    loop_file = directory / "loop.json"
    env = {**os.environ, "LOOP_TIME_FILE": str(loop_file)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *flags], cwd=directory, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return wall, json.loads(loop_file.read_text())


def test_pytrace_overhead_on_short_tests(benchmark, tmp_path, capsys):
    make_suite(tmp_path)
    modes = {"without": (), "with": ("--pytrace",)}
    times = {mode: [] for mode in modes}

    def one_round():
        order = list(modes) if len(times["with"]) % 2 else list(reversed(modes))
        for mode in order:
            times[mode].append(run_suite(tmp_path, *modes[mode]))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    traces = list((tmp_path / ".pytrace").glob("*.pytrace"))
    assert len(traces) == TESTS
    median = {mode: [statistics.median(t[i] for t in times[mode]) for i in (0, 1)]
              for mode in modes}
    added = statistics.median(
        (on[1] - off[1]) / TESTS for on, off in zip(times["with"], times["without"]))
    figures = {
        "tests": TESTS,
        "rounds": ROUNDS,
        "wall_s_without": round(median["without"][0], 3),
        "wall_s_with": round(median["with"][0], 3),
        "wall_ratio": round(median["with"][0] / median["without"][0], 3),
        "loop_s_without": round(median["without"][1], 3),
        "loop_s_with": round(median["with"][1], 3),
        "loop_ratio": round(median["with"][1] / median["without"][1], 3),
        "added_ms_per_test": round(added * 1e3, 3),
        "kib_per_trace": round(sum(t.stat().st_size for t in traces) / len(traces) / 1024, 2),
    }
    benchmark.extra_info.update(figures)
    with capsys.disabled():
        print(f"\npytest --pytrace, {TESTS} short tests, median of {ROUNDS} rounds: "
              + json.dumps(figures))
