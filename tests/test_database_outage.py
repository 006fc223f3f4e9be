"""The job database unreachable: ``503 service_unavailable`` JSON with
``Retry-After`` on every route that needs it, never a 500, and the API
recovers by itself when the database is back (app/errors_http.py,
app/database.py). Other database errors stay ``500 internal_error``."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import exc as sa_exc

from app import database
from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes

PASSWORD = "a long enough password"


def _requests(client: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:
    """What a user does: register, log in, list, read a job, submit one."""
    return {
        "register": client.post(
            "/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD}
        ),
        "login": client.post(
            "/api/v1/auth/login", json={"email": "old@example.com", "password": PASSWORD}
        ),
        "list": client.get("/api/v1/jobs", headers=headers),
        "status": client.get("/api/v1/jobs/01234567-89ab-cdef-0123-456789abcdef", headers=headers),
        "submit": client.post(
            "/api/v1/separations",
            data={"file": (io.BytesIO(wav_bytes(sine_and_clicks(1))), "song.wav"), "model": "hpss"},
            headers=headers,
            content_type="multipart/form-data",
        ),
    }


def _assert_unavailable(responses: dict[str, Any]) -> None:
    for name, response in responses.items():
        assert response.status_code == 503, (name, response.status_code, response.data[:300])
        assert response.is_json, name
        body = response.json
        assert body["code"] == "service_unavailable" and body["status"] == 503, (name, body)
        assert "Traceback" not in body["message"] and "SELECT" not in body["message"]
        assert response.headers["Retry-After"] == "5", name


def test_postgresql_down_answers_503_and_the_api_recovers_by_itself(
    tmp_path: Path, postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path / "data", DATABASE_URL=postgres_server.create_database("outage"))
    client = app.test_client()
    headers = register_and_login(client, "old@example.com")
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200  # a pooled connection

    postgres_server.kill()  # kill -9: the pooled connections are dead
    with caplog.at_level("WARNING", logger="app.errors_http"):
        _assert_unavailable(_requests(client, headers))
    assert "Database unavailable" in caplog.text and "Traceback" not in caplog.text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["database"]["ok"] is False
    assert client.get("/healthz").status_code == 200

    postgres_server.start()  # crash recovery; same port, same data
    after = _requests(client, headers)
    assert after["register"].status_code == 201, after["register"].json
    assert after["login"].status_code == 200, after["login"].json
    assert after["list"].status_code == 200
    assert after["status"].status_code == 404  # no such job, as before
    assert after["submit"].status_code == 202, after["submit"].json
    assert client.get("/readyz").json["checks"]["database"]["ok"] is True


def test_sqlite_that_cannot_be_opened_answers_503(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    app = make_app(tmp_path / "data", DATABASE_URL=f"sqlite:///{folder / 'jobs.sqlite'}")
    client = app.test_client()
    headers = register_and_login(client, "old@example.com")
    from app.extensions import db

    moved = tmp_path / "db-away"
    with app.app_context():
        db.engine.dispose()
    folder.rename(moved)
    folder.write_text("not a directory")  # "unable to open database file"
    try:
        responses = _requests(client, headers)
        _assert_unavailable({k: v for k, v in responses.items() if k != "submit"})
    finally:
        folder.unlink()
        shutil.move(moved, folder)
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200


def test_other_database_errors_stay_internal_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path / "data")
    client = app.test_client()
    headers = register_and_login(client)
    from app.services import jobs

    def broken(*_: Any, **__: Any) -> Any:
        raise sa_exc.IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    monkeypatch.setattr(jobs, "list_jobs", broken)
    listed = client.get("/api/v1/jobs", headers=headers)
    assert listed.status_code == 500 and listed.json["code"] == "internal_error"


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused")), True),
        (sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")), True),
        (sa_exc.InterfaceError("SELECT 1", {}, Exception("the connection is closed")), True),
        (sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"), True),
        (sa_exc.OperationalError("SELECT x", {}, Exception("no such column: x")), False),
        (sa_exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), False),
        (sa_exc.ProgrammingError("SELECT", {}, Exception("syntax error at or near")), False),
        (ValueError("not a database error"), False),
    ],
)
def test_what_counts_as_the_database_being_unavailable(error: Exception, unavailable: bool) -> None:
    assert database.is_unavailable(error) is unavailable


# -- workers -------------------------------------------------------------------


def test_a_job_rides_out_postgresql_restarting_under_it(
    tmp_path: Path, postgres_server: Any, song_wav: bytes
) -> None:
    """PostgreSQL killed mid-job and back a few seconds later: the progress
    writes of the outage are skipped, the result write waits for the server,
    and the job succeeds on its first attempt (not failed, not run again)."""
    import threading
    import time

    from app.extensions import db
    from app.services import runner
    from tests.support.apps import fresh_job, submit_separation

    app = make_app(tmp_path / "data", DATABASE_URL=postgres_server.create_database("worker"))
    job_id = submit_separation(app, song_wav)[1]
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(3)
        postgres_server.start()
        restarted.set()

    def work(job: Any, attempt: Any, report: Any) -> dict[str, Any]:
        report(0.2, "working", force=True)
        postgres_server.kill()
        threading.Thread(target=restart_later, daemon=True).start()
        report(0.5, "still working", force=True)  # skipped, not fatal
        report(0.8, force=True)
        assert not restarted.is_set()
        return {"files": []}

    with app.app_context():
        assert runner.execute(job_id, work) == "succeeded"
        assert restarted.is_set()
        db.session.remove()
        job = fresh_job(job_id)
        assert (job.status, job.attempts, job.progress) == ("succeeded", 1, 1.0)


def test_a_result_write_whose_commit_landed_before_the_connection_dropped_is_kept(
    queued_app: Any, queued_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection lost during COMMIT leaves it unknown whether the commit
    landed; the retried compare-and-set finds its own write and keeps the
    result instead of taking it for another attempt's."""
    from app.extensions import db
    from app.services import runner
    from tests.support.apps import fresh_job

    real_commit = db.session.commit
    dropped: list[bool] = []

    def commit() -> None:
        real_commit()
        if not dropped and db.session.info.get("recording"):
            dropped.append(True)
            raise sa_exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    def work(job: Any, attempt: Any, report: Any) -> dict[str, Any]:
        (attempt.workdir / "out.txt").write_text("result")
        return {"files": []}

    real_publish = runner.storage.publish_results

    def publish_results(*args: Any) -> Any:
        db.session.info["recording"] = True  # the next commit is the result's
        return real_publish(*args)

    monkeypatch.setattr(db.session, "commit", commit)
    monkeypatch.setattr(runner.storage, "publish_results", publish_results)
    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "succeeded"
        assert dropped == [True]
        job = fresh_job(queued_job)
        assert (job.status, job.attempts) == ("succeeded", 1)
        results = Path(queued_app.config["DATA_DIR"]) / "jobs" / queued_job / "results" / "1"
        assert (results / "out.txt").read_text() == "result"


