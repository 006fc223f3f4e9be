"""Periodic upkeep that keeps every job moving: reaper, reconciler, expiry.

One pass runs every ``MAINTENANCE_INTERVAL_SECONDS``: from a thread of each
worker in the embedded default (``MAINTENANCE_IN_WORKER``), from Celery beat
(task ``app.tasks.maintenance.run`` on the ``maintenance`` queue) in Redis
deployments. Every step changes rows with compare-and-set updates, so any
number of passes may run at once and each job is acted on once.

- **Reaper**: a ``running`` job whose attempt's process is gone (its attempt
  lock is free, or, where locks cannot be checked, its worker has not sent a
  heartbeat for ``3 x WORKER_HEARTBEAT_SECONDS``) is put back to ``queued`` and
  published again; past ``MAX_ATTEMPTS`` it fails with ``worker_lost``, past
  its hard time limit with ``time_limit_exceeded``. Redis alone would only
  redeliver it after the visibility timeout (hours), the SQLite broker never.
- **Reconciler**: published ``queued`` jobs whose message was lost (a Redis restart
  without persistence, a crash between commit and publish) are published
  again once they have waited ``RECONCILE_QUEUED_SECONDS``. Only as many as
  the broker queue is short of are re-sent, so a long backlog is not
  duplicated; a spare message is harmless anyway (``runner.start``).
- **Turns**: users with jobs waiting for a turn (``fair_queue``) and turns
  free get them, should the hand-over when a job ended have failed.
- **Batches**: a batch whose accepting request died before sealing it (an
  API process killed mid-submission) is sealed after 15 minutes, so it ends
  with the jobs it got.
- **Expiry**: finished jobs past ``expires_at`` lose their files and become
  ``expired``; revoked tokens past their expiry and abandoned uploads go too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from flask import current_app
from sqlalchemy import select, update

from app import job_kinds, storage
from app.extensions import db
from app.records import Job, WorkerHeartbeat, utcnow
from app.services import batches, fair_queue, jobs
from app.services.runner import MAX_ATTEMPTS

log = logging.getLogger(__name__)

Verdict = Literal["keep", "requeue", "time_limit"]


def run_once() -> dict[str, int]:
    """One maintenance pass; a step that fails (broker down) does not stop the others."""
    from app.services.auth import purge_revoked

    steps: dict[str, Callable[[], Any]] = {
        "reaped": reap_lost_jobs,
        "republished": republish_lost_messages,
        "dispatched": hand_out_turns,
        "batches": batches.seal_abandoned,
        "expired": jobs.purge_expired,
        "tokens": purge_revoked,
        "uploads": storage.sweep_tmp,
    }
    done: dict[str, int] = {}
    for name, step in steps.items():
        try:
            done[name] = int(step() or 0)
        except Exception:
            db.session.rollback()
            log.warning("maintenance step %s failed", name, exc_info=True)
    if any(done.get(key) for key in ("reaped", "republished", "dispatched", "expired")):
        log.info("maintenance: %s", done)
    return done


def stale_after() -> float:
    """Seconds without a heartbeat after which a worker counts as gone."""
    return 3 * float(current_app.config["WORKER_HEARTBEAT_SECONDS"])


def verdict(
    attempt_alive: bool | None, worker_alive: bool | None, over_time_limit: bool
) -> Verdict:
    """What the reaper does with a ``running`` job.

    ``attempt_alive``: whether a process holds the attempt's lock (None: this
    filesystem cannot tell). ``worker_alive``: whether the worker named in the
    row sent a recent heartbeat (None: no worker recorded).
    ``over_time_limit``: it has run longer than its kind's hard time limit, so
    another attempt would be stopped by it too.
    """
    if attempt_alive is True:
        # Running: the worker that enforces the hard limit may be the thing
        # that died (an orphaned child), so the limit is checked here too.
        return "time_limit" if over_time_limit else "keep"
    dead = attempt_alive is False or worker_alive is False
    if not dead:
        return "keep"
    return "time_limit" if over_time_limit else "requeue"


def reap_lost_jobs(now: datetime | None = None) -> int:
    """Re-queue or fail ``running`` jobs whose attempt died. Returns how many moved."""
    from app.worker_settings import hard_limit_for

    now = now or utcnow()
    window = stale_after()
    alive_workers = set(
        db.session.execute(
            select(WorkerHeartbeat.hostname).where(
                WorkerHeartbeat.seen_at >= now - timedelta(seconds=window)
            )
        ).scalars()
    )
    running = db.session.execute(select(Job).where(Job.status == "running")).scalars().all()
    moved = 0
    for job in running:
        # Read once: every decision below is about this attempt, and each
        # change is a compare-and-set on it, so a job that moved on meanwhile
        # (taken over by a redelivery, finished) is left alone.
        job_id, kind, worker, attempt = job.id, job.kind, job.worker, job.attempts
        attempt_alive = storage.attempt_alive(job_id, attempt)
        worker_alive = None if not worker else worker in alive_workers
        limit = hard_limit_for(current_app.config, job_kinds.get(kind).task)
        ran = (now - (job.started_at or now)).total_seconds()
        # A live process gets a grace period past its limit: its worker kills it first.
        grace = 0.0 if attempt_alive is False else 2 * window + 60.0
        over = bool(limit) and ran >= float(limit) + grace  # type: ignore[arg-type]  # bool(limit) rules out None
        action = verdict(attempt_alive, worker_alive, over)
        if action == "keep":
            continue
        if action == "time_limit":
            if jobs.finish(
                job_id,
                "failed",
                error=(
                    "time_limit_exceeded",
                    f"The job ran past its time limit of {float(limit):g} seconds.",  # type: ignore[arg-type]  # "time_limit" needs over, so a limit
                ),
                only_from=("running",),
                attempt=attempt,
            ):
                moved += 1
                log.warning("job %s ran past its time limit; failed", job_id)
        elif attempt >= MAX_ATTEMPTS:
            if jobs.finish(
                job_id,
                "failed",
                error=(
                    "worker_lost",
                    "The job was attempted too many times; its worker kept dying.",
                ),
                only_from=("running",),
                attempt=attempt,
            ):
                moved += 1
                log.warning("job %s lost its worker too many times; failed", job_id)
        elif _requeue(job, attempt, now):
            moved += 1
            log.warning("job %s: attempt %s on %s is gone; re-queued", job_id, attempt, worker)
        storage.remove_dead_attempts(job_id)
    return moved


def _requeue(job: Job, attempt: int, now: datetime) -> bool:
    won = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        update(Job)
        .where(Job.id == job.id, Job.status == "running", Job.attempts == attempt)
        .values(status="queued", stage="queued", progress=0.0, worker=None, updated_at=now)
    ).rowcount
    db.session.commit()
    if won != 1:
        return False
    try:
        jobs.publish_task(job)
    except Exception:
        # Still queued: the reconciler publishes it once the broker is back.
        log.warning("job %s re-queued but not published yet", job.id, exc_info=True)
    return True


def queue_of(kind: str) -> str:
    """The broker queue a job kind's task is routed to."""
    return job_kinds.queue_for(kind)


