"""Serve one rendered report over HTTP on the loopback interface (``pytrace view``).

Only 127.0.0.1 is bound, so nothing outside this machine can connect, and
requests whose ``Host`` header names another host are refused (403): a web
page elsewhere cannot read the report through DNS rebinding.  The page is
the same self-contained HTML as ``pytrace report`` writes; it is the only
thing served (``/``), with its Content-Security-Policy also sent as a header.
"""

from __future__ import annotations

import http.server
import re
import webbrowser


def _handler(page: bytes, csp: str):
    class ReportHandler(http.server.BaseHTTPRequestHandler):
        server_version = "pytrace"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(with_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(with_body=False)

        def _answer(self, with_body: bool) -> None:
            port = self.server.server_address[1]
            if self.headers.get("Host") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
                self._send(403, b"Forbidden: pytrace view answers only to 127.0.0.1\n",
                           "text/plain", with_body)
            elif self.path.split("?")[0] in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8", with_body)
            else:
                self._send(404, b"Not found: the report is at /\n", "text/plain", with_body)

        def _send(self, status: int, body: bytes, content_type: str, with_body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if csp:
                self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format, *args) -> None:
            """Quiet: the terminal shows the URL, not every request."""

    return ReportHandler


class ReportServer(http.server.HTTPServer):
    """An HTTP server for one page on 127.0.0.1 (``port`` 0: any free port)."""

    def __init__(self, html: str, port: int = 0) -> None:
        page = html.encode("utf-8")
        match = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
        super().__init__(("127.0.0.1", port), _handler(page, match[1] if match else ""))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def serve_report(html: str, port: int = 0, open_browser: bool = True, announce=print) -> None:
    """Serve ``html`` until interrupted; ``announce`` is told the URL first."""
    server = ReportServer(html, port)
    try:
        announce(server.url)
        if open_browser:
            webbrowser.open(server.url)
        server.serve_forever()
    finally:
        server.server_close()
