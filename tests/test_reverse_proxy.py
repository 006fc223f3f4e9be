"""The reverse proxy compose.yaml puts in front of gunicorn (deploy/nginx/),
with the shipped configuration, in front of the service as ``make run`` starts it.

Threat: slowloris. gunicorn's gthread workers give a connection a thread while
they read its request, so clients sending headers or a body a byte a second
hold every thread and nobody else is answered. Through the proxy such clients
hold nginx connections only: headers that take too long are cut off, and a
body goes to gunicorn once all of it has arrived. Also here: the errors nginx
answers itself are JSON in the API's error shape, and an event stream passes
each event through as the API writes it.

nginx runs unprivileged (tests/support/proxy.py); without it these tests skip.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.apps import make_app
from tests.support.procs import child_pids, free_port, wait_for
from tests.support.proxy import NginxProxy, directive, nginx_binary, seconds

SLOW_CLIENTS = 40  # half trickle headers, half a body


@pytest.fixture
def nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip(
            "nginx is not installed (apt-get install nginx); "
            "the reverse proxy tests need it and were skipped"
        )
    return binary


@contextlib.contextmanager
def running(proxy: NginxProxy) -> Iterator[NginxProxy]:
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, Any, bytes]:
    """Send raw bytes (requests would refuse to send most of these) and read
    one response: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


def assert_error(answer: tuple[int, Any, bytes], status: int, code: str) -> dict[str, Any]:
    got_status, headers, body = answer
    assert got_status == status, (got_status, body[:300])
    assert headers["Content-Type"] == "application/json", headers["Content-Type"]
    error = json.loads(body)
    assert set(error) == {"code", "status", "message"}, error
    assert error["code"] == code and error["status"] == status, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", *headers, "", ""]
    return "\r\n".join(lines).encode()


