"""Blocking: every covered kind of wait, really waiting, as Block/Unblock or SysCall/SysCallEnd.

The waiting thread is the test's own; the thread that ends the wait is
started with ``_thread`` and waits with native locks only, so that it
writes no events of its own, and it ends the wait only once the waiting
thread is inside a recorded wait (``until_blocked``).
"""

import _thread
import concurrent.futures
import copy
import gc
import os
import pickle
import queue
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref

import pytest

import pytrace
from eventlog import of_kind, record, thread_tid
from pytrace import events
from pytrace.hooks import blocking
from pytrace.hooks.patches import unwrapped
from pytrace.session import OWN_THREAD_PREFIX, is_own_code

WAIT_KINDS = ("Block", "Unblock", "SysCall", "SysCallEnd")
HOOKS = dict(threads=True, blocking=True)


# -- helpers ------------------------------------------------------------------

def pause(seconds):
    """Wait without any traced primitive: a native lock acquired twice."""
    lock = _thread.allocate_lock()
    lock.acquire()
    lock.acquire(True, seconds)


def until_blocked(ident):
    """Return once thread ``ident`` is inside a wait the hook records, and
    then a moment more, so that the wait is a real one.  Gives up after ~10 s
    (the test then fails on what it finds in the trace)."""
    for _ in range(10_000):
        if in_observed_wait(ident):
            break
        pause(0.001)
    pause(0.02)


def in_observed_wait(ident) -> bool:
    """True if thread ``ident`` is inside a wait the hook records."""
    frame = sys._current_frames().get(ident)
    while frame is not None and frame.f_code is not blocking._observed.__code__:
        frame = frame.f_back
    return frame is not None


def in_background(work):
    """Run ``work()`` on a ``_thread`` thread; return a function that waits
    for it (natively) and re-raises what it raised."""
    done = _thread.allocate_lock()
    done.acquire()
    errors = []

    def run():
        try:
            work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.release()

    _thread.start_new_thread(run, ())

    def finish():
        done.acquire()
        if errors:
            raise errors[0]
    return finish


def waiter_frames(stack):
    """The stack's function names, innermost first, up to the ``waiter`` (as "waiter")."""
    names = []
    for frame in stack:
        if frame.func.rsplit(".", 1)[-1] == "waiter":
            return tuple(names) + ("waiter",)
        names.append(frame.func)
    raise AssertionError(f"no waiter frame in {names}")


def plain(event):
    if event.name == "Block":
        return ("Block", events.BLOCK_REASONS[event.arg("reason")],
                waiter_frames(event.arg("stack")))
    if event.name == "SysCall":
        return ("SysCall", event.arg("func").name, waiter_frames(event.arg("stack")))
    return (event.name,)


def in_waiter(event):
    return event.name in ("Block", "SysCall") and any(
        frame.func.endswith("waiter") for frame in event.arg("stack"))


def run_case(case):
    """Run ``case``'s waiter on this thread; return its result.

    ``case(me)`` builds ``(waiter, prepare, wake)``: ``prepare`` (or None)
    runs on a helper thread before the waiter starts, ``wake`` (or None) on
    the helper once the waiter is blocked.
    """
    me = threading.get_ident()
    waiter, prepare, wake = case(me)
    ready = _thread.allocate_lock()
    ready.acquire()

    def helper():
        if prepare is not None:
            prepare()
        ready.release()
        if wake is not None:
            until_blocked(me)
            wake()

    finish = in_background(helper)
    ready.acquire()
    result = waiter()
    finish()
    return result


def record_wait(path, case):
    """Record ``run_case(case)`` (the case's objects are made inside the
    trace); return the wait events of this thread from the waiter's first
    one (the case's setup may make syscalls), and the waiter's result."""
    result = []
    trace = record(path, lambda: result.append(run_case(case)), **HOOKS)
    waits = of_kind(trace, *WAIT_KINDS, tid=thread_tid(trace, threading.current_thread()))
    first = next(i for i, e in enumerate(waits) if in_waiter(e))
    return [plain(e) for e in waits[first:]], result[0]


