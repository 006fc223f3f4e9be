"""Waiting for a job in one request: ``GET /jobs/{id}?wait=N`` and ``Prefer:
wait=N`` (RFC 7240) on the job and on job creation.

Jobs are driven from another thread with the functions a worker uses
(``runner.execute``, ``jobs.finish``); the waiting request learns of the end
through a local notice (app/localbus.py), or by polling the row when notices
are off.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.records import Job
from app.services import events, runner
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login, submit_separation


def finish_later(app: Flask, job_id: str, delay: float) -> threading.Thread:
    """Run the job's attempt in a thread after ``delay``, the way a worker does."""

    def work(job, attempt, report):
        report(0.5, "working", force=True)
        return {"files": []}

    def run() -> None:
        time.sleep(delay)
        with app.app_context():
            runner.execute(job_id, work)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def timed_get(app: Flask, url: str, headers: dict[str, str]) -> tuple[Any, float]:
    started = time.monotonic()
    response = app.test_client().get(url, headers=headers)
    return response, time.monotonic() - started


@BOTH_DATABASES
@pytest.mark.parametrize("notices", [True, False], ids=["local-notices", "polling"])
def test_wait_answers_when_the_job_ends(
    tmp_path, song_wav: bytes, notices: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With notices, the row is otherwise re-read only every 2 minutes: an answer
    # within 30 s proves the worker's notice woke the request.
    monkeypatch.setattr(events, "BACKSTOP_SECONDS", 120.0)
    app = make_app(tmp_path / "data", LOCAL_NOTICES=notices, SSE_POLL_SECONDS=0.1)
    assert bool(app.config["NOTIFY_DIR"]) is notices
    headers, job_id = submit_separation(app, song_wav)
    driver = finish_later(app, job_id, 0.5)
    response, seconds = timed_get(app, f"/api/v1/jobs/{job_id}?wait=60", headers)
    driver.join(10)
    assert response.status_code == 200, response.json
    assert response.json["status"] == "succeeded"
    assert response.json["progress"] == 1.0
    assert "Preference-Applied" not in response.headers  # asked by query, not Prefer
    assert seconds < 30  # answered at the end of the job, not at the end of the wait
    # The same job, the same answer as without waiting.
    plain = app.test_client().get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert plain.json == response.json


@BOTH_DATABASES
def test_a_wait_that_runs_out_answers_the_job_as_it_is(queued_app: Flask, song_wav: bytes) -> None:
    headers, job_id = submit_separation(queued_app, song_wav)
    response, seconds = timed_get(queued_app, f"/api/v1/jobs/{job_id}?wait=0.3", headers)
    assert response.status_code == 200
    assert response.json["status"] == "queued"
    assert seconds >= 0.3
    # Waiting holds no database connection (the pool is free for others).
    with queued_app.app_context():
        assert db.engine.pool.checkedout() == 0


@BOTH_DATABASES
def test_prefer_wait_on_the_job_and_on_creation(queued_app: Flask, song_wav: bytes) -> None:
    headers, job_id = submit_separation(queued_app, song_wav)
    driver = finish_later(queued_app, job_id, 0.3)
    prefer = {**headers, "Prefer": "respond-async, wait=60"}
    response, seconds = timed_get(queued_app, f"/api/v1/jobs/{job_id}", prefer)
    driver.join(10)
    assert response.json["status"] == "succeeded" and seconds < 30
    assert response.headers["Preference-Applied"] == "wait=60"

    # On creation, the 202 carries the job as it is when the wait ends.
    created = queued_app.test_client().post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        headers={**headers, "Prefer": "wait=0.2"},
        content_type="multipart/form-data",
    )
    assert created.status_code == 202
    assert created.json["status"] == "queued"  # no worker here
    assert created.headers["Preference-Applied"] == "wait=0.2"
    assert created.headers["Location"].endswith(created.json["id"])


