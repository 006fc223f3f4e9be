"""What a status poll and a probe skip, and that skipping it changes nothing a
client sees or a revoked credential can do: the compiled job dump, the
verified-token cache, the bounded revocation and user cache, the rate limiter's
per-request check and the worker's heartbeat."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_jwt_extended import create_access_token
from marshmallow import Schema
from werkzeug.test import Client

from app.extensions import db, jwt
from app.ratelimits import limiter
from app.records import Job, User, utcnow
from app.services.job_document import JobSchema, ResultSchema, compile_dump
from tests.support.apps import bearer, make_app, register_and_login

FILES = [
    {
        "name": "vocals.wav",
        "stem": "vocals",
        "size": 1234,
        "content_type": "audio/wav",
        "duration": 2.5,
        "sample_rate": 44100,
        "channels": 2,
    },
    {"name": "no accompaniment é.wav", "stem": "other", "size": 5, "content_type": "audio/wav"},
]
INPUT = {
    "filename": "song.mp3",
    "format": "mp3",
    "codec": "mp3",
    "duration": 214.3,
    "sample_rate": 44100,
    "channels": 2,
    "size": 3_000_000,
    "an_extra_key": "left out by the schema",
}
METRICS = {
    "queue_seconds": 0.25,
    "run_seconds": 3,  # an int where the schema says float
    "audio_seconds": 2.5,
    "real_time_factor": None,
    "device": "cpu",
    "attempt": 1,
}
WEBHOOK = {
    "event_id": "evt-1",
    "state": "failed",
    "attempts": 5,
    "last_status": None,
    "last_error": "connection refused",
}

# Every state a client can see, with what each carries.
STATES: dict[str, dict[str, Any]] = {
    "queued": {"status": "queued", "stage": "queued", "progress": 0.0},
    "running": {
        "status": "running",
        "stage": "separating",
        "progress": 0.4213,
        "started": True,
        "params": {"model": "htdemucs", "shifts": 1, "stems": ["vocals"]},
    },
    "failed": {
        "status": "failed",
        "stage": None,
        "progress": 0.5,
        "started": True,
        "finished": True,
        "error_code": "audio_decode_failed",
        "error_message": "The file could not be decoded.",
        "metrics": METRICS,
        "webhook": WEBHOOK,
        "callback_url": "https://example.com/hook",
    },
    "failed_without_message": {
        "status": "failed",
        "progress": 0.1,
        "error_code": "worker_lost",
        "error_message": None,
    },
    "succeeded": {
        "status": "succeeded",
        "stage": "done",
        "progress": 1.0,
        "started": True,
        "finished": True,
        "result": {"files": FILES, "stems": ["vocals", "other"]},
        "metrics": METRICS,
    },
    "succeeded_transcription": {
        "kind": "transcription",
        "model": "tiny",
        "status": "succeeded",
        "progress": 1.0,
        "started": True,
        "finished": True,
        "result": {"files": [], "text": "hello", "language": "en"},
    },
    "canceled": {"status": "canceled", "progress": 0.2, "finished": True},
    "expired": {"status": "expired", "progress": 1.0, "finished": True, "result": None},
}


def add_job(owner_id: str, name: str) -> Job:
    spec = dict(STATES[name])
    now = utcnow()
    job = Job(
        id=str(uuid.uuid4()),
        owner_id=owner_id,
        kind=spec.pop("kind", "separation"),
        model=spec.pop("model", "hpss"),
        status=spec.pop("status"),
        stage=spec.pop("stage", None),
        progress=spec.pop("progress"),
        params=spec.pop("params", {}),
        input=INPUT,
        result=spec.pop("result", None),
        metrics=spec.pop("metrics", None),
        webhook=spec.pop("webhook", None),
        callback_url=spec.pop("callback_url", None),
        error_code=spec.pop("error_code", None),
        error_message=spec.pop("error_message", None),
        attempts=1,
        stored_bytes=0,
        created_at=now - timedelta(seconds=30),
        updated_at=now,
        started_at=now - timedelta(seconds=20) if spec.pop("started", False) else None,
        finished_at=now if spec.pop("finished", False) else None,
        expires_at=now + timedelta(hours=24),
    )
    assert not spec, spec
    db.session.add(job)
    db.session.commit()
    return job


def user_id(app: Flask, headers: dict[str, str]) -> str:
    client = app.test_client()
    return str(client.get("/api/v1/auth/me", headers=headers).json["id"])


@pytest.mark.parametrize("state", sorted(STATES))
def test_the_compiled_dump_is_the_schemas_dump(queued_app: Flask, state: str) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    owner = user_id(queued_app, headers)
    with queued_app.app_context():
        job = add_job(owner, state)
        job_id = job.id
        fast = JobSchema().dump(job)
        marshmallow = Schema.dump(JobSchema(), job)
        assert fast == marshmallow
        # Same keys in the same order, same types (1 and 1.0 compare equal).
        assert list(fast) == list(marshmallow)
        assert [type(v) for v in fast.values()] == [type(v) for v in marshmallow.values()]
    # And what a client receives is that dump, answered before Flask's
    # dispatch (app/blueprints/jobs/polling.py) as the route answers it.
    response = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200
    with queued_app.test_request_context():
        job = db.session.get(Job, job_id)
        assert response.json == Schema.dump(JobSchema(), job)
    routed = Client(lambda environ, start: Flask.wsgi_app(queued_app, environ, start))
    assert routed.get(f"/api/v1/jobs/{job_id}", headers=headers).get_data() == (response.get_data())


@pytest.mark.parametrize("script_root", ["", "/behind/a/prefix"])
def test_job_paths_are_what_the_url_map_builds(app: Flask, script_root: str) -> None:
    from flask import url_for

    from app.services.job_document import job_path, path_for

    endpoints = ["jobs.get_job", "jobs.job_events", "jobs.get_archive", "jobs.get_transcript"]
    job_ids = [str(uuid.uuid4()), "not-a-uuid", "a b/c"]
    with app.test_request_context(base_url=f"http://localhost{script_root}/"):
        for endpoint in endpoints:
            for job_id in job_ids:
                assert job_path(endpoint, job_id) == url_for(endpoint, job_id=job_id)
                assert job_path(endpoint, job_id).startswith(script_root + "/api/v1/jobs/")
    with app.app_context():  # a worker: no request
        for endpoint in endpoints:
            job_id = str(uuid.uuid4())
            assert job_path(endpoint, job_id) == path_for(endpoint, job_id=job_id)


@pytest.mark.parametrize("script_root", ["", "/behind/a/prefix"])
def test_file_paths_are_what_the_url_map_builds(app: Flask, script_root: str) -> None:
    """File names are quoted as the URL map quotes them, each kept apart."""
    from flask import url_for

    from app.services.job_document import PLACEHOLDER_ID, job_path

    names = [f["name"] for f in FILES] + ["a/b.wav", "100%?#.mp3", PLACEHOLDER_ID + ".wav"]
    job_id = str(uuid.uuid4())
    with app.test_request_context(base_url=f"http://localhost{script_root}/"):
        for name in names * 2:  # built, then from its template
            expected = url_for("jobs.get_file", job_id=job_id, name=name)
            assert job_path("jobs.get_file", job_id, name=name) == expected
        assert job_path("jobs.get_file", "a b", name="x.wav") == url_for(
            "jobs.get_file", job_id="a b", name="x.wav"
        )


def test_a_schema_the_compiler_cannot_reproduce_keeps_marshmallows_dump() -> None:
    from marshmallow import fields, post_dump

    class Hooked(Schema):
        name = fields.String()

        @post_dump
        def shout(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
            return {k: v.upper() for k, v in data.items()}

    assert compile_dump(Hooked()) is None
    assert compile_dump(JobSchema(many=True)) is None
    assert compile_dump(ResultSchema()) is not None


def test_a_verified_token_is_still_refused_once_expired(app: Flask) -> None:
    client = app.test_client()
    register_and_login(client)
    with app.app_context():
        owner = db.session.query(User).one()
        token = create_access_token(identity=owner.id, expires_delta=timedelta(seconds=1))
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 200  # a hit
    time.sleep(1.2)
    response = client.get("/api/v1/jobs", headers=bearer(token))
    assert response.status_code == 401
    assert response.json["code"] == "token_expired"


def test_a_token_verified_by_one_app_is_not_trusted_by_another(tmp_path: Path) -> None:
    first = make_app(tmp_path / "a")
    second = make_app(tmp_path / "b")  # another SECRET_KEY
    headers = register_and_login(first.test_client())
    assert first.test_client().get("/api/v1/jobs", headers=headers).status_code == 200
    response = second.test_client().get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == "invalid_token"


def test_the_request_check_reads_headers_through_the_cache(app: Flask) -> None:
    from flask_jwt_extended import view_decorators
    from jwt.exceptions import DecodeError

    from app.extensions import unverified_header

    assert view_decorators.get_unverified_jwt_headers is unverified_header
    headers = register_and_login(app.test_client())
    token = headers["Authorization"].split()[1]
    first = unverified_header(token)
    assert first == {"alg": "HS256", "typ": "JWT"}
    first["alg"] = "none"  # a copy each time: the cache cannot be changed through it
    assert unverified_header(token)["alg"] == "HS256"
    for _ in range(2):
        with pytest.raises(DecodeError):
            unverified_header("not.a.token")


def test_the_verified_tokens_are_bounded() -> None:
    cache = type(jwt.verified)(size=3)
    for n in range(5):
        cache.put(("token", n), {"exp": time.time() + 60, "n": n})
    assert cache.get(("token", 0), 0) is None
    assert cache.get(("token", 4), 0) == {"exp": pytest.approx(time.time() + 60, abs=5), "n": 4}
    assert len(cache._entries) == 3


@pytest.fixture
def shared_secret() -> dict[str, Any]:
    # Both "processes" must sign and verify with one key, as they would with a
    # shared DATA_DIR or SECRET_KEY.
    return {"SECRET_KEY": "s" * 48, "AUTH_CACHE_SECONDS": 0.5}


def test_a_logout_counts_at_once_here_and_within_the_bound_elsewhere(
    tmp_path: Path, shared_secret: dict[str, Any]
) -> None:
    here = make_app(tmp_path / "data", **shared_secret)
    there = make_app(tmp_path / "data", **shared_secret)
    headers = register_and_login(here.test_client())
    assert there.test_client().get("/api/v1/jobs", headers=headers).status_code == 200
    assert here.test_client().get("/api/v1/jobs", headers=headers).status_code == 200

    assert here.test_client().post("/api/v1/auth/logout", headers=headers).status_code == 204
    response = here.test_client().get("/api/v1/jobs", headers=headers)
    assert (response.status_code, response.json["code"]) == (401, "token_revoked")

    # The other process believed "not revoked" a moment ago; past the bound it asks again.
    time.sleep(0.6)
    response = there.test_client().get("/api/v1/jobs", headers=headers)
    assert (response.status_code, response.json["code"]) == (401, "token_revoked")


def test_a_deleted_account_counts_at_once_here_and_within_the_bound_elsewhere(
    tmp_path: Path, shared_secret: dict[str, Any]
) -> None:
    here = make_app(tmp_path / "data", **shared_secret)
    there = make_app(tmp_path / "data", **shared_secret)
    headers = register_and_login(here.test_client())
    for app in (here, there):
        assert app.test_client().get("/api/v1/auth/me", headers=headers).status_code == 200

    response = here.test_client().delete(
        "/api/v1/auth/me", headers=headers, json={"password": "a long enough password"}
    )
    assert response.status_code == 204, response.json
    response = here.test_client().get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401

    time.sleep(0.6)
    response = there.test_client().get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == "invalid_token"


def test_within_the_bound_a_deleted_account_is_refused_not_an_error(tmp_path: Path) -> None:
    settings = {"SECRET_KEY": "s" * 48, "AUTH_CACHE_SECONDS": 60}
    here = make_app(tmp_path / "data", **settings)
    there = make_app(tmp_path / "data", **settings)
    headers = register_and_login(here.test_client())
    assert there.test_client().get("/api/v1/auth/me", headers=headers).status_code == 200
    response = here.test_client().delete(
        "/api/v1/auth/me", headers=headers, json={"password": "a long enough password"}
    )
    assert response.status_code == 204, response.json
    # "there" still believes the user exists; reading the account finds it gone.
    response = there.test_client().get("/api/v1/auth/me", headers=headers)
    assert (response.status_code, response.json["code"]) == (401, "invalid_token")


def test_without_the_cache_every_request_asks(tmp_path: Path) -> None:
    settings = {"SECRET_KEY": "s" * 48, "AUTH_CACHE_SECONDS": 0}
    here = make_app(tmp_path / "data", **settings)
    there = make_app(tmp_path / "data", **settings)
    headers = register_and_login(here.test_client())
    assert there.test_client().get("/api/v1/jobs", headers=headers).status_code == 200
    assert here.test_client().post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert there.test_client().get("/api/v1/jobs", headers=headers).status_code == 401


def test_a_user_known_to_exist_is_read_only_when_a_route_needs_more_than_its_id(
    app: Flask,
) -> None:
    client = app.test_client()
    headers = register_and_login(client)
    first = client.get("/api/v1/auth/me", headers=headers)
    again = client.get("/api/v1/auth/me", headers=headers)  # the user from the cache
    assert first.status_code == again.status_code == 200
    assert first.json == again.json
    assert again.json["email"].startswith("user-")


def test_the_limiter_checks_no_request_it_has_no_limit_for(app: Flask) -> None:
    assert limiter._check_request_limit not in app.before_request_funcs.get(None, [])


def test_app_wide_limits_keep_the_check() -> None:
    # Judged on a bare app: initialising the limiter with default limits would
    # leave them in the process-wide limiter for every later app.
    from app.ratelimits import app_wide_limits

    for name in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META"):
        bare = Flask("bare")
        assert not app_wide_limits(bare)
        bare.config[name] = "2/minute"
        assert app_wide_limits(bare)


def test_access_lines_are_built_only_when_written(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from gunicorn.config import Config

    from app.serving import ApiLogger

    logger = ApiLogger(Config())
    logger._access_log_enabled = True  # as with a logging configuration (LOG_FORMAT=json)
    built: list[Any] = []
    monkeypatch.setattr(logger, "atoms", lambda *args: built.append(args) or {})
    logger.access_log.setLevel(logging.WARNING)
    logger.access(None, None, {}, None)
    assert built == []
    logger.access_log.setLevel(logging.INFO)
    logger.access(None, None, {}, None)
    assert len(built) == 1


def test_the_worker_heartbeat_is_written_at_most_once_a_second() -> None:
    from app.serving import ApiWorker

    class Tmp:
        writes = 0

        def notify(self) -> None:
            self.writes += 1

    worker = ApiWorker.__new__(ApiWorker)
    worker.tmp = Tmp()
    for _ in range(100):
        worker.notify()
    assert worker.tmp.writes == 1
    worker._notified -= ApiWorker.NOTIFY_SECONDS
    worker.notify()
    assert worker.tmp.writes == 2


def test_only_a_database_server_is_pinged_before_each_checkout(tmp_path: Path) -> None:
    from app import config

    base = {**config.from_environment(), "DATA_DIR": str(tmp_path), "SECRET_KEY": "s" * 48}
    sqlite = config.finalise(dict(base, DATABASE_URL=None))
    assert sqlite["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": False}
    server = config.finalise(dict(base, DATABASE_URL="postgresql+psycopg://u:p@db/aimusic"))
    assert server["SQLALCHEMY_ENGINE_OPTIONS"] == {
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": 5},  # a vanished host: 503 in seconds
    }
