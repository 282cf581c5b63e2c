"""CPU samples: the stack of every traced thread, ``sample_rate`` times a second.

Like Go's CPUSample, taken with ``sys._current_frames()``: a sample is
written for each thread that has a slot (a traced thread; the thread that
started tracing always is), so it shows where each thread is, running or
waiting, at that moment.  The sampler writes ``CPUSample(thread, stack)``
through its own thread's slot; ``thread`` is the sampled thread's tid.  On
the C core the thread running Python takes most ticks, between two of its
bytecodes (see ``Ticker``), and still writes them there.

pytrace's frames are left out of the stacks, and pytrace's own threads
(this sampler, the heap ticker, the periodic flusher: every thread whose
name starts with ``pytrace-``) are not sampled.

A tick taken on the sampler's own thread needs the GIL: while another
thread runs Python code it gets at most one in per switch interval
(``sys.getswitchinterval()``, 5 ms by default), so rates above ~200 Hz are
not reached then.  That is every tick on the pure-Python core, and on the C
core the ticks that no thread running Python takes (3.11's main thread
takes them only at its system calls).
"""

from __future__ import annotations

import _thread
import sys
import threading
import time

from .. import core, events, forks
from ..session import OWN_THREAD_PREFIX

CPU_SAMPLE = events.BY_NAME["CPUSample"].id


class PythonBeat:
    """A ticker's clock on the pure-Python core: ``run()`` calls ``tick()``
    every ``interval`` seconds on the thread that runs it.  The C core's
    ``_core.Beat`` has the same methods and hands each tick to the thread
    running Python instead (see ``pytrace/_beat.c``: a thread that wakes in
    Python takes the GIL from the program at every tick).

    Ticks keep to a fixed schedule; ticks missed while the thread could not
    run are skipped, not made up in a burst.  A tick that falls due while
    held is skipped, and the thread then sleeps, with no wake-up at all,
    until ``release()``.  A hold that no tick falls into costs the thread
    nothing: ``release()`` wakes nobody (``pytest --pytrace`` holds and
    releases once per test, every few hundred microseconds).
    """

    def __init__(self, interval: float, tick) -> None:
        self._interval = interval
        self._tick = tick
        #: Guards ``_held``, ``_sleeping`` and ``_stopping`` (from ``_thread``:
        #: the blocking hook may have replaced ``threading.Lock``).
        self._lock = _thread.allocate_lock()
        self._held = False
        self._stopping = False
        #: True while ``run`` sleeps in ``_wake.acquire()``: whoever sets it
        #: back to False releases ``_wake``, once, to wake it.
        self._sleeping = False
        #: Locked at all times but while it wakes the sleeping thread, whose
        #: ``acquire`` locks it again.
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        #: Interrupts the wait for the next tick (``halt``).
        self._halted = threading.Event()

    def begin(self) -> None:
        with self._lock:
            self._stopping = False
            self._halted = threading.Event()

    def run(self) -> None:
        halted = self._halted
        next_tick = time.monotonic()
        while True:
            next_tick += self._interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: skip the missed ticks
                next_tick -= delay
                delay = 0
            if halted.wait(delay):
                return
            with self._lock:
                # ``halt`` sets ``_stopping`` under this lock before it looks
                # for a sleeper: a halt is either seen here or wakes the sleeper.
                if self._stopping:
                    return
                held = self._sleeping = self._held
            if held:  # skip the tick and sleep until released
                self._wake.acquire()
                if self._stopping:
                    return
                next_tick = time.monotonic()
                continue
            self._tick()

    def hold(self) -> None:
        with self._lock:
            self._held = True

    def release(self) -> None:
        with self._lock:
            self._held = False
            self._wake_sleeper()

    def halt(self) -> None:
        with self._lock:
            self._stopping = True
            self._halted.set()
            self._wake_sleeper()

    def _wake_sleeper(self) -> None:
        """With ``_lock`` held: wake ``run`` if it sleeps."""
        if self._sleeping:
            self._sleeping = False
            self._wake.release()