def waiting_messages(channel: Any, queue: str) -> int:
    """Messages ready in a broker queue (not counting those a worker holds)."""
    from amqp.exceptions import ChannelError as AmqpChannelError
    from kombu.exceptions import ChannelError

    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except (ChannelError, AmqpChannelError):
        return 0  # Redis: a queue with no message has no key


def republish_lost_messages(now: datetime | None = None) -> int:
    """Publish again the ``queued`` jobs whose message the broker no longer has."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=float(current_app.config["RECONCILE_QUEUED_SECONDS"]))
    queued = (
        db.session.execute(
            select(Job)
            .where(Job.status == "queued", Job.dispatched_at.is_not(None))
            .order_by(Job.created_at)
        )
        .scalars()
        .all()
    )
    by_queue: dict[str, list[Job]] = {}
    for job in queued:
        by_queue.setdefault(queue_of(job.kind), []).append(job)
    candidates = {
        queue: [job for job in waiting if job.updated_at < cutoff]
        for queue, waiting in by_queue.items()
    }
    if not any(candidates.values()):
        return 0
    celery = current_app.extensions["celery"]
    republished = 0
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        channel = connection.default_channel
        for queue, stale in candidates.items():
            if not stale:
                continue
            missing = len(by_queue[queue]) - waiting_messages(channel, queue)
            for job in stale[: max(0, missing)]:
                # Claim the re-publish: one maintenance pass per job and interval.
                won = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
                    update(Job)
                    .where(
                        Job.id == job.id, Job.status == "queued", Job.updated_at == job.updated_at
                    )
                    .values(updated_at=now)
                ).rowcount
                db.session.commit()
                if won != 1:
                    continue
                jobs.publish_task(job)
                republished += 1
                log.warning("job %s waited in %s with no message; published again", job.id, queue)
    return republished


def hand_out_turns() -> int:
    """Publish the jobs whose owners have turns free (normally none: a job's
    end hands its turn on at once)."""
    return sum(jobs.next_turns(owner_id, queue) for owner_id, queue in fair_queue.waiting_owners())
