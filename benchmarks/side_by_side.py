"""pytrace next to its peers: overhead ratios on a call-dense and a mixed workload.

    python benchmarks/side_by_side.py [--runs 5] [--workloads fib,mixed]

Every measurement is a fresh subprocess that times only the traced region
(starting and stopping the tracer, and VizTracer's save, are outside it).
The configurations run interleaved, ``--runs`` rounds of each, so that the
machine's noise spreads over all of them; the table gives each median as a
ratio to the untraced median of the same run, then checks the targets of
issue 6 (the C core) and issue 3 (the pure-Python core).  VizTracer must be
installed (``pip install viztracer``).

Workloads (as in the peer measurements of shared/reference/python-tracer-peers.md §6):

- ``fib``: ``fib(27)`` four times: 2.54M Python calls, nothing else;
- ``mixed``: 20,000 rounds of ``json.dumps``/``loads``, ``re.findall`` and
  dict updates: few Python calls, many C calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

#: name -> (PYTRACE_CORE, tracer, options)
CONFIGS = {
    "untraced": (None, "none", {}),
    "cProfile": (None, "cprofile", {}),
    "VizTracer ignore_c_function": (None, "viztracer", {"ignore_c_function": True}),
    "VizTracer default (C calls)": (None, "viztracer", {}),
    "pytrace Python core": ("python", "pytrace", {}),
    "pytrace C core": ("c", "pytrace", {}),
    "pytrace Python core, C calls": ("python", "pytrace", {"c_calls": True}),
    "pytrace C core, C calls": ("c", "pytrace", {"c_calls": True}),
    "pytrace C core, light (calls=False)": ("c", "pytrace", {"calls": False}),
    "pytrace Python core, light (calls=False)": ("python", "pytrace", {"calls": False}),
}


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def run_fib():
    for _ in range(4):
        fib(27)


def run_mixed():
    record = {"name": "pytrace", "values": list(range(10)), "nested": {"a": 1.5, "b": [1, 2]}}
    words = re.compile(r"\w+")
    counts: dict = {}
    for i in range(20_000):
        text = json.dumps(record)
        back = json.loads(text)
        for word in words.findall(text):
            counts[word] = counts.get(word, 0) + 1
        back["round"] = i
    return counts


WORKLOADS = {"fib": run_fib, "mixed": run_mixed}


# -- child: one measurement --------------------------------------------------------


def measure(workload: str, tracer: str, options: dict) -> float:
    """Seconds the workload takes under ``tracer``."""
    work = WORKLOADS[workload]
    if tracer == "none":
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    if tracer == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
        profiler.disable()
        return elapsed
    if tracer == "viztracer":
        from viztracer import VizTracer

        viz = VizTracer(verbose=0, **options)
        viz.start()
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
        viz.stop()
        return elapsed
    import pytrace

    with tempfile.TemporaryDirectory() as folder:
        pytrace.start(os.path.join(folder, "bench.pytrace"), **options)
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
        pytrace.stop()
    return elapsed


def child(workload: str, config: str) -> None:
    _, tracer, options = CONFIGS[config]
    print(json.dumps(measure(workload, tracer, options)))


# -- parent: the table ------------------------------------------------------------


def run_child(workload: str, config: str) -> float:
    core = CONFIGS[config][0]
    env = {k: v for k, v in os.environ.items() if k != "PYTRACE_CORE"}
    if core is not None:
        env["PYTRACE_CORE"] = core
    done = subprocess.run([sys.executable, __file__, "--child", workload, config], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{config} on {workload} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh subprocesses per cell")
    parser.add_argument("--workloads", default="fib,mixed")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    workloads = args.workloads.split(",")
    times = {(w, c): [] for w in workloads for c in CONFIGS}
    for round_ in range(args.runs):
        for workload in workloads:
            for config in CONFIGS:
                times[workload, config].append(run_child(workload, config))
        print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr)
    median = {key: statistics.median(values) for key, values in times.items()}
    ratio = ratios(median)

    print(f"Python {platform.python_version()} on {machine()}; medians of {args.runs} fresh "
          f"subprocesses per cell, ratio to untraced")
    print()
    print("| tracer | " + " | ".join(workloads) + " |")
    print("|---|" + "---|" * len(workloads))
    for config in CONFIGS:
        cells = [f"{ratio[w, config]:.2f}x ({median[w, config] * 1000:.0f} ms)" for w in workloads]
        print(f"| {config} | " + " | ".join(cells) + " |")
    print()
    print_targets(workloads, ratio)
    print()
    print("The same targets from each cell's fastest run (contention only ever adds time):")
    print_targets(workloads, ratios({key: min(values) for key, values in times.items()}))


def ratios(seconds: dict) -> dict:
    """(workload, config) -> time as a ratio to the untraced time."""
    return {(w, c): seconds[w, c] / seconds[w, "untraced"] for w, c in seconds}


def print_targets(workloads, ratio) -> None:
    """The targets of issues 6 and 3, as measured in this run."""
    def added(w, c):
        return ratio[w, c] - 1

    checks = []
    if "fib" in workloads:
        share = added("fib", "pytrace C core") / added("fib", "VizTracer ignore_c_function")
        checks.append(("fib: pytrace C core's added overhead / VizTracer ignore_c_function's",
                       share, 0.75))
        share = added("fib", "pytrace C core, C calls") / added("fib", "VizTracer default (C calls)")
        checks.append(("fib, C calls: pytrace C core / VizTracer default (added overhead)",
                       share, 1.0))
    if "mixed" in workloads:
        checks.append(("mixed: pytrace C core ratio / VizTracer ignore_c_function ratio",
                       ratio["mixed", "pytrace C core"]
                       / ratio["mixed", "VizTracer ignore_c_function"], 1.0))
        checks.append(("mixed, C calls: pytrace C core ratio / VizTracer default ratio",
                       ratio["mixed", "pytrace C core, C calls"]
                       / ratio["mixed", "VizTracer default (C calls)"], 1.0))
    for w in workloads:
        checks.append((f"{w}: light mode ratio", ratio[w, "pytrace C core, light (calls=False)"],
                       1.02))
    # Issue 3: the pure-Python core (on 3.12).
    if "fib" in workloads:
        checks.append(("fib: pytrace Python core ratio", ratio["fib", "pytrace Python core"], 16))
    if "mixed" in workloads:
        checks.append(("mixed: pytrace Python core ratio", ratio["mixed", "pytrace Python core"],
                       1.8))
        checks.append(("mixed: pytrace Python core light mode ratio",
                       ratio["mixed", "pytrace Python core, light (calls=False)"], 1.05))
    for name, value, limit in checks:
        print(f"{'ok  ' if value <= limit else 'MISS'} {name}: {value:.3f} (target <= {limit})")


if __name__ == "__main__":
    main()
