"""The rules every job attempt follows, tested without HTTP or a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from app.errors import ServiceError
from app.extensions import db
from app.records import Job
from app.services import jobs, runner
from tests.support.apps import BOTH_DATABASES, fresh_job

pytestmark = BOTH_DATABASES


def test_cancel_stops_a_running_job_at_its_next_progress_report(
    queued_app: Flask, queued_job: str
) -> None:
    seen: list[float] = []

    def work(job, attempt, report):
        report(0.1, "working", force=True)
        seen.append(0.1)
        jobs.finish(job.id, "canceled")  # what POST /cancel does meanwhile
        report(0.2, force=True)
        seen.append(0.2)  # never reached
        return {}

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "canceled"
        job = fresh_job(queued_job)
        assert job.status == "canceled" and job.result is None
        assert seen == [0.1]
        work_root = Path(queued_app.config["DATA_DIR"]) / "jobs" / queued_job / "work"
        assert list(work_root.glob("*")) == []


def test_progress_writes_are_throttled(queued_app: Flask, queued_job: str) -> None:
    writes: list[float] = []

    def work(job, attempt, report):
        from sqlalchemy import event

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(conn, cursor, statement, *args):
            if statement.startswith("UPDATE jobs SET progress"):
                writes.append(1)

        report.stage("working", 0.0)
        for i in range(1000):
            report(i / 1000)
        event.remove(db.engine, "before_cursor_execute", count)
        return {"files": []}

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "succeeded"
        assert len(writes) <= 3
        job = fresh_job(queued_job)
        assert job.progress == 1.0 and job.stage == "done"


def test_failures_end_failed_with_a_code(queued_app: Flask, queued_job: str) -> None:
    def work(job, attempt, report):
        raise ServiceError("The model is not here.", code="model_unavailable")

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        job = fresh_job(queued_job)
        assert job.status == "failed"
        assert job.error == {"code": "model_unavailable", "message": "The model is not here."}
        assert job.finished_at is not None


def test_unexpected_errors_are_logged_not_shown(
    queued_app: Flask, queued_job: str, caplog: pytest.LogCaptureFixture
) -> None:
    def work(job, attempt, report):
        raise KeyError("internal detail")

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        job = fresh_job(queued_job)
        assert job.error is not None
        assert job.error["code"] == "internal_error"
        assert "internal detail" not in job.error["message"]
    assert "internal detail" in caplog.text


def test_a_finished_job_is_not_run_again(queued_app: Flask, queued_job: str) -> None:
    calls: list[int] = []

    def work(job, attempt, report):
        calls.append(attempt.number)
        return {"files": []}

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "succeeded"
        assert runner.execute(queued_job, work) is None  # a redelivered message
        assert calls == [1]
        assert fresh_job(queued_job).attempts == 1


def test_a_superseded_attempt_cannot_commit(queued_app: Flask, queued_job: str) -> None:
    def work(job, attempt, report):
        # Another attempt took the job over meanwhile (a redelivery after a lost worker).
        db.session.execute(
            db.update(Job).where(Job.id == job.id).values(attempts=attempt.number + 1)
        )
        db.session.commit()
        (attempt.workdir / "x.wav").write_bytes(b"partial")
        return {"files": []}

    with queued_app.app_context():
        # It ended nothing: the attempt that took over reports how the job ends.
        assert runner.execute(queued_job, work) is None
        job = fresh_job(queued_job)
        assert job.status == "running" and job.result is None
        results = Path(queued_app.config["DATA_DIR"]) / "jobs" / queued_job / "results"
        assert list(results.glob("*/x.wav")) == []


def test_too_many_attempts_fail_the_job(queued_app: Flask, queued_job: str) -> None:
    with queued_app.app_context():
        db.session.execute(db.update(Job).where(Job.id == queued_job).values(attempts=3))
        db.session.commit()
        assert runner.execute(queued_job, lambda *a: {}) is None
        job = fresh_job(queued_job)
        assert job.status == "failed" and job.error["code"] == "worker_lost"
