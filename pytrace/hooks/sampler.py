"""CPU samples: the stack of every traced thread, ``sample_rate`` times a second.

Like Go's CPUSample, but taken from a daemon thread with
``sys._current_frames()``: a sample is written for each thread that has a
slot (a traced thread; the thread that started tracing always is), so it
shows where each thread is, running or waiting, at that moment.  The sampler writes ``CPUSample(thread, stack)`` through its own
slot; ``thread`` is the sampled thread's tid.

pytrace's frames are left out of the stacks, and pytrace's own threads
(this sampler, the heap ticker, the periodic flusher: every thread whose
name starts with ``pytrace-``) are not sampled.

The sampler needs the GIL to take a sample, so it gets at most one sample in
per switch interval (``sys.getswitchinterval()``, 5 ms by default) while
another thread runs Python code: rates above ~200 Hz are not reached then.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time

from .. import events, forks
from ..session import OWN_THREAD_PREFIX

CPU_SAMPLE = events.BY_NAME["CPUSample"].id
#: Every pytrace thread's name starts with this.


class Ticker:
    """A pytrace daemon thread that calls ``tick()`` every ``interval`` seconds.

    Ticks keep to a fixed schedule; ticks missed while the thread could not
    run are skipped, not made up in a burst.  ``stop()`` ends the thread and
    waits for it, so nothing it writes comes after the trace's footer.
    Around ``os.fork()`` the thread is paused, so that pytrace's threads do
    not make the fork multi-threaded (as the session does with its flusher).
    ``hold()`` keeps the thread asleep, with no wake-up at all, until
    ``release()``: each wake-up takes the GIL from the program.
    """

    def __init__(self, session, name: str, interval: float, tick) -> None:
        self._session = session
        self._name = name
        self._interval = interval
        self._tick = tick
        #: Set while the ticker ticks; cleared by ``hold``.
        self._open = threading.Event()
        self._open.set()
        #: What ``hold``/``release`` asked for last (``_halt`` puts it back
        #: after waking the thread), and the lock that keeps the two together.
        self._held = False
        self._holding = _thread.allocate_lock()
        self._start()

    def _start(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stopping,),
                                        name=self._name, daemon=True)
        self._thread.start()
        _RUNNING.add(self)

    def _run(self, stopping: threading.Event) -> None:
        try:
            next_tick = time.monotonic()
            while True:
                if not self._open.is_set():
                    if stopping.is_set():  # stopped from inside the last tick
                        return
                    self._open.wait()
                    if stopping.is_set():
                        return
                    next_tick = time.monotonic()
                next_tick += self._interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # fell behind: skip the missed ticks
                    next_tick -= delay
                    delay = 0
                if stopping.wait(delay):
                    return
                self._tick()
        except Exception as exc:
            self._session.fail(exc)
        finally:
            # The ident may be reused by a new thread, which must get its own slot.
            self._session.slots.retire(threading.get_ident())

    @property
    def ident(self) -> int | None:
        """The ident of the ticker's thread (None until it runs)."""
        return self._thread.ident

    def hold(self) -> None:
        """Tick no more until ``release()`` (a tick under way still ends)."""
        with self._holding:
            self._held = True
            self._open.clear()

    def release(self) -> None:
        with self._holding:
            self._held = False
            self._open.set()

    def _halt(self) -> None:
        self._stopping.set()
        self._open.set()  # wakes a held thread, which then sees it must stop
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._holding:  # as hold/release last asked, even while this waited
            if self._held:
                self._open.clear()

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
        #: so that no sample reaches a file after its final flush.  From
        #: ``_thread``: the blocking hook may have replaced ``threading.Lock``.
        self._round = _thread.allocate_lock()
        self.ticker: Ticker | None = None

    def sample(self) -> None:
        with self._round:
            if self.recording:
                self._sample()

    def _sample(self) -> None:
        session = self.session
        slot = session.slots.current()
        traced = session.slots.by_ident
        own = {t.ident for t in threading.enumerate() if t.name.startswith(OWN_THREAD_PREFIX)}
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
        return once a round being written is done (at once on the sampler's
        own thread: a failure in a round that stops tracing comes here from
        inside that round)."""
        self.recording = False
        ticker = self.ticker
        if ticker is None:  # stopped while the ticker was being made
            return
        ticker.hold()
        if threading.get_ident() != ticker.ident:
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
