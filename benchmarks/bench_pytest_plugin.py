"""What ``pytest --pytrace`` (default light mode) costs a suite of many short tests (issue 4).

    .venv/bin/python -m pytest benchmarks/bench_pytest_plugin.py --benchmark-only

Targets: at most 1 ms added per test, at most 1.15x the suite's wall time,
and next to nothing for a run without ``--pytrace`` (pytest imports the
installed plugin in every run).

Each round runs, in child processes and in an order that rotates from round
to round (so every mode sees the same machine), the same generated suite of
``TESTS`` short tests (plain, parametrized, and with a function-scoped
fixture), once with tests that do nothing else (``work_ms=0``, the worst
case) and once with tests that each keep the CPU busy for 1 ms:

- ``with``: ``pytest --pytrace``;
- ``without``: plain ``pytest``, the plugin installed but inert;
- ``collect`` and ``collect_no_plugin``: ``pytest --collect-only``, with the
  inert plugin and with ``-p no:pytrace``: start-up and collection only.

The figures are medians over the rounds:

- ``wall_ratio``: the whole ``with`` process over the whole ``without`` one,
  start-up and collection included (``cpu_ratio``: the same in CPU time,
  steadier when other processes load the machine); ``paired_wall_ratio``:
  the median of each round's own ratio (its two runs are a few seconds
  apart, so a load that changes from round to round cancels out);
- ``added_ms_per_test``: from pytest's run-test loop only (timed by the
  suite's own conftest), where the per-test cost lives: the median of the
  rounds' ``(loop with - loop without) / TESTS`` (``added_cpu_ms_per_test``:
  in CPU time);
- ``inert_ms``: what the installed, inert plugin adds to a run
  (``collect`` - ``collect_no_plugin``), and ``import_ms``: the part of it
  that is importing ``pytrace.pytest_plugin`` (a child that has imported
  pytest times that import alone: exact, where ``inert_ms`` is a
  difference of two noisy process times);
- ``bytes_per_trace``: disk used per test trace (the run's ``.pytrace`` directory);
- ``switches_with``/``switches_without``: the process's voluntary context
  switches (a pytrace thread waiting for the GIL would show here).

The children get a bytecode cache, as a user's runs do (see ``child_env``),
and each ``with`` run replaces the traces of the previous round, as a
rerun does (on ext4 mounted with ``discard``, as on this project's machine,
that unlink costs ~20 us to ~2 ms a file, depending on whether the kernel
has written the old file back yet: the wall figures swing with it).

The printed line is the README's figure; ``--benchmark-json`` also holds it
under ``extra_info``.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import pytest

TESTS = 501
#: A run's ratio moves by several hundredths with this shared machine's load
#: (a full collection in pytest's own cleanup alone takes 5-15 ms): 40 rounds
#: (about a minute and a half) keep the median steadier than 15 did.
ROUNDS = 40
#: Milliseconds of busy Python each test spends, beyond its assert: 0 is the
#: worst case (pytest's own ~0.27 ms per test is all there is to compare
#: with); 1 is a suite of short tests that do some work.
WORK_MS = (0, 1)
#: Seconds one child may take before it is killed (a hung child must not hang the benchmark).
CHILD_TIMEOUT = 300

SUITE = '''
import time

import pytest


def work():
    """Keep the CPU busy in Python for WORK_S seconds (none: return)."""
    end = time.perf_counter() + WORK_S
    while time.perf_counter() < end:
        pass


@pytest.fixture
def record():
    yield {"id": 1}


def make_test(i):
    def test(record):
        work()
        assert record["id"] + i > 0
    return test


def plain():
    work()


for _i in range(TESTS // 3):
    globals()[f"test_fixture_{_i}"] = make_test(_i)
    globals()[f"test_plain_{_i}"] = plain


@pytest.mark.parametrize("n", range(TESTS // 3))
def test_param(n):
    work()
    assert sum(range(n)) == n * (n - 1) // 2
'''

CONFTEST = '''
import json, os, time
import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        return (yield)
    finally:
        with open(os.environ["LOOP_TIME_FILE"], "w") as f:
            json.dump([time.perf_counter() - wall, time.process_time() - cpu], f)
'''

#: The fields of ``run_suite``'s result.
WALL, CPU, LOOP_WALL, LOOP_CPU, SWITCHES = range(5)

#: Mode -> pytest's arguments.
MODES = {
    "with": ("--pytrace",),
    "without": (),
    "collect": ("--collect-only",),
    "collect_no_plugin": ("--collect-only", "-p", "no:pytrace"),
}

IMPORT_PLUGIN = '''
import time
import pytest
start = time.perf_counter()
import pytrace.pytest_plugin
print(time.perf_counter() - start)
'''


def make_suite(directory, work_ms: float):
    (directory / "test_short.py").write_text(
        f"TESTS = {TESTS}\nWORK_S = {work_ms / 1e3}\n" + SUITE)
    (directory / "conftest.py").write_text(CONFTEST)


def child_env(directory) -> dict:
    """The children's environment: with a bytecode cache (in ``directory``,
    not in the source tree), as a user's runs have, even where
    ``PYTHONDONTWRITEBYTECODE`` is set: compiling every module anew in every
    run would be most of an import's cost."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(directory / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_suite(directory, *flags) -> tuple:
    """``(wall, cpu)`` of the pytest process, then of its run-test loop
    (None, None if it ran no tests), in seconds, then the process's
    voluntary context switches.  CPU time (user + system) is the steadier
    figure on a shared machine: other processes' load lengthens wall time,
    much less the child's own CPU time.  A thread of pytrace's that waits
    for the GIL shows in the switches."""
    loop_file = directory / "loop.json"
    loop_file.unlink(missing_ok=True)
    env = {**child_env(directory), "LOOP_TIME_FILE": str(loop_file)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *flags], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stdout + done.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    loop = json.loads(loop_file.read_text()) if "--collect-only" not in flags else [None, None]
    return wall, cpu, *loop, after.ru_nvcsw - before.ru_nvcsw


