"""A media server on a free loopback port, for input by URL: files, redirects,
error statuses, lying or missing lengths, and bodies that trickle."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


class MediaServer:
    """``routes`` maps a path (query included) to what answers it; ``requests``
    lists the paths asked for, and ``aborted`` the routes whose client went
    away before the whole body was sent."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.aborted: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    server.aborted.append(self.path)
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # What a route can answer.

    def file(self, path: str, body: bytes, content_type: str = "audio/wav", **headers: str) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name.replace("_", "-"), value)
            handler.end_headers()
            handler.wfile.write(body)

        self.routes[path] = answer

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = answer

    def declared_length(self, path: str, length: int) -> None:
        """Headers that announce ``length`` bytes, then a few bytes only."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "audio/wav")
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
            handler.wfile.write(b"RIFF")

        self.routes[path] = answer

    def chunked(self, path: str, total: int, chunk: int = 64 * 1024) -> None:
        """``total`` bytes of WAV-looking data, chunked, with no length announced."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "audio/wav")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            sent = 0
            while sent < total:
                part = b"\0" * min(chunk, total - sent)
                handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                sent += len(part)
            handler.wfile.write(b"0\r\n\r\n")

        self.routes[path] = answer

    def trickle(
        self, path: str, body: bytes, every: float, step: int = 1024, on_first: Route | None = None
    ) -> None:
        """``body`` (its length announced) ``step`` bytes every ``every`` seconds;
        ``on_first`` runs after the first step."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "audio/wav")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for start in range(0, len(body), step):
                handler.wfile.write(body[start : start + step])
                handler.wfile.flush()
                if start == 0 and on_first is not None:
                    on_first(handler)
                time.sleep(every)

        self.routes[path] = answer


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
