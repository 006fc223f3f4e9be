"""Personal API keys: created with a login, hashed at rest, revocable, usable
on every route a script needs and on none that manages the account.

Threat: a leaked key (or database) giving more than it should (OWASP API2).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.records import ApiKey, Job, utcnow
from tests.support.apps import BOTH_DATABASES, bearer, register_and_login

pytestmark = BOTH_DATABASES

PASSWORD = "a long enough password"


def _key(client: FlaskClient, login: dict[str, str], **body: object) -> dict:
    response = client.post("/api/v1/auth/api-keys", headers=login, json={"name": "ci", **body})
    assert response.status_code == 201, response.json
    return response.json


def test_a_key_is_shown_once_and_stored_as_a_hash(app: Flask, client: FlaskClient) -> None:
    login = register_and_login(client)
    created = _key(client, login, name="nightly batch")
    key = created["key"]
    assert re.fullmatch(r"ams_[A-Za-z0-9_-]{43}", key)
    assert created["name"] == "nightly batch"
    assert created["prefix"] == key[:12]
    assert created["revoked"] is False
    assert created["expires_at"] is None and created["last_used_at"] is None
    assert "key_hash" not in created

    with app.app_context():
        row = db.session.get(ApiKey, created["id"])
        assert row is not None
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        stored = " ".join(str(getattr(row, c.name)) for c in ApiKey.__table__.columns)
        assert key not in stored and key[12:] not in stored

    listed = client.get("/api/v1/auth/api-keys", headers=login)
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json] == [created["id"]]
    assert set(listed.json[0]) == {
        "id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked",
    }  # fmt: skip
    assert key not in listed.get_data(as_text=True)


def test_a_key_works_like_an_access_token(queued_app: Flask, song_wav: bytes) -> None:
    client = queued_app.test_client()
    login = register_and_login(client, "ada@example.com")
    key = bearer(_key(client, login)["key"])

    me = client.get("/api/v1/auth/me", headers=key)
    assert me.status_code == 200 and me.json["email"] == "ada@example.com"
    created = client.post(
        "/api/v1/separations",
        headers=key,
        data={"file": (__import__("io").BytesIO(song_wav), "song.wav"), "model": "hpss"},
        content_type="multipart/form-data",
    )
    assert created.status_code == 202, created.json
    job_id = created.json["id"]
    assert client.get(f"/api/v1/jobs/{job_id}", headers=key).status_code == 200
    assert client.get("/api/v1/jobs", headers=key).json["total"] == 1
    # The job belongs to the key's owner: their login sees it too.
    assert client.get(f"/api/v1/jobs/{job_id}", headers=login).status_code == 200
    with queued_app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None and job.owner.email == "ada@example.com"
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=key).status_code == 200
    assert client.delete(f"/api/v1/jobs/{job_id}", headers=key).status_code == 204


def test_account_routes_need_a_login_not_a_key(client: FlaskClient) -> None:
    login = register_and_login(client)
    created = _key(client, login)
    key = bearer(created["key"])
    attempts = [
        client.post("/api/v1/auth/api-keys", headers=key, json={"name": "more"}),
        client.get("/api/v1/auth/api-keys", headers=key),
        client.delete(f"/api/v1/auth/api-keys/{created['id']}", headers=key),
        client.delete("/api/v1/auth/me", headers=key, json={"password": PASSWORD}),
        client.post("/api/v1/auth/refresh", headers=key),
        client.post("/api/v1/auth/logout", headers=key),
    ]
    for response in attempts:
        assert response.status_code == 403, response.request.path
        assert response.json["code"] == "api_key_not_allowed"
    # Nothing changed: still one key, still valid, account still there.
    assert len(client.get("/api/v1/auth/api-keys", headers=login).json) == 1
    assert client.get("/api/v1/auth/me", headers=key).status_code == 200


def test_revoked_expired_unknown_and_altered_keys_get_401(app: Flask, client: FlaskClient) -> None:
    login = register_and_login(client)
    revoked = _key(client, login, name="old")
    expiring = _key(client, login, name="temp", expires_in_days=1)
    good = _key(client, login, name="good")
    assert client.get("/api/v1/auth/me", headers=bearer(expiring["key"])).status_code == 200
    assert expiring["expires_at"] is not None

    assert client.delete(f"/api/v1/auth/api-keys/{revoked['id']}", headers=login).status_code == 204
    # Revoking twice is harmless.
    assert client.delete(f"/api/v1/auth/api-keys/{revoked['id']}", headers=login).status_code == 204
    with app.app_context():
        row = db.session.get(ApiKey, expiring["id"])
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    altered = good["key"][:-1] + ("A" if good["key"][-1] != "A" else "B")
    for label, token in {
        "revoked": revoked["key"],
        "expired": expiring["key"],
        "unknown": "ams_" + "x" * 43,
        "altered": altered,
        "prefix only": good["prefix"],
    }.items():
        response = client.get("/api/v1/jobs", headers=bearer(token))
        assert response.status_code == 401, label
        assert response.json["code"] == "invalid_api_key", label
        assert response.json["status"] == 401
    listed = {k["name"]: k for k in client.get("/api/v1/auth/api-keys", headers=login).json}
    assert listed["old"]["revoked"] is True and listed["good"]["revoked"] is False
    assert client.get("/api/v1/jobs", headers=bearer(good["key"])).status_code == 200


def test_keys_are_owner_scoped(client: FlaskClient) -> None:
    ada = register_and_login(client)
    bob = register_and_login(client)
    ada_key = _key(client, ada)
    # Bob can neither see nor revoke Ada's key: 404, as for a key that does not exist.
    denied = client.delete(f"/api/v1/auth/api-keys/{ada_key['id']}", headers=bob)
    missing = client.delete(f"/api/v1/auth/api-keys/{uuid.uuid4()}", headers=bob)
    assert denied.status_code == missing.status_code == 404
    assert denied.json == missing.json
    assert client.get("/api/v1/auth/api-keys", headers=bob).json == []
    assert client.get("/api/v1/auth/me", headers=bearer(ada_key["key"])).status_code == 200


def test_last_used_is_recorded_at_most_once_a_minute(app: Flask, client: FlaskClient) -> None:
    login = register_and_login(client)
    created = _key(client, login)
    key = bearer(created["key"])

    def last_used() -> object:
        with app.app_context():
            row = db.session.get(ApiKey, created["id"])
            assert row is not None
            return row.last_used_at

    assert client.get("/api/v1/jobs", headers=key).status_code == 200
    first = last_used()
    assert first is not None
    for _ in range(5):
        client.get("/api/v1/jobs", headers=key)
    assert last_used() == first  # no write per request
    with app.app_context():
        row = db.session.get(ApiKey, created["id"])
        assert row is not None
        row.last_used_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    client.get("/api/v1/jobs", headers=key)
    later = last_used()
    assert later is not None and later > first  # type: ignore[operator]  # both datetimes: last_used() is typed object
    listed = client.get("/api/v1/auth/api-keys", headers=login).json[0]
    assert listed["last_used_at"] is not None


def test_keys_die_with_their_account(app: Flask, client: FlaskClient) -> None:
    login = register_and_login(client)
    key = bearer(_key(client, login)["key"])
    assert client.get("/api/v1/auth/me", headers=key).status_code == 200
    deleted = client.delete("/api/v1/auth/me", headers=login, json={"password": PASSWORD})
    assert deleted.status_code == 204
    response = client.get("/api/v1/auth/me", headers=key)
    assert response.status_code == 401 and response.json["code"] == "invalid_api_key"
    with app.app_context():
        assert db.session.execute(select(ApiKey)).first() is None


def test_key_creation_validation(client: FlaskClient) -> None:
    login = register_and_login(client)
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "k", "expires_in_days": 0}):
        response = client.post("/api/v1/auth/api-keys", headers=login, json=body)
        assert response.status_code == 422, body
        assert response.json["code"] == "validation_error"
    assert client.get("/api/v1/auth/api-keys", headers=login).json == []


def test_openapi_says_which_routes_take_keys_and_they_do(client: FlaskClient) -> None:
    """Every documented protected operation is tried with an API key: those
    documenting ``apiKeyAuth`` accept it (whatever they answer, never 401/403),
    the login-only ones refuse it with 403. Without credentials all give 401."""
    login = register_and_login(client)
    key = bearer(_key(client, login)["key"])
    spec = client.get("/openapi.json").json
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["bearerFormat"] == "JWT"
    assert schemes["apiKeyAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key",
        "description": schemes["apiKeyAuth"]["description"],
    }
    both = [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert spec["paths"]["/api/v1/jobs"]["get"]["security"] == both
    assert spec["paths"]["/api/v1/auth/api-keys"]["post"]["security"] == [{"bearerAuth": []}]

    tried = 0
    for path, operations in spec["paths"].items():
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            security = operation.get("security") or []
            names = {name for requirement in security for name in requirement}
            if not names & {"bearerAuth", "apiKeyAuth"}:
                continue
            tried += 1
            anonymous = client.open(url, method=method.upper())
            assert anonymous.status_code == 401, (method, path)
            with_key = client.open(url, method=method.upper(), headers=key)
            if "apiKeyAuth" in names:
                assert with_key.status_code not in (401, 403), (method, path, with_key.json)
            else:
                assert with_key.status_code == 403, (method, path, with_key.status_code)
                assert with_key.json["code"] == "api_key_not_allowed"
    assert tried >= 15
