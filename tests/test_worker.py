"""A real Celery worker process drives jobs from upload to downloaded stems.

Once on the embedded default (SQLite broker, no Redis), once on a real
``redis-server`` started on a free loopback port (skipped, with the reason
printed, when the binary is absent).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
from flask import Flask

from tests.conftest import SR, make_app, register_and_login

ROOT = Path(__file__).resolve().parent.parent


def start_worker(
    app: Flask, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATA_DIR": app.config["DATA_DIR"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "WORKER_HEARTBEAT_SECONDS": "1",
        "LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    if not (extra_env or {}).get("REDIS_URL"):
        env.pop("REDIS_URL", None)  # the embedded default, whatever the caller's shell says
    cmd = [
        sys.executable, "-m", "celery", "-A", "celery_worker", "worker",
        "-Q", "separation,transcription,generation", "--concurrency", "1",
        "--hostname", f"test-{os.getpid()}@localhost", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(predicate, timeout: float, what: str, log_path: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    log = log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{log}")


def drive_a_job(app: Flask, log_path: Path) -> None:
    """Upload, poll until done, download both stems and the zip, as a client would."""
    from tests.conftest import sine_and_clicks, wav_bytes

    client = app.test_client()
    headers = register_and_login(client)
    # The worker announces itself through its heartbeat.
    wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readyz", log_path)

    response = client.post(
        "/api/v1/separations",
        data={
            "file": (io.BytesIO(wav_bytes(sine_and_clicks())), "song.wav"),
            "output_format": "flac",
            "model": "hpss",
        },
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    assert response.json["status"] == "queued"
    location = response.headers["Location"]

    def finished() -> dict | None:
        job = client.get(location, headers=headers).json
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    job = wait_for(finished, 90, "the job to finish", log_path)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["metrics"]["queue_seconds"] >= 0
    for entry in job["result"]["files"]:
        body = client.get(entry["url"], headers=headers)
        assert body.status_code == 200
        data, sr = sf.read(io.BytesIO(body.data), always_2d=True)
        assert sr == SR and data.shape == (2 * SR, 2)
    archive = client.get(job["result"]["archive_url"], headers=headers)
    assert archive.status_code == 200 and len(archive.data) > 1000


def test_real_worker_on_the_embedded_sqlite_broker(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    assert app.config["CELERY"]["broker_url"].startswith("sqla+sqlite")
    log_path = tmp_path / "worker.log"
    worker = start_worker(app, log_path)
    try:
        drive_a_job(app, log_path)
    finally:
        stop(worker)


def test_real_worker_on_redis(tmp_path: Path, redis_url: str) -> None:
    app = make_app(tmp_path / "data", REDIS_URL=redis_url)
    assert app.config["CELERY"]["broker_url"] == redis_url
    log_path = tmp_path / "worker.log"
    worker = start_worker(app, log_path, {"REDIS_URL": redis_url})
    try:
        drive_a_job(app, log_path)
    finally:
        stop(worker)