@BOTH_DATABASES
def test_creation_answers_the_ended_job(app: Flask, song_wav: bytes) -> None:
    """Eager jobs here: already ended when the wait begins."""
    headers = register_and_login(app.test_client())
    separation = app.test_client().post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        headers={**headers, "Prefer": "wait=5"},
        content_type="multipart/form-data",
    )
    assert separation.status_code == 202
    assert separation.json["status"] == "succeeded"
    assert separation.headers["Preference-Applied"] == "wait=5"


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", "3601"])
def test_bad_waits_are_refused(queued_app: Flask, song_wav: bytes, value: str) -> None:
    headers, job_id = submit_separation(queued_app, song_wav)
    response = queued_app.test_client().get(f"/api/v1/jobs/{job_id}?wait={value}", headers=headers)
    assert response.status_code == 422
    assert set(response.json) >= {"code", "status", "message", "errors"}
    assert "wait" in str(response.json["errors"])


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=-5", "wait", "return=minimal", "wait=nan"])
def test_preferences_that_do_not_parse_are_ignored(
    queued_app: Flask, song_wav: bytes, prefer: str
) -> None:
    headers, job_id = submit_separation(queued_app, song_wav)
    response, seconds = timed_get(
        queued_app, f"/api/v1/jobs/{job_id}?_=12345", {**headers, "Prefer": prefer}
    )
    assert response.status_code == 200 and response.json["status"] == "queued"
    assert "Preference-Applied" not in response.headers
    assert seconds < 30


@BOTH_DATABASES
def test_waits_are_capped(tmp_path, song_wav: bytes) -> None:
    app = make_app(tmp_path / "data", MAX_WAIT_SECONDS=0.2)
    headers, job_id = submit_separation(app, song_wav)
    response, seconds = timed_get(app, f"/api/v1/jobs/{job_id}", {**headers, "Prefer": "wait=600"})
    assert response.json["status"] == "queued" and seconds < 30
    assert response.headers["Preference-Applied"] == "wait=0.2"

    # Past MAX_WAITING_REQUESTS waiting in this process, or MAX_WAITING_PER_USER
    # of this user's, a wait is refused at once with Retry-After (a client
    # looping on ?wait= would otherwise spin).
    for limits, status, code in (
        ({"MAX_WAITING_REQUESTS": 0}, 503, "server_busy"),
        ({"MAX_WAITING_PER_USER": 0}, 429, "too_many_waiting_requests"),
    ):
        app.config.update(MAX_WAIT_SECONDS=60, MAX_WAITING_REQUESTS=24, MAX_WAITING_PER_USER=8)
        app.config.update(limits)
        for query, extra in (("?wait=60", {}), ("", {"Prefer": "wait=60"})):
            url = f"/api/v1/jobs/{job_id}{query}"
            response, seconds = timed_get(app, url, {**headers, **extra})
            assert response.status_code == status and response.json["code"] == code
            assert int(response.headers["Retry-After"]) > 0
            assert seconds < 30
    # A job just created is answered at once instead, without the preference applied.
    created = app.test_client().post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        headers={**headers, "Prefer": "wait=60"},
        content_type="multipart/form-data",
    )
    assert created.status_code == 202 and "Preference-Applied" not in created.headers
    assert events.waiting() == 0


@BOTH_DATABASES
def test_waiting_on_someone_elses_or_a_deleted_job(queued_app: Flask, song_wav: bytes) -> None:
    headers, job_id = submit_separation(queued_app, song_wav)
    other = register_and_login(queued_app.test_client())
    theirs, seconds = timed_get(queued_app, f"/api/v1/jobs/{job_id}?wait=60", other)
    assert theirs.status_code == 404 and seconds < 30

    def delete_later() -> None:
        time.sleep(0.3)
        with queued_app.app_context():
            job = db.session.get(Job, job_id)
            db.session.delete(job)
            db.session.commit()
            events.publish(job_id)

    threading.Thread(target=delete_later, daemon=True).start()
    gone, seconds = timed_get(queued_app, f"/api/v1/jobs/{job_id}?wait=60", headers)
    assert gone.status_code == 404 and seconds < 30
    assert gone.json["code"] == "not_found"
