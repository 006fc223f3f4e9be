"""Token tampering, expiry and revocation: every bad token gets exactly 401 JSON.

Threat: a client forging or replaying tokens (OWASP API2; RFC 8725 §3.1;
reliability notes R-A1, R-A2). Forged tokens are built here with PyJWT and raw
base64, against the app's real signing key where that makes the forgery
strongest (a wrong algorithm, an expired or not-yet-valid token, missing
claims), and tried on several protected routes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt as pyjwt
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import BOTH_DATABASES, bearer, make_app

pytestmark = BOTH_DATABASES

PASSWORD = "a long enough password"
ROUTES = [
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/jobs"),
    ("GET", f"/api/v1/jobs/{uuid.uuid4()}"),
    ("POST", "/api/v1/separations"),
    ("POST", "/api/v1/auth/api-keys"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _session(client: FlaskClient, email: str = "ada@example.com") -> dict[str, str]:
    body = {"email": email, "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200
    return response.json


def _claims(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})


def _assert_401(client: FlaskClient, headers: dict[str, str], label: str) -> None:
    for method, path in ROUTES:
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 401, (label, method, path, response.status_code)
        assert response.is_json, (label, path)
        body = response.json
        assert body["status"] == 401 and body["code"] and body["message"], (label, body)


def test_forged_and_malformed_tokens_get_401(app: Flask, client: FlaskClient) -> None:
    tokens = _session(client)
    access = tokens["access_token"]
    # Sanity: the genuine token works on every route tried below.
    assert client.get("/api/v1/auth/me", headers=bearer(access)).status_code == 200

    secret = app.config["JWT_SECRET_KEY"]
    claims = _claims(access)
    now = int(time.time())
    header_b64, payload_b64, signature_b64 = access.split(".")
    signed = lambda c, **kw: pyjwt.encode(c, secret, algorithm="HS256", **kw)  # noqa: E731

    cases: dict[str, dict[str, str]] = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "other scheme": {"Authorization": f"Basic {access}"},
        "not a token": bearer("not-a-token"),
        "two segments": bearer(f"{header_b64}.{payload_b64}"),
        "four segments": bearer(f"{access}.AAAA"),
        "bad base64": bearer(f"{header_b64}.{payload_b64}!.{signature_b64}"),
        "flipped signature": bearer(f"{header_b64}.{payload_b64}.{signature_b64[::-1]}"),
        "payload swapped": bearer(
            f"{header_b64}.{_segment({**claims, 'sub': str(uuid.uuid4())})}.{signature_b64}"
        ),
        "alg none": bearer(f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{payload_b64}."),
        "alg None": bearer(f"{_segment({'alg': 'None', 'typ': 'JWT'})}.{payload_b64}."),
        "alg none, signature kept": bearer(
            f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{payload_b64}.{signature_b64}"
        ),
        "wrong key": bearer(pyjwt.encode(claims, "x" * 64, algorithm="HS256")),
        "right key, HS512": bearer(pyjwt.encode(claims, secret, algorithm="HS512")),
        "right key, HS384": bearer(pyjwt.encode(claims, secret, algorithm="HS384")),
        # RS/HS confusion: the header claims RS256 while the signature is an
        # HMAC under the server's own key; a server trusting the header's alg
        # would verify it. Also an RS256 token with a made-up signature.
        "RS256 header, HMAC signature": bearer(
            _hmac_token({"alg": "RS256", "typ": "JWT"}, claims, secret.encode())
        ),
        "RS256 made-up signature": bearer(
            f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{payload_b64}.{_b64(b'x' * 256)}"
        ),
        "refresh as access": bearer(tokens["refresh_token"]),
        "expired": bearer(
            signed({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 60})
        ),
        "not yet valid (nbf)": bearer(signed({**claims, "nbf": now + 3600, "exp": now + 7200})),
        "missing sub": bearer(signed({k: v for k, v in claims.items() if k != "sub"})),
        "sub not a string": bearer(signed({**claims, "sub": 12345})),
        "unknown user": bearer(signed({**claims, "sub": str(uuid.uuid4())})),
        "type changed to refresh": bearer(signed({**claims, "type": "refresh"})),
        "16 KB header": bearer(
            f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'pad': 'A' * 16384})}"
            f".{payload_b64}.{signature_b64}"
        ),
        "16 KB garbage": bearer("A" * 16384),
        "api key shape, unknown": bearer("ams_" + "A" * 43),
    }
    for label, headers in cases.items():
        _assert_401(client, headers, label)


def test_missing_exp_is_refused(app: Flask, client: FlaskClient) -> None:
    """A token without ``exp`` would live forever: refused even when signed."""
    access = _session(client)["access_token"]
    claims = {k: v for k, v in _claims(access).items() if k != "exp"}
    token = pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")
    _assert_401(client, bearer(token), "no exp")


def test_token_of_a_deleted_user_gets_401(client: FlaskClient) -> None:
    tokens = _session(client)
    headers = bearer(tokens["access_token"])
    deleted = client.delete("/api/v1/auth/me", headers=headers, json={"password": PASSWORD})
    assert deleted.status_code == 204
    _assert_401(client, headers, "deleted user")
    refresh = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refresh.status_code == 401 and refresh.json["status"] == 401


def test_revoked_tokens_get_401_on_every_route(client: FlaskClient) -> None:
    tokens = _session(client)
    logout = client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert logout.status_code == 204
    _assert_401(client, bearer(tokens["access_token"]), "revoked access")
    assert (
        client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"])).json["code"]
        == "token_revoked"
    )
    refresh = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refresh.status_code == 401 and refresh.json["code"] == "token_revoked"


def test_revocations_live_in_redis_with_a_ttl_and_survive_restarts(
    tmp_path: Path, redis_server: Any
) -> None:
    """With REDIS_URL set, logout writes the token ids to Redis (nothing in the
    database), each with the token's remaining lifetime as TTL; they hold after
    the app restarts and after Redis restarts (append-only file)."""
    import redis

    from app.extensions import db
    from app.records import RevokedToken

    app = make_app(tmp_path / "data", REDIS_URL=redis_server.url)
    client = app.test_client()
    tokens = _session(client)
    kept = client.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    ).json
    assert (
        client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"])).status_code
        == 204
    )

    access, refresh = _claims(tokens["access_token"]), _claims(tokens["refresh_token"])
    store = redis.Redis.from_url(redis_server.url)
    access_ttl = store.ttl(f"ams:revoked:{access['jti']}")
    refresh_ttl = store.ttl(f"ams:revoked:{refresh['jti']}")
    assert 0 < access_ttl <= access["exp"] - int(time.time()) + 1
    assert access["exp"] - int(time.time()) - 5 <= access_ttl
    assert 29 * 86400 < refresh_ttl <= 30 * 86400
    with app.app_context():
        assert db.session.query(RevokedToken).count() == 0

    def check(client: FlaskClient) -> None:
        me = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 401 and me.json["code"] == "token_revoked"
        again = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
        assert again.status_code == 401 and again.json["code"] == "token_revoked"
        # The other session is untouched.
        other = client.get("/api/v1/auth/me", headers=bearer(kept["access_token"]))
        assert other.status_code == 200

    check(client)
    restarted_app = make_app(
        tmp_path / "data", REDIS_URL=redis_server.url, SECRET_KEY=app.config["SECRET_KEY"]
    )
    check(restarted_app.test_client())
    redis_server.stop()  # a clean restart: the append-only file is replayed
    redis_server.start()
    check(restarted_app.test_client())


def test_redis_down_refuses_instead_of_letting_tokens_through(
    tmp_path: Path, redis_server: Any
) -> None:
    """Without Redis a revocation cannot be checked: the answer is 503, not a pass."""
    app = make_app(tmp_path / "data", REDIS_URL=redis_server.url)
    client = app.test_client()
    tokens = _session(client)
    redis_server.stop()
    response = client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 503
    assert response.json["code"] == "service_unavailable"
    assert response.headers["Retry-After"]


def test_tokens_are_short_lived_and_pinned_to_hs256(client: FlaskClient) -> None:
    tokens = _session(client)
    access, refresh = _claims(tokens["access_token"]), _claims(tokens["refresh_token"])
    assert access["exp"] - access["iat"] <= 15 * 60
    assert refresh["exp"] - refresh["iat"] <= 30 * 86400
    assert pyjwt.get_unverified_header(tokens["access_token"])["alg"] == "HS256"
