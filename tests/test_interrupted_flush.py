"""A Ctrl-C that interrupts a flush loses no batch and leaves no footer count wrong.

Python runs a signal handler, and so raises its ``KeyboardInterrupt``, at the
interpreter's eval-breaker checks: a function's entry, a backward jump, right
after a call returns.  A flush hands its batch to the writer through Python
code (``Writer.write_batch`` on both cores), so the interrupt can land on
either side of the moment the writer takes the batch.  The slot keeps the
batch as ``unsent`` until the writer has it and offers it again at its next
flush; the writer skips a batch it already took (``pytrace/buffer.py``,
``pytrace/writer.py``).

Two ways to aim the interrupt, on both cores:

- a real SIGINT, tripped at a flush injection point in a way that does not
  run the handler there (``trip_sigint``), so it runs at the next
  eval-breaker check downstream: for ``flush:hand-over``, the entry of
  ``write_batch``, where the C core used to lose the batch;
- a ``KeyboardInterrupt`` raised by a trace function at the n-th eval-breaker
  check inside the flush, for every n (``InterruptAt``): the whole hand-over,
  both sides of the writer's bookkeeping, and a second interrupt during the
  offer that recovers the first.

After each, ``check_trace`` must find every batch exactly once, each thread's
batches in sequence order, every event once and the footer's totals equal to
what the file holds.
"""

from __future__ import annotations

import _thread
import dis
import signal
import sys
from typing import NamedTuple

import pytest

import pytrace
from pytrace import buffer, core
from pytrace.recorder import Recorder
from pytrace.session import is_own_code
from pytrace.writer import Writer
from test_reentrancy import Ledger, TraceCheck, check_trace

#: Every test here runs once per core (the ``pytrace_core`` fixture of conftest.py).
pytestmark = pytest.mark.parametrize(
    "pytrace_core", core.NAMES, indirect=True, ids=[f"core={name}" for name in core.NAMES])

FLUSH_POINTS = buffer.FLUSH_POINTS
#: Big enough that only the test's explicit flushes hand batches over.
BUFFER_SIZE = 64 * 1024
EVENTS_PER_BATCH = 3


class _SigintTrip:
    """``trip[signum]`` calls ``_thread.interrupt_main(signum)``, which marks
    the signal as arrived exactly as the C-level handler of a real signal
    does, without running its Python handler.  Called by the subscript
    instruction, not by a call instruction, it is followed by no
    eval-breaker check: the handler runs at the next one, after the
    injector has returned (``signal.raise_signal`` would run it inside the
    injector, before returning)."""

    __getitem__ = _thread.interrupt_main


def trip_sigint() -> None:
    _SigintTrip()[signal.SIGINT]


class Sigint:
    """A real SIGINT handler that records the function it interrupted and
    raises ``KeyboardInterrupt`` there, like Python's default handler."""

    def __init__(self) -> None:
        self.landed_in: list[str] = []

    def __enter__(self) -> "Sigint":
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handler(self, signum, frame) -> None:
        self.landed_in.append(frame.f_code.co_name)
        raise KeyboardInterrupt


def write_batch_of_events(ledger: Ledger, slot, label: str) -> None:
    for i in range(EVENTS_PER_BATCH):
        ledger.log(slot, label, f"event {i}")


def _eval_breaker_check() -> None:
    """Entering a Python function always checks the eval breaker (some
    specialised calls of builtins, such as ``len``, do not)."""


def flush_catching_ctrl_c(slot) -> bool:
    """Flush ``slot``; True if a ``KeyboardInterrupt`` came out of it.  A
    handler still pending when the flush returns runs inside the ``try``."""
    try:
        slot.flush()
        _eval_breaker_check()
    except KeyboardInterrupt:
        return True
    return False


@pytest.mark.parametrize("then", ["more-flushes", "stop"])
@pytest.mark.parametrize("point", FLUSH_POINTS)
def test_a_real_sigint_at_each_flush_step_loses_nothing(trace_path, monkeypatch, point, then):
    """Batch 1's flush is interrupted right after ``point``; then either
    more batches are flushed (the next flush sends batch 1 before batch 2),
    or the trace stops at once (the final flush sends it)."""
    ledger = Ledger()
    with Sigint() as sigint, Recorder(trace_path, buffer_size=BUFFER_SIZE) as recorder:
        slot = recorder.slots.current()
        write_batch_of_events(ledger, slot, "batch 0")
        assert not flush_catching_ctrl_c(slot)
        write_batch_of_events(ledger, slot, "batch 1")

        def injector(at: str) -> None:
            if at == point:
                monkeypatch.setattr(buffer, "injector", None)
                trip_sigint()

        monkeypatch.setattr(buffer, "injector", injector)
        assert flush_catching_ctrl_c(slot)
        assert len(sigint.landed_in) == 1
        if point == "flush:hand-over":
            # Where the C core lost the batch: at the writer's entry, before
            # it took the batch (it has batch 0 only).
            assert sigint.landed_in == ["write_batch"]
            assert slot.unsent is not None and recorder.writer.totals[slot.tid][0] == 1
        if then == "more-flushes":
            for n in (2, 3):
                write_batch_of_events(ledger, slot, f"batch {n}")
                assert not flush_catching_ctrl_c(slot)
    assert slot.unsent is None
    assert len(sigint.landed_in) == 1
    assert check_trace(trace_path, ledger).problems == []


