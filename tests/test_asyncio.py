"""asyncio tasks as goroutine-like timelines: create, run slices, done, with names."""

import asyncio
import subprocess
import sys
import textwrap
import traceback

import pytest

import pytrace
from eventlog import of_kind, record, thread_tid
from pytrace import events
from pytrace.session import is_own_code

TASK_KINDS = ("AsyncTaskCreate", "AsyncTaskRun", "AsyncTaskPause", "AsyncTaskDone")
SHORT = {"AsyncTaskCreate": "create", "AsyncTaskRun": "run", "AsyncTaskPause": "pause",
         "AsyncTaskDone": "done"}


def task_story(trace):
    """The task events in order, as (what, task name); creations also with
    the (unqualified) names of their stack's two innermost functions (None:
    created out of sight)."""
    names = {}
    story = []
    for event in of_kind(trace, *TASK_KINDS):
        task = event.arg("task")
        if event.name == "AsyncTaskCreate":
            names[task] = event.arg("name")
            stack = event.arg("stack")
            where = None if stack is None else tuple(f.func.rsplit(".", 1)[-1] for f in stack[:2])
            story.append(("create", names[task], where))
        else:
            story.append((SHORT[event.name], names[task]))
    return story


def run_main(main, task_factory=None, debug=False):
    """Run ``main()`` as the task "main" of a fresh loop (no helper tasks
    of ``asyncio.run`` in the way)."""
    loop = asyncio.new_event_loop()
    loop.set_debug(debug)
    if task_factory is not None:
        loop.set_task_factory(task_factory)
    try:
        return loop.run_until_complete(loop.create_task(main(), name="main"))
    finally:
        loop.close()


def python_task(loop, coro, **kwargs):
    """A task factory making the pure-Python Task (as without the C accelerator)."""
    return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)


async def nap(seconds):
    await asyncio.sleep(seconds)
    return seconds


async def gather_two():
    a = asyncio.create_task(nap(0.01), name="a")
    b = asyncio.create_task(nap(0.05), name="b")
    return await asyncio.gather(a, b)


def ran(name, slices=1):
    return [("run", name), ("pause", name)] * slices


@pytest.mark.parametrize("task_factory", [None, python_task], ids=["C tasks", "Python tasks"])
def test_gathered_tasks_have_named_timelines(trace_path, task_factory):
    results = []
    trace = record(trace_path, lambda: results.append(run_main(gather_two, task_factory)),
                   asyncio=True)
    assert results == [[0.01, 0.05]]
    creator = ("create_task", "gather_two")
    assert task_story(trace) == [
        ("create", "main", ("run_main", "<lambda>")),
        ("run", "main"),
        ("create", "a", creator),
        ("create", "b", creator),
        ("pause", "main"),
        *ran("a"), *ran("b"),  # up to their sleeps
        *ran("a"), ("done", "a"),
        *ran("b"), ("done", "b"),
        *ran("main"), ("done", "main"),
    ]


def test_task_events_are_on_the_thread_running_the_loop(trace_path):
    import threading

    worker = threading.Thread(target=run_main, args=(gather_two,), name="loop thread")

    def in_a_thread():
        worker.start()
        worker.join()

    trace = record(trace_path, in_a_thread, asyncio=True, threads=True)
    task_events = of_kind(trace, *TASK_KINDS)
    assert len(task_events) == 18
    assert {e.tid for e in task_events} == {thread_tid(trace, worker)}


