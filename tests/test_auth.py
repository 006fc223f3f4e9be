"""Accounts and tokens through the real API."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.apps import BOTH_DATABASES, bearer

pytestmark = BOTH_DATABASES

CREDS = {"email": "ada@example.com", "password": "correct horse battery"}


def _login(client: FlaskClient) -> dict:
    assert client.post("/api/v1/auth/register", json=CREDS).status_code == 201
    response = client.post("/api/v1/auth/login", json=CREDS)
    assert response.status_code == 200
    return response.json


def test_register_login_me(client: FlaskClient) -> None:
    response = client.post("/api/v1/auth/register", json=CREDS)
    assert response.status_code == 201
    assert response.json["email"] == "ada@example.com"
    assert "password" not in response.json and "password_hash" not in response.json

    tokens = client.post("/api/v1/auth/login", json=CREDS).json
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 15 * 60
    me = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
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


def test_password_policy(client: FlaskClient) -> None:
    cases = {
        "short": ("ada@example.com", "nine char", "at least 10 characters"),
        "the e-mail": ("ada.lovelace@example.com", "Ada.Lovelace@example.com", "e-mail"),
        "the e-mail's name": ("ada.lovelace@example.com", "ada.lovelace", "e-mail"),
        "common": ("ada@example.com", "Password123", "too common"),
        "common with spaces": ("ada@example.com", "qwerty uiop", "too common"),
        "one character": ("ada@example.com", "zzzzzzzzzzzz", "single character"),
    }
    for label, (email, password, reason) in cases.items():
        response = client.post("/api/v1/auth/register", json={"email": email, "password": password})
        assert response.status_code == 422, label
        assert response.json["code"] == "validation_error", label
        assert list(response.json["errors"]) == ["password"], label
        assert any(reason in problem for problem in response.json["errors"]["password"]), label
    ok = client.post(
        "/api/v1/auth/register", json={"email": "ada@example.com", "password": "a" * 9 + "b"}
    )
    assert ok.status_code == 201


def test_the_policy_holds_outside_http_too(app) -> None:
    import pytest

    from app.errors import ServiceError
    from app.services import auth

    with app.app_context(), pytest.raises(ServiceError) as raised:
        auth.register("ada@example.com", "1234567890")
    assert raised.value.status == 422 and "too common" in raised.value.errors["password"][0]


def test_unknown_accounts_cost_a_hash_check_too(client: FlaskClient, monkeypatch) -> None:
    """Login verifies an argon2 hash whether or not the account exists, so the
    answer takes as long for an unknown e-mail as for a wrong password."""
    from app.services import auth

    client.post("/api/v1/auth/register", json=CREDS)
    verified: list[str] = []
    real = auth._hasher

    class Spy:
        def verify(self, hash_: str, password: str) -> bool:
            verified.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(auth, "_hasher", Spy())
    client.post("/api/v1/auth/login", json={**CREDS, "password": "x" * 12})
    client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12})
    assert len(verified) == 2
    assert verified[1] == auth._DUMMY_HASH and verified[0] != auth._DUMMY_HASH


def test_login_failures_look_the_same(client: FlaskClient) -> None:
    client.post("/api/v1/auth/register", json=CREDS)
    wrong_password = client.post("/api/v1/auth/login", json={**CREDS, "password": "x" * 12})
    no_account = client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12}
    )
    assert wrong_password.status_code == no_account.status_code == 401
    assert wrong_password.json == no_account.json
    assert wrong_password.json["code"] == "invalid_credentials"


def test_refresh_gives_a_working_access_token(client: FlaskClient) -> None:
    tokens = _login(client)
    response = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 200
    assert "refresh_token" not in response.json
    me = client.get("/api/v1/auth/me", headers=bearer(response.json["access_token"]))
    assert me.status_code == 200
    # An access token cannot refresh.
    denied = client.post("/api/v1/auth/refresh", headers=bearer(tokens["access_token"]))
    assert denied.status_code == 401


def test_logout_revokes_access_and_refresh(client: FlaskClient) -> None:
    tokens = _login(client)
    assert (
        client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"])).status_code
        == 204
    )
    me = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 401
    assert me.json["code"] == "token_revoked"
    refresh = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refresh.status_code == 401


def test_logout_with_refresh_token_ends_the_session(client: FlaskClient) -> None:
    tokens = _login(client)
    fresh = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"])).json
    assert (
        client.post("/api/v1/auth/logout", headers=bearer(tokens["refresh_token"])).status_code
        == 204
    )
    for token in (tokens["access_token"], fresh["access_token"]):
        assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


def test_other_sessions_survive_a_logout(client: FlaskClient) -> None:
    first = _login(client)
    second = client.post("/api/v1/auth/login", json=CREDS).json
    client.post("/api/v1/auth/logout", headers=bearer(first["access_token"]))
    assert client.get("/api/v1/auth/me", headers=bearer(second["access_token"])).status_code == 200
