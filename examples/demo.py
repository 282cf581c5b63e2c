"""A small program with something for every part of pytrace to show:
recursive calls, threads that wait on a lock and a queue, garbage collections
of cyclic garbage, and user tasks, regions and logs.

    pytrace run examples/demo.py        # writes demo.pytrace
"""

import gc
import queue
import threading
import time

import pytrace


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Node:
    def __init__(self):
        self.other = self  # a reference cycle: only the collector frees it


def make_garbage(count):
    for _ in range(count):
        Node()


def worker(jobs, results, lock):
    while True:
        n = jobs.get()
        if n is None:
            return
        with pytrace.region("fib"):
            value = fib(n)
        with lock:
            results.append(value)


def main():
    jobs, results, lock = queue.Queue(), [], threading.Lock()
    with pytrace.task("demo"):
        threads = [threading.Thread(target=worker, args=(jobs, results, lock), name=f"worker-{i}")
                   for i in range(2)]
        for t in threads:
            t.start()
        for n in (18, 19, 20, 21):
            jobs.put(n)
        with pytrace.region("garbage"):
            make_garbage(20000)
            gc.collect()
        time.sleep(0.01)
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join()
        pytrace.log("result", f"sum of fibs: {sum(results)}")
    print(f"computed {len(results)} fibs, sum {sum(results)}")


if __name__ == "__main__":
    main()