def test_cancelled_tasks_end_with_the_step_that_was_cancelled(trace_path):
    async def main():
        sleeper = asyncio.create_task(nap(10), name="sleeper")
        never_ran = asyncio.create_task(nap(10), name="never ran")
        never_ran.cancel()
        await asyncio.sleep(0)  # sleeper starts and sleeps; never_ran is cancelled at once
        sleeper.cancel()
        outcomes = []
        for task in (sleeper, never_ran):
            try:
                await task
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        return outcomes

    results = []
    trace = record(trace_path, lambda: results.append(run_main(main)), asyncio=True)
    assert results == [["cancelled", "cancelled"]]
    assert task_story(trace)[1:] == [
        ("run", "main"),
        ("create", "sleeper", ("create_task", "main")),
        ("create", "never ran", ("create_task", "main")),
        ("pause", "main"),
        *ran("sleeper"),
        *ran("never ran"), ("done", "never ran"),
        *ran("main"),  # cancels sleeper, awaits it
        *ran("sleeper"), ("done", "sleeper"),
        *ran("main"), ("done", "main"),
    ]


def test_a_task_that_raises_is_done_and_its_exception_reaches_the_awaiter(trace_path):
    async def fails():
        await asyncio.sleep(0)
        raise KeyError("lost")

    async def main():
        try:
            await asyncio.create_task(fails(), name="fails")
        except KeyError as exc:
            return repr(exc)

    results = []
    trace = record(trace_path, lambda: results.append(run_main(main)), asyncio=True)
    assert results == ["KeyError('lost')"]
    story = task_story(trace)
    assert [s for s in story if s[1] == "fails"][1:] == [*ran("fails", 2), ("done", "fails")]
    assert story[-1] == ("done", "main")


def test_task_group_tasks_have_their_names_from_creation(trace_path):
    async def main():
        async with asyncio.TaskGroup() as group:
            first = group.create_task(nap(0), name="first")
            second = group.create_task(nap(0), name=2)
        return first.result(), second.result(), second.get_name()

    results = []
    trace = record(trace_path, lambda: results.append(run_main(main)), asyncio=True)
    assert results == [(0, 0, "2")]
    creates = [s for s in task_story(trace) if s[0] == "create"]
    assert creates[1:] == [("create", "first", ("create_task", "main")),
                           ("create", "2", ("create_task", "main"))]


def test_a_task_made_without_create_task_is_announced_at_its_first_step(trace_path):
    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.Task(nap(0), loop=loop, name="direct")

    trace = record(trace_path, lambda: run_main(main), asyncio=True)
    story = task_story(trace)
    first = story.index(("create", "direct", None))
    assert story[first + 1:first + 3] == ran("direct")
    assert ("done", "direct") in story


def test_asyncio_run_tasks_all_finish(trace_path):
    async def main():
        return await gather_two()

    results = []
    trace = record(trace_path, lambda: results.append(asyncio.run(main())), asyncio=True)
    assert results == [[0.01, 0.05]]
    creates = of_kind(trace, "AsyncTaskCreate")
    assert [e.arg("name") for e in creates][1:3] == ["a", "b"]
    assert sorted(e.arg("task") for e in of_kind(trace, "AsyncTaskDone")) == sorted(
        e.arg("task") for e in creates)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")
def test_eager_tasks_run_their_first_step_in_their_creators_slice(trace_path):
    async def quick():
        return "quick"

    async def main():
        done_at_once = asyncio.create_task(quick(), name="quick")
        slow = asyncio.create_task(nap(0.01), name="slow")
        return [await done_at_once, await slow]

    results = []
    trace = record(trace_path, lambda: results.append(run_main(main, asyncio.eager_task_factory)),
                   asyncio=True)
    assert results == [["quick", 0.01]]
    story = [s[:2] for s in task_story(trace)]
    # main is made before the loop runs, so it starts the usual way.
    assert story == [
        ("create", "main"), ("run", "main"),
        ("create", "quick"), ("done", "quick"),
        ("create", "slow"),
        ("pause", "main"),
        *ran("slow"), ("done", "slow"),
        *ran("main"), ("done", "main"),
    ]


def test_idle_loop_time_is_a_select_block(trace_path):
    trace = record(trace_path, lambda: run_main(lambda: nap(0.02)), asyncio=True, blocking=True)
    selects = [e for e in of_kind(trace, "Block")
               if events.BLOCK_REASONS[e.arg("reason")] == "select"]
    assert selects and all(e.arg("stack")[0].func == "BaseEventLoop._run_once" for e in selects)


