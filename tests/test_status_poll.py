"""The plain status poll is answered before Flask's dispatch
(``app/blueprints/jobs/polling.py``): the same answer as the route, and every
other request, including every credential or job the route would refuse, goes
to the route."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask, abort, request
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token
from werkzeug.test import Client, TestResponse

from app import logs
from app.extensions import db
from app.records import User
from tests.support.apps import BOTH_DATABASES, bearer, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes

pytestmark = BOTH_DATABASES


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths Flask dispatched (rather than the answer in front of it)."""
    from flask import request

    paths: list[str] = []
    original = Flask.full_dispatch_request

    def counting(self: Flask) -> Any:
        paths.append(request.path)
        return original(self)

    monkeypatch.setattr(Flask, "full_dispatch_request", counting)
    return paths


def _routed(app: Flask) -> Client:
    """A client of Flask's own dispatch: the route's answer."""
    return Client(lambda environ, start: Flask.wsgi_app(app, environ, start))


def _job(app: Flask, headers: dict[str, str]) -> str:
    response = app.test_client().post(
        "/api/v1/separations",
        data={
            "file": (io.BytesIO(wav_bytes(sine_and_clicks(seconds=1.0))), "song.wav"),
            "model": "hpss",
        },
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return str(response.json["id"])


@pytest.fixture
def polled(app: Flask) -> Iterator[tuple[FlaskClient, dict[str, str], str]]:
    client = app.test_client()
    headers = register_and_login(client)
    job_id = _job(app, headers)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["status"] == "succeeded"
    yield client, headers, job_id


@contextlib.contextmanager
def access_lines() -> Iterator[list[dict[str, Any]]]:
    """The access lines written meanwhile, as LOG_FORMAT=json writes them."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    logger = logging.getLogger("app.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def _same_answer(early: TestResponse, flask: TestResponse) -> None:
    assert early.status_code == flask.status_code == 200
    assert early.get_data() == flask.get_data()
    assert sorted(early.headers.items()) == sorted(flask.headers.items())


def test_the_plain_poll_is_answered_as_the_route_answers_it(
    app: Flask,
    polled: tuple[FlaskClient, dict[str, str], str],
    dispatched: list[str],
) -> None:
    client, headers, job_id = polled
    path = f"/api/v1/jobs/{job_id}"
    sent = {**headers, "X-Request-ID": "poll-1"}
    dispatched.clear()
    with access_lines() as lines:
        early = client.get(path, headers=sent)
    assert dispatched == []
    _same_answer(early, _routed(app).get(path, headers=sent))
    body = early.json
    assert body["id"] == job_id and body["status"] == "succeeded"
    assert [f["url"] for f in body["result"]["files"]] == [
        f"{path}/files/harmonic.wav",
        f"{path}/files/percussive.wav",
    ]
    assert early.headers["X-Request-ID"] == "poll-1"
    assert early.headers["Content-Length"] == str(len(early.get_data()))
    # Its access line, as the route's: the path, the route's template, the id.
    assert len(lines) == 1
    assert lines[0]["path"] == path and lines[0]["route"] == "/api/v1/jobs/<job_id>"
    assert lines[0]["status"] == 200 and lines[0]["request_id"] == "poll-1"
    assert lines[0]["method"] == "GET" and lines[0]["duration_ms"] > 0
    generated = client.get(path, headers=headers).headers["X-Request-ID"]
    assert len(generated) == 32

    # An API key is answered the same way.
    key = client.post("/api/v1/auth/api-keys", headers=headers, json={"name": "poller"})
    key_headers = bearer(key.json["key"])
    dispatched.clear()
    by_key = client.get(path, headers={**key_headers, "X-Request-ID": "poll-2"})
    assert dispatched == []
    _same_answer(by_key, _routed(app).get(path, headers={**key_headers, "X-Request-ID": "poll-2"}))
    # The scheme is case-insensitive here as on the route.
    lower = {"Authorization": headers["Authorization"].replace("Bearer", "bearer")}
    dispatched.clear()
    assert client.get(path, headers=lower).status_code == 200
    assert dispatched == []


def _segment(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _forged(app: Flask, token: str) -> dict[str, dict[str, str]]:
    """Credentials the route refuses, for the user who owns the job."""
    claims = pyjwt.decode(token, options={"verify_signature": False})
    secret = app.config["JWT_SECRET_KEY"]
    now = int(time.time())
    signed = lambda c: bearer(pyjwt.encode(c, secret, algorithm="HS256"))  # noqa: E731
    header_b64, payload_b64, signature_b64 = token.split(".")
    return {
        "no header": {},
        "other scheme": {"Authorization": f"Basic {token}"},
        "flipped signature": bearer(f"{header_b64}.{payload_b64}.{signature_b64[::-1]}"),
        "wrong key": bearer(pyjwt.encode(claims, "x" * 64, algorithm="HS256")),
        "alg none": bearer(f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{payload_b64}."),
        "expired": signed({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 60}),
        "not yet valid": signed({**claims, "nbf": now + 3600, "exp": now + 7200}),
        "type refresh": signed({**claims, "type": "refresh"}),
        "no jti": signed({k: v for k, v in claims.items() if k != "jti"}),
        "unknown user": signed({**claims, "sub": str(uuid.uuid4())}),
        "unknown key": bearer("ams_" + "A" * 43),
    }


def test_every_credential_the_route_refuses_goes_to_the_route(
    app: Flask, polled: tuple[FlaskClient, dict[str, str], str], dispatched: list[str]
) -> None:
    client, headers, job_id = polled
    path = f"/api/v1/jobs/{job_id}"
    token = headers["Authorization"].split()[1]
    for label, sent in _forged(app, token).items():
        dispatched.clear()
        response = client.get(path, headers=sent)
        assert response.status_code == 401, (label, response.json)
        assert response.json["status"] == 401 and response.json["code"], label
        assert dispatched == [path], label

    # A refresh token, a revoked access token and a revoked API key.
    tokens = client.post(
        "/api/v1/auth/login", json={"email": _email(app, job_id), "password": PASSWORD}
    ).json
    assert client.get(path, headers=bearer(tokens["refresh_token"])).status_code == 401
    access = bearer(tokens["access_token"])
    assert client.get(path, headers=access).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=access).status_code == 204
    refused = client.get(path, headers=access)
    assert refused.status_code == 401 and refused.json["code"] == "token_revoked"
    key = client.post("/api/v1/auth/api-keys", headers=headers, json={"name": "k"}).json
    assert client.get(path, headers=bearer(key["key"])).status_code == 200
    revoked = client.delete(f"/api/v1/auth/api-keys/{key['id']}", headers=headers)
    assert revoked.status_code == 204
    assert client.get(path, headers=bearer(key["key"])).status_code == 401

    # A token that expires while it is being polled.
    with app.app_context():
        owner = db.session.get(User, _owner(app, job_id))
        assert owner is not None
        short = bearer(create_access_token(identity=owner.id, expires_delta=timedelta(seconds=1)))
    assert client.get(path, headers=short).status_code == 200
    time.sleep(1.2)
    expired = client.get(path, headers=short)
    assert expired.status_code == 401 and expired.json["code"] == "token_expired"


PASSWORD = "a long enough password"


def _owner(app: Flask, job_id: str) -> str:
    from app.records import Job

    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        return str(job.owner_id)


def _email(app: Flask, job_id: str) -> str:
    with app.app_context():
        user = db.session.get(User, _owner(app, job_id))
        assert user is not None
        return str(user.email)


def test_jobs_that_are_not_the_callers_go_to_the_route(
    app: Flask, polled: tuple[FlaskClient, dict[str, str], str], dispatched: list[str]
) -> None:
    client, headers, job_id = polled
    other = register_and_login(client)
    for path, sent in [
        (f"/api/v1/jobs/{job_id}", other),
        (f"/api/v1/jobs/{uuid.uuid4()}", headers),
        (f"/api/v1/jobs/{job_id.upper()}", headers),
    ]:
        dispatched.clear()
        response = client.get(path, headers=sent)
        assert response.status_code == 404 and response.json["code"] == "not_found", path
        assert dispatched == [path]


@pytest.mark.parametrize(
    ("label", "extra"),
    [
        ("query", {"query_string": {"wait": "0"}}),
        ("unknown query", {"query_string": {"x": "1"}}),
        ("prefer", {"headers": {"Prefer": "wait=0"}}),
        ("origin", {"headers": {"Origin": "https://app.example"}}),
        ("head", {"method": "HEAD"}),
        ("trailing slash", {"suffix": "/"}),
        ("body", {"data": b"x"}),
    ],
)
def test_other_requests_go_to_the_route(
    app: Flask,
    polled: tuple[FlaskClient, dict[str, str], str],
    dispatched: list[str],
    label: str,
    extra: dict[str, Any],
) -> None:
    client, headers, job_id = polled
    extra = dict(extra)  # shared by the parameter's runs on each database
    path = f"/api/v1/jobs/{job_id}" + extra.pop("suffix", "")
    sent = {**headers, **extra.pop("headers", {})}
    dispatched.clear()
    response = client.open(path, method=extra.pop("method", "GET"), headers=sent, **extra)
    assert dispatched == [path], label
    assert response.status_code in (200, 404), (label, response.status_code)
    if label == "origin":
        # Flask answers with the CORS headers this server's settings give.
        assert response.status_code == 200


def test_cors_is_the_routes(eager_app: Callable[..., Flask], dispatched: list[str]) -> None:
    app = eager_app(CORS_ORIGINS=["https://app.example"])
    client = app.test_client()
    headers = register_and_login(client)
    path = f"/api/v1/jobs/{_job(app, headers)}"
    dispatched.clear()
    allowed = client.get(path, headers={**headers, "Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert dispatched == [path]
    dispatched.clear()
    sent = {**headers, "X-Request-ID": "cors-1"}
    plain = client.get(path, headers=sent)
    assert dispatched == [] and "Access-Control-Allow-Origin" not in plain.headers
    _same_answer(plain, _routed(app).get(path, headers=sent))


def test_a_hook_the_answer_does_not_know_is_not_skipped(
    eager_app: Callable[..., Flask], dispatched: list[str]
) -> None:
    app = eager_app()

    @app.before_request
    def maintenance() -> None:
        if request.path.startswith("/api/v1/jobs/"):
            abort(503)

    client = app.test_client()
    headers = register_and_login(client)
    path = f"/api/v1/jobs/{_job(app, headers)}"
    dispatched.clear()
    assert client.get(path, headers=headers).status_code == 503
    assert dispatched == [path]


def test_limits_on_every_route_apply_to_polls(
    eager_app: Callable[..., Flask], dispatched: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.ratelimits import limiter

    # Default limits stay in the process-wide limiter: gone again after the test.
    manager = limiter.limit_manager
    monkeypatch.setattr(manager, "_default_limits", manager._default_limits)
    app = eager_app(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute")
    client = app.test_client()
    headers = register_and_login(client)
    path = f"/api/v1/jobs/{_job(app, headers)}"
    statuses = [client.get(path, headers=headers).status_code for _ in range(3)]
    assert statuses[-1] == 429 and path in dispatched


def test_tokens_read_from_elsewhere_are_the_routes_to_check(
    eager_app: Callable[..., Flask], dispatched: list[str]
) -> None:
    app = eager_app()
    client = app.test_client()
    headers = register_and_login(client)
    path = f"/api/v1/jobs/{_job(app, headers)}"
    app.config["JWT_TOKEN_LOCATION"] = ["query_string"]
    dispatched.clear()
    refused = client.get(path, headers=headers)
    assert refused.status_code == 401 and dispatched == [path]


def test_behind_a_proxy_the_line_names_the_client(
    eager_app: Callable[..., Flask], dispatched: list[str]
) -> None:
    app = eager_app(TRUSTED_PROXY_HOPS=1)
    client = app.test_client()
    headers = register_and_login(client)
    path = f"/api/v1/jobs/{_job(app, headers)}"
    dispatched.clear()
    with access_lines() as lines:
        response = client.get(
            path, headers={**headers, "X-Forwarded-For": "203.0.113.9"},
            environ_base={"REMOTE_ADDR": "10.0.0.2"},
        )  # fmt: skip
    assert response.status_code == 200 and dispatched == []
    assert [line["remote_addr"] for line in lines] == ["203.0.113.9"]


def test_a_failure_while_answering_is_the_routes_to_answer(
    app: Flask,
    polled: tuple[FlaskClient, dict[str, str], str],
    dispatched: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error the answer in front meets (here the document failing once) is
    not a 500 of its own: Flask runs the route, which answers."""
    from app.services.job_document import JobSchema

    client, headers, job_id = polled
    path = f"/api/v1/jobs/{job_id}"
    calls: list[int] = []
    original: Callable[..., Any] = JobSchema.dump

    def once_broken(self: Any, obj: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return original(self, obj, **kwargs)

    monkeypatch.setattr(JobSchema, "dump", once_broken)
    dispatched.clear()
    response = client.get(path, headers=headers)
    assert response.status_code == 200 and response.json["id"] == job_id
    assert dispatched == [path] and len(calls) == 2
