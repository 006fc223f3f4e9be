"""Accounts and tokens through the real API."""

from __future__ import annotations

import base64
import json

from flask.testing import FlaskClient

CREDS = {"email": "ada@example.com", "password": "correct horse battery"}


def _login(client: FlaskClient) -> dict:
    assert client.post("/api/v1/auth/register", json=CREDS).status_code == 201
    response = client.post("/api/v1/auth/login", json=CREDS)
    assert response.status_code == 200
    return response.json


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_login_me(client: FlaskClient) -> None:
    response = client.post("/api/v1/auth/register", json=CREDS)
    assert response.status_code == 201
    assert response.json["email"] == "ada@example.com"
    assert "password" not in response.json and "password_hash" not in response.json

    tokens = client.post("/api/v1/auth/login", json=CREDS).json
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 15 * 60
    me = client.get("/api/v1/auth/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json["email"] == "ada@example.com"


def test_email_is_case_insensitive_and_unique(client: FlaskClient) -> None:
    assert client.post("/api/v1/auth/register", json=CREDS).status_code == 201
    again = client.post("/api/v1/auth/register", json={**CREDS, "email": "ADA@example.com"})
    assert again.status_code == 409
    assert again.json["code"] == "email_taken"
    login = client.post("/api/v1/auth/login", json={**CREDS, "email": " Ada@Example.com "})
    assert login.status_code == 200


def test_register_validation(client: FlaskClient) -> None:
    response = client.post("/api/v1/auth/register", json={"email": "nope", "password": "short"})
    assert response.status_code == 422
    body = response.json
    assert body["code"] == "validation_error"
    assert body["status"] == 422
    assert set(body["errors"]) == {"email", "password"}


def test_login_failures_look_the_same(client: FlaskClient) -> None:
    client.post("/api/v1/auth/register", json=CREDS)
    wrong_password = client.post("/api/v1/auth/login", json={**CREDS, "password": "x" * 12})
    no_account = client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12}
    )
    assert wrong_password.status_code == no_account.status_code == 401
    assert wrong_password.json == no_account.json
    assert wrong_password.json["code"] == "invalid_credentials"


def test_token_problems_answer_401_json(client: FlaskClient) -> None:
    tokens = _login(client)
    header, payload, _sig = tokens["access_token"].split(".")
    unsigned = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        .rstrip(b"=")
        .decode()
    )
    cases = {
        "missing": {},
        "malformed": _bearer("not-a-token"),
        "bad signature": _bearer(f"{header}.{payload}.AAAA"),
        "alg none": _bearer(f"{unsigned}.{payload}."),
        "refresh as access": _bearer(tokens["refresh_token"]),
    }
    for name, headers in cases.items():
        response = client.get("/api/v1/auth/me", headers=headers)
        assert response.status_code == 401, name
        assert response.is_json, name
        assert response.json["status"] == 401, name
        assert response.json["code"], name


def test_refresh_gives_a_working_access_token(client: FlaskClient) -> None:
    tokens = _login(client)
    response = client.post("/api/v1/auth/refresh", headers=_bearer(tokens["refresh_token"]))
    assert response.status_code == 200
    assert "refresh_token" not in response.json
    me = client.get("/api/v1/auth/me", headers=_bearer(response.json["access_token"]))
    assert me.status_code == 200
    # An access token cannot refresh.
    denied = client.post("/api/v1/auth/refresh", headers=_bearer(tokens["access_token"]))
    assert denied.status_code == 401


def test_logout_revokes_access_and_refresh(client: FlaskClient) -> None:
    tokens = _login(client)
    assert (
        client.post("/api/v1/auth/logout", headers=_bearer(tokens["access_token"])).status_code
        == 204
    )
    me = client.get("/api/v1/auth/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 401
    assert me.json["code"] == "token_revoked"
    refresh = client.post("/api/v1/auth/refresh", headers=_bearer(tokens["refresh_token"]))
    assert refresh.status_code == 401


def test_logout_with_refresh_token_ends_the_session(client: FlaskClient) -> None:
    tokens = _login(client)
    fresh = client.post("/api/v1/auth/refresh", headers=_bearer(tokens["refresh_token"])).json
    assert (
        client.post("/api/v1/auth/logout", headers=_bearer(tokens["refresh_token"])).status_code
        == 204
    )
    for token in (tokens["access_token"], fresh["access_token"]):
        assert client.get("/api/v1/auth/me", headers=_bearer(token)).status_code == 401


def test_other_sessions_survive_a_logout(client: FlaskClient) -> None:
    first = _login(client)
    second = client.post("/api/v1/auth/login", json=CREDS).json
    client.post("/api/v1/auth/logout", headers=_bearer(first["access_token"]))
    assert client.get("/api/v1/auth/me", headers=_bearer(second["access_token"])).status_code == 200
