"""SIGTERM to the API (a deploy): requests in flight finish before it exits.

Gunicorn with the production settings (gunicorn.conf.py) serves a slow upload
that is half sent when the master gets SIGTERM; the rest arrives afterwards
and the client still gets its 202 and a job it can find later.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import ROOT, free_port, wait_for


def _multipart(body: bytes, boundary: str) -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="model"\r\n\r\nhpss\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="song.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, json.loads(rest[:length])


def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app = make_app(data_dir)  # migrates the database
    headers = register_and_login(app.test_client())
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY")
    }
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": app.config["SECRET_KEY"],  # the token above must verify
            "PORT": str(port),
            "HOST": "127.0.0.1",
            # One process: the upload surely reaches the worker that answered
            # /healthz (another could still be loading the app when SIGTERM
            # comes, and a connection it never accepted is reset).
            "WEB_CONCURRENCY": "1",
        }
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            except requests.RequestException:
                return False

        # Ready means a worker has loaded the app: the listening socket is open
        # (and takes connections into its backlog) before that.
        wait_for(up, 60, "gunicorn to serve /healthz", [log_path])
        boundary = "shutdown-test-boundary"
        body = _multipart(wav_bytes(sine_and_clicks(seconds=3.0)), boundary)
        half = len(body) // 2
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            (
                "POST /api/v1/separations HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + body[:half]
        )
        time.sleep(1.0)  # the request is being read by a worker thread
        os.kill(server.pid, signal.SIGTERM)  # the master, as a process manager does
        time.sleep(1.0)
        assert server.poll() is None, "gunicorn quit with a request in flight"
        sock.sendall(body[half:])
        try:
            status, job = _read_response(sock)
        except OSError as exc:
            raise AssertionError(log_path.read_text()[-3000:]) from exc
        sock.close()
        assert status == 202, job
        server.wait(timeout=40)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, log_path.read_text()[-3000:]
    with app.app_context():
        found = app.test_client().get(f"/api/v1/jobs/{job['id']}", headers=headers)
    assert found.status_code == 200
    assert found.json["status"] == "queued"
    assert found.json["input"]["duration"] > 2.9
