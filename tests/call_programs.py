"""Small programs whose call events the call-event tests check exactly.

They live in their own module so that ``include=(MODULE,)`` keeps the test
machinery (pytest, the test functions, ``contextlib``) out of their traces.
Keep them deterministic: the expected sequences in ``tests/test_calls.py``
and the counts in ``tests/test_call_counts.py`` depend on every line.
"""

from __future__ import annotations

import colorsys
import time

MODULE = __name__


def leaf(x):
    return x + 1


def plain():
    leaf(1)
    leaf(2)


def countdown(n):
    if n:
        countdown(n - 1)


def recursion():
    countdown(2)


def fail():
    raise ValueError("raised in the callee")


def caught():
    try:
        fail()
    except ValueError:
        pass


def middle():
    fail()


def propagated():
    """The exception leaves two frames before it is caught."""
    try:
        middle()
    except ValueError:
        pass


def escaping():
    """The exception leaves the program itself."""
    middle()


def numbers():
    try:
        yield 1
        yield 2
    finally:
        leaf(0)


def generator():
    """Resumed once, then closed while suspended (the finally runs)."""
    g = numbers()
    next(g)
    next(g)
    g.close()


def exhausted():
    for _ in numbers():
        pass


def thrown():
    """An exception thrown into a suspended generator leaves it at the yield."""
    g = numbers_without_cleanup()
    next(g)
    try:
        g.throw(KeyError("thrown"))
    except KeyError:
        pass


def numbers_without_cleanup():
    yield 1
    yield 2


def closed():
    """Closed while suspended at a yield with no handler around it: 3.13
    finishes such a generator without running it, 3.11 and 3.12 throw
    ``GeneratorExit`` into it."""
    g = numbers_without_cleanup()
    next(g)
    g.close()


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def parity():
    """Mutual recursion: each function is entered again below itself."""
    is_even(4)
    is_odd(3)


class Suspend:
    """An awaitable that suspends its awaiter once."""

    def __await__(self):
        yield "suspended"


async def child():
    await Suspend()
    return 5


async def parent():
    return await child()


def coroutine():
    """A coroutine chain driven by hand: suspended once, then finished."""
    c = parent()
    c.send(None)
    try:
        c.send(None)
    except StopIteration:
        pass


def c_calls():
    len("abc")
    {}.get(1)
    sorted([2, 1], key=leaf)


def with_library():
    leaf(1)
    colorsys.hls_to_rgb(0.5, 0.5, 0.5)


def outer(start):
    middle_frame(start)


def middle_frame(start):
    inner(start)


def inner(start):
    start()
    leaf(0)


def start_inside_c_call(start):
    """Tracing starts in a callback of a C function (``sorted``)."""
    def key(v):
        if v == 2:
            start()
        return leaf(v)

    sorted([2, 1], key=key)


def waiting_worker(ready, go):
    """A thread body that is already running when tracing starts."""
    ready.set()
    go.wait()
    leaf(1)


def worker():
    leaf(2)


def napping():
    time.sleep(0.05)
    leaf(0)


def everything():
    """All of the single-threaded programs that return normally."""
    plain()
    recursion()
    parity()
    caught()
    propagated()
    generator()
    exhausted()
    thrown()
    closed()
    coroutine()
    c_calls()
    with_library()