def import_time(directory) -> float:
    """Seconds to import the plugin in a child that has imported pytest."""
    done = subprocess.run([sys.executable, "-c", IMPORT_PLUGIN], cwd=directory,
                          env=child_env(directory), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, check=True)
    return float(done.stdout)


def one_round(directory, times: dict) -> None:
    """Every mode once, starting with a different one each round."""
    order = list(MODES)
    shift = len(times["with"]) % len(order)
    for mode in order[shift:] + order[:shift]:
        times[mode].append(run_suite(directory, *MODES[mode]))
    times["import"].append(import_time(directory))


def figures(directory, times: dict) -> dict:
    def median(mode, field):
        return statistics.median(t[field] for t in times[mode])

    def added_per_test(field):
        return statistics.median((on[field] - off[field]) / TESTS
                                 for on, off in zip(times["with"], times["without"]))

    traces = list((directory / ".pytrace").glob("*.pytrace"))
    assert len(traces) == TESTS
    return {
        "tests": TESTS,
        "rounds": len(times["with"]),
        "wall_s_without": round(median("without", WALL), 3),
        "wall_s_with": round(median("with", WALL), 3),
        "wall_ratio": round(median("with", WALL) / median("without", WALL), 3),
        "cpu_ratio": round(median("with", CPU) / median("without", CPU), 3),
        "paired_wall_ratio": round(statistics.median(
            on[WALL] / off[WALL] for on, off in zip(times["with"], times["without"])), 3),
        "loop_s_without": round(median("without", LOOP_WALL), 3),
        "loop_s_with": round(median("with", LOOP_WALL), 3),
        "added_ms_per_test": round(added_per_test(LOOP_WALL) * 1e3, 3),
        "added_cpu_ms_per_test": round(added_per_test(LOOP_CPU) * 1e3, 3),
        "switches_without": median("without", SWITCHES),
        "switches_with": median("with", SWITCHES),
        "inert_ms": round((median("collect", WALL) - median("collect_no_plugin", WALL)) * 1e3, 1),
        "import_ms": round(statistics.median(times["import"]) * 1e3, 1),
        "bytes_per_trace": round(sum(t.stat().st_size for t in traces) / len(traces)),
    }


@pytest.mark.parametrize("work_ms", WORK_MS)
def test_pytrace_overhead_on_short_tests(benchmark, tmp_path, capsys, work_ms):
    make_suite(tmp_path, work_ms)
    one_round(tmp_path, {mode: [] for mode in (*MODES, "import")})  # warm-up, not counted
    times = {mode: [] for mode in (*MODES, "import")}
    benchmark.pedantic(one_round, args=(tmp_path, times), rounds=ROUNDS, iterations=1)
    result = figures(tmp_path, times)
    benchmark.extra_info.update(result)
    with capsys.disabled():
        print(f"\npytest --pytrace, {TESTS} short tests of {work_ms} ms of work, median of "
              f"{result['rounds']} rounds (Python {sys.version.split()[0]}): "
              + json.dumps(result))