class Ticker:
    """A pytrace daemon thread that has ``tick()`` called every ``interval`` seconds.

    Its clock is the active core's beat (``PythonBeat`` or ``_core.Beat``):
    on the C core the ticks run on the thread that runs Python at that
    moment (the main thread, on 3.11 and 3.13), else on this thread.
    Either way ``tick(slot)`` gets this thread's slot, to write through:
    the trace shows the ticker's events on the ticker's thread, whichever
    thread took the tick.  ``tick`` never raises: a
    failure stops tracing (``Session.fail``).  ``stop()`` ends the thread
    and waits for it.
    Around ``os.fork()`` the thread is paused, so that pytrace's threads do
    not make the fork multi-threaded (as the session does with its flusher).
    ``hold()`` stops the ticks until ``release()``.
    """

    def __init__(self, session, name: str, interval: float, tick) -> None:
        self._session = session
        self._name = name
        self._user_tick = tick
        beat = core.c_module.Beat if core.name == "c" else PythonBeat
        self._beat = beat(interval, self._tick)
        self.hold = self._beat.hold
        self.release = self._beat.release
        self._start()

    def _tick(self) -> None:
        # ``_ident``, not the ``ident`` property: a Python call outside
        # pytrace, on a traced thread (see ``Sampler._sample``).
        try:
            self._user_tick(self._session.slots.of(self._thread._ident))
        except Exception as exc:
            self._session.fail(exc)

    def _start(self) -> None:
        self._beat.begin()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    def _run(self) -> None:
        try:
            self._beat.run()
        except Exception as exc:
            self._session.fail(exc)
        finally:
            # The ident may be reused by a new thread, which must get its own slot.
            self._session.slots.retire(threading.get_ident())

    @property
    def ident(self) -> int | None:
        """The ident of the ticker's thread (None until it runs)."""
        return self._thread.ident

    def _halt(self) -> None:
        self._beat.halt()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def stop(self) -> None:
        _RUNNING.discard(self)
        self._halt()


#: Tickers between start and stop: paused around a fork.
_RUNNING: set[Ticker] = set()


def _pause_tickers() -> None:
    for ticker in list(_RUNNING):
        ticker._halt()


def _resume_tickers() -> None:
    for ticker in list(_RUNNING):
        ticker._start()


# In a forked child the session stops (``session._stop_in_forked_child``),
# which stops its tickers; their threads are not there to resume.
forks.register(before=_pause_tickers, after_in_parent=_resume_tickers)


class Sampler:
    """Takes one round of samples per tick, into the file being recorded.

    While the session is parked (``session.park``) its thread stays, asleep
    (``Ticker.hold``), for the next file: ``pytest --pytrace`` records a file
    per test, and starting and joining a thread for each would cost more
    than a short test's whole recording (issue 4)."""

    def __init__(self, session) -> None:
        self.session = session
        #: False while the session is parked: ticks write nothing.
        self.recording = True
        #: Held while a round of samples is written: ``pause`` waits for it,
        #: so that no sample reaches a file after its final flush.
        #: Reentrant: on the C core a round runs on the thread running Python,
        #: where a signal handler inside it may stop tracing, and ``pause``
        #: must not then wait for its own thread.  From ``_thread``: the
        #: blocking hook may have replaced ``threading.RLock``.
        self._round = _thread.RLock()
        self.ticker: Ticker | None = None

    def sample(self, slot) -> None:
        # Never waits: on the C core a round runs wherever the thread running
        # Python is, ``pause`` waiting for a round included.  A tick that
        # finds a round under way on another thread is skipped.
        if not self._round.acquire(False):
            return
        try:
            if self.recording:
                self._sample(slot)
        finally:
            self._round.release()

    def _sample(self, slot) -> None:
        """One round.  It calls no Python function outside pytrace (it reads
        ``threading``'s tables, not ``enumerate()`` or properties): on the C
        core it runs on a traced thread, whose call hook would record them
        as the program's calls."""
        session = self.session
        traced = session.slots.by_ident
        threads = [*threading._active.values(), *threading._limbo]  # copied in C calls
        own = {thread._ident for thread in threads if thread._name.startswith(OWN_THREAD_PREFIX)}
        for ident, frame in sys._current_frames().items():
            target = traced.get(ident)
            if target is not None and ident not in own:
                stack = session.stack_id(slot, frame)
                if stack:
                    slot.emit(CPU_SAMPLE, target.tid, stack)

    def resume(self) -> None:
        # The thread that starts tracing is traced even if no other hook has
        # written for it yet.
        self.session.slots.current()
        self.recording = True
        if self.ticker is not None:
            self.ticker.release()

    def pause(self) -> None:
        """Write no more samples, and let the thread sleep until ``resume``;
        return once a round being written is done (at once on the thread
        writing it: a failure in a round that stops tracing comes here from
        inside that round)."""
        self.recording = False
        ticker = self.ticker
        if ticker is None:  # stopped while the ticker was being made
            return
        ticker.hold()
        # A round that begins from now on sees ``recording`` false; one that
        # another thread is writing is waited for.
        if self._round.acquire(False):
            self._round.release()
        else:
            with self._round:
                pass

    def uninstall(self) -> None:
        self.pause()
        if self.ticker is not None:
            self.ticker.stop()


def install(session):
    sampler = Sampler(session)
    sampler.resume()
    sampler.ticker = Ticker(session, OWN_THREAD_PREFIX + "sampler",
                            1 / session.options.sample_rate, sampler.sample)
    session.follow(sampler.pause, sampler.resume)
    return sampler.uninstall
