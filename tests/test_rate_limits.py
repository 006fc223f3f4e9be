"""Rate limits: login and refresh per client address and per account, job
creation per user across every job-creating route; 429 JSON with Retry-After.

Threat: password guessing and resource exhaustion (OWASP API2, API4;
reliability notes R-L1). The suite's other tests run with limits off
(tests/support/apps.py); here they are on, with small limits so bursts are short.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import config as config_module
from tests.support.apps import make_app, register_and_login

PASSWORD = "a long enough password"


def limited_app(tmp_path: Path, **overrides: Any) -> Flask:
    return make_app(tmp_path / "data", RATELIMIT_ENABLED=True, **overrides)


def _ip(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def _login(client: FlaskClient, email: str, password: str, address: str) -> Any:
    return client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, **_ip(address)
    )


def _assert_429(response: Any, window_seconds: int = 60) -> int:
    assert response.status_code == 429, response.json
    body = response.json
    assert body["code"] == "rate_limited" and body["status"] == 429
    assert "retry in" in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window_seconds
    return retry_after


def _upload(client: FlaskClient, headers: dict[str, str], song: bytes, route: str) -> Any:
    data: dict[str, Any] = {"file": (io.BytesIO(song), "song.wav")}
    if route == "/api/v1/separations":
        data["model"] = "hpss"
    return client.post(route, headers=headers, data=data, content_type="multipart/form-data")


def test_limits_are_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATELIMIT_ENABLED", raising=False)
    settings = config_module.from_environment()
    assert settings["RATELIMIT_ENABLED"] is True
    assert settings["LOGIN_RATE_LIMIT"] == "5/minute"
    # No daily cap by default (one person's library); MAX_ACTIVE_JOBS off too.
    assert settings["JOB_RATE_LIMIT"] == "60/minute"
    assert settings["MAX_ACTIVE_JOBS"] == 0 and settings["MAX_RUNNING_JOBS"] == 2
    monkeypatch.setenv("JOB_RATE_LIMIT", "ten a minute")
    with pytest.raises(RuntimeError, match="JOB_RATE_LIMIT"):
        config_module.finalise(config_module.from_environment())


def test_login_is_limited_per_address(tmp_path: Path) -> None:
    client = limited_app(tmp_path, LOGIN_RATE_LIMIT="3/minute").test_client()
    for n in range(3):
        response = _login(client, f"nobody{n}@example.com", "wrong password", "10.0.0.1")
        assert response.status_code == 401
    _assert_429(_login(client, "nobody9@example.com", "wrong password", "10.0.0.1"))
    # Another address is not affected.
    assert _login(client, "nobody@example.com", "wrong password", "10.0.0.2").status_code == 401


PROXY = "10.0.0.100"  # every request arrives from the reverse proxy's address


def _forwarded_login(client: FlaskClient, n: int, forwarded_for: str) -> Any:
    return client.post(
        "/api/v1/auth/login",
        json={"email": f"nobody{n}@example.com", "password": "wrong password"},
        headers={"X-Forwarded-For": forwarded_for},
        **_ip(PROXY),
    )


def test_behind_a_trusted_proxy_logins_are_limited_per_forwarded_address(
    tmp_path: Path,
) -> None:
    """TRUSTED_PROXY_HOPS=1 (compose's nginx): the address the proxy appended
    is the client's, so clients behind one proxy do not share a budget, and
    whatever a client put in X-Forwarded-For itself does not count."""
    app = limited_app(tmp_path, LOGIN_RATE_LIMIT="3/minute", TRUSTED_PROXY_HOPS=1)
    client = app.test_client()
    # The client's own header comes first; nginx appends the real address.
    for n, spoofed in enumerate(("1.1.1.1", "2.2.2.2", "3.3.3.3")):
        response = _forwarded_login(client, n, f"{spoofed}, 203.0.113.7")
        assert response.status_code == 401
    _assert_429(_forwarded_login(client, 9, "4.4.4.4, 203.0.113.7"))
    # Another client behind the same proxy has a budget of its own.
    assert _forwarded_login(client, 10, "203.0.113.8").status_code == 401


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(tmp_path: Path) -> None:
    """The default (TRUSTED_PROXY_HOPS=0): a client that sets X-Forwarded-For
    itself is still limited by the address it connects from."""
    assert config_module.from_environment()["TRUSTED_PROXY_HOPS"] == 0
    client = limited_app(tmp_path, LOGIN_RATE_LIMIT="3/minute").test_client()
    for n in range(3):
        assert _forwarded_login(client, n, f"198.51.100.{n}").status_code == 401
    _assert_429(_forwarded_login(client, 9, "198.51.100.9"))


def test_trusted_proxy_hops_cannot_be_negative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "-1")
    with pytest.raises(RuntimeError, match="TRUSTED_PROXY_HOPS"):
        config_module.finalise(config_module.from_environment())


def test_login_is_limited_per_account(tmp_path: Path) -> None:
    """Guessing one account's password from many addresses hits the account's
    limit; once hit, even the right password waits."""
    client = limited_app(tmp_path, LOGIN_RATE_LIMIT="3/minute").test_client()
    body = {"email": "ada@example.com", "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json=body, **_ip("10.1.0.1")).status_code == 201
    for n in range(3):
        response = _login(client, "ada@example.com", f"guess {n} password", f"10.0.0.{n + 1}")
        assert response.status_code == 401
    _assert_429(_login(client, " ADA@example.com", PASSWORD, "10.0.0.99"))
    # Other accounts from that address still get an answer.
    assert _login(client, "bob@example.com", "wrong password", "10.0.0.99").status_code == 401


def test_refresh_is_limited(tmp_path: Path) -> None:
    client = limited_app(tmp_path, REFRESH_RATE_LIMIT="2/minute").test_client()
    tokens = client.post(
        "/api/v1/auth/register", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert tokens.status_code == 201
    tokens = _login(client, "a@example.com", PASSWORD, "10.0.0.1").json
    headers = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    for _ in range(2):
        assert client.post("/api/v1/auth/refresh", headers=headers).status_code == 200
    _assert_429(client.post("/api/v1/auth/refresh", headers=headers))


def test_job_creation_burst_gets_exactly_the_limit(tmp_path: Path, song_wav: bytes) -> None:
    """A burst over JOB_RATE_LIMIT: exactly the limit is accepted, the rest get
    429 before their upload is stored; the budget is shared by every route
    that creates a job, per user; reads are not limited."""
    app = limited_app(tmp_path, JOB_RATE_LIMIT="4/minute", MAX_ACTIVE_JOBS=0)
    client = app.test_client()
    ada = register_and_login(client)
    routes = ["/api/v1/separations", "/api/v1/analyses", "/api/v1/transcriptions"]
    statuses = [_upload(client, ada, song_wav, routes[n % 3]).status_code for n in range(7)]
    generation = client.post("/api/v1/generations", headers=ada, json={"prompt": "drums"})
    openai = client.post(
        "/v1/audio/transcriptions",
        headers=ada,
        data={"file": (io.BytesIO(song_wav), "a.wav"), "model": "whisper-1"},
        content_type="multipart/form-data",
    )
    assert statuses == [202] * 4 + [429] * 3
    _assert_429(generation)
    _assert_429(openai)
    assert client.get("/api/v1/jobs", headers=ada).json["total"] == 4
    stored = list((tmp_path / "data" / "jobs").iterdir())
    assert len(stored) == 4
    assert list((tmp_path / "data" / "tmp").glob("upload-*")) == []
    for _ in range(10):
        assert client.get("/api/v1/jobs", headers=ada).status_code == 200
    # Another user has their own budget.
    bob = register_and_login(client)
    assert _upload(client, bob, song_wav, routes[0]).status_code == 202


def test_daily_job_limit_says_when_to_come_back(tmp_path: Path, song_wav: bytes) -> None:
    app = limited_app(tmp_path, JOB_RATE_LIMIT="10/minute;2/day", MAX_ACTIVE_JOBS=0)
    client = app.test_client()
    ada = register_and_login(client)
    for _ in range(2):
        assert _upload(client, ada, song_wav, "/api/v1/analyses").status_code == 202
    retry_after = _assert_429(_upload(client, ada, song_wav, "/api/v1/analyses"), 86400)
    assert retry_after > 3600
    assert (
        "2 per 1 day"
        in client.post("/api/v1/generations", headers=ada, json={"prompt": "x"}).json["message"]
    )


def test_counters_live_in_redis_and_are_shared(
    tmp_path: Path, redis_server: Any, song_wav: bytes
) -> None:
    """With REDIS_URL, two API processes (two apps here) share one counter."""
    import redis

    first = limited_app(tmp_path, REDIS_URL=redis_server.url, LOGIN_RATE_LIMIT="3/minute")
    second = limited_app(
        tmp_path,
        REDIS_URL=redis_server.url,
        LOGIN_RATE_LIMIT="3/minute",
        SECRET_KEY=first.config["SECRET_KEY"],
    )
    assert first.config["RATELIMIT_STORAGE_URI"] == redis_server.url
    a, b = first.test_client(), second.test_client()
    assert _login(a, "x@example.com", "wrong password", "10.0.0.1").status_code == 401
    assert _login(b, "y@example.com", "wrong password", "10.0.0.1").status_code == 401
    assert _login(a, "z@example.com", "wrong password", "10.0.0.1").status_code == 401
    _assert_429(_login(b, "w@example.com", "wrong password", "10.0.0.1"))
    keys = redis.Redis.from_url(redis_server.url).keys("LIMITS:LIMITER/ams-limits/10.0.0.1/*")
    assert keys == [b"LIMITS:LIMITER/ams-limits/10.0.0.1/auth.login/3/1/minute"]


def test_limiter_redis_down_refuses_submits_and_keeps_key_reads(
    tmp_path: Path, redis_server: Any, song_wav: bytes
) -> None:
    """Redis down: a submit cannot be counted, so it is refused with 503 (never
    a 500, never waved through); reads with an API key, which need no Redis,
    still work."""
    app = limited_app(tmp_path, REDIS_URL=redis_server.url)
    client = app.test_client()
    login = register_and_login(client)
    key = client.post("/api/v1/auth/api-keys", headers=login, json={"name": "k"}).json["key"]
    headers = {"Authorization": f"Bearer {key}"}
    redis_server.stop()
    response = _upload(client, headers, song_wav, "/api/v1/analyses")
    assert response.status_code == 503
    assert response.json["code"] == "service_unavailable"
    assert response.headers["Retry-After"]
    reads = client.get("/api/v1/jobs", headers=headers)
    assert reads.status_code == 200 and reads.json["total"] == 0
