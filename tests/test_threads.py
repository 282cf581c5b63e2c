"""Threads as goroutines: ThreadCreate in the parent, ThreadStart ... ThreadEnd in the child."""

import threading
import traceback

import pytest

import pytrace
from eventlog import BACKENDS, normalized, of_kind, record, thread_tid
from pytrace.session import is_own_code

THREAD_KINDS = ("ThreadCreate", "ThreadStart", "ThreadEnd")


def thread_events(trace, tid):
    return normalized(of_kind(trace, *THREAD_KINDS, tid=tid))


def starter(threads):
    """A program that starts ``threads`` (made by the program itself) and joins them."""
    def program():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return program


def test_threads_get_create_start_end_with_linked_tids(trace_path):
    workers = [threading.Thread(target=lambda: None, name=name) for name in ("alpha", "beta")]
    trace = record(trace_path, starter(workers), threads=True)

    main = thread_tid(trace, threading.current_thread())
    creates = of_kind(trace, "ThreadCreate", tid=main)
    assert [(e.arg("name"), e.arg("stack")[0].func) for e in creates] == [
        ("alpha", "starter.<locals>.program"), ("beta", "starter.<locals>.program")]
    for create, worker in zip(creates, workers):
        child = create.arg("child")
        assert child == thread_tid(trace, worker) != main
        assert thread_events(trace, child) == [
            ("ThreadStart", worker.ident, worker.native_id, worker.name), ("ThreadEnd",)]
        [start] = of_kind(trace, "ThreadStart", tid=child)
        assert create.ts <= start.ts
    # The thread that started tracing is announced first, with no creator.
    assert thread_events(trace, main)[0] == (
        "ThreadStart", threading.get_ident(), threading.get_native_id(),
        threading.current_thread().name)
    assert not any(e.arg("child") == main for e in of_kind(trace, "ThreadCreate"))


def test_child_events_carry_the_tid_its_creator_named(trace_path):
    """Everything a child writes (here: a sleep, and a grandchild's creation)
    is in the tid its ThreadCreate gave it."""
    import time

    def grandchild():
        pass

    def child():
        time.sleep(0.001)
        inner = threading.Thread(target=grandchild, name="grandchild")
        inner.start()
        inner.join()

    worker = threading.Thread(target=child, name="child")
    trace = record(trace_path, starter([worker]), threads=True, blocking=True)

    [create_child] = [e for e in of_kind(trace, "ThreadCreate") if e.arg("name") == "child"]
    child_tid = create_child.arg("child")
    child_events = [e for e in trace.events if e.tid == child_tid]
    assert child_events[0].name == "ThreadStart" and child_events[-1].name == "ThreadEnd"
    assert [e.name for e in child_events[1:-1]][:3] == ["Block", "Unblock", "ThreadCreate"]
    [create_grandchild] = of_kind(trace, "ThreadCreate", tid=child_tid)
    assert create_grandchild.arg("name") == "grandchild"
    assert create_grandchild.arg("stack")[0].func == (
        "test_child_events_carry_the_tid_its_creator_named.<locals>.child")
    assert thread_events(trace, create_grandchild.arg("child"))[0][0] == "ThreadStart"


def test_each_thread_gets_its_own_tid_even_when_the_os_reuses_its_ident(trace_path):
    """Threads run one after another: the OS reuses the ident of a finished
    thread (Linux mostly at once), and each must still get a fresh tid and a
    complete life."""
    workers = [threading.Thread(target=lambda: None, name=f"w{i}") for i in range(5)]

    def one_at_a_time():
        for worker in workers:
            worker.start()
            worker.join()

    trace = record(trace_path, one_at_a_time, threads=True)
    children = [e.arg("child") for e in of_kind(trace, "ThreadCreate")]
    assert len(set(children)) == 5
    for child, worker in zip(children, workers):
        assert thread_events(trace, child) == [
            ("ThreadStart", worker.ident, worker.native_id, worker.name), ("ThreadEnd",)]


def test_thread_that_raises_still_ends_and_reports_as_usual(trace_path):
    reported = []

    def boom():
        raise ValueError("from the thread")

    worker = threading.Thread(target=boom, name="raiser")
    previous = threading.excepthook
    threading.excepthook = lambda args: reported.append((args.exc_type, str(args.exc_value),
                                                         args.thread))
    try:
        trace = record(trace_path, starter([worker]), threads=True)
    finally:
        threading.excepthook = previous
    assert reported == [(ValueError, "from the thread", worker)]
    assert thread_events(trace, thread_tid(trace, worker)) == [
        ("ThreadStart", worker.ident, worker.native_id, "raiser"), ("ThreadEnd",)]