def test_an_outage_longer_than_the_worker_waits_leaves_the_job_to_the_reaper(
    queued_app: Any, queued_job: str
) -> None:
    """Past ``OUTAGE_PATIENCE_SECONDS`` the attempt gives up without failing
    the job (that needs the database too, and the job did nothing wrong): the
    job stays ``running`` with its attempt lock free, and the reaper re-queues it."""
    from app.services import maintenance, runner
    from tests.support.apps import fresh_job

    def work(job: Any, attempt: Any, report: Any) -> dict[str, Any]:
        raise sa_exc.OperationalError("UPDATE jobs", {}, Exception("connection refused"))

    with queued_app.app_context():
        assert runner.execute(queued_job, work) is None
        job = fresh_job(queued_job)
        assert (job.status, job.attempts, job.error_code) == ("running", 1, None)
        assert maintenance.reap_lost_jobs() == 1
        assert fresh_job(queued_job).status == "queued"


def test_a_webhook_delivery_is_recorded_once_the_database_is_back(
    queued_app: Any, queued_job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver already has its answer: a database outage delays the
    delivery record instead of losing it (and failing the delivery task)."""
    from app.extensions import db
    from app.services import webhooks
    from tests.support.apps import fresh_job

    real_execute = db.session.execute
    refused: list[bool] = []

    def execute(*args: Any, **kwargs: Any) -> Any:
        if not refused:
            refused.append(True)
            raise sa_exc.OperationalError("SELECT", {}, Exception("connection refused"))
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(db.session, "execute", execute)
    with queued_app.app_context():
        webhooks._record(queued_job, attempts=1, state="delivered")
        assert refused == [True]
        assert fresh_job(queued_job).webhook == {"attempts": 1, "state": "delivered"}


def test_an_event_stream_waits_out_a_database_outage(
    queued_app: Any, song_wav: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream already under way keeps its connection through an outage (it
    skips the reads that fail) and carries on with the job's next change."""
    from app.extensions import db
    from app.records import Job
    from app.services import events, jobs
    from tests.support.apps import submit_separation
    from tests.support.procs import free_port

    _headers, job_id = submit_separation(queued_app, song_wav)
    with queued_app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        owner = job.owner_id
    real_load = events._load
    reads: list[str] = []

    def load(*args: Any) -> Any:
        reads.append("read")
        if len(reads) in (2, 3):  # the database is away for two reads
            raise sa_exc.OperationalError("SELECT", {}, Exception("connection refused"))
        return real_load(*args)

    monkeypatch.setattr(events, "_load", load)
    seen = []
    with queued_app.test_request_context():
        for change in events.watch(
            owner,
            job_id,
            poll_seconds=0.05,
            heartbeat_seconds=60,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: it polls
        ):
            assert change is not None
            seen.append(change.job.status)
            if len(seen) == 1:
                with queued_app.app_context():
                    assert jobs.finish(job_id, "canceled")
    assert seen == ["queued", "canceled"]
    assert len(reads) >= 4


def test_the_openapi_document_lists_the_503_of_routes_that_need_the_database(
    client: FlaskClient,
) -> None:
    spec = client.get("/openapi.json").json
    operations = {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    for key in [
        ("POST", "/api/v1/auth/register"),
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/jobs"),
        ("DELETE", "/api/v1/jobs/{job_id}"),
        ("POST", "/api/v1/separations"),
    ]:
        assert "503" in operations[key]["responses"], key
    described = operations[("GET", "/api/v1/jobs")]["responses"]["503"]["description"]
    assert "service_unavailable" in described
    for key in [("GET", "/healthz"), ("GET", "/api/v1/models"), ("GET", "/metrics")]:
        assert "503" not in operations[key]["responses"], key
