"""Per-user quotas: jobs waiting or running at once, and bytes kept on disk.

Defaults come from ``MAX_ACTIVE_JOBS`` and ``MAX_STORAGE_MB`` (0 = no limit);
``reserve`` checks them atomically with the insert of a new job;
an admin can override them per user (``flask users set-quota``). Storage is the
sum of ``Job.stored_bytes`` over the user's jobs: the input, counted at submit,
plus the published results, counted when the job succeeds; deleting or
expiring a job gives its bytes back.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import func, select, update

from app.errors import ServiceError
from app.extensions import db
from app.records import ACTIVE_STATUSES, Job, User

MB = 1024 * 1024


def max_active_jobs(user: User) -> int | None:
    """The user's limit on queued + running jobs, or None for no limit."""
    value = user.max_active_jobs
    if value is None:
        value = int(current_app.config["MAX_ACTIVE_JOBS"])
    return value or None


def max_storage_bytes(user: User) -> int | None:
    value = user.max_storage_mb
    if value is None:
        value = int(current_app.config["MAX_STORAGE_MB"])
    return value * MB if value else None


def active_jobs(user: User) -> int:
    return int(
        db.session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == user.id, Job.status.in_(ACTIVE_STATUSES))
        ).scalar_one()
    )


def stored_bytes(user: User) -> int:
    return int(
        db.session.execute(
            select(func.coalesce(func.sum(Job.stored_bytes), 0)).where(Job.owner_id == user.id)
        ).scalar_one()
    )


def usage(user: User) -> dict[str, Any]:
    """What ``GET /auth/me`` shows: use and limits (None = unlimited)."""
    return {
        "active_jobs": active_jobs(user),
        "max_active_jobs": max_active_jobs(user),
        "stored_bytes": stored_bytes(user),
        "max_storage_bytes": max_storage_bytes(user),
    }


def reserve(user: User, incoming: int = 0) -> None:
    """Check both quotas inside a write transaction that holds the user's row,
    so that the caller's insert of the new job, committed in the same
    transaction, is counted by every submission after it.

    Checked without it, parallel submissions all read the same count and all
    pass. The UPDATE takes PostgreSQL's row lock, and SQLite's database write
    lock (pysqlite begins the transaction at the first write); either is held
    until the caller commits or rolls back, which it must do at once: this is
    the last step before the insert, after the upload was stored and probed.
    """
    db.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(max_active_jobs=User.max_active_jobs)
        .execution_options(synchronize_session=False)
    )
    check_active_jobs(user)
    check_storage(user, incoming)


def check_active_jobs(user: User) -> None:
    """Refuse a new job while the user already has their limit queued or running."""
    limit = max_active_jobs(user)
    if limit is None:
        return
    active = active_jobs(user)
    if active >= limit:
        raise ServiceError(
            f"You already have {active} job(s) queued or running (limit {limit}); "
            "wait for one to end or cancel one.",
            code="too_many_active_jobs",
            status=429,
        )


def check_storage(user: User, incoming: int = 0) -> None:
    """Refuse a job whose input would take the user past their storage limit
    (or any job once they are at it: its results need room too)."""
    limit = max_storage_bytes(user)
    if limit is None:
        return
    used = stored_bytes(user)
    if used + incoming > limit or used >= limit:
        needed = f"; this upload needs {_mb(incoming)} more" if incoming else ""
        raise ServiceError(
            f"Storage quota exceeded: {_mb(used)} of {_mb(limit)} used{needed}. "
            "Delete finished jobs (DELETE /api/v1/jobs/<id>) to free space.",
            code="storage_quota_exceeded",
            status=409,
        )


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB"
