"""Apps made the way the tests make them, and the API steps many tests share.

``make_app`` builds an app on its own data directory (SQLite job database and
broker, no Redis) and remembers it: ``dispose_apps()``, which the autouse
fixture of tests/conftest.py calls after every test, closes what it keeps open.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from app.records import Job


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    """An app on ``data_dir`` with ``overrides`` as settings. Its jobs go to
    its SQLite broker: they stay queued unless a worker or eager mode runs them."""
    from flask_migrate import upgrade

    config = {
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_for(data_dir),
        "REDIS_URL": None,
        "TESTING": True,
        # Production keeps rate limits on; tests that exercise them turn them
        # back on (tests/test_rate_limits.py), the rest create jobs in bursts.
        "RATELIMIT_ENABLED": False,
        **overrides,
    }
    app = create_app(config)
    with app.app_context():
        upgrade()
    _apps.append(app)
    return app


# Which job database an app on a data directory gets: None is the embedded
# default (SQLite in DATA_DIR). The ``database`` fixture of tests/conftest.py
# points it at a PostgreSQL database per data directory for the tests it
# parametrizes, so every app (and every worker given ``job_env``) of such a
# test shares that one database, as several machines would.
_database_for: Callable[[Path], str] | None = None


# Modules whose tests run on both job databases: ``pytestmark = BOTH_DATABASES``
# (the ``database`` fixture of tests/conftest.py does the rest).
BOTH_DATABASES = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
# Tests about what PostgreSQL alone offers (several machines on one database).
POSTGRESQL_ONLY = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def database_for(data_dir: Path) -> str | None:
    return _database_for(data_dir) if _database_for is not None else None


def use_databases(chooser: Callable[[Path], str] | None) -> None:
    global _database_for
    _database_for = chooser


# Apps made during the current test, whose connections end with it.
_apps: list[Flask] = []


def dispose_apps() -> None:
    """A test's apps keep open files after it: SQLite connections to their job
    database and broker (three descriptors each), a local-notice socket and its
    thread. Released here, or a whole run passes 1,024 descriptors."""
    from kombu.transport import sqlalchemy as kombu_sqla

    from app import localbus

    while _apps:
        app = _apps.pop()
        with app.app_context():
            db.engine.dispose()
    for engine, _session in list(kombu_sqla.Channel._engines.values()):
        engine.dispose()
    localbus.close_all()


def register_and_login(client: FlaskClient, email: str | None = None) -> dict[str, str]:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    password = "a long enough password"
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.json
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def submit_separation(app: Flask, audio: bytes) -> tuple[dict[str, str], str]:
    """A new user uploads ``audio`` for an hpss separation: their headers and the job id."""
    client = app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(audio), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return headers, response.json["id"]


def fresh_job(job_id: str) -> Job:
    """The job's row as the database has it now (not the session's cached copy)."""
    db.session.expire_all()
    job = db.session.get(Job, job_id)
    assert job is not None
    return job


def bearer(token: str) -> dict[str, str]:
    """The Authorization header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}
