"""A tiny HTTP server standing in for a portal's back-channel logout endpoint."""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LogoutReceiver:
    """Records every POST; answers with ``status`` (and a Location for 3xx)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                receiver.received.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "form": urllib.parse.parse_qs(body),
                    }
                )
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/backchannel-logout"

    def tokens(self) -> list[str]:
        return [r["form"]["logout_token"][0] for r in self.received if r["path"] == "/backchannel-logout"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
