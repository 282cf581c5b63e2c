"""Trace files: ``SyncFile`` (calls made on the calling thread) and the C
core's ``_core.TraceFile`` (calls queued for a background thread,
``pytrace/_files.c``), driven directly and through a parked session's
resumes, which use the background file on the C core."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings

import pytest

import pytrace
from pytrace import core, session as tracing, writer
from pytrace.writer import SyncFile, TraceWriteWarning

FILES = {"sync": SyncFile}
if core.c_module is not None:
    FILES["background"] = core.c_module.TraceFile

LIGHT = dict(calls=False, flush_interval=0, sample_rate=0)


@pytest.fixture(params=sorted(FILES))
def file_class(request):
    return FILES[request.param]


def requires_c_core() -> None:
    if core.c_module is None:
        pytest.skip("the C core is not built")


def requires_active_c_core() -> None:
    """Resumes write in the background only on the active C core."""
    if core.name != "c":
        pytest.skip("resumed files are written in the background on the C core only")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_both_files_cut_an_old_file_and_write_in_order(tmp_path, file_class):
    path = tmp_path / "t.bin"
    path.write_bytes(b"an older, longer trace that must not show through")
    f = file_class(str(path))
    assert f.start(b"head ") == 5
    for i in range(200):
        assert f.write(b"%d " % i) == len(b"%d " % i)
    f.write(memoryview(b"tail"))
    f.close()
    f.close()  # again: nothing
    f.sync()
    assert f.done
    assert path.read_bytes() == b"head " + b"".join(b"%d " % i for i in range(200)) + b"tail"


def test_both_files_refuse_an_unwritable_path_at_once(tmp_path, file_class):
    with pytest.raises(OSError) as raised:
        file_class(str(tmp_path / "missing" / "t.bin"))
    assert raised.value.filename == str(tmp_path / "missing" / "t.bin")


def test_a_full_disk_shows_at_the_background_files_next_write():
    requires_c_core()
    f = core.c_module.TraceFile("/dev/full")
    f.start(b"header")
    f.sync()
    assert f.error is not None and f.error.errno == 28
    with pytest.raises(OSError) as raised:
        f.write(b"more")
    assert raised.value.errno == 28 and raised.value.filename == "/dev/full"
    before = open_fds()
    f.close()  # a failed file still closes its descriptor
    f.sync()
    assert f.done and open_fds() == before - 1


def test_a_background_file_refuses_writes_after_its_close(tmp_path):
    requires_c_core()
    f = core.c_module.TraceFile(str(tmp_path / "t.bin"))
    f.close()
    with pytest.raises(ValueError):
        f.write(b"late")
    f.sync()


def test_a_background_file_dropped_unclosed_is_written_and_closed(tmp_path):
    requires_c_core()
    before = open_fds()
    f = core.c_module.TraceFile(str(tmp_path / "t.bin"))
    f.start(b"x" * 100_000)
    del f
    core.c_module.sync_files()
    assert open_fds() == before
    assert (tmp_path / "t.bin").stat().st_size == 100_000


def test_many_threads_writing_background_files_keep_each_files_order(tmp_path):
    requires_c_core()
    files = [core.c_module.TraceFile(str(tmp_path / f"{n}.bin")) for n in range(4)]

    def fill(f, n):
        f.start(b"")
        for i in range(500):
            f.write(b"%d:%d\n" % (n, i))
        f.close()

    threads = [threading.Thread(target=fill, args=(f, n)) for n, f in enumerate(files)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    core.c_module.sync_files()
    for n in range(4):
        assert (tmp_path / f"{n}.bin").read_bytes() == b"".join(
            b"%d:%d\n" % (n, i) for i in range(500))


def resumed_file(tmp_path, name="2.pytrace"):
    """Start, park, then record into a resumed (background) file and park it."""
    tracing.start(tmp_path / "1.pytrace", **LIGHT)
    tracing.park()
    tracing.start(tmp_path / name, **LIGHT)
    pytrace.log("test", "in the resumed file")
    return tracing.park()


def test_a_resumed_file_is_complete_once_its_files_are_waited_for(tmp_path):
    session = resumed_file(tmp_path)
    try:
        if core.name == "c":
            assert isinstance(session.recorder.writer._file, core.c_module.TraceFile)
        tracing.wait_for_files()
        report = pytrace.validate(tmp_path / "2.pytrace")
        assert report.valid, report
        assert [e.arg("message") for e in pytrace.read(tmp_path / "2.pytrace").events
                if e.name == "UserLog"] == ["in the resumed file"]
    finally:
        tracing.unpark()


def test_a_resumed_files_late_failure_is_reported_when_it_is_settled(tmp_path, monkeypatch):
    """A write the background thread makes after the close fails: the
    warning comes at the next resume or stop, naming the file."""
    requires_active_c_core()
    real = core.c_module.TraceFile
    monkeypatch.setattr(core.c_module, "TraceFile",
                        lambda path: real("/dev/full" if path.endswith("full.pytrace") else path))
    tracing.start(tmp_path / "1.pytrace", **LIGHT)
    tracing.park()
    tracing.start(tmp_path / "full.pytrace", **LIGHT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracing.park()
        tracing.unpark()  # stops the session: waits for the files, reports
    messages = [str(w.message) for w in caught if w.category is TraceWriteWarning]
    assert len(messages) == 1 and "full.pytrace" in messages[0]


EXIT_WITH_WRITES_QUEUED = """
import sys
from pytrace import core
f = core.c_module.TraceFile(sys.argv[1])
f.start(b"")
for _ in range(16):
    f.write(bytes(4 << 20))  # 64 MiB for the thread to write after the last statement
