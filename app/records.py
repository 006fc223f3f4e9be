"""SQL records: users, jobs, batches, revoked tokens and worker heartbeats.

(``app/models`` holds the ML engines, so the tables live here.) The job table is
the single source of truth for job state: the API never asks Celery's result
backend, so a lost broker message or a flushed backend cannot hide a job.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db

# ``expired``: a finished job past ``expires_at`` whose files (and result) are gone.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")
ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "canceled", "expired")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


class User(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Per-user quota overrides; None means the configured default applies.
    max_active_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    max_storage_mb: Mapped[int | None] = mapped_column(Integer, default=None)

    jobs: Mapped[list[Job]] = relationship(back_populates="owner", cascade="all, delete-orphan")
    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="owner", cascade="all, delete-orphan"
    )


class Job(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    # The model (or, for analysis jobs, the analyser) the job runs with.
    model: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(32), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    worker: Mapped[str | None] = mapped_column(String(255), default=None)
    # Bytes this job keeps on disk (input + published results), for storage quotas.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Webhook: where to POST the job when it ends, and the delivery record.
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # When its task message was published: a queued job without one waits in
    # the database for its owner's turn (app/services/fair_queue.py).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None, index=True)

    # The batch the job was submitted in (app/services/batches.py), if any.
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL"), default=None, index=True
    )

    owner: Mapped[User] = relationship(back_populates="jobs")

    __table_args__ = (Index("ix_jobs_owner_status", "owner_id", "status"),)

    @property
    def error(self) -> dict[str, str] | None:
        if self.error_code is None:
            return None
        return {"code": self.error_code, "message": self.error_message or ""}

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Batch(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    """Many inputs submitted together with one set of options: one job each
    (``jobs.batch_id``). Its status and counts are computed from its jobs
    (app/services/batches.py); the row keeps what the jobs cannot tell."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    # The options every job of the batch was submitted with (as validated).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Inputs the request carried (each became a job).
    inputs: Mapped[int] = mapped_column(Integer, default=0)
    # Webhook: where to POST the batch when it has ended, and the delivery record.
    callback_url: Mapped[str | None] = mapped_column(Text, default=None)
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # Set once every input has its job: before that the batch cannot end.
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    # Set once, by whoever saw its last job end (a compare-and-set).
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class ApiKey(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    """A personal API key for scripts: only its SHA-256 is stored, so a leaked
    database does not leak usable keys; ``prefix`` lets users tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    owner: Mapped[User] = relationship(back_populates="api_keys")


class RevokedToken(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    """A JWT that logged out before it expired (rows past ``expires_at`` are purged)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class WorkerHeartbeat(db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    """Each worker process writes here periodically.

    ``/readyz`` reads it to know a worker is alive. Celery's broadcast ``ping``
    does not work on the SQLite broker, a heartbeat row does on every broker.
    """

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[str] = mapped_column(String(255), default="")
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
