"""Whose job a worker takes next: turns per user instead of caps on queueing.

Celery's queues are first in, first out. Had every accepted job been
published at once, one user's 500-song batch would sit ahead of another
user's single song for hours. So a queued job waits in the database until its
owner has a free *turn* in its worker queue: at most ``MAX_RUNNING_JOBS`` of a
user's jobs per queue are published at a time (running, or next in line in
the broker). A user's next job is published the moment one of theirs ends
(``jobs.job_ended``), and the maintenance pass catches any turn a crash left
unused (``dispatch_all``).

The broker queue therefore holds at most ``MAX_RUNNING_JOBS`` jobs of each
user, in the order their turns came up: between users a worker serves them
round-robin, and a newcomer's job is published straight away, behind at most
those few jobs of each other user. Celery stays the engine (its routing,
acknowledgements, retries and time limits are unchanged); only the moment of
publishing moves.

Turns are taken under a lock on the owner's row (PostgreSQL's row lock,
SQLite's write lock), so API processes and workers handing out turns at
once never publish more than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic

from flask import current_app, g
from sqlalchemy import ColumnElement, and_, func, or_, select, update

from app import job_kinds
from app.extensions import db
from app.records import ACTIVE_STATUSES, Job, User, utcnow


def turns_per_user() -> int:
    """Jobs of one user a worker queue holds at once (MAX_RUNNING_JOBS)."""
    return int(current_app.config["MAX_RUNNING_JOBS"])


def take_turns(owner_id: str, queue: str) -> list[str]:
    """Mark the owner's next waiting jobs of ``queue`` as dispatched, as many as
    they have free turns, and return their ids, oldest first: the caller
    publishes them (after this commit, so a worker always finds the row)."""
    kinds = job_kinds.kinds_in_queue(queue)
    try:
        # The owner's row lock: a second taker waits here, then counts what
        # the first committed.
        db.session.execute(
            update(User)
            .where(User.id == owner_id)
            .values(max_active_jobs=User.max_active_jobs)
            .execution_options(synchronize_session=False)
        )
        in_flight = db.session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.owner_id == owner_id,
                Job.kind.in_(kinds),
                Job.status.in_(ACTIVE_STATUSES),
                Job.dispatched_at.is_not(None),
            )
        ).scalar_one()
        free = turns_per_user() - int(in_flight)
        picked: list[str] = []
        if free > 0:
            picked = list(
                db.session.execute(
                    select(Job.id)
                    .where(
                        Job.owner_id == owner_id,
                        Job.kind.in_(kinds),
                        Job.status == "queued",
                        Job.dispatched_at.is_(None),
                    )
                    .order_by(Job.created_at, Job.id)
                    .limit(free)
                ).scalars()
            )
        if picked:
            now = utcnow()
            db.session.execute(
                update(Job)
                .where(Job.id.in_(picked), Job.dispatched_at.is_(None))
                .values(dispatched_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return picked


def waiting_owners() -> list[tuple[str, str]]:
    """(owner, queue) pairs with jobs waiting for a turn."""
    rows = db.session.execute(
        select(Job.owner_id, Job.kind)
        .where(Job.status == "queued", Job.dispatched_at.is_(None))
        .distinct()
    ).all()
    return sorted({(owner, job_kinds.queue_for(kind)) for owner, kind in rows})


# A page of 100 queued jobs asks for 100 positions: what they share is read
# once and reused for this long, within one app context (a request, a task).
# An event stream re-reads it after this, so a position is never staler.
SNAPSHOT_SECONDS = 1.0


@dataclass
class _Snapshot:
    taken: float
    published: int
    waiting: dict[str, int]
    held: dict[str, dict[str, int]] = field(default_factory=dict)  # owner -> job -> rank


def _snapshot(queue: str, kinds: tuple[str, ...]) -> _Snapshot:
    cache: dict[str, _Snapshot] = g.setdefault("_fair_queue_snapshots", {})
    found = cache.get(queue)
    if found is not None and monotonic() - found.taken < SNAPSHOT_SECONDS:
        return found
    published = db.session.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.status == "queued", Job.kind.in_(kinds), Job.dispatched_at.is_not(None))
    ).scalar_one()
    waiting = {
        owner_id: int(count)
        for owner_id, count in db.session.execute(
            select(Job.owner_id, func.count())
            .where(Job.status == "queued", Job.kind.in_(kinds), Job.dispatched_at.is_(None))
            .group_by(Job.owner_id)
        ).all()
    }
    cache[queue] = _Snapshot(taken=monotonic(), published=int(published), waiting=waiting)
    return cache[queue]


def _held_rank(snapshot: _Snapshot, job: Job, kinds: tuple[str, ...]) -> int | None:
    """How many of its owner's waiting jobs come before ``job``."""
    ranks = snapshot.held.get(job.owner_id)
    if ranks is None:
        ids = db.session.execute(
            select(Job.id)
            .where(
                Job.owner_id == job.owner_id,
                Job.status == "queued",
                Job.kind.in_(kinds),
                Job.dispatched_at.is_(None),
            )
            .order_by(Job.created_at, Job.id)
        ).scalars()
        ranks = snapshot.held[job.owner_id] = {job_id: rank for rank, job_id in enumerate(ids)}
    return ranks.get(job.id)


def queue_position(job: Job) -> int | None:
    """Where a queued job stands: 1 is the next to start when a worker of its
    queue is free. None once it has started.

    A published job counts the published jobs of every user ahead of it in the
    broker. A job still waiting for its owner's turn counts all of those, its
    owner's earlier waiting jobs, and, from each other user with jobs waiting,
    as many as get a turn before it when turns go round-robin.
    """
    if job.status != "queued":
        return None
    kinds = job_kinds.kinds_in_queue(job_kinds.queue_for(job.kind))
    if job.dispatched_at is not None:
        ahead = db.session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.status == "queued",
                Job.kind.in_(kinds),
                Job.dispatched_at.is_not(None),
                _before(job.dispatched_at, job.created_at, job.id),
            )
        ).scalar_one()
        return int(ahead) + 1
    snapshot = _snapshot(job_kinds.queue_for(job.kind), kinds)
    own_before = _held_rank(snapshot, job, kinds)
    if own_before is None:  # given its turn since the snapshot: at most this far back
        own_before = 0
    rounds = own_before + 1
    others = sum(
        min(count, rounds) for owner, count in snapshot.waiting.items() if owner != job.owner_id
    )
    return snapshot.published + own_before + others + 1


def _before(dispatched_at: datetime, created_at: datetime, job_id: str) -> ColumnElement[bool]:
    return or_(
        Job.dispatched_at < dispatched_at,
        and_(
            Job.dispatched_at == dispatched_at,
            or_(
                Job.created_at < created_at,
                and_(Job.created_at == created_at, Job.id < job_id),
            ),
        ),
    )