f.close()
"""


def test_the_interpreters_exit_waits_for_the_queued_writes(tmp_path):
    requires_c_core()
    path = tmp_path / "big.bin"
    subprocess.run([sys.executable, "-c", EXIT_WITH_WRITES_QUEUED, str(path)], check=True,
                   timeout=60)
    assert path.stat().st_size == 64 << 20


FORK_WITH_A_FILE_QUEUED = """
import os, sys
import pytrace
from pytrace import session as tracing
light = dict(calls=False, flush_interval=0, sample_rate=0)
tracing.start(sys.argv[1] + "/1.pytrace", **light)
tracing.park()
tracing.start(sys.argv[1] + "/2.pytrace", **light)
pytrace.log("test", "x" * 3_000_000)
tracing.park()
pid = os.fork()  # the parent's queued writes are made before the fork
if pid == 0:
    # The child's own background file works: its thread is its own.
    from pytrace import core
    f = core.c_module.TraceFile(sys.argv[1] + "/child.bin")
    f.start(b"child")
    f.close()
    f.sync()
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), os.path.getsize(sys.argv[1] + "/2.pytrace") > 3_000_000)
tracing.unpark()
"""


def test_a_fork_waits_for_the_queued_writes_and_the_child_writes_its_own(tmp_path):
    """The background thread makes its queued calls and ends before a fork;
    the child starts its own."""
    requires_c_core()
    # -W error: on 3.12+ a fork with another thread alive (the writer's, had
    # it not ended for the fork) warns.
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                           FORK_WITH_A_FILE_QUEUED, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"]
    assert (tmp_path / "child.bin").read_bytes() == b"child"


class CloseThenPreempted:
    """A background file whose closing thread is descheduled right after
    ``close()``, long enough for the background thread to make the queued
    calls before the writer looks again."""

    def __init__(self, path: str) -> None:
        self.file = core.c_module.TraceFile(path)
        self.start, self.write, self.sync = self.file.start, self.file.write, self.file.sync

    def close(self) -> None:
        self.file.close()
        time.sleep(0.02)

    @property
    def done(self) -> bool:
        return self.file.done

    @property
    def error(self):
        return self.file.error


def test_a_failure_the_thread_finds_after_the_close_is_reported_however_late():
    requires_c_core()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        closed = writer.Writer(CloseThenPreempted("/dev/full"), "/dev/full", 10**9, (), ())
        closed.write_batch(1, bytearray(b"x" * 100), 1, 0)
        closed.close()
        writer.settle(wait=True)
    assert closed.failed is not None and closed.failed.errno == 28
    assert [w for w in caught if w.category is TraceWriteWarning]


THREADS_FORKING = """
import os, sys, threading
from pytrace import core, writer  # writer registers the fork callbacks
f = core.c_module.TraceFile("/dev/null")
f.start(b"x")
stop = False
def keep_writing():
    while not stop:
        f.write(bytes(1 << 16))
def fork(times):
    for _ in range(times):
        pid = os.fork()
        if pid == 0:
            # The child's count of the file's queued calls is right: sync returns.
            f.sync()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
writing = threading.Thread(target=keep_writing)
writing.start()
forking = [threading.Thread(target=fork, args=(100,)) for _ in range(2)]
for thread in forking:
    thread.start()
for thread in forking:
    thread.join()
stop = True
writing.join()
f.close()
f.sync()
print("done")
"""


def test_threads_forking_at_once_while_another_writes_neither_hang_nor_lose_count():
    """Two threads fork at once (each pauses the background thread, one
    joins it), while a third keeps queueing writes; every child can sync."""
    requires_c_core()
    done = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c",
                           THREADS_FORKING], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]


PROBED_THEN_IMPORTED = """
import importlib.util, sys
import pytrace
pytrace.start(sys.argv[1], calls=False, sample_rate=0)
importlib.util.find_spec("socket")  # a probe: not an import
import socket
print(type(vars(socket.socket).get("recv")).__name__)
pytrace.stop()
"""


def test_a_module_probed_before_its_import_is_still_patched_at_the_import(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBED_THEN_IMPORTED,
                           str(tmp_path / "t.pytrace")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["function"]