def test_debug_mode_creation_tracebacks_show_no_pytrace_frames(trace_path):
    tracebacks = []

    async def main():
        child = asyncio.create_task(nap(0), name="child")
        tracebacks.append([frame.filename for frame in child._source_traceback])
        return await child

    record(trace_path, lambda: run_main(main, debug=True), asyncio=True)
    assert tracebacks[0] and not any("pytrace" in name for name in tracebacks[0])


def test_results_and_exceptions_are_those_of_the_untraced_program(trace_path):
    async def main():
        outcomes = [await gather_two()]
        outcomes.append(await asyncio.gather(asyncio.sleep(0), asyncio.sleep(0, "x")))
        failing = asyncio.gather(nap(0), asyncio.sleep(-1, 1), return_exceptions=True)
        outcomes.append(await failing)
        try:
            await asyncio.wait_for(nap(1), 0.01)
        except TimeoutError as exc:
            outcomes.append(type(exc).__name__)
        return outcomes

    untraced = run_main(main)
    traced = []
    record(trace_path, lambda: traced.append(run_main(main)), asyncio=True)
    assert traced == [untraced]


def test_errors_from_replaced_functions_show_no_pytrace_frames(trace_path):
    def program():
        loop = asyncio.new_event_loop()
        loop.close()
        coro = nap(0)
        try:
            loop.create_task(coro)
        except RuntimeError as exc:
            return str(exc), [f.name for f in traceback.extract_tb(exc.__traceback__)
                              if is_own_code(f.filename)]
        finally:
            coro.close()

    results = []
    record(trace_path, lambda: results.append(program()), asyncio=True)
    assert results == [("Event loop is closed", [])]


def test_uninstall_puts_asyncio_back_exactly(trace_path):
    from asyncio import base_events, events as loop_events

    before = (vars(loop_events.Handle)["_run"], vars(base_events.BaseEventLoop)["create_task"])
    with pytrace.trace(trace_path, calls=False, gc=False, threads=False, blocking=False,
                       asyncio=True):
        during = (vars(loop_events.Handle)["_run"],
                  vars(base_events.BaseEventLoop)["create_task"])
    after = (vars(loop_events.Handle)["_run"], vars(base_events.BaseEventLoop)["create_task"])
    assert during[0] is not before[0] and during[1] is not before[1]
    assert after == before


LATE_IMPORT = """
    import sys
    import pytrace

    path, mode = sys.argv[1:]
    pytrace.start(path, calls=False, gc=False, threads=False, blocking=False, asyncio=True)
    assert "asyncio" not in sys.modules, "starting the trace imported asyncio"
    if mode == "import":
        import asyncio

        async def main():
            return await asyncio.create_task(asyncio.sleep(0, "slept"), name="late")

        print(asyncio.run(main()))
    pytrace.stop()
    finders = [type(f).__name__ for f in sys.meta_path if type(f).__module__.startswith("pytrace")]
    print("finders left:", finders)
    if mode == "import":
        print("loader restored:", "exec_module" not in vars(asyncio.__spec__.loader))
"""


@pytest.mark.parametrize("mode", ["import", "no import"])
def test_asyncio_imported_after_start_is_traced_and_never_imported_by_pytrace(tmp_path, mode):
    path = tmp_path / "late.pytrace"
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent(LATE_IMPORT))
    done = subprocess.run([sys.executable, str(script), str(path), mode], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if mode == "import":
        assert done.stdout.splitlines() == ["slept", "finders left: []", "loader restored: True"]
        assert ("create", "late", ("create_task", "main")) in task_story(pytrace.read(path))
    else:
        assert done.stdout.splitlines() == ["finders left: []"]
        assert of_kind(pytrace.read(path), *TASK_KINDS) == []
