"""An API started before ``flask db upgrade``: /readyz names the schema
revision it found and the head it needs, and requests get a 503 that says what
to run instead of a 500. On both job databases."""

from __future__ import annotations

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from app.extensions import db
from app.schema_version import head_revisions
from tests.support.apps import BOTH_DATABASES

pytestmark = BOTH_DATABASES

HEAD = ",".join(sorted(head_revisions()))
ACCOUNT = {"email": "first@example.com", "password": "a long enough password"}


def test_readyz_and_requests_name_an_unmigrated_database(empty_app: Flask) -> None:
    app = empty_app
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    database = ready.json["checks"]["database"]
    assert database["ok"] is False
    assert database["error"] == "schema_not_current"
    assert database["revision"] is None and database["head"] == HEAD
    assert "flask --app wsgi db upgrade" in database["message"]

    register = client.post("/api/v1/auth/register", json=ACCOUNT)
    assert register.status_code == 503, register.json
    assert register.json["code"] == "schema_not_current"
    assert register.json["status"] == 503
    assert HEAD in register.json["message"] and "db upgrade" in register.json["message"]
    assert "Traceback" not in register.get_data(as_text=True)
    assert register.headers["Retry-After"]

    # The operator runs the upgrade; the same process serves at once.
    with app.app_context():
        upgrade()
    assert client.post("/api/v1/auth/register", json=ACCOUNT).status_code == 201
    ready = client.get("/readyz")
    assert ready.json["checks"]["database"] == {"ok": True, "revision": HEAD, "head": HEAD}


def test_readyz_names_a_revision_behind_the_head(empty_app: Flask) -> None:
    app = empty_app
    with app.app_context():
        upgrade(revision="0003")
    database = app.test_client().get("/readyz").json["checks"]["database"]
    assert database["ok"] is False and database["revision"] == "0003"
    assert f"not the head revision {HEAD}" in database["message"]


def test_readyz_names_a_revision_from_a_newer_release(empty_app: Flask) -> None:
    app = empty_app
    with app.app_context():
        upgrade()
        db.session.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
        db.session.commit()
    database = app.test_client().get("/readyz").json["checks"]["database"]
    assert database["ok"] is False and database["revision"] == "ffff"
    assert "does not know" in database["message"]
