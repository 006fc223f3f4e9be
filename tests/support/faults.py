"""The harness of the fault tests (tests/faults/): an app as the API, its
client and the real workers it starts, with limits short enough that every
fault resolves within a test. Workers run ``tests/support/slow_celery.py``
so hpss jobs last a few seconds: long enough to kill something mid-job."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.records import FINAL_STATUSES, Job
from tests.support.apps import register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import ApiProcess, CeleryProcess, job_env, wait_for

# Short limits so every fault resolves within a test. The visibility timeout
# obeys the startup rules (over 1.25 x the longest hard limit, karaoke's 120 s,
# and over the longest retry countdown, 30 min); Redis alone would redeliver a
# dead worker's job only after it, so every recovery seen here is the app's.
SETTINGS: dict[str, Any] = {
    "SEPARATION_TIME_LIMIT": 60,
    "TRANSCRIPTION_TIME_LIMIT": 60,
    "GENERATION_TIME_LIMIT": 60,
    "VISIBILITY_TIMEOUT": 2000,
    "SEPARATION_WINDOW_SECONDS": 1,
    "MAINTENANCE_INTERVAL_SECONDS": 1,
    "RECONCILE_QUEUED_SECONDS": 5,
}


class Faults:
    """The app (as the API), its client and the workers of one fault test."""

    def __init__(self, app: Flask, tmp_path: Path, settings: dict[str, Any] | None = None) -> None:
        self.app = app
        self.tmp_path = tmp_path
        self.settings = settings or SETTINGS
        self.client: FlaskClient = app.test_client()
        self.headers = register_and_login(self.client)
        self.processes: list[CeleryProcess | ApiProcess] = []

    # -- processes -------------------------------------------------------------

    def env(self, **extra: Any) -> dict[str, str]:
        settings = {key: str(value) for key, value in {**self.settings, **extra}.items()}
        return job_env(self.app, **settings)

    def worker(
        self,
        name: str,
        *,
        delay: float = 0.0,
        queues: str | None = None,
        hostname: str | None = None,
        **env: Any,
    ) -> CeleryProcess:
        """A worker (``--hostname`` ``hostname``, else ``<name>@localhost``)."""
        process = CeleryProcess(
            self.tmp_path / f"{name}.log",
            self.env(FAULT_HPSS_DELAY=delay, **env),
            name=hostname or f"{name}@localhost",
            entry="tests.support.slow_celery",
            **({"queues": queues} if queues else {}),
        )
        self.processes.append(process)
        return process

    def track(self, process: ApiProcess) -> ApiProcess:
        """An API process, killed after the test; its log shows in failures."""
        self.processes.append(process)
        return process

    def beat(self, **env: Any) -> CeleryProcess:
        process = CeleryProcess(self.tmp_path / "beat.log", self.env(**env), command="beat")
        self.processes.append(process)
        return process

    @property
    def logs(self) -> list[Path]:
        return [p.log_path for p in self.processes]

    def wait_ready(self, worker: CeleryProcess, timeout: float = 60) -> None:
        """Until the worker's heartbeat row is written (it consumes by then)."""
        from app.records import WorkerHeartbeat

        def seen() -> bool:
            with self.app.app_context():
                db.session.expire_all()
                return db.session.get(WorkerHeartbeat, worker.name) is not None

        wait_for(seen, timeout, f"{worker.name} to start", self.logs)

    def stop_all(self) -> None:
        # Nothing is checked after a test: no need for a graceful shutdown.
        for process in self.processes:
            if isinstance(process, CeleryProcess):
                process.kill_all()
                process.log.close()
            else:
                process.stop(timeout=1)

    # -- jobs --------------------------------------------------------------------

    def submit(self, seconds: float = 6.0) -> Any:
        return self.client.post(
            "/api/v1/separations",
            data={
                "file": (io.BytesIO(wav_bytes(sine_and_clicks(seconds))), "song.wav"),
                "model": "hpss",
                "output_format": "wav",
            },
            headers=self.headers,
            content_type="multipart/form-data",
        )

    def submit_ok(self, seconds: float = 6.0) -> str:
        response = self.submit(seconds)
        assert response.status_code == 202, response.json
        return str(response.json["id"])

    def job(self, job_id: str) -> Job:
        """The row as it is now (read from SQL, which works whatever Redis does)."""
        with self.app.app_context():
            db.session.expire_all()
            job = db.session.get(Job, job_id)
            assert job is not None
            db.session.expunge(job)
            return job

    def wait_job(self, job_id: str, predicate: Callable[[Job], bool], what: str, timeout: float):
        def check() -> Job | None:
            job = self.job(job_id)
            return job if predicate(job) else None

        return wait_for(check, timeout, what, self.logs)

    def wait_running(self, job_id: str, attempt: int = 1, timeout: float = 60) -> Job:
        """Until the attempt has done some of its work (progress past the start)."""
        return self.wait_job(
            job_id,
            lambda j: j.status == "running" and j.attempts == attempt and j.progress > 0.1,
            f"job {job_id} attempt {attempt} to be mid-run",
            timeout,
        )

    def wait_final(self, job_ids: list[str], timeout: float = 90) -> dict[str, Job]:
        def all_final() -> dict[str, Job] | None:
            rows = {job_id: self.job(job_id) for job_id in job_ids}
            return rows if all(j.status in FINAL_STATUSES for j in rows.values()) else None

        return wait_for(all_final, timeout, f"jobs {job_ids} to end", self.logs)

    def wait_work_cleaned(self, job_id: str, timeout: float = 10) -> None:
        """The attempt removes its work folder and lock just after it records
        the ending, so a client can see the ending a moment before that."""
        work = Path(self.app.config["DATA_DIR"]) / "jobs" / job_id / "work"

        def cleaned() -> bool:
            return not work.exists() or not any(work.iterdir())

        wait_for(cleaned, timeout, f"job {job_id}'s work folder to be cleaned", self.logs)

    def assert_succeeded_once(self, job_id: str) -> dict[str, Any]:
        """Succeeded, as a client sees it, with exactly one committed result."""
        shown = self.client.get(f"/api/v1/jobs/{job_id}", headers=self.headers)
        assert shown.status_code == 200, shown.json
        job = shown.json
        assert job["status"] == "succeeded", job
        results = Path(self.app.config["DATA_DIR"]) / "jobs" / job_id / "results"
        assert [p.name for p in results.iterdir()] == [str(job["attempts"])], job
        self.wait_work_cleaned(job_id)
        for entry in job["result"]["files"]:
            body = self.client.get(entry["url"], headers=self.headers)
            assert body.status_code == 200 and len(body.data) == entry["size"]
        return job