# -- the cases: each returns (waiter, prepare, wake) ------------------------------

def sleep_case(me):
    def waiter():
        return time.sleep(0.02)
    return waiter, None, None


def held_lock_case(lock):
    """The waiter acquires ``lock``, which the helper holds until it is blocked."""
    def waiter():
        return lock.acquire()
    return waiter, lock.acquire, lock.release


def lock_case(me):
    return held_lock_case(threading.Lock())


def lock_with_case(me):
    lock = threading.Lock()

    def waiter():
        with lock:
            return "inside"
    return waiter, lock.acquire, lock.release


def rlock_case(me):
    return held_lock_case(threading.RLock())


def lock_timeout_case(me):
    lock = threading.Lock()

    def waiter():
        return lock.acquire(timeout=0.02)
    return waiter, lock.acquire, None


def condition_case(me):
    cond = threading.Condition()

    def waiter():
        with cond:
            return cond.wait(10)

    def wake():
        with cond:
            cond.notify()
    return waiter, None, wake


def condition_timeout_case(me):
    cond = threading.Condition()

    def waiter():
        with cond:
            return cond.wait(0.02)
    return waiter, None, None


def wait_for_case(me):
    cond = threading.Condition()
    flag = []

    def waiter():
        with cond:
            return cond.wait_for(lambda: flag, 10)

    def wake():
        with cond:
            flag.append(True)
            cond.notify()
    return waiter, None, wake


def event_case(me):
    event = threading.Event()

    def waiter():
        return event.wait(10)
    return waiter, None, event.set


def semaphore_case(me):
    semaphore = threading.BoundedSemaphore(1)
    semaphore.acquire()

    def waiter():
        return semaphore.acquire()
    return waiter, None, semaphore.release


def barrier_case(me):
    barrier = threading.Barrier(2)

    def waiter():
        return barrier.wait(10)
    return waiter, None, barrier.wait


def getter_case(q, item):
    """The waiter gets from the empty ``q``; the helper puts ``item`` once it is blocked."""
    def waiter():
        return q.get()
    return waiter, None, lambda: q.put(item)


def queue_get_case(me):
    return getter_case(queue.Queue(), 7)


def queue_put_case(me):
    q = queue.Queue(maxsize=1)
    q.put("first")

    def waiter():
        return q.put("second")
    return waiter, None, q.get


def queue_join_case(me):
    q = queue.Queue()
    q.put("job")

    def waiter():
        return q.join()

    def wake():
        q.get()
        q.task_done()
    return waiter, None, wake


def queue_timeout_case(me):
    q = queue.Queue()

    def waiter():
        try:
            return q.get(timeout=0.02)
        except queue.Empty:
            return "empty"
    return waiter, None, None


def simple_queue_case(me):
    return getter_case(queue.SimpleQueue(), 5)


def future_case(me):
    future = concurrent.futures.Future()

    def waiter():
        return future.result(10)
    return waiter, None, lambda: future.set_result(3)


def join_case(me):
    thread = threading.Thread(target=until_blocked, args=(me,))
    thread.start()

    def waiter():
        return thread.join()
    return waiter, None, None


def select_case(me):
    reader, writer = socket.socketpair()

    def waiter():
        with reader, writer:
            return tuple(map(len, select.select([reader], [], [], 10)))
    return waiter, None, lambda: writer.send(b"x")


def selector_case(me):
    reader, writer = socket.socketpair()
    selector = selectors.DefaultSelector()
    selector.register(reader, selectors.EVENT_READ)

    def waiter():
        with selector, reader, writer:
            return len(selector.select(10))
    return waiter, None, lambda: writer.send(b"x")


def recv_case(me):
    a, b = socket.socketpair()

    def waiter():
        with a, b:
            return a.recv(16)
    return waiter, None, lambda: b.sendall(b"ping")