def test_threads_running_before_tracing_are_announced_at_start(trace_path):
    release = threading.Event()
    early = threading.Thread(target=release.wait, name="early bird")
    early.start()
    try:
        trace = record(trace_path, lambda: None, threads=True)
    finally:
        release.set()
        early.join()
    tid = thread_tid(trace, early)
    assert tid != thread_tid(trace, threading.current_thread())
    assert thread_events(trace, tid) == [
        ("ThreadStart", early.ident, early.native_id, "early bird")]
    assert of_kind(trace, "ThreadCreate") == []


def test_pytrace_threads_are_not_the_programs(trace_path):
    """The sampler's thread is started by pytrace: no ThreadCreate or ThreadStart for it."""
    before = {thread.ident for thread in threading.enumerate()}
    own = set()
    trace = record(trace_path, lambda: own.update(t.ident for t in threading.enumerate()),
                   threads=True, sample_rate=200.0)
    own -= before
    assert own  # the sampler was running
    assert not own & {e.arg("ident") for e in of_kind(trace, "ThreadStart")}
    assert of_kind(trace, "ThreadCreate") == []


def test_failed_starts_raise_as_without_tracing_and_are_not_announced(trace_path):
    class NoInit(threading.Thread):
        def __init__(self):
            pass  # forgot Thread.__init__

    errors = []
    worker = threading.Thread(target=lambda: None, name="once")

    def program():
        worker.start()
        worker.join()
        for bad in (worker.start, NoInit().start):
            try:
                bad()
            except RuntimeError as exc:
                own = [f.name for f in traceback.extract_tb(exc.__traceback__)
                       if is_own_code(f.filename)]
                errors.append((str(exc), own))

    trace = record(trace_path, program, threads=True)
    assert errors == [("threads can only be started once", []),
                      ("thread.__init__() not called", [])]
    assert [e.arg("name") for e in of_kind(trace, "ThreadCreate")] == ["once"]


def test_uninstall_puts_thread_back_exactly(trace_path):
    before = dict(vars(threading.Thread))
    with pytrace.trace(trace_path, calls=False, gc=False, threads=True, blocking=False,
                       asyncio=False):
        during = dict(vars(threading.Thread))
    assert during["start"] is not before["start"]
    assert during["_bootstrap"] is not before["_bootstrap"]
    assert dict(vars(threading.Thread)) == before


def test_a_thread_started_after_stop_is_not_traced_and_runs_normally(trace_path):
    results = []
    with pytrace.trace(trace_path, calls=False, gc=False, threads=True, blocking=False,
                       asyncio=False):
        pass
    worker = threading.Thread(target=lambda: results.append(threading.current_thread().name),
                              name="after")
    worker.start()
    worker.join()
    assert results == ["after"]
    assert of_kind(pytrace.read(trace_path), "ThreadCreate") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_calls_on_a_childs_first_event_is_its_thread_start(trace_path, backend):
    """The call hook sees nothing of the thread before ThreadStart (the hook
    runs no Python code of the program's there), and the child's calls are
    in the tid its ThreadCreate gave it, balanced."""
    worker = threading.Thread(target=sorted, args=([3, 1, 2],), name="worker")
    trace = record(trace_path, starter([worker]), threads=True, calls=True, backend=backend)
    tid = thread_tid(trace, worker)
    [create] = of_kind(trace, "ThreadCreate")
    assert create.arg("child") == tid
    child = [e for e in trace.events if e.tid == tid]
    assert child[0].name == "ThreadStart" and child[-1].name == "ThreadEnd"
    depths = [0]
    for event in child:
        if event.name == "OpenFrames":
            depths.append(depths[-1] + len(event.arg("stack")))
        elif event.name in ("CallEnter", "GenResume", "CCallEnter"):
            depths.append(depths[-1] + 1)
        elif event.name in ("CallExit", "CallUnwind", "GenYield", "CCallExit"):
            depths.append(depths[-1] - 1)
    assert max(depths) > 0 and min(depths) == 0 == depths[-1]