def post_head(path: str, length: int, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Length: {length}", *headers]
    return "\r\n".join([*lines, "", ""]).encode()


# --------------------------------------------------------------------------- nginx's own errors


def test_errors_nginx_answers_itself_are_json_in_the_service_shape(
    tmp_path: Path, nginx: str
) -> None:
    """Nothing listens upstream: every answer here comes from nginx."""
    limit = make_app(tmp_path / "data", MAX_UPLOAD_MB=1).config["MAX_CONTENT_LENGTH"]
    dead = f"127.0.0.1:{free_port()}"
    with running(NginxProxy(tmp_path / "nginx", dead, MAX_UPLOAD_MB="1")) as proxy:
        port = proxy.port
        answer = exchange(port, get("/healthz"))
        assert_error(answer, 502, "bad_gateway")
        assert answer[1]["Retry-After"] == "5"
        # The image's mime.types would give an error under .../vocals.wav audio/wav.
        assert_error(exchange(port, get("/api/v1/jobs/x/files/vocals.wav")), 502, "bad_gateway")

        # The body limit is the API's own MAX_CONTENT_LENGTH to the byte
        # (MAX_UPLOAD_MB MiB + 64 KiB): one byte more is refused from the
        # Content-Length alone, before any of the body is read ...
        too_large = exchange(port, post_head("/api/v1/separations", limit + 1))
        error = assert_error(too_large, 413, "file_too_large")
        assert "1 MB" in error["message"]
        # ... and exactly the limit is read and passed on (to nobody, here).
        whole = post_head("/api/v1/separations", limit) + b"x" * limit
        assert_error(exchange(port, whole), 502, "bad_gateway")

        assert_error(exchange(port, b"NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request")
        assert_error(exchange(port, get("/" + "a" * 9000)), 414, "uri_too_long")
        assert_error(exchange(port, get("/healthz", "X-Big: " + "a" * 9000)), 431, "headers_too_large")  # fmt: skip
        assert_error(
            exchange(port, get("/healthz", "Transfer-Encoding: gzip")), 501, "not_implemented"
        )

        # Requests per client address: each of these is waiting for its body.
        allowed = int(directive(proxy.config, "limit_conn").split()[1])
        waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(allowed)]
        try:
            for sock in waiting:
                sock.sendall(post_head("/api/v1/separations", 10))
            refused = wait_for(
                lambda: (a := exchange(port, get("/healthz")))[0] == 429 and a,
                5,
                "the per-address connection limit",
                [proxy.error_log],
                interval=0.05,
            )
            assert_error(refused, 429, "too_many_connections")
            assert refused[1]["Retry-After"] == "5"
        finally:
            for sock in waiting:
                sock.close()
        wait_for(
            lambda: exchange(port, get("/healthz"))[0] == 502,
            5,
            "the limit to free up",
            interval=0.05,
        )


# --------------------------------------------------------------------------- slowloris


class Trickler(threading.Thread):
    """A slowloris client: ``opening`` at once, then a byte a second for as long
    as the server keeps the connection; when it hangs up, another connection."""

    def __init__(self, port: int, opening: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.opening = opening
        self.stop = stop
        self.connected = threading.Event()
        self.lifetimes: list[float] = []  # of each connection the server ended
        self.answers: list[bytes] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                self.stop.wait(0.5)
                continue
            began = time.monotonic()
            with sock:
                try:
                    sock.sendall(self.opening)
                    self.connected.set()
                    while not self.stop.wait(1.0):
                        if select.select([sock], [], [], 0)[0]:
                            data = sock.recv(65536)
                            if data:
                                self.answers.append(data)
                            raise ConnectionResetError("the server ended the connection")
                        sock.sendall(b"a")
                except OSError:
                    self.lifetimes.append(time.monotonic() - began)


@contextlib.contextmanager
def slow_clients(
    port: int, header_clients: int, body_clients: int = 0, authorization: str = ""
) -> Iterator[list[Trickler]]:
    """Clients trickling headers (never ending them) and clients that send
    the headers of an upload, then its body a byte a second. The uploads are
    authenticated (anyone can register), so the API would read their bodies."""
    stop = threading.Event()
    header = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    upload = post_head(
        "/api/v1/separations",
        100_000,
        "Content-Type: multipart/form-data; boundary=slow",
        f"Authorization: {authorization}",
    )
    clients = [Trickler(port, header, stop) for _ in range(header_clients)]
    clients += [Trickler(port, upload, stop) for _ in range(body_clients)]
    for client in clients:
        client.start()
    try:
        for client in clients:
            assert client.connected.wait(10), "a slow client could not connect"
        time.sleep(2)  # every one has sent a byte or two of what follows
        yield clients
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=10)


def measure(url: str, headers: dict[str, str], duration: float) -> tuple[list[float], list[str]]:
    """Latencies of /healthz and an authenticated GET /api/v1/jobs, each on a
    new connection (a new client), for ``duration`` seconds; and the failures."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        for path, extra in (("/healthz", {}), ("/api/v1/jobs", headers)):
            began = time.monotonic()
            try:
                response = requests.get(url + path, headers=extra, timeout=5)
            except requests.RequestException as exc:
                failures.append(f"{path}: {exc!r}")
                continue
            latencies.append(time.monotonic() - began)
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code} {response.text[:200]}")
        time.sleep(0.02)
    return latencies, failures


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def test_slow_clients_through_the_proxy_leave_the_api_answering(
    tmp_path: Path, nginx: str, live: Any
) -> None:
    """Fewer gunicorn threads than slow bodies: had the proxy passed one on
    before it had all of it, the threads would be gone and the API silent."""
    threads = 8
    service = live(GUNICORN_THREADS=str(threads))
    headers = service.register()
    upstream = f"127.0.0.1:{service.port}"
    with running(NginxProxy(tmp_path / "nginx", upstream)) as proxy:
        header_timeout = seconds(directive(proxy.config, "client_header_timeout"))
        half = SLOW_CLIENTS // 2
        with slow_clients(proxy.port, half, half, headers["Authorization"]) as clients:
            latencies, failures = measure(proxy.url, headers, 10)
            # Headers must be complete within client_header_timeout, however
            # steadily they trickle: each such connection is cut then.
            header_clients = clients[:half]
            wait_for(
                lambda: all(c.lifetimes for c in header_clients),
                header_timeout + 5,
                "nginx to cut off the slow headers",
                [proxy.error_log],
            )
            lifetimes = [t for c in header_clients for t in c.lifetimes]
            assert all(header_timeout - 1 < t < header_timeout + 3 for t in lifetimes), lifetimes
            # A trickling body never pauses for client_body_timeout: nginx holds it.
            for client in clients[half:]:
                assert client.lifetimes == [] and client.answers == [], (
                    client.lifetimes,
                    client.answers,
                )
        assert not failures, failures[:10]
        assert len(latencies) > 50, len(latencies)
        assert p99(latencies) < 1.0, sorted(latencies)[-10:]

    # Without the proxy: as many slow headers as gunicorn has threads, and
    # /healthz gets no answer until they go.
    with slow_clients(service.port, threads + 2), pytest.raises(requests.Timeout):
        requests.get(f"{service.url}/healthz", timeout=2)
    wait_for(
        lambda: requests.get(f"{service.url}/healthz", timeout=5).ok,
        30,
        "gunicorn to answer again",
        [service.log_path],
    )


# --------------------------------------------------------------------------- event streams


def _celery_worker(service: Any) -> int:
    """The Celery worker ``make run`` started beside gunicorn."""
    for pid in child_pids(service.process.pid):
        with contextlib.suppress(OSError):
            if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError("make run started no celery worker")


def test_event_stream_passes_through_the_proxy_as_it_is_written(
    tmp_path: Path, nginx: str, live: Any, song_wav: bytes
) -> None:
    """The worker is paused so the job stays queued and its stream stays open:
    each event must arrive while the stream is open, not when a buffer (or a
    compressed block) fills or the stream ends."""
    service = live()
    headers = service.register()
    worker = _celery_worker(service)
    with running(NginxProxy(tmp_path / "nginx", f"127.0.0.1:{service.port}")) as proxy:
        os.kill(worker, signal.SIGSTOP)
        try:
            # An upload through the proxy: buffered whole, then passed on intact.
            created = requests.post(
                f"{proxy.url}/api/v1/analyses",
                headers=headers,
                files={"file": ("song.wav", song_wav, "audio/wav")},
                timeout=30,
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

            stream = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            began = time.monotonic()
            # As a browser asks: compressing the stream would hold events back.
            asks = {**headers, "Accept-Encoding": "gzip"}
            stream.request("GET", f"/api/v1/jobs/{job_id}/events", headers=asks)
            response = stream.getresponse()
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.readline() == b"retry: 3000\n"
            assert time.monotonic() - began < 1.0
            assert response.readline() == b"\n"
            assert response.readline() == b"event: status\n"
            response.readline()  # id:
            first = json.loads(response.readline().removeprefix(b"data: "))
            assert first["status"] == "queued"
            assert time.monotonic() - began < 1.0

            canceled = requests.post(
                f"{proxy.url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=10
            )
            assert canceled.status_code == 200, canceled.text
            rest = response.read().decode()  # the stream ends after the final status
            assert '"status":"canceled"' in rest, rest
            stream.close()
        finally:
            os.kill(worker, signal.SIGCONT)