class InterruptAt:
    """A trace function that raises ``KeyboardInterrupt`` at the ``n``-th
    eval-breaker check in pytrace's own code (n = 0: never): at a function's
    entry, at a backward jump, and before the instruction that follows a
    call, which is where CPython runs a pending signal handler (a superset:
    some specialised calls skip the check).  Only pytrace's frames are
    looked at, so on the C core these are the checks of the Python code
    the C flush calls.  ``places`` lists each check passed, as (function,
    line); the last one is the interrupt's, if there was one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.places: list[tuple[str, int]] = []
        self.interrupted = False
        self._opnames: dict[object, dict[int, str]] = {}
        self._after_call: dict[object, bool] = {}

    def __enter__(self) -> "InterruptAt":
        # 3.12 delivers "opcode" events only if some frame asked for them
        # before sys.settrace was called.
        here = sys._getframe()
        here.f_trace_opcodes = True
        sys.settrace(self._on_call)
        here.f_trace_opcodes = False
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(None)

    def _on_call(self, frame, event, arg):
        code = frame.f_code
        if not is_own_code(code.co_filename):
            return None
        if code not in self._opnames:
            self._opnames[code] = {i.offset: i.opname for i in dis.get_instructions(code)}
        frame.f_trace = self._on_event  # before f_trace_opcodes: 3.13 needs it set
        frame.f_trace_opcodes = True
        self._check(frame)  # the function's entry (RESUME)
        return self._on_event

    def _on_event(self, frame, event, arg):
        if event == "opcode":
            opname = self._opnames[frame.f_code].get(frame.f_lasti, "")
            if self._after_call.get(frame) or opname == "JUMP_BACKWARD":
                self._check(frame)
            # 3.11: CALL after PRECALL; 3.12: CALL, CALL_FUNCTION_EX; 3.13: also CALL_KW.
            self._after_call[frame] = opname.startswith("CALL")
        return self._on_event

    def _check(self, frame) -> None:
        self.places.append((frame.f_code.co_name, frame.f_lineno))
        if len(self.places) == self.n:
            self.interrupted = True
            raise KeyboardInterrupt


#: Where ``Writer.write_batch`` is entered, as ``InterruptAt.places`` names it.
WRITER_ENTRY = ("write_batch", Writer.write_batch.__code__.co_firstlineno)


class Interrupted(NamedTuple):
    check: TraceCheck
    #: The ``InterruptAt`` of each interrupted flush.
    flushes: list[InterruptAt]
    #: For each interrupted flush: the slot kept its batch as unsent, but
    #: the writer had already taken it (offering it again must be skipped).
    taken_but_unsent: list[bool]


def run_interrupted_flushes(trace_path, interrupts: tuple[int, ...]) -> Interrupted:
    """Batch 0 flushed plainly, then one flush per entry of ``interrupts``
    (interrupted at that eval-breaker check; 0: not at all), each after new
    events; then two plain flushes and the final one at stop."""
    ledger = Ledger()
    flushes = []
    taken_but_unsent = []
    with Recorder(trace_path, buffer_size=BUFFER_SIZE) as recorder:
        slot = recorder.slots.current()
        write_batch_of_events(ledger, slot, "batch 0")
        slot.flush()
        for k, n in enumerate(interrupts, start=1):
            write_batch_of_events(ledger, slot, f"interrupted {k}")
            with InterruptAt(n) as interrupt:
                assert flush_catching_ctrl_c(slot) == interrupt.interrupted
            assert interrupt.interrupted == (n > 0)
            flushes.append(interrupt)
            taken_but_unsent.append(
                slot.unsent is not None and recorder.writer.totals[slot.tid][0] == slot.seq)
        for k in range(2):
            write_batch_of_events(ledger, slot, f"after {k}")
            slot.flush()
        write_batch_of_events(ledger, slot, "left for the final flush")
    return Interrupted(check_trace(trace_path, ledger), flushes, taken_but_unsent)


def test_an_interrupt_at_every_check_of_a_flush_loses_nothing(tmp_path):
    (dry,) = run_interrupted_flushes(tmp_path / "dry.pytrace", (0,)).flushes
    assert WRITER_ENTRY in dry.places
    outcomes = set()
    for n in range(1, len(dry.places) + 1):
        run = run_interrupted_flushes(tmp_path / f"at{n}.pytrace", (n,))
        assert run.check.problems == [], dry.places[n - 1]
        outcomes.add(run.taken_but_unsent[0])
    assert outcomes == {False, True}  # both sides of the writer's bookkeeping were hit


def test_an_interrupt_while_an_unsent_batch_is_offered_again(tmp_path):
    """The first flush is interrupted at the writer's entry (its batch stays
    unsent); the next one, which offers it again first, is interrupted at
    each of its checks in turn."""
    (dry,) = run_interrupted_flushes(tmp_path / "dry.pytrace", (0,)).flushes
    entry = dry.places.index(WRITER_ENTRY) + 1
    _, (_, second), _ = run_interrupted_flushes(tmp_path / "dry2.pytrace", (entry, 0))
    assert second.places.count(WRITER_ENTRY) == 2  # the unsent batch, then the new one
    for n in range(1, len(second.places) + 1):
        run = run_interrupted_flushes(tmp_path / f"again{n}.pytrace", (entry, n))
        assert run.taken_but_unsent[0] is False
        assert run.check.problems == [], second.places[n - 1]


def close_interrupted_at(trace_path, n: int) -> tuple[InterruptAt, TraceCheck]:
    """A recorder whose close (final flush, then footer) is interrupted at
    its ``n``-th eval-breaker check (0: not at all)."""
    ledger = Ledger()
    recorder = Recorder(trace_path, buffer_size=BUFFER_SIZE)
    slot = recorder.slots.current()
    write_batch_of_events(ledger, slot, "batch 0")
    slot.flush()
    write_batch_of_events(ledger, slot, "left for the final flush")
    with InterruptAt(n) as interrupt:
        try:
            recorder.close()
            _eval_breaker_check()
        except KeyboardInterrupt:
            pass
    return interrupt, check_trace(trace_path, ledger)


def test_an_interrupt_at_every_check_of_the_close_loses_no_batch(tmp_path):
    """The final flush's batches wait for the footer (``Writer.hold``): an
    interrupt anywhere in the close may cost the footer (the trace is then
    cut short), never the batches."""
    dry, check = close_interrupted_at(tmp_path / "dry.pytrace", 0)
    assert check.problems == []
    assert ("_finish", Writer._finish.__code__.co_firstlineno) in dry.places
    # From the flusher wait on, the recorder is closing: before that an
    # interrupt stops the close itself, and the caller sees it.
    closing = next(i for i, (name, _) in enumerate(dry.places) if name == "wait_for")
    for n in range(closing + 1, len(dry.places) + 1):
        _, check = close_interrupted_at(tmp_path / f"at{n}.pytrace", n)
        lost = [p for p in check.problems if not p.startswith("the trace was cut short")]
        assert lost == [], dry.places[n - 1]


def test_a_ctrl_c_as_the_recorder_is_called_to_close_still_finishes_the_trace(
        trace_path, monkeypatch):
    """An interrupt at the entry of ``Recorder.close`` (before any of its
    statements) reaches the program after the session closed the file."""
    session = pytrace.start(trace_path, calls=False, flush_interval=0)
    pytrace.log("test", "last words")
    close = Recorder.close
    interrupted = []

    def close_interrupted_once(recorder, *args):
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return close(recorder, *args)

    monkeypatch.setattr(Recorder, "close", close_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        pytrace.stop()
    assert interrupted and session.stopped
    assert pytrace.validate(trace_path).valid
    assert [e.arg("message") for e in pytrace.read(trace_path).events
            if e.name == "UserLog"] == ["last words"]


def test_a_real_sigint_in_the_final_flush_still_leaves_every_batch_and_the_footer(
        trace_path, monkeypatch):
    """The interrupt reaches the program, and the trace is whole all the same."""
    ledger = Ledger()
    recorder = Recorder(trace_path, buffer_size=BUFFER_SIZE)
    slot = recorder.slots.current()
    write_batch_of_events(ledger, slot, "batch 0")

    def injector(at: str) -> None:
        if at == "flush:hand-over":
            monkeypatch.setattr(buffer, "injector", None)
            trip_sigint()

    monkeypatch.setattr(buffer, "injector", injector)
    with Sigint() as sigint, pytest.raises(KeyboardInterrupt):
        recorder.close()
        _eval_breaker_check()
    assert sigint.landed_in == ["write_batch"]
    assert check_trace(trace_path, ledger).problems == []
