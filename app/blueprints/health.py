"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app
from marshmallow import Schema, fields
from sqlalchemy import select, text

from app.blueprints import Blueprint
from app.extensions import db
from app.records import WorkerHeartbeat, utcnow

blp = Blueprint("health", __name__, description="Health probes.")


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"], "example": "ok"})
    checks = fields.Dict(
        metadata={
            "description": "database, broker and workers: each with `ok` and details.",
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
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
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
