"""HTTP as a client sees it on the wire, through the server ``make run`` starts.

What the test client cannot show: whether a connection may be reused after an
answer, what gunicorn answers itself before the app sees a request, and how a
body without Content-Length is held to its limit. Raw sockets, because a
client library would hide the very bytes these tests are about.
"""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.live import PASSWORD, LiveService, live_service

EMAIL = "protocol@example.com"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One server for the module: every test here only sends requests, and
    starting and stopping ``make run`` costs far more than the tests do."""
    with live_service(tmp_path_factory.mktemp("protocol"), MAX_UPLOAD_MB="1") as service:
        yield service


@pytest.fixture(scope="module")
def auth(service: LiveService) -> str:
    return service.register(EMAIL)["Authorization"]


# --------------------------------------------------------------------------- wire


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(service: LiveService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=30)


def read_reply(sock: socket.socket) -> Reply:
    """One response, framed by its Content-Length (every answer here has one),
    leaving the connection where the next response would start."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {buffer!r}"
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of a response"
        body += chunk
    return Reply(int(status_line.split(" ")[1]), headers, body[:length])


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server ends the connection (FIN or reset) within ``within`` s."""
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def send_until_answered(sock: socket.socket, pieces: Iterable[bytes]) -> None:
    """Send ``pieces`` but stop once the server has answered, as a client cut
    off mid-body does; a server that closed the connection ends it too."""
    answered = select.poll()
    answered.register(sock, select.POLLIN)
    try:
        for piece in pieces:
            sock.sendall(piece)
            if answered.poll(0):
                return
    except (BrokenPipeError, ConnectionResetError):
        pass


def chunked(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def multipart(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart/form-data body (boundary ``b0und``) of (name, data, filename)."""
    body = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--b0und\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + b"--b0und--\r\n"


UPLOAD = "Content-Type: multipart/form-data; boundary=b0und"


# --------------------------------------------------------------------------- 413


def test_a_body_refused_before_it_was_read_closes_the_connection(
    service: LiveService, auth: str
) -> None:
    """Gunicorn cannot reuse a connection whose request body is still on the
    way: the answer must say so, or the client's next request on it fails."""
    # Content-Length over the upload limit: refused before a byte is read.
    sock = connect(service)
    head = request_head(
        "POST", "/api/v1/separations", f"Authorization: {auth}", UPLOAD,
        f"Content-Length: {3 * MB}",
    )  # fmt: skip
    sock.sendall(head + b"--b0und\r\n")
    reply = read_reply(sock)
    assert (reply.status, reply.json()["code"]) == (413, "file_too_large")
    assert reply.headers["connection"] == "close"
    assert closed_by_server(sock, within=3)
    sock.close()

    # Too many parts: refused after the first of the body; the rest never comes.
    fields = multipart(*[(f"f{i}", b"x", None) for i in range(40)])
    declared = len(fields) + 900 * 1024  # under MAX_CONTENT_LENGTH
    sock = connect(service)
    head = request_head(
        "POST", "/api/v1/separations", f"Authorization: {auth}", UPLOAD,
        f"Content-Length: {declared}",
    )  # fmt: skip
    sock.sendall(head + fields[: -len(b"--b0und--\r\n")] + bytes(200 * 1024))
    reply = read_reply(sock)
    assert (reply.status, reply.json()["code"]) == (413, "form_too_large")
    assert reply.headers["connection"] == "close"
    assert closed_by_server(sock, within=3)
    sock.close()

    # No token: refused before the upload is read, whatever its size.
    sock = connect(service)
    head = request_head("POST", "/api/v1/separations", UPLOAD, f"Content-Length: {900 * 1024}")
    sock.sendall(head + b"--b0und\r\n")
    reply = read_reply(sock)
    assert (reply.status, reply.json()["code"]) == (401, "unauthorized")
    assert reply.headers["connection"] == "close"
    sock.close()

    # A refusal after the whole body was read keeps the connection open: the
    # next request on it is answered.
    sock = connect(service)
    body = multipart(("file", b"just some text\n", "notes.txt"))
    head = request_head(
        "POST", "/api/v1/separations", f"Authorization: {auth}", UPLOAD,
        f"Content-Length: {len(body)}",
    )  # fmt: skip
    sock.sendall(head + body)
    reply = read_reply(sock)
    assert (reply.status, reply.json()["code"]) == (415, "unsupported_media_type")
    assert reply.headers["connection"] == "keep-alive"
    sock.sendall(request_head("GET", "/api/v1/auth/me", f"Authorization: {auth}"))
    assert read_reply(sock).status == 200
    sock.close()


