"""``python -m pytrace validate``, run as a real subprocess the way a user runs it.

Exit codes are the contract scripts rely on: 0 valid, 1 invalid or
unreadable, 2 usage error; and a user never sees a raw traceback.
"""

import subprocess
import sys

import pytest

from pytrace import events
from tracegen import sample_script, scan, with_record_count, write_trace


def pytrace_cli(*args):
    return subprocess.run([sys.executable, "-m", "pytrace", *args],
                          capture_output=True, text=True, timeout=120)


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


@pytest.fixture
def good_trace(tmp_path):
    path = tmp_path / "good.pytrace"
    write_trace(path, [sample_script(0), sample_script(1)])
    return path


def test_a_valid_trace_exits_0_with_a_summary(good_trace):
    layout = scan(good_trace.read_bytes())
    timed = sum(b.timed_events for b in layout.batches)
    result = pytrace_cli("validate", str(good_trace))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"{good_trace}: valid trace: {timed} events from 2 threads "
                                     f"in {len(layout.batches)} batches")
    assert_no_traceback(result)


def test_an_invalid_trace_exits_1_naming_problem_and_place(good_trace):
    data = good_trace.read_bytes()
    batch = scan(data).batches[1]
    wrong = len(batch.records) + 1
    good_trace.write_bytes(with_record_count(data, batch, wrong))
    result = pytrace_cli("validate", str(good_trace))
    assert result.returncode == 1
    assert f"{good_trace}: INVALID: 1 problem(s)" in result.stdout
    assert (f"error: batch header says {wrong} records, the batch holds {len(batch.records)} "
            f"(at byte {batch.offset}, thread {batch.tid}, batch {batch.seq})") in result.stdout
    assert_no_traceback(result)


def test_a_cut_trace_exits_1_saying_where_it_was_cut(good_trace):
    data = good_trace.read_bytes()
    footer = scan(data).footer
    assert footer.kind_id == events.FOOTER
    good_trace.write_bytes(data[:footer.offset])
    result = pytrace_cli("validate", str(good_trace))
    assert result.returncode == 1
    assert "cut short before the footer" in result.stdout
    assert f"(at byte {footer.offset})" in result.stdout
    assert_no_traceback(result)


def test_good_and_missing_files_together_exit_1_and_report_each(good_trace, tmp_path):
    missing = tmp_path / "missing.pytrace"
    result = pytrace_cli("validate", str(good_trace), str(missing))
    assert result.returncode == 1
    assert f"{good_trace}: valid trace" in result.stdout
    assert f"{missing} does not exist" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("args", [(), ("validate",)], ids=["no-command", "no-file"])
def test_missing_arguments_exit_2_with_usage(args):
    result = pytrace_cli(*args)
    assert result.returncode == 2
    assert "usage: pytrace" in result.stderr
    assert_no_traceback(result)