def recv_into_case(me):
    a, b = socket.socketpair()
    buffer = bytearray(8)

    def waiter():
        with a, b:
            return a.recv_into(buffer, nbytes=4), bytes(buffer[:4])
    return waiter, None, lambda: b.sendall(b"pong")


def accept_case(me):
    server = socket.create_server(("127.0.0.1", 0))

    def waiter():
        with server:
            connection, _ = server.accept()
            connection.close()
            return "accepted"
    return waiter, None, lambda: socket.create_connection(server.getsockname()).close()


def connect_case(me):
    server = socket.create_server(("127.0.0.1", 0))

    def waiter():
        with server, socket.socket() as client:
            return client.connect(server.getsockname())
    return waiter, None, None


def os_read_case(me):
    reader, writer = os.pipe()

    def waiter():
        try:
            return os.read(reader, 16)
        finally:
            os.close(reader)
            os.close(writer)
    return waiter, None, lambda: os.write(writer, b"data")


def popen_wait_case(me):
    process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def waiter():
        return process.wait()
    return waiter, None, process.stdin.close


def communicate_case(me):
    process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def waiter():
        return process.communicate(b"echo")
    return waiter, None, None


def block(reason, *frames):
    return [("Block", reason, (*frames, "waiter")), ("Unblock",)]


def syscall(func):
    return [("SysCall", func, ("waiter",)), ("SysCallEnd",)]


CASES = [
    (sleep_case, block("sleep"), None),
    (lock_case, block("lock"), True),
    (lock_with_case, block("lock"), "inside"),
    (rlock_case, block("lock"), True),
    (lock_timeout_case, block("lock"), False),
    (condition_case, block("condition"), True),
    (condition_timeout_case, block("condition"), False),
    (wait_for_case, block("condition", "Condition.wait_for"), [True]),
    (event_case, block("event", "Event.wait"), True),
    (semaphore_case, block("semaphore", "Semaphore.acquire"), True),
    (barrier_case, block("condition", "Condition.wait_for", "Barrier._wait", "Barrier.wait"), 0),
    (queue_get_case, block("queue", "Queue.get"), 7),
    (queue_put_case, block("queue", "Queue.put"), None),
    (queue_join_case, block("queue", "Queue.join"), None),
    (queue_timeout_case, block("queue", "Queue.get"), "empty"),
    (simple_queue_case, block("queue"), 5),
    (future_case, block("future", "Future.result"), 3),
    (join_case, block("join"), None),
    (select_case, block("select"), (1, 0, 0)),
    (selector_case, block("select"), 1),
    (recv_case, syscall("socket.recv"), b"ping"),
    (recv_into_case, syscall("socket.recv_into"), (4, b"pong")),
    (accept_case, syscall("socket.accept"), "accepted"),
    (connect_case, syscall("socket.connect"), None),
    (os_read_case, syscall("os.read"), b"data"),
    (popen_wait_case, block("subprocess"), 0),
    # One block: the selector and os.read/os.write calls inside are not recorded.
    (communicate_case, block("subprocess"), (b"echo", None)),
]