# --------------------------------------------------------------------------- gunicorn's own


GARBLED = [
    pytest.param(
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        414, "uri_too_long", id="request-line-over-4094-bytes",
    ),
    pytest.param(
        request_head("GET", "/healthz", *[f"X-Header-{i}: 1" for i in range(101)]),
        431, "request_header_fields_too_large", id="101-headers",
    ),
    pytest.param(
        request_head("GET", "/healthz", "X-Big: " + "a" * 9000),
        431, "request_header_fields_too_large", id="header-over-8190-bytes",
    ),
    pytest.param(b"NONSENSE\r\n\r\n", 400, "bad_request", id="invalid-request-line"),
    pytest.param(
        request_head("GET", "/healthz", "No colon here"), 400, "bad_request", id="invalid-header"
    ),
    pytest.param(
        request_head("POST", "/api/v1/auth/login", "Transfer-Encoding: zstd-please"),
        501, "not_implemented", id="unknown-transfer-coding",
    ),
    pytest.param(
        request_head("POST", "/api/v1/auth/login", "Expect: 200-ok", "Content-Length: 2"),
        417, "expectation_failed", id="unknown-expectation",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "code"), GARBLED)
def test_requests_the_server_refuses_itself_get_json_errors(
    service: LiveService, raw: bytes, status: int, code: str
) -> None:
    """Gunicorn answers these before the app sees them; a client must still be
    able to parse the answer as the API's one error shape."""
    sock = connect(service)
    sock.sendall(raw)
    reply = read_reply(sock)
    assert reply.status == status
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    body = reply.json()
    assert set(body) == {"code", "status", "message"}
    assert (body["code"], body["status"]) == (code, status)
    assert body["message"]
    assert closed_by_server(sock, within=3)
    sock.close()


def test_a_failure_inside_the_server_is_a_json_500() -> None:
    """Gunicorn's own failures (or an exception escaping the app) cannot be
    provoked from outside: the worker's handler is called as gunicorn calls it."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from app.serving import ApiWorker

    cfg = Config()
    worker = ApiWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker.handle_error(None, ours, ("127.0.0.1", 1), RuntimeError("boom"))
        reply = read_reply(theirs)
    worker.tmp.close()
    assert reply.status == 500
    assert (reply.headers["content-type"], reply.headers["connection"]) == (
        "application/json",
        "close",
    )
    assert reply.json() == {
        "code": "internal_error",
        "status": 500,
        "message": "An internal error occurred; it has been logged.",
    }


# --------------------------------------------------------------------------- chunked bodies


def login(service: LiveService, body: bytes, *framing: str) -> Reply:
    sock = connect(service)
    head = request_head("POST", "/api/v1/auth/login", "Content-Type: application/json", *framing)
    sock.sendall(head)
    pieces = chunked(body) if "Transfer-Encoding: chunked" in framing else [body]
    send_until_answered(sock, pieces)
    try:
        return read_reply(sock)
    finally:
        sock.close()


def test_a_chunked_json_body_over_the_limit_is_refused(service: LiveService, auth: str) -> None:
    """Without Content-Length the limit can only be found while reading: a body
    over it must be refused as a whole, not parsed from its first megabyte."""
    account = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
    padded = account + b" " * (2 * MB)  # valid JSON in its first megabyte

    sized = login(service, padded, f"Content-Length: {len(padded)}")
    assert (sized.status, sized.json()["code"]) == (413, "body_too_large")

    streamed = login(service, padded, "Transfer-Encoding: chunked")
    assert streamed.status == 413, streamed.body
    assert streamed.json() == sized.json()
    assert streamed.headers["connection"] == "close"

    small = login(service, account, "Transfer-Encoding: chunked")
    assert small.status == 200, small.body
    assert small.json()["access_token"]
