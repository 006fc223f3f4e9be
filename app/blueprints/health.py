"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from marshmallow import Schema, fields
from sqlalchemy import select

from app.blueprints import Blueprint
from app.extensions import db
from app.records import WorkerHeartbeat, utcnow
from app.schema_version import schema_state

blp = Blueprint("health", __name__, description="Health probes.")


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"], "example": "ok"})
    checks = fields.Dict(
        metadata={
            "description": "database, broker and workers: each with `ok` and details. "
            "`database` names the schema `revision` found and the `head` this release needs; "
            "when they differ, `error` is `schema_not_current` and `message` says what to run.",
            "example": {"database": {"ok": True}, "broker": {"ok": True}, "workers": {"ok": True}},
        }
    )


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema)
def healthz() -> dict[str, str]:
    """The API process is alive."""
    return {"status": "ok"}


def readiness() -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        state = schema_state(db.session.connection())
        checks["database"] = {
            "ok": state.current,
            "revision": ",".join(sorted(state.revisions)) or None,
            "head": ",".join(sorted(state.heads)),
        }
        if not state.current:
            checks["database"]["error"] = "schema_not_current"
            checks["database"]["message"] = state.describe()
    except Exception as exc:
        db.session.rollback()
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = {"ok": True, "transport": celery.conf.broker_url.split(":", 1)[0]}
    except Exception as exc:
        checks["broker"] = {"ok": False, "error": type(exc).__name__}
    try:
        window = 3 * float(current_app.config["WORKER_HEARTBEAT_SECONDS"]) + 5
        rows = db.session.execute(
            select(WorkerHeartbeat).where(
                WorkerHeartbeat.seen_at >= utcnow() - timedelta(seconds=window)
            )
        ).scalars()
        workers = [{"hostname": r.hostname, "queues": r.queues.split(",")} for r in rows]
        checks["workers"] = {"ok": bool(workers), "alive": workers}
    except Exception as exc:
        db.session.rollback()
        checks["workers"] = {"ok": False, "error": type(exc).__name__}
    return all(c["ok"] for c in checks.values()), checks


@blp.route("/readyz", methods=["GET"])
@blp.response(200, ReadinessSchema)
@blp.alt_response(
    503, schema=ReadinessSchema, description="A dependency is down; `checks` says which."
)
def readyz() -> tuple[dict[str, Any], int]:
    """Database, broker and at least one worker are reachable."""
    ok, checks = readiness()
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
