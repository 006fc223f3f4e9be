"""The gunicorn worker the API runs in: ``worker_class`` in gunicorn.conf.py,
``--worker-class`` in ``make run`` (app/embedded.py).

Gunicorn's threaded worker, with two differences a client can see:

- A response that says ``Connection: close`` closes the connection. The app
  says so when it left a request body unread (app/bodies.py); gunicorn drops
  hop-by-hop headers from applications and would announce keep-alive.
- What gunicorn answers itself, before the app sees a request (a malformed or
  oversized request line or header, an unknown transfer coding, its own
  failures), is JSON in the API's error shape instead of an HTML page.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from gunicorn import util
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.wsgi import Response
from gunicorn.workers.gthread import ThreadWorker

from app.bodies import StartResponse, WsgiApp, asks_to_close
from app.errors_http import error_body
from app.security_headers import API_CSP, SECURITY_HEADERS


def _honouring_close(app: WsgiApp) -> WsgiApp:
    """``app``, with a ``Connection: close`` in its answer closing the connection.

    Gunicorn's ``start_response`` is a method of the response it is about to
    write, and what that response announces is decided when its headers go
    out, at the first write: marking it here is in time.
    """

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response = getattr(start_response, "__self__", None)
            if isinstance(response, Response) and asks_to_close(headers):
                response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return serve


class _ErrorPage:
    """Stands in for the client socket while gunicorn writes an error page, so
    that gunicorn still decides the status (and logs as it does) while the
    page itself is kept from the client."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.written = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # or write_nonblock would switch the real socket to non-blocking

    def sendall(self, data: bytes) -> None:
        self.written += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def status(self) -> tuple[int, str] | None:
        """The page's status code and reason, from ``HTTP/1.1 414 URI Too Long``."""
        line = bytes(self.written).split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        return int(parts[1]), parts[2] if len(parts) == 3 else ""


def _message(status: int, reason: str, cfg: Config) -> str:
    messages = {
        400: "The request is not valid HTTP: its request line, a header or its chunked "
        "body is malformed.",
        414: f"The request line is longer than {cfg.limit_request_line} bytes.",
        417: "The only expectation the server meets is 'Expect: 100-continue'.",
        431: f"The request has more than {cfg.limit_request_fields} header fields, or one "
        f"longer than {cfg.limit_request_field_size} bytes.",
        500: "An internal error occurred; it has been logged.",
        501: "The request's Transfer-Encoding is not supported: send the body chunked, or "
        "with a Content-Length.",
    }
    return messages.get(status) or f"{reason or 'Error'}."


def json_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer in the API's error shape, which ends the
    connection: after a request gunicorn could not parse, where the next one
    would start is unknown."""
    body = json.dumps(error_body(status, message), sort_keys=True, separators=(",", ":")) + "\n"
    headers = {
        "Date": util.http_date(),
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **SECURITY_HEADERS,
        "Content-Security-Policy": API_CSP,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n" + body).encode("latin-1")


class ApiLogger(Logger):
    """Gunicorn's logger (``logger_class`` in gunicorn.conf.py), building an
    access-log line only when the ``gunicorn.access`` logger would write it.

    Gunicorn builds every line (its "atoms": times, headers, the request
    line) whenever any logging configuration is given, and only then lets the
    logger's level drop it. With ``LOG_FORMAT=json`` the configuration keeps
    that logger at WARNING (the app logs each request itself): the lines were
    built for every request and never written.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


class ApiWorker(ThreadWorker):
    """Gunicorn's gthread worker, as the API's clients need it (module docstring)."""

    _quitting = False
    # How often the worker tells the arbiter it is alive, at most.
    NOTIFY_SECONDS = 1.0
    _notified = float("-inf")

    def notify(self) -> None:
        """Gunicorn's heartbeat (a ``utime`` on the worker's temporary file), at
        most once a second. The gthread loop calls it at every wake-up, that is
        once or twice per request, and on a disk-backed ``/tmp`` each call cost
        about as much as a whole ``/healthz``. The arbiter only looks whether
        the file is older than ``timeout`` (minutes), so a second is plenty."""
        now = time.monotonic()
        if now - self._notified >= self.NOTIFY_SECONDS:
            self._notified = now
            super().notify()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _honouring_close(self.wsgi)  # type: ignore[assignment]  # a WSGI app either way; WsgiApp spells environ as a dict

    def handle_quit(self, sig: int, frame: FrameType | None) -> None:
        """Once. Ctrl-C on ``make run`` reaches the worker twice, as SIGINT from
        the terminal and as SIGQUIT from the arbiter: the second, run inside the
        first while that held the thread pool's shutdown lock, waited for the
        lock forever, until the arbiter killed the worker at the end of its
        graceful timeout."""
        if self._quitting:
            return
        self._quitting = True
        super().handle_quit(sig, frame)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Gunicorn's own error handling, its HTML page replaced by JSON."""
        page = _ErrorPage(client)
        super().handle_error(req, page, addr, exc)  # type: ignore[arg-type]  # _ErrorPage has the socket methods gunicorn uses here
        status = page.status()
        if status is None:
            answer = bytes(page.written)  # not a page we know: as gunicorn wrote it
        else:
            code, reason = status
            answer = json_error(code, reason, _message(code, reason, self.cfg))
        try:
            util.write_nonblock(client, answer)
        except Exception:
            self.log.debug("Failed to send error message.")
