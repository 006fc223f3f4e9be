"""``flask db upgrade`` and ``downgrade`` on both job databases: from an empty
database to head and back, and from revision 0001 with users and jobs in it,
whose rows must come through with the new columns at their defaults and keep
working through the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask

from app.extensions import db
from app.schema_version import head_revisions
from tests.support.apps import BOTH_DATABASES, bearer

pytestmark = BOTH_DATABASES

HEAD = ",".join(sorted(head_revisions()))
PASSWORD = "a long enough password"


def flask_db(app: Flask, *args: str) -> None:
    """``flask db <args>``, as an operator runs it."""
    result = app.test_cli_runner().invoke(args=["db", *args])
    assert result.exit_code == 0, (result.output, result.exception)


def revision(app: Flask) -> str | None:
    with app.app_context(), db.engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def tables(app: Flask) -> set[str]:
    with app.app_context(), db.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def columns(app: Flask, table: str) -> set[str]:
    with app.app_context(), db.engine.connect() as connection:
        return {column["name"] for column in sa.inspect(connection).get_columns(table)}


def test_upgrade_from_empty_to_head_matches_the_records_and_downgrades_to_empty(
    empty_app: Flask,
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert tables(empty_app) == set()
    flask_db(empty_app, "upgrade")
    assert revision(empty_app) == HEAD
    assert tables(empty_app) == {
        "alembic_version",
        "api_keys",
        "batches",
        "jobs",
        "revoked_tokens",
        "users",
        "worker_heartbeats",
    }
    with empty_app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, db.metadata) == []

    flask_db(empty_app, "downgrade", "base")
    assert tables(empty_app) <= {"alembic_version"}
    assert revision(empty_app) is None
    flask_db(empty_app, "upgrade")  # and up again: the downgrades left nothing behind
    assert revision(empty_app) == HEAD


def _rows_at_0001(app: Flask) -> dict[str, Any]:
    """What a service at revision 0001 held: two accounts, a finished and a
    queued job, a revoked token and a worker's heartbeat. Inserted through the
    tables as 0001 made them (``jobs.engine``, no quota or webhook columns)."""
    from argon2 import PasswordHasher

    user_id, other_id = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    )
    done_id, queued_id = (
        "33333333-3333-4333-8333-333333333333",
        "44444444-4444-4444-8444-444444444444",
    )
    created = datetime(2026, 11, 24, 22, 30, 0)
    finished = datetime(2026, 11, 24, 22, 31, 5)
    result = {"files": [{"name": "vocals.wav", "size": 1234}], "stems": ["vocals", "other"]}
    with app.app_context(), db.engine.begin() as connection:
        meta = sa.MetaData()
        users = sa.Table("users", meta, autoload_with=connection)
        jobs = sa.Table("jobs", meta, autoload_with=connection)
        revoked = sa.Table("revoked_tokens", meta, autoload_with=connection)
        heartbeats = sa.Table("worker_heartbeats", meta, autoload_with=connection)
        assert "engine" in jobs.c and "stored_bytes" not in jobs.c
        connection.execute(
            users.insert(),
            [
                {
                    "id": user_id,
                    "email": "old@example.com",
                    "password_hash": PasswordHasher().hash(PASSWORD),
                    "created_at": created,
                },
                {
                    "id": other_id,
                    "email": "other@example.com",
                    "password_hash": PasswordHasher().hash(PASSWORD),
                    "created_at": created,
                },
            ],
        )
        common = {
            "owner_id": user_id,
            "kind": "separation",
            "progress": 0.0,
            "stage": "queued",
            "params": {"output_format": "wav", "shifts": 1},
            "input": {"filename": "song.wav", "duration": 2.0, "size": 352844, "format": "wav"},
            "attempts": 0,
            "created_at": created,
            "updated_at": created,
            "expires_at": datetime(2026, 11, 25, 22, 30, 0),
        }
        # One insert each: an executemany needs the same keys in every row.
        for row in (
            {
                **common,
                "id": done_id,
                "engine": "htdemucs",
                "status": "succeeded",
                "progress": 1.0,
                "stage": "done",
                "result": result,
                "metrics": {"run_seconds": 12.5, "attempt": 1},
                "attempts": 1,
                "task_id": done_id,
                "worker": "celery@old-host",
                "started_at": datetime(2026, 11, 24, 22, 30, 2),
                "finished_at": finished,
                "updated_at": finished,
            },
            {**common, "id": queued_id, "engine": "hpss", "status": "queued"},
        ):
            connection.execute(jobs.insert(), row)
        connection.execute(revoked.insert(), {"jti": "a" * 32, "expires_at": datetime(2099, 1, 1)})
        connection.execute(
            heartbeats.insert(),
            {"hostname": "celery@old-host", "queues": "separation", "seen_at": finished},
        )
    return {
        "done": done_id,
        "queued": queued_id,
        "result": result,
        "created": created,
        "finished": finished,
    }


def test_upgrading_from_0001_keeps_every_row_and_defaults_the_new_columns(
    empty_app: Flask,
) -> None:
    flask_db(empty_app, "upgrade", "0001")
    assert revision(empty_app) == "0001"
    old = _rows_at_0001(empty_app)

    flask_db(empty_app, "upgrade")
    assert revision(empty_app) == HEAD
    assert "engine" not in columns(empty_app, "jobs")
    from app.records import ApiKey, Job, RevokedToken, User, WorkerHeartbeat

    with empty_app.app_context():
        done = db.session.get(Job, old["done"])
        queued = db.session.get(Job, old["queued"])
        assert done is not None and queued is not None
        assert (done.model, done.status, done.attempts) == ("htdemucs", "succeeded", 1)
        assert (queued.model, queued.status) == ("hpss", "queued")
        assert done.result == old["result"] and done.metrics == {"run_seconds": 12.5, "attempt": 1}
        assert queued.params == {"output_format": "wav", "shifts": 1}
        assert (done.created_at, done.finished_at) == (old["created"], old["finished"])
        # The columns 0002 added, at their defaults.
        assert (done.stored_bytes, queued.stored_bytes) == (0, 0)
        assert (done.callback_url, done.webhook) == (None, None)
        users = db.session.scalars(sa.select(User).order_by(User.email)).all()
        assert [u.email for u in users] == ["old@example.com", "other@example.com"]
        assert all((u.max_active_jobs, u.max_storage_mb) == (None, None) for u in users)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 0
        assert db.session.get(RevokedToken, "a" * 32) is not None
        assert db.session.get(WorkerHeartbeat, "celery@old-host") is not None
        # 0005: the queued job already had its message, so it counts as
        # published (given its turn) when it was created; the ended one not.
        assert (queued.dispatched_at, done.dispatched_at) == (queued.created_at, None)
        # 0004: a model name longer than 0001's 64 characters fits now.
        done.model = "x" * 200
        db.session.commit()
        done.model = "htdemucs"
        db.session.commit()

    # What the old user sees through the API, and what they can do now.
    client = empty_app.test_client()
    login = client.post(
        "/api/v1/auth/login", json={"email": "old@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200, login.json
    headers = bearer(login.json["access_token"])
    listed = client.get("/api/v1/jobs", headers=headers).json
    assert listed["total"] == 2
    by_id = {job["id"]: job for job in listed["items"]}
    assert by_id[old["done"]]["status"] == "succeeded"
    assert by_id[old["done"]]["model"] == "htdemucs"
    assert by_id[old["queued"]]["status"] == "queued"
    me = client.get("/api/v1/auth/me", headers=headers).json
    assert me["usage"]["active_jobs"] == 1 and me["usage"]["stored_bytes"] == 0
    assert (
        client.post("/api/v1/auth/api-keys", json={"name": "ci"}, headers=headers).status_code
        == 201
    )
    canceled = client.post(f"/api/v1/jobs/{old['queued']}/cancel", headers=headers)
    assert canceled.status_code == 200 and canceled.json["status"] == "canceled"


def test_downgrading_to_0001_keeps_the_rows(empty_app: Flask) -> None:
    flask_db(empty_app, "upgrade", "0001")
    old = _rows_at_0001(empty_app)
    flask_db(empty_app, "upgrade")
    flask_db(empty_app, "downgrade", "0001")
    assert revision(empty_app) == "0001"
    assert "api_keys" not in tables(empty_app)
    assert {"engine", "stored_bytes", "callback_url"} & columns(empty_app, "jobs") == {"engine"}
    with empty_app.app_context(), db.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, engine, status FROM jobs ORDER BY id")).all()
        emails = connection.execute(sa.text("SELECT email FROM users ORDER BY email")).scalars()
        assert list(emails) == ["old@example.com", "other@example.com"]
    assert [tuple(row) for row in rows] == [
        (old["done"], "htdemucs", "succeeded"),
        (old["queued"], "hpss", "queued"),
    ]
