"""``make run`` itself: ``python -m app.embedded`` as a user starts it.

One API process, a job worker and a webhook worker on a fresh DATA_DIR; the
test talks HTTP to it like curl would: a job runs end to end, login attempts
are limited across the whole server (one API process, so the in-memory
counters are exact), and Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import ROOT, free_port, wait_for


def test_make_run_serves_jobs_limits_logins_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "LOGIN_RATE_LIMIT": "3/minute",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("REDIS_URL", "WEB_CONCURRENCY", "CORS_ORIGINS"):
        env.pop(name, None)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.embedded"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: "Press Ctrl-C to stop." in log_path.read_text(), 90, "make run", [log_path]
        )
        assert f"http://localhost:{port}/docs" in log_path.read_text()

        account = {"email": "run@example.com", "password": "a long enough password"}
        assert requests.post(f"{base}/api/v1/auth/register", json=account).status_code == 201
        token = requests.post(f"{base}/api/v1/auth/login", json=account).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        created = requests.post(
            f"{base}/api/v1/separations",
            headers=headers,
            files={"file": ("song.wav", wav_bytes(sine_and_clicks(seconds=2.0)))},
            data={"model": "hpss"},
        )
        assert created.status_code == 202, created.text
        job_url = base + created.headers["Location"]

        def finished() -> dict | None:
            job = requests.get(job_url, headers=headers).json()
            return job if job["status"] in ("succeeded", "failed", "canceled") else None

        job = wait_for(finished, 90, "the job to end", [log_path], interval=0.3)
        assert job["status"] == "succeeded", job
        assert {f["name"] for f in job["result"]["files"]} == {"harmonic.wav", "percussive.wav"}

        # Jobs and webhook deliveries have a worker each: neither waits for the other.
        expected = {
            "embedded": {"separation", "transcription", "generation"},
            "webhooks": {"webhooks"},
        }

        def workers() -> dict[str, set[str]] | None:
            alive = requests.get(f"{base}/readyz").json()["checks"]["workers"]["alive"]
            queues = {w["hostname"].split("@")[0]: set(w["queues"]) for w in alive}
            return queues if queues == expected else None

        wait_for(workers, 30, "a job worker and a webhook worker", [log_path])

        # Two more logins (3/minute) pass, then every API thread answers 429.
        wrong = {**account, "password": "not the password at all"}
        codes = [
            requests.post(f"{base}/api/v1/auth/login", json=wrong).status_code for _ in range(6)
        ]
        assert codes[:2] == [401, 401], codes
        assert set(codes[2:]) == {429}, codes
        limited = requests.post(f"{base}/api/v1/auth/login", json=wrong)
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) > 0
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError("make run did not stop on Ctrl-C within 60 s") from None
    assert process.returncode == 0, log_path.read_text()[-3000:]
    time.sleep(0.5)
    leftovers = subprocess.run(
        ["pgrep", "-s", str(process.pid)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
