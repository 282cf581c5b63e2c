"""A session carried from file to file: ``session.park`` and ``start`` again.

``park()`` finishes the running trace's file but leaves the hooks installed,
inert; the next ``start`` with the same options records a new file with
them (``pytest --pytrace`` rotates its per-test files so).  Each file must
be what a fresh start would write: valid and readable on its own, opening
with the same records, holding the events of its own period only.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import pytrace
from eventlog import gc_disabled, normalized, of_kind, stack_names, thread_tid
from pytrace import events, session as tracing, writer as writer_module

#: The pytest plugin's light mode (without the periodic flusher, except where a test wants it).
LIGHT = dict(calls=False, flush_interval=0)


@pytest.fixture(autouse=True)
def nothing_left_parked():
    """A parked session keeps hooks installed: none outlives its test."""
    yield
    tracing.unpark()


def read_valid(path) -> pytrace.Trace:
    tracing.wait_for_files()  # a resumed file is written in the background
    report = pytrace.validate(path)
    assert report.valid, report
    return pytrace.read(path)


def logs(trace) -> list[str]:
    return [e.arg("message") for e in of_kind(trace, "UserLog")]


def test_parked_hooks_stay_installed_inert_and_the_same_options_reuse_them(tmp_path):
    original_sleep, callbacks = time.sleep, list(gc.callbacks)
    first = tracing.start(tmp_path / "1.pytrace", **LIGHT)
    traced_sleep, traced_callbacks = time.sleep, list(gc.callbacks)
    assert traced_sleep is not original_sleep and len(traced_callbacks) == len(callbacks) + 2
    tracing.park()
    assert tracing.current() is None
    assert time.sleep is traced_sleep and gc.callbacks == traced_callbacks
    second = tracing.start(tmp_path / "2.pytrace", **LIGHT)
    # Nothing installed again: the GC hook's callbacks are the same objects.
    assert second is first and gc.callbacks == traced_callbacks
    tracing.park()
    tracing.unpark()
    assert time.sleep is original_sleep and gc.callbacks == callbacks


def flusher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pytrace-flusher"]


def test_the_flusher_thread_stays_while_parked_and_goes_with_the_hooks(tmp_path):
    """One periodic flusher serves file after file (a thread per file cost
    more than a short test's recording); unparking or stopping ends it."""
    flushing = dict(LIGHT, flush_interval=0.01)
    tracing.start(tmp_path / "1.pytrace", **flushing)
    [flusher] = flusher_threads()
    pytrace.log("first", "one")
    tracing.park()
    assert flusher_threads() == [flusher]
    tracing.start(tmp_path / "2.pytrace", **flushing)
    pytrace.log("second", "two")
    deadline = time.monotonic() + 10
    while b"two" not in (tmp_path / "2.pytrace").read_bytes():  # flushed while running
        assert time.monotonic() < deadline, "the flusher did not flush the second file"
        time.sleep(0.01)
    assert flusher_threads() == [flusher]
    tracing.park()
    tracing.unpark()
    assert flusher_threads() == [] and not flusher.is_alive()
    assert logs(read_valid(tmp_path / "1.pytrace")) == ["one"]
    assert logs(read_valid(tmp_path / "2.pytrace")) == ["two"]
    pytrace.start(tmp_path / "3.pytrace", **flushing)
    pytrace.stop()
    assert flusher_threads() == []


def test_the_sampler_thread_stays_while_parked_and_samples_each_file_in_its_period(
        tmp_path, monkeypatch):
    """Like the flusher, one sampler thread serves file after file (a thread
    per file cost more than a short test's recording); parked, it sleeps
    (no tick takes the GIL from the program); unparking ends it."""
    from pytrace.hooks import sampler as sampler_module

    sampling = dict(LIGHT, sample_rate=200)
    ticks = []
    sample = sampler_module.Sampler.sample

    def counted_sample(self, slot):
        ticks.append(1)
        sample(self, slot)

    monkeypatch.setattr(sampler_module.Sampler, "sample", counted_sample)

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def spin_while_parked(seconds):
        spin(seconds)

    def sampler_threads():
        return [t for t in threading.enumerate() if t.name == "pytrace-sampler"]

    paths = [tmp_path / f"{n}.pytrace" for n in (1, 2)]
    tracing.start(paths[0], **sampling)
    [sampler] = sampler_threads()
    spin(0.2)
    tracing.park()
    ticks_at_park = len(ticks)
    spin_while_parked(0.2)
    assert len(ticks) <= ticks_at_park + 1  # at most a tick that was under way
    assert sampler_threads() == [sampler]
    tracing.start(paths[1], **sampling)
    spin(0.2)
    tracing.park()
    assert sampler_threads() == [sampler]
    tracing.unpark()
    assert sampler_threads() == [] and not sampler.is_alive()
    for path in paths:
        trace = read_valid(path)
        samples = of_kind(trace, "CPUSample")
        assert len(samples) >= 0.2 * 200 * 0.3  # a third of the rate, on a loaded machine
        # On the C core the main thread takes the ticks, so its stacks start
        # with this test's wrapper.
        stacks = [[name.rsplit(".", 1)[-1] for name in stack_names(e)
                   if not name.endswith("counted_sample")] for e in samples]
        assert sum(names[0] == "spin" for names in stacks) >= 0.8 * len(samples)
        assert not any("spin_while_parked" in names for names in stacks)


def test_other_options_remove_the_parked_hooks_before_installing_their_own(tmp_path):
    original_sleep = time.sleep
    parked = tracing.start(tmp_path / "1.pytrace", **LIGHT)
    tracing.park()
    with pytrace.trace(tmp_path / "2.pytrace", **{**LIGHT, "blocking": False}) as other:
        assert other is not parked and parked.stopped
        assert time.sleep is original_sleep
    read_valid(tmp_path / "2.pytrace")


def test_a_session_whose_hooks_cannot_follow_is_stopped_by_park(tmp_path):
    original_sleep = time.sleep
    session = tracing.start(tmp_path / "1.pytrace", calls=True, flush_interval=0)
    assert not session.parkable
    tracing.park()
    assert session.stopped and time.sleep is original_sleep
    assert tracing._parked is None
    read_valid(tmp_path / "1.pytrace")


def test_each_files_metadata_is_read_when_it_starts(tmp_path, monkeypatch):
    """The metadata encodings are reused from file to file (issue 4), but
    what changed between two files is in the second: ``argv`` (a program
    may change it, in place or anew) and the start times."""
    paths = [tmp_path / f"{n}.pytrace" for n in (1, 2, 3)]
    monkeypatch.setattr(sys, "argv", ["first", "run"])
    tracing.start(paths[0], **LIGHT)
    tracing.park()
    sys.argv.append("--more")
    tracing.start(paths[1], **LIGHT)
    tracing.park()
    sys.argv = ["third"]
    tracing.start(paths[2], **LIGHT)
    tracing.park()
    metas = [read_valid(path).meta for path in paths]
    assert [json.loads(meta["argv"]) for meta in metas] == [
        ["first", "run"], ["first", "run", "--more"], ["third"]]
    assert len({meta["start_ticks"] for meta in metas}) == 3
    assert len({meta["start_wall_ns"] for meta in metas}) == 3
    assert {meta["pid"] for meta in metas} == {str(os.getpid())}


def test_a_short_files_last_batch_and_footer_take_one_write(tmp_path, monkeypatch):
    """A file per test means a few system calls per test (issue 4): the
    opening, then the final flush's batch together with the footer."""
    writes = []
    write = writer_module._write
    monkeypatch.setattr(writer_module, "_write",
                        lambda fd, data: writes.append(len(data)) or write(fd, data))
    path = tmp_path / "short.pytrace"
    tracing.start(path, **LIGHT)
    pytrace.log("test", "one event")
    tracing.park()
    assert len(writes) == 2
    assert sum(writes) == path.stat().st_size
    assert logs(read_valid(path)) == ["one event"]


def test_final_batches_past_the_hold_limit_stay_in_order(tmp_path):
    """At the stop, three threads each hold a batch of about half the
    writer's hold limit: some are kept for the footer's write, some go out
    with what was kept before them; every thread's events are whole and in
    order."""
    release = threading.Event()
    written = threading.Barrier(4)
    # A log with its own 36-byte message (defined with it) is ~48 bytes.
    per_thread = writer_module.HOLD_LIMIT // 2 // 48

    def work(name):
        for n in range(per_thread):
            pytrace.log(name, f"{name}{n:034d}")
        written.wait()
        release.wait()

    path = tmp_path / "big.pytrace"
    tracing.start(path, calls=False, flush_interval=0)
    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    written.wait()
    tracing.stop()
    release.set()
    for thread in threads:
        thread.join()
    trace = read_valid(path)
    for i in range(3):
        messages = [e.arg("message") for e in of_kind(trace, "UserLog")
                    if e.arg("category") == f"t{i}"]
        assert messages == [f"t{i}{n:034d}" for n in range(per_thread)]


def test_each_file_holds_only_its_own_periods_events(tmp_path):
    paths = [tmp_path / f"{n}.pytrace" for n in (1, 2)]
    with gc_disabled():
        gc.collect()
        for n, path in enumerate(paths, 1):
            tracing.start(path, **LIGHT)
            pytrace.log("period", str(n))
            for _ in range(n):
                gc.collect(2)
            worker = threading.Thread(target=time.sleep, args=(0.001,), name=f"worker {n}")
            worker.start()
            worker.join()
            tracing.park()
            # Parked: nothing of this reaches either file.
            pytrace.log("period", "between")
            gc.collect(1)
            threading.Thread(target=time.sleep, args=(0.001,), name="between").start()
            time.sleep(0.002)
    for n, path in enumerate(paths, 1):
        trace = read_valid(path)
        assert logs(trace) == [str(n)]
        assert [e.arg("generation") for e in of_kind(trace, "GCStart")] == [2] * n
        assert [e.arg("name") for e in of_kind(trace, "ThreadCreate")] == [f"worker {n}"]
        worker_tid = of_kind(trace, "ThreadCreate")[0].arg("child")
        assert normalized(of_kind(trace, "ThreadStart", "ThreadEnd", tid=worker_tid))[1:] == [
            ("ThreadEnd",)]
        sleeps = of_kind(trace, "Block", tid=worker_tid)
        assert len(sleeps) == 1 and len(of_kind(trace, "Unblock", tid=worker_tid)) == 1


def first_records(trace) -> list[tuple]:
    """The thread announcements a file opens with, by thread name."""
    return sorted((e.name, e.arg("name")) for e in of_kind(trace, "ThreadStart"))


def test_a_resumed_file_opens_as_a_fresh_start_does(tmp_path):
    release = threading.Event()
    before = threading.Thread(target=release.wait, name="alive before tracing")
    before.start()
    try:
        with pytrace.trace(tmp_path / "fresh.pytrace", **LIGHT):
            pass
        tracing.start(tmp_path / "1.pytrace", **LIGHT)
        across = threading.Thread(target=release.wait, name="started in the first file")
        across.start()
        tracing.park()
        tracing.start(tmp_path / "2.pytrace", **LIGHT)
        release.set()
        across.join()
        tracing.park()
    finally:
        release.set()
        before.join()
    fresh, resumed = read_valid(tmp_path / "fresh.pytrace"), read_valid(tmp_path / "2.pytrace")
    assert first_records(resumed) == sorted(
        first_records(fresh) + [("ThreadStart", "started in the first file")])
    assert ("ThreadStart", "alive before tracing") in first_records(resumed)
    assert {k: v for k, v in resumed.meta.items() if k not in ("start_wall_ns", "start_ticks")} \
        == {k: v for k, v in fresh.meta.items() if k not in ("start_wall_ns", "start_ticks")}
    assert resumed.frequency == fresh.frequency
    # Created in the first file, announced in the second as running, and ended there.
    assert of_kind(resumed, "ThreadCreate") == []
    assert normalized(of_kind(resumed, "ThreadEnd", tid=thread_tid(resumed, across))) == [
        ("ThreadEnd",)]
    first = read_valid(tmp_path / "1.pytrace")
    assert [e.arg("name") for e in of_kind(first, "ThreadCreate")] == ["started in the first file"]
    assert of_kind(first, "ThreadEnd") == []


def test_a_wait_across_files_is_in_neither_as_a_half(tmp_path):
    go = threading.Event()
    waiting = threading.Event()

    def waiter():
        waiting.set()
        go.wait()

    tracing.start(tmp_path / "1.pytrace", **LIGHT)
    worker = threading.Thread(target=waiter, name="waiter")
    worker.start()
    try:
        waiting.wait()
        time.sleep(0.01)  # the worker is inside go.wait()
        tracing.park()
        tracing.start(tmp_path / "2.pytrace", **LIGHT)
        go.set()
        worker.join()
        tracing.park()
    finally:
        go.set()
        worker.join()
    second = read_valid(tmp_path / "2.pytrace")
    tid = thread_tid(second, worker)
    # Its Block is in the first file; the second has no Unblock without a Block.
    assert of_kind(second, "Block", "Unblock", tid=tid) == []
    first = read_valid(tmp_path / "1.pytrace")
    assert [e.arg("reason") for e in of_kind(first, "Block", tid=thread_tid(first, worker))] \
        == [events.BLOCK_REASONS.index("event")]


def test_annotations_open_across_files_write_no_end_without_its_start(tmp_path):
    tracing.start(tmp_path / "1.pytrace", **LIGHT)
    task = pytrace.task("spans files").__enter__()
    region = pytrace.region("also spans")
    region.__enter__()
    tracing.park()
    tracing.start(tmp_path / "2.pytrace", **LIGHT)
    with pytrace.region("inside the second"):
        pass
    region.__exit__(None, None, None)
    task.__exit__(None, None, None)
    tracing.park()
    first, second = read_valid(tmp_path / "1.pytrace"), read_valid(tmp_path / "2.pytrace")
    assert [e.name for e in of_kind(first, "UserTaskCreate", "UserTaskEnd")] == ["UserTaskCreate"]
    assert of_kind(second, "UserTaskCreate", "UserTaskEnd") == []
    # The region of the second file belongs to no task there (the task is the first file's).
    assert normalized(of_kind(second, "UserRegionStart", "UserRegionEnd")) == [
        ("UserRegionStart", 0, "inside the second"), ("UserRegionEnd", 0, "inside the second")]


def test_an_asyncio_task_stepping_in_a_later_file_is_announced_there(tmp_path):
    async def child():
        for _ in range(3):
            await asyncio.sleep(0)

    async def main():
        tracing.start(tmp_path / "1.pytrace", **LIGHT)
        task = asyncio.get_running_loop().create_task(child(), name="spans files")
        await asyncio.sleep(0)
        tracing.park()
        tracing.start(tmp_path / "2.pytrace", **LIGHT)
        await task
        tracing.park()

    asyncio.run(main())
    second = read_valid(tmp_path / "2.pytrace")
    task_events = normalized(of_kind(second, "AsyncTaskCreate", "AsyncTaskRun",
                                     "AsyncTaskPause", "AsyncTaskDone"))
    # Numbered from 1 in this file too, announced (without a stack: its
    # creation is in the first file) before its first step here, and done here.
    assert [e for e in task_events if e[0] == "AsyncTaskCreate"][0] == (
        "AsyncTaskCreate", 1, "spans files", None)
    of_child = [e for e in task_events if e[1] == 1]
    assert of_child[1] == ("AsyncTaskRun", 1) and of_child[-1] == ("AsyncTaskDone", 1)


def test_gc_figures_of_each_file_count_its_own_collections(tmp_path):
    with gc_disabled():
        gc.collect()
        tracing.start(tmp_path / "1.pytrace", **LIGHT)
        gc.collect(0), gc.collect(2)
        session = tracing.park()
        assert session.gc.collections == [1, 0, 1]
        first = session.gc.longest_pauses(5)
        gc.collect(2)  # parked: not counted anywhere
        tracing.start(tmp_path / "2.pytrace", **LIGHT)
        gc.collect(1)
        tracing.park()
        assert session.gc.collections == [0, 1, 0]
    from pytrace.analysis import collect_pauses

    pauses = collect_pauses(read_valid(tmp_path / "1.pytrace"))[0]
    by_length = sorted(pauses, key=lambda p: -p.duration)
    assert [(ticks, generation) for ticks, generation, _ in first] == [
        (p.duration, p.generation) for p in by_length]
    assert {(where[0].co_name, where[1]) for _, _, where in first} == {
        (p.stack[0].func, p.stack[0].line) for p in pauses}


FORK_WHILE_PARKED = """
import os, sys, time
from pytrace import session as tracing

original_sleep = time.sleep
options = dict(calls=False, flush_interval=0, sample_rate=200)
tracing.start(sys.argv[1], **options)
finished_fd = tracing.current().recorder.writer._file._fd
tracing.park()
# The program's next file gets the number the finished trace's file had.
os.dup2(os.open(sys.argv[1] + ".other", os.O_WRONLY | os.O_CREAT), finished_fd)
pid = os.fork()
if pid == 0:  # the child: the parked hooks are gone, nothing is parked
    try:
        os.write(finished_fd, b"the child's file is still open")
    except OSError:
        os._exit(2)  # dropping the parked session closed that number again
    os._exit(0 if time.sleep is original_sleep and tracing._parked is None else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
print("parent keeps them", time.sleep is not original_sleep)
# The sampler's thread, asleep while parked, was halted for the fork and is
# back: the next file is sampled.
tracing.start(sys.argv[1] + ".after", **options)
end = time.perf_counter() + 0.2
while time.perf_counter() < end:
    pass
tracing.park()
tracing.wait_for_files()  # a resumed file is written in the background
import pytrace
samples = [e for e in pytrace.read(sys.argv[1] + ".after").events if e.name == "CPUSample"]
print("sampled after the fork", len(samples) > 5)
tracing.unpark()
"""


def test_a_forked_child_drops_the_parked_hooks(tmp_path):
    # In a fresh interpreter: one with other threads (an xdist worker) must not fork.
    child = subprocess.Popen([sys.executable, "-c", FORK_WHILE_PARKED, str(tmp_path / "t.pytrace")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.splitlines() == ["child 0", "parent keeps them True", "sampled after the fork True"]