@pytest.mark.parametrize("case, expected, result", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_kind_of_wait_is_recorded_once_with_its_reason(trace_path, case, expected, result):
    assert record_wait(trace_path, case) == (expected, result)


# -- what is not a wait -------------------------------------------------------

def test_calls_that_do_not_wait_write_nothing(trace_path):
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    quiet, _ = socket.socketpair()
    quiet.setblocking(False)
    outcomes = []

    def program():
        time.sleep(0)
        for lock in (threading.Lock(), threading.RLock()):
            with lock:
                outcomes.append(lock.acquire(False) if isinstance(lock, threading.Lock)
                                else lock.acquire())
        event = threading.Event()
        event.set()
        outcomes.append(event.wait())
        q = queue.Queue()
        q.put(1)
        outcomes.append(q.get())
        cond = threading.Condition()
        with cond:
            outcomes.append(cond.wait(0))
        outcomes.append(threading.Semaphore(1).acquire())
        finished.join()
        outcomes.append(select.select([quiet], [], [], 0))
        try:
            quiet.recv(1)
        except BlockingIOError:
            outcomes.append("would block")
        outcomes.append(reaped.wait())
        starting = threading.Thread(target=lambda: None)
        starting.start()  # waits for the new thread to run: not a block
        outcomes.append("started")

    trace = record(trace_path, program, **HOOKS)
    quiet.close()
    assert outcomes == [False, True, True, 1, False, True, ([], [], []), "would block", 0,
                        "started"]
    assert of_kind(trace, *WAIT_KINDS, tid=thread_tid(trace, threading.current_thread())) == []


def test_pytraces_own_waits_are_not_recorded(trace_path):
    """The sampler and heap ticker threads wait on events, and stop() joins them."""
    trace = record(trace_path, lambda: pause(0.05), sample_rate=200.0, gc=True,
                   heap_interval=0.01, **HOOKS)
    assert of_kind(trace, "CPUSample")  # the sampler really ran
    assert of_kind(trace, *WAIT_KINDS) == []


def test_a_starting_pytrace_thread_is_pytraces_before_threading_registers_it(trace_path):
    """A new thread tells ``Thread.start`` it runs through an Event before
    ``threading`` registers it (``threading._active``): when that Event's
    lock is held at that moment, the new thread's wait is still pytrace's
    own if the thread is one of pytrace's."""
    own_waited = []

    def program():
        own = threading.Thread(target=int, name=OWN_THREAD_PREFIX + "test")
        start_lock = own._started._cond  # a traced lock: made after install

        def hold_until_own_waits():
            with start_lock:
                holding.set()
                for _ in range(10_000):  # until the new thread exists
                    if own.ident is not None:
                        break
                    pause(0.001)
                until_blocked(own.ident)
                own_waited.append(in_observed_wait(own.ident))

        holding = threading.Event()
        holder = threading.Thread(target=hold_until_own_waits, name="holder")
        holder.start()
        holding.wait()
        own.start()
        own.join()
        holder.join()

    trace = record(trace_path, program, **HOOKS)
    assert own_waited == [True]  # the new thread really waited for the lock
    program_threads = {e.tid for e in of_kind(trace, "ThreadStart")
                       if not e.arg("name").startswith(OWN_THREAD_PREFIX)}
    assert [e for e in of_kind(trace, *WAIT_KINDS) if e.tid not in program_threads] == []


def test_idle_executor_workers_wait_for_work(trace_path):
    """ThreadPoolExecutor workers wait on a SimpleQueue between jobs."""
    workers = []

    def program():
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
            assert pool.submit(pow, 2, 5).result() == 32
            workers.extend(pool._threads)
            until_blocked(workers[0].ident)  # idle, before shutdown wakes it

    trace = record(trace_path, program, **HOOKS)
    waits = of_kind(trace, *WAIT_KINDS, tid=thread_tid(trace, workers[0]))
    assert [(e.name, events.BLOCK_REASONS[e.arg("reason")], e.arg("stack")[0].func)
            for e in waits if e.name == "Block"][-1] == ("Block", "queue", "_worker")
    assert waits[-1].name == "Unblock"  # woken by shutdown


def test_waits_in_threads_whose_code_is_threadings_own(trace_path):
    """A Timer waits in Timer.run, and a thread may run a C function as its
    target: the only frames above them are threading's and pytrace's thread
    entry, and they are the program's waits."""
    def program():
        timer = threading.Timer(0.01, lambda: None)
        sleeper = threading.Thread(target=time.sleep, args=(0.01,), name="sleeper")
        timer.start()
        sleeper.start()
        timer.join()
        sleeper.join()
        return timer, sleeper

    threads = []
    trace = record(trace_path, lambda: threads.extend(program()), **HOOKS)
    bottom = ("Thread._bootstrap_inner", "Thread._bootstrap")
    expected = [
        ("event", ("Event.wait", "Timer.run", *bottom)),
        ("sleep", ("Thread.run", *bottom)),
    ]
    for thread, (reason, stack) in zip(threads, expected):
        waits = of_kind(trace, *WAIT_KINDS, tid=thread_tid(trace, thread))
        assert [(events.BLOCK_REASONS[e.arg("reason")], tuple(f.func for f in e.arg("stack")))
                for e in waits if e.name == "Block"] == [(reason, stack)]
        assert [e.name for e in waits] == ["Block", "Unblock"]


# -- behaviour is unchanged ---------------------------------------------------

def originals_of_replacements():
    """The code of every original a replacement calls (while tracing)."""
    import asyncio

    owners = [(threading.Thread, "start"), (threading.Thread, "_bootstrap"),
              (threading.Thread, "join"), (threading.Condition, "wait"), (threading, "RLock"),
              (subprocess.Popen, "wait"), (subprocess.Popen, "communicate"),
              (socket.socket, "accept"), (asyncio.events.Handle, "_run"),
              (asyncio.base_events.BaseEventLoop, "create_task")]
    owners += [(cls, "select") for cls in blocking._selector_classes()]
    return {unwrapped(getattr(owner, name)).__code__ for owner, name in owners}


def test_the_replacements_run_no_python_code_but_the_originals(trace_path):
    """Python code the hooks called on the program's threads would be
    recorded by the call hook as the program's own calls: a profiler
    (``sys.setprofile``, on every thread) sees none, for every case above
    and an asyncio program."""
    import asyncio

    from pytrace.hooks import aio, patches, threads

    hook_files = {module.__file__ for module in (aio, blocking, patches, threads)}
    leaks = set()

    async def gathered():
        tasks = [asyncio.create_task(asyncio.sleep(0.001 * n, n), name=f"t{n}") for n in range(3)]
        return await asyncio.gather(*tasks)

    def program():
        # A collection can start in any allocation and run the gc callbacks
        # (hypothesis registers one): those are the collector's calls, not the hooks'.
        allowed = originals_of_replacements() | {
            getattr(callback, "__code__", None) for callback in gc.callbacks}

        def probe(frame, event, arg):
            caller = frame.f_back
            if (event == "call" and caller is not None
                    and caller.f_code.co_filename in hook_files
                    and not is_own_code(frame.f_code.co_filename)
                    and frame.f_code not in allowed):
                leaks.add(f"{caller.f_code.co_name} -> {frame.f_code.co_qualname}")

        sys.setprofile(probe)
        threading.setprofile(probe)
        try:
            for case, _, _ in CASES:
                run_case(case)
            assert asyncio.run(gathered()) == [0, 1, 2]
        finally:
            threading.setprofile(None)
            sys.setprofile(None)

    record(trace_path, program, threads=True, blocking=True, asyncio=True)
    assert leaks == set()


def held_lock():
    lock = threading.Lock()
    lock.acquire()
    return lock


def alive_thread_join():
    stop = _thread.allocate_lock()
    stop.acquire()
    thread = threading.Thread(target=stop.acquire)
    thread.start()
    try:
        return thread.join(0.01), thread.is_alive()
    finally:
        stop.release()
        thread.join()


def popen_timeout():
    process = subprocess.Popen(["sleep", "5"])
    try:
        return process.wait(timeout=0.01)
    finally:
        process.kill()
        process.wait()


def nonblocking_recv():
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        return a.recv(1)


def closed_recv():
    a, b = socket.socketpair()
    b.close()
    a.close()
    return a.recv(1)


def wait_unowned():
    return threading.Condition().wait(0.01)


BEHAVIOURS = {
    "lock timeout": lambda: held_lock().acquire(timeout=0.01),
    "lock timeout without blocking": lambda: held_lock().acquire(False, 1),
    "lock negative timeout": lambda: held_lock().acquire(True, -5),
    "lock huge timeout": lambda: held_lock().acquire(True, 1e300),
    "lock nan timeout": lambda: held_lock().acquire(True, float("nan")),
    "lock release unlocked": lambda: threading.Lock().release(),
    "rlock release unowned": lambda: threading.RLock().release(),
    "lock repr": lambda: repr(threading.Lock()).split(" object")[0],
    "rlock repr": lambda: repr(threading.RLock()).split(" object")[0],
    "lock locked": lambda: (held_lock().locked(), threading.Lock().locked()),
    "rlock has no locked": lambda: threading.RLock().locked(),
    "lock pickle": lambda: pickle.dumps(threading.Lock()),
    "rlock copy": lambda: copy.copy(threading.RLock()),
    "lock weakref": lambda: (lambda lock: weakref.ref(lock)() is lock)(threading.Lock()),
    "event timeout": lambda: threading.Event().wait(0.01),
    "condition unowned": wait_unowned,
    "semaphore timeout": lambda: threading.Semaphore(0).acquire(timeout=0.01),
    "queue get timeout": lambda: queue.Queue().get(timeout=0.01),
    "queue put timeout": lambda: (lambda q: (q.put(1), q.put(2, timeout=0.01)))(queue.Queue(1)),
    "simple queue get timeout": lambda: queue.SimpleQueue().get(timeout=0.01),
    "simple queue negative timeout": lambda: queue.SimpleQueue().get(timeout=-1),
    "simple queue arguments": lambda: queue.SimpleQueue(1),
    "simple queue round trip": lambda: (lambda q: (q.put(1), q.put_nowait(2), q.qsize(),
                                                   q.get(), q.get_nowait(), q.empty()))(
        queue.SimpleQueue()),
    "simple queue repr": lambda: repr(queue.SimpleQueue()).split(" object")[0],
    "simple queue pickle": lambda: pickle.dumps(queue.SimpleQueue()),
    "simple queue generic": lambda: queue.SimpleQueue[int],
    "future timeout": lambda: concurrent.futures.Future().result(timeout=0.01),
    "sleep negative": lambda: time.sleep(-1),
    "sleep wrong type": lambda: time.sleep("1"),
    "sleep no argument": lambda: time.sleep(),
    "select timeout": lambda: select.select([], [], [], 0.01),
    "select missing argument": lambda: select.select([], []),
    "os.read bad fd": lambda: os.read(-1, 1),
    "join alive with timeout": alive_thread_join,
    "join unstarted": lambda: threading.Thread().join(),
    "join current": lambda: threading.current_thread().join(),
    "popen wait timeout": popen_timeout,
    "recv would block": nonblocking_recv,
    "recv closed": closed_recv,
}


def outcome(operation):
    """What ``operation()`` returned, or what it raised and which pytrace
    frames (none, as without pytrace) its traceback shows."""
    try:
        value = operation()
    except BaseException as exc:
        return ("raised", type(exc), str(exc), pytrace_frames(exc.__traceback__))
    return ("returned", value)


def pytrace_frames(tb):
    return [entry.name for entry in traceback.extract_tb(tb) if is_own_code(entry.filename)]


def test_results_exceptions_tracebacks_and_timeouts_are_those_of_the_untraced_calls(
        trace_path):
    untraced = {name: outcome(op) for name, op in BEHAVIOURS.items()}
    traced = {}
    record(trace_path, lambda: traced.update({name: outcome(op) for name, op in
                                              BEHAVIOURS.items()}), **HOOKS)
    assert traced == untraced


def test_traced_locks_and_queues_work_as_the_native_ones(trace_path):
    def program():
        lock = threading.Lock()
        assert isinstance(lock, blocking.TracedLock)
        assert isinstance(lock, threading.Lock) and isinstance(_thread.allocate_lock(),
                                                                threading.Lock)
        assert issubclass(_thread.LockType, threading.Lock)
        # Condition over a traced Lock, and over a traced RLock (which lends
        # Condition its native _release_save/_acquire_restore/_is_owned).
        for cond in (threading.Condition(lock), threading.Condition(threading.RLock())):
            with cond:
                assert cond.wait(0.001) is False
                cond.notify_all()
        rlock = threading.RLock()
        with rlock, rlock:
            assert rlock._is_owned()
        rlock._at_fork_reinit()
        assert rlock.acquire(blocking=False)
        q = queue.SimpleQueue()
        assert isinstance(q, blocking.TracedSimpleQueue)
        assert isinstance(q, queue.SimpleQueue) and isinstance(native_queue, queue.SimpleQueue)

        class Subclassed(queue.SimpleQueue):
            def __init__(self, first):
                self.put(first)

        assert Subclassed("x").get() == "x" and not isinstance(native_queue, Subclassed)

    native_queue = queue.SimpleQueue()

    record(trace_path, program, **HOOKS)


# -- install and uninstall -------------------------------------------------------

MISSING = object()


def patched_attributes():
    """(owner, name) of every attribute the hook replaces."""
    owners = [(time, "sleep"), (threading, "Lock"), (threading, "RLock"),
              (threading.Condition, "wait"), (threading.Thread, "join"), (select, "select"),
              (queue, "SimpleQueue"),
              (subprocess.Popen, "wait"), (subprocess.Popen, "communicate"), (os, "read"),
              (os, "write")]
    owners += [(cls, "select") for cls in blocking._selector_classes()]
    owners += [(socket.socket, name) for name in blocking.SOCKET_METHODS]
    return owners


def snapshot():
    return [vars(owner).get(name, MISSING) for owner, name in patched_attributes()]


def test_uninstall_puts_every_attribute_back_exactly(trace_path):
    before = snapshot()
    with pytrace.trace(trace_path, calls=False, gc=False, threads=False, blocking=True,
                       asyncio=False):
        during = snapshot()
    assert all(now is not then for now, then in zip(during, before))
    assert snapshot() == before
    assert "recv" not in vars(socket.socket)  # inherited from _socket.socket again


def test_replacements_kept_by_the_program_pass_through_after_stop_and_serve_later_traces(
        tmp_path):
    kept = {}

    def first():
        kept["sleep"] = time.sleep
        kept["lock"] = threading.Lock()

    record(tmp_path / "first.pytrace", first, **HOOKS)
    kept["sleep"](0.001)  # no trace running: just sleeps
    assert kept["lock"].acquire() and not kept["lock"].acquire(timeout=0.001)

    def second():
        def waiter():
            kept["sleep"](0.001)
            return kept["lock"].acquire(timeout=0.001)
        return waiter()

    trace = record(tmp_path / "second.pytrace", second, **HOOKS)
    assert [plain(e) for e in of_kind(trace, *WAIT_KINDS)] == (
        block("sleep") + block("lock"))


IMPORTED_WHILE_TRACING = """
import sys, threading, time
assert "socket" not in sys.modules and "concurrent.futures" not in sys.modules, "imported already"
import pytrace
pytrace.start(sys.argv[1], calls=False, sample_rate=0)
for name in ("socket", "concurrent.futures._base"):
    assert name not in sys.modules, name + " imported by pytrace"
import socket
from concurrent.futures import Future
original_recv = vars(socket.socket).get("recv")
a, b = socket.socketpair()
threading.Timer(0.05, b.send, (b"x",)).start()
a.recv(1)
future = Future()
threading.Timer(0.05, future.set_result, (1,)).start()
future.result()
pytrace.stop()
print("restored", "recv" not in vars(socket.socket))
"""


def test_socket_and_futures_imported_while_tracing_are_observed_from_their_import(tmp_path):
    """pytrace imports neither only to patch it (issue 4: ``socket`` alone
    was ~1.5 ms of every ``pytest --pytrace`` run on 3.13): they are
    patched right after the program's first import, and put back at stop."""
    path = tmp_path / "t.pytrace"
    done = subprocess.run([sys.executable, "-c", IMPORTED_WHILE_TRACING, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["restored", "True"]
    trace = pytrace.read(path)
    syscalls = [e.arg("func").name for e in of_kind(trace, "SysCall")]
    assert "socket.recv" in syscalls
    reasons = [events.BLOCK_REASONS[e.arg("reason")] for e in of_kind(trace, "Block")]
    assert "future" in reasons
