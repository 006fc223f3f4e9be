"""A real Celery worker process drives jobs from upload to downloaded stems.

Once on the embedded default (SQLite broker, no Redis), once on a real
``redis-server`` started on a free loopback port (skipped, with the reason
printed, when the binary is absent).
"""

from __future__ import annotations

import io
from pathlib import Path

import soundfile as sf
from flask import Flask

from tests.support.apps import BOTH_DATABASES, make_app, register_and_login
from tests.support.audio import SR
from tests.support.procs import CeleryProcess, job_env, wait_for


def drive_a_job(app: Flask, log_path: Path) -> None:
    """Upload, wait for the end (``GET ?wait=``), download both stems and the zip,
    as a client would."""
    from tests.support.audio import sine_and_clicks, wav_bytes

    client = app.test_client()
    headers = register_and_login(client)
    # The worker announces itself through its heartbeat.
    wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readyz", [log_path])

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
    assert response.json["status"] in ("queued", "running")  # a worker may be quicker
    location = response.headers["Location"]

    def finished() -> dict | None:
        job = client.get(f"{location}?wait=10", headers=headers).json
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    job = wait_for(finished, 90, "the job to finish", [log_path])
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


def drive_a_job_through_a_worker(app: Flask, log_path: Path) -> None:
    """``drive_a_job`` with a real worker started for ``app`` (its data, secret and
    broker: the app's REDIS_URL, else the embedded SQLite one), stopped after."""
    worker = CeleryProcess(log_path, job_env(app))
    try:
        drive_a_job(app, log_path)
    finally:
        worker.stop()


def test_real_worker_on_the_embedded_sqlite_broker(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    assert app.config["CELERY"]["broker_url"].startswith("sqla+sqlite")
    drive_a_job_through_a_worker(app, tmp_path / "worker.log")


@BOTH_DATABASES
def test_real_worker_on_redis(tmp_path: Path, redis_url: str) -> None:
    app = make_app(tmp_path / "data", REDIS_URL=redis_url)
    assert app.config["CELERY"]["broker_url"] == redis_url
    drive_a_job_through_a_worker(app, tmp_path / "worker.log")
