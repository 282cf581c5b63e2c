"""``pytrace export``, ``report`` and ``view``: outputs equal to the library's,
one-sentence errors with the documented exit codes, no partial files, and a
report server on 127.0.0.1 that answers only for itself."""

import io
import json
import socket
import subprocess
import sys

import pytest

import pytrace
from export_traces import announced_url, http_get, write_events, write_sample_trace
from pytrace.cli import main
from pytrace.export import write_chrome, write_folded, write_go
from pytrace.recorder import MIN_BUFFER_SIZE
from pytrace.report import render_report


@pytest.fixture
def sample_path(tmp_path):
    path = tmp_path / "sample.pytrace"
    write_sample_trace(path)
    return path


def run(capsys, *argv):
    """``pytrace ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def library_output(writer, trace, binary=False, **options):
    out = io.BytesIO() if binary else io.StringIO()
    writer(trace, out, **options)
    return out.getvalue()


def test_export_writes_what_the_library_writes(capsys, sample_path, tmp_path):
    trace = pytrace.read(sample_path)
    code, out, err = run(capsys, "export", sample_path, "--format", "chrome",
                         "-o", tmp_path / "t.json")
    assert (code, err) == (0, "")
    assert out == f"wrote {tmp_path / 't.json'} ({(tmp_path / 't.json').stat().st_size:,} bytes)\n"
    assert (tmp_path / "t.json").read_text() == library_output(write_chrome, trace)
    assert run(capsys, "export", sample_path, "-f", "go", "-o", tmp_path / "t.go")[0] == 0
    assert (tmp_path / "t.go").read_bytes() == library_output(write_go, trace, binary=True)
    assert run(capsys, "export", sample_path, "-f", "folded", "--weight", "samples",
               "-o", tmp_path / "t.folded")[0] == 0
    assert (tmp_path / "t.folded").read_text() == library_output(write_folded, trace,
                                                                 weight="samples")
    assert not list(tmp_path.glob("*.partial"))


def test_default_output_names_follow_the_trace(capsys, sample_path):
    for fmt, suffix in (("chrome", ".json"), ("go", ".gotrace"), ("folded", ".folded")):
        assert run(capsys, "export", sample_path, "-f", fmt)[0] == 0
        assert sample_path.with_suffix(suffix).exists()
    assert run(capsys, "report", sample_path)[0] == 0
    assert sample_path.with_suffix(".html").read_text(encoding="utf-8").startswith("<!DOCTYPE")


def test_an_empty_flame_graph_says_why(capsys, tmp_path):
    write_events(tmp_path / "t.pytrace", [(0, 1, "CallEnter", ("f", "m.py", 1)),
                                          (5000, 1, "CallExit")])
    code, out, _ = run(capsys, "export", tmp_path / "t.pytrace", "-f", "folded",
                       "--weight", "samples")
    assert code == 0 and (tmp_path / "t.folded").read_text() == ""
    assert out.endswith("; it is empty: the trace has no CPU samples (record with --sample-rate)\n")


def test_dash_writes_to_stdout(capsys, sample_path):
    code, out, err = run(capsys, "export", sample_path, "-f", "folded", "-o", "-")
    assert (code, err) == (0, "")
    assert out == library_output(write_folded, pytrace.read(sample_path))


def test_report_writes_the_rendered_page(capsys, sample_path, tmp_path):
    code, out, _ = run(capsys, "report", sample_path, "-o", tmp_path / "r.html",
                       "--max-slices", "4")
    assert code == 0 and out.startswith("wrote ")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page == render_report(pytrace.read(sample_path), max_slices=4)
    assert "11 shorter slices are not drawn" in page


@pytest.mark.parametrize("argv, code, message", [
    (["export", "{missing}", "-f", "chrome"], 1, "does not exist"),
    (["export", "{garbage}", "-f", "go"], 1, "not a pytrace trace"),
    (["report", "{garbage}"], 1, "not a pytrace trace"),
    (["export", "{empty}", "-f", "go"], 1, "Go's tools reject an empty trace"),
    (["export", "{sample}", "-f", "chrome", "--weight", "time"], 2,
     "--weight applies to --format folded only"),
    (["export", "{sample}", "-f", "go", "-o", "{tmp}/no/such/dir/t.go"], 2, "cannot write"),
    (["report", "{sample}", "-o", "{tmp}/no/such/dir/r.html"], 2, "cannot write"),
    (["export", "{sample}", "-f", "folded", "-o", "{sample}"], 2, "would overwrite the trace"),
])
def test_errors_are_one_sentence_with_the_documented_exit_code(capsys, sample_path, tmp_path,
                                                               argv, code, message):
    (tmp_path / "garbage.pytrace").write_bytes(b"not a trace at all")
    write_events(tmp_path / "empty.pytrace", [])
    paths = {"missing": tmp_path / "missing.pytrace", "garbage": tmp_path / "garbage.pytrace",
             "empty": tmp_path / "empty.pytrace", "sample": sample_path, "tmp": tmp_path}
    got, out, err = run(capsys, *(a.format(**paths) for a in argv))
    assert got == code
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""
    assert not list(tmp_path.rglob("*.partial"))


def test_names_from_undecodable_file_names_are_written(capsys, tmp_path):
    """A file name that was not UTF-8 reaches the trace as lone surrogates;
    every output still writes, showing U+FFFD for what cannot be encoded."""
    odd = "caf\udce9.py"  # b"caf\xe9.py" decoded by Python with surrogateescape
    write_events(tmp_path / "t.pytrace", [
        (0, 1, "ThreadStart", 1, 1, "main"),
        (0, 1, "CallEnter", ("f\udcff", odd, 1)),
        (1000, 1, "GCStart", 0, [("f\udcff", odd, 2)]),
        (2000, 1, "GCDone", 0, 0),
        (3000, 1, "CallExit"),
    ])
    for argv in (["-f", "chrome"], ["-f", "go"], ["-f", "folded"]):
        assert run(capsys, "export", tmp_path / "t.pytrace", *argv)[0] == 0
    assert run(capsys, "report", tmp_path / "t.pytrace")[0] == 0
    assert (tmp_path / "t.folded").read_text(encoding="utf-8") == (
        "f\ufffd (caf\ufffd.py) 2\nf\ufffd (caf\ufffd.py);[GC generation 0] 1\n")
    assert "f\ufffd" in (tmp_path / "t.html").read_text(encoding="utf-8")
    doc = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert any(e.get("name") == "f\udcff" for e in doc["traceEvents"])


def test_unknown_format_is_a_usage_error(capsys, sample_path):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(sample_path), "--format", "pprof"])
    assert exit_.value.code == 2
    assert "invalid choice: 'pprof'" in capsys.readouterr().err


def test_a_cut_trace_is_exported_with_a_warning(capsys, tmp_path):
    whole = tmp_path / "whole.pytrace"
    write_sample_trace(whole, buffer_size=MIN_BUFFER_SIZE)
    cut = tmp_path / "cut.pytrace"
    cut.write_bytes(whole.read_bytes()[:-200])
    code, _, err = run(capsys, "export", cut, "-f", "chrome", "-o", tmp_path / "cut.json")
    assert code == 0
    assert "warning: the trace was cut short" in err
    assert json.loads((tmp_path / "cut.json").read_text())["traceEvents"]


def test_view_refuses_a_busy_port(capsys, sample_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = run(capsys, "view", sample_path, "--no-browser",
                           "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1:" in err


def test_view_serves_the_report_on_loopback_only(sample_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "pytrace", "view", str(sample_path), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = announced_url(server, r"^pytrace view: the report is at "
                                    r"(http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)\n")
        port = int(url.split(":")[2].rstrip("/"))
        status, page = http_get(url)
        assert status == 200
        assert page == render_report(pytrace.read(sample_path))
        assert http_get(url + "anything-else")[0] == 404
        # Bound to 127.0.0.1 only: another loopback address (all of 127/8 reaches this
        # machine) finds nothing listening, as any outside address would.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        # A page elsewhere cannot reach the report through another host name.
        request = f"GET / HTTP/1.0\r\nHost: attacker.example:{port}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(request)
            assert conn.recv(64).startswith(b"HTTP/1.0 403")
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()
