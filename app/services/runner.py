"""Running one attempt of a job inside a worker.

The rules every job kind gets for free:
- a job starts from ``queued``; a ``running`` job is started again only when the
  process of its current attempt is gone (its attempt lock is free), so a
  message redelivered after a worker died resumes the job while a duplicate
  delivery for a live attempt, a canceled or a finished job does nothing;
- each attempt counts in ``attempts``; past ``MAX_ATTEMPTS`` the job fails with
  ``worker_lost``;
- each attempt writes into its own ``work/<attempt>`` folder, published by one
  rename, and commits ``succeeded`` with a compare-and-set on (job, attempt,
  running), so a late or duplicate attempt can never overwrite a result;
- progress writes are throttled, and each write doubles as the cancel check;
- every failure ends in ``failed`` with a code and a message, never a silent loss:
  the soft time limit gives ``time_limit_exceeded``, a full or unwritable disk
  ``storage_error`` (partial files are removed first, so the worker carries on);
- a database outage (PostgreSQL restarting) is ridden out: progress writes are
  skipped while it lasts and the job keeps running, and the writes that decide
  a job's fate (its claim, its result, its failure) are retried for up to
  ``OUTAGE_PATIENCE_SECONDS``, so the job neither fails nor runs again for it;
  a longer outage abandons the attempt (not the job) to the reaper.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select, update

from app import storage
from app.database import describe, is_unavailable, reset_session, retry_while_unavailable
from app.errors import ServiceError
from app.extensions import db
from app.models.engines import Progress
from app.records import ACTIVE_STATUSES, Job, utcnow
from app.services import url_input
from app.services.events import publish
from app.services.jobs import finish, job_ended

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class JobCanceled(Exception):
    """The job was canceled, deleted or taken over while this attempt ran."""


@dataclass
class Attempt:
    job_id: str
    number: int
    workdir: Path
    lock: storage.AttemptLock | None = None


class ProgressReporter:
    """Writes ``progress``/``stage`` at most every ``interval`` seconds.

    A write that matches no running row (canceled, deleted, or superseded by
    another attempt) raises JobCanceled, which is how a running job stops.
    """

    def __init__(self, attempt: Attempt, interval: float = 0.5) -> None:
        self.attempt = attempt
        self.interval = interval
        self._last_write = 0.0
        self._stage: str | None = None
        self._outage = False
        self.progress = 0.0
        # Where the work's 0..1 starts on the job's bar (after a URL fetch).
        self.start = 0.0

    def begin_at(self, start: float) -> None:
        """Map what is reported from now on onto ``start..1`` of the job's
        progress: the bar keeps moving forward past a first step (the fetch
        of a URL input) that ``execute`` runs before the job's own work."""
        self.start = min(max(float(start), 0.0), 1.0)

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        progress = min(max(float(progress), 0.0), 1.0)
        self._write(self.start + (1.0 - self.start) * progress, stage, force)

    def _write(self, progress: float, stage: str | None, force: bool) -> None:
        self.progress = max(self.progress, progress)
        now = time.monotonic()
        stage_changed = stage is not None and stage != self._stage
        if not (force or stage_changed or now - self._last_write >= self.interval):
            return
        values: dict[str, Any] = {"progress": round(self.progress, 4), "updated_at": utcnow()}
        if stage is not None:
            values["stage"] = stage
            self._stage = stage
        self._last_write = now
        try:
            result = db.session.execute(
                update(Job)
                .where(
                    Job.id == self.attempt.job_id,
                    Job.status == "running",
                    Job.attempts == self.attempt.number,
                )
                .values(**values)
            )
            db.session.commit()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Progress is worth less than the job: carry on without it (and
            # without the cancel check) until the database answers again.
            reset_session()
            if not self._outage:
                log.warning(
                    "job %s: progress not recorded, the database is unavailable (%s); "
                    "the job carries on",
                    self.attempt.job_id,
                    describe(exc),
                )
                self._outage = True
            return
        if self._outage:
            log.warning("job %s: progress recorded again", self.attempt.job_id)
            self._outage = False
        publish(self.attempt.job_id)
        if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            raise JobCanceled(self.attempt.job_id)

    def stage(self, stage: str, progress: float | None = None) -> None:
        if progress is None:
            self._write(self.progress, stage, False)
        else:
            self(progress, stage)


class SubProgress:
    """Maps 0..1 of one step onto ``start..end`` of the job's progress, so a
    pipeline of steps shows one bar that only moves forward."""

    def __init__(self, parent: Progress, start: float, end: float) -> None:
        self.parent = parent
        self.start = start
        self.end = end

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        self.parent(self.start + (self.end - self.start) * progress, stage, force=force)

    def stage(self, stage: str, progress: float | None = None) -> None:
        if progress is None:
            self.parent.stage(stage)
        else:
            self(progress, stage)


Work = Callable[[Job, Attempt, ProgressReporter], dict[str, Any]]


def worker_name() -> str:
    """The Celery node running this task (``celery@host``, as in its heartbeat
    row), or the machine's name outside a worker."""
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    return getattr(request, "hostname", None) or socket.gethostname()


def start(job_id: str) -> Attempt | None:
    """Claim a job for a new attempt, or return None if this delivery must do nothing.

    Waits out a database outage (``retry_while_unavailable``): a claim lost
    with its connection is made again, as the next attempt.
    """
    return retry_while_unavailable(lambda: _claim(job_id), f"job {job_id}: claiming it")


def _claim(job_id: str) -> Attempt | None:
    """One try of ``start``.

    A queued job is claimed. A running job is taken over only when the process
    of its current attempt is gone: Celery requeues the message of a killed
    worker child, Redis that of a killed worker, and that delivery resumes the
    job at once. While that process lives, another delivery of the job (a
    reconciler's or reaper's re-publish, a restore after a broker reconnect)
    does nothing. Every claim is a compare-and-set on (status, attempts).
    """
    job = db.session.get(Job, job_id)
    if job is None or job.status not in ACTIVE_STATUSES:
        return None
    status, previous = job.status, job.attempts
    if status == "running":
        if storage.attempt_alive(job_id, previous) is not False:
            log.info("job %s: attempt %s is still running; delivery ignored", job_id, previous)
            return None
        log.warning("job %s: the process of attempt %s is gone; starting again", job_id, previous)
    number = previous + 1
    if number > MAX_ATTEMPTS:
        finish(
            job_id,
            "failed",
            error=("worker_lost", "The job was attempted too many times; its worker kept dying."),
            only_from=(status,),
            attempt=previous,
        )
        storage.remove_dead_attempts(job_id)
        return None
    try:
        lock = storage.AttemptLock.acquire(job_id, number)
    except storage.StorageError as exc:
        finish(job_id, "failed", error=(exc.code, exc.message), only_from=(status,))
        return None
    if lock is None:
        return None  # another delivery is claiming this very attempt
    now = utcnow()
    try:
        claimed = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            update(Job)
            .where(Job.id == job_id, Job.status == status, Job.attempts == previous)
            .values(
                status="running",
                attempts=number,
                started_at=now,
                updated_at=now,
                stage="starting",
                progress=0.0,
                worker=worker_name(),
                # A stray message for a job still waiting its turn: it counts now.
                dispatched_at=func.coalesce(Job.dispatched_at, now),
            )
        ).rowcount
        db.session.commit()
    except BaseException:
        # Whether the claim landed is unknown: free the lock, so a retry (or
        # the reaper) sees this attempt's process gone and starts the next.
        lock.release()
        raise
    if claimed != 1:
        lock.release()
        return None
    publish(job_id)
    return Attempt(
        job_id=job_id, number=number, workdir=storage.work_dir(job_id, number), lock=lock
    )


def execute(job_id: str, work: Work, *, device: str = "cpu") -> str | None:
    """Run ``work`` for a job and record how it ended.

    Returns the final status this attempt gave the job, or None when it ended
    nothing: the delivery had nothing to do, or another attempt took the job
    over meanwhile (that attempt reports the ending; the task's caller counts
    each returned status once in the job metrics).
    """
    attempt = start(job_id)
    if attempt is None:
        return None
    try:
        storage.remove_dead_attempts(job_id, keep=attempt.number)
        shutil.rmtree(attempt.workdir, ignore_errors=True)
        attempt.workdir.mkdir(parents=True)
        report = ProgressReporter(attempt)
        job = retry_while_unavailable(lambda: _snapshot(job_id), f"job {job_id}: reading it")
        fetch_seconds = None
        if url_input.pending_url(job):
            # Input by URL: fetched here, in the job's turn, before any work.
            fetch_share = url_input.PROGRESS_SHARE
            fetch_began = time.monotonic()
            if not url_input.fetch_input(job, SubProgress(report, 0.0, fetch_share)):
                raise JobCanceled(job_id)
            fetch_seconds = time.monotonic() - fetch_began
            report.begin_at(fetch_share)
        began = time.monotonic()
        outcome = work(job, attempt, report)
        report(1.0, "finishing", force=True)
        return _commit(job, attempt, outcome, time.monotonic() - began, device, fetch_seconds)
    except JobCanceled:
        log.info("job %s attempt %s stopped: canceled or superseded", job_id, attempt.number)
        return _lost(job_id, attempt)
    except SoftTimeLimitExceeded:
        log.warning("job %s attempt %s hit its soft time limit", job_id, attempt.number)
        return _fail(job_id, attempt, "time_limit_exceeded", _time_limit_message())
    except ServiceError as exc:
        return _fail(job_id, attempt, exc.code, exc.message)
    except Exception as exc:
        if is_unavailable(exc):
            # The database stayed away past OUTAGE_PATIENCE_SECONDS: nothing
            # about this attempt can be recorded. Its lock goes with it
            # (finally), so once the database is back the reaper sees the
            # attempt gone and runs the job again; failing it would need the
            # database too, and would blame the job for the outage.
            log.error(
                "job %s attempt %s abandoned: the database is unavailable (%s); "
                "the reaper runs it again once it is back",
                job_id,
                attempt.number,
                describe(exc),
            )
            return None
        failure = storage.storage_failure(exc)
        if failure is not None:
            log.warning("job %s: results could not be written: %s", job_id, failure)
            reason = failure.strerror or str(failure)
            return _fail(
                job_id,
                attempt,
                "storage_error",
                f"The results could not be written (disk full or not writable: {reason.lower()}).",
            )
        log.exception("job %s failed with an internal error", job_id)
        return _fail(job_id, attempt, "internal_error", "The job failed with an internal error.")
    finally:
        reset_session()
        shutil.rmtree(attempt.workdir, ignore_errors=True)
        if attempt.lock is not None:
            attempt.lock.release()


def _snapshot(job_id: str) -> Job:
    """The job's row, detached from the session: progress commits (and the
    rollback after a failed one) expire what the session holds, and work that
    read an expired attribute during a database outage would fail with it."""
    job = db.session.get(Job, job_id)
    assert job is not None
    db.session.expunge(job)
    return job


def _time_limit_message() -> str:
    from celery import current_task
    from flask import current_app

    from app.worker_settings import hard_limit_for

    name = getattr(current_task, "name", None) if current_task else None
    limit = hard_limit_for(current_app.config, name) if name else None
    if limit:
        return f"The job ran past its time limit of {limit:g} seconds."
    return "The job ran past its time limit."


def _fail(job_id: str, attempt: Attempt, code: str, message: str) -> str | None:
    reset_session()
    # Partial files go first: on a full disk that frees the space the failure
    # record (and the next job) needs.
    shutil.rmtree(attempt.workdir, ignore_errors=True)

    def record() -> bool:
        return finish(
            job_id, "failed", error=(code, message), only_from=("running",), attempt=attempt.number
        ) or _ended_by(job_id, attempt, "failed")

    if retry_while_unavailable(record, f"job {job_id}: recording its failure"):
        return "failed"
    return _lost(job_id, attempt)


def _ended_by(job_id: str, attempt: Attempt, status: str) -> bool:
    """Whether this attempt already gave the job ``status``: a compare-and-set
    retried after its connection dropped during COMMIT finds its own write."""
    row = db.session.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).first()
    return row is not None and tuple(row) == (status, attempt.number)


def _lost(job_id: str, attempt: Attempt) -> str | None:
    """What an attempt whose compare-and-set matched nothing reports:
    "canceled" when the job was canceled or deleted under it, None when a later
    attempt took the job over (a lost attempt lock, a redelivery after a
    reaper's re-queue). That attempt reports how the job ends; reporting it
    here as well would count one job twice in the job metrics."""
    reset_session()
    latest = retry_while_unavailable(
        lambda: db.session.execute(select(Job.attempts).where(Job.id == job_id)).scalar(),
        f"job {job_id}: reading its attempt",
    )
    if latest is not None and latest != attempt.number:
        log.info("job %s attempt %s was superseded by attempt %s", job_id, attempt.number, latest)
        return None
    return "canceled"


def _commit(
    job: Job,
    attempt: Attempt,
    outcome: dict[str, Any],
    run_seconds: float,
    device: str,
    fetch_seconds: float | None = None,
) -> str | None:
    """Publish the attempt's results and record the job's success with its
    metrics: ``run_seconds`` is the work itself, the download of an input by
    URL (``fetch_seconds``) apart, so real-time factors compare."""
    started = job.started_at or utcnow()
    # Audio processed: the input's length, or what a generator says it made.
    audio_seconds = float(
        outcome.pop("audio_seconds", None) or (job.input or {}).get("duration") or 0.0
    )
    metrics = {
        "queue_seconds": round((started - job.created_at).total_seconds(), 3),
        "run_seconds": round(run_seconds, 3),
        **({"fetch_seconds": round(fetch_seconds, 3)} if fetch_seconds is not None else {}),
        "audio_seconds": round(audio_seconds, 3),
        "real_time_factor": round(run_seconds / audio_seconds, 4) if audio_seconds else None,
        "device": outcome.pop("device", device),
        "attempt": attempt.number,
        # What the work says about how it ran: Whisper's decoding, threads and
        # batch size; a separation's path, batch size and threads.
        **(outcome.pop("metrics", None) or {}),
    }
    job_id = job.id
    folder = storage.publish_results(job_id, attempt.number)
    size = storage.folder_size(folder)

    def record() -> bool:
        now = utcnow()
        won = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt.number)
            .values(
                status="succeeded",
                progress=1.0,
                stage="done",
                result=outcome,
                metrics=metrics,
                # Storage quota: the published results now count for the owner.
                stored_bytes=Job.stored_bytes + size,
                finished_at=now,
                updated_at=now,
            )
        ).rowcount
        db.session.commit()
        return won == 1 or _ended_by(job_id, attempt, "succeeded")

    if not retry_while_unavailable(record, f"job {job_id}: recording its result"):
        # Canceled, deleted or taken over by a later attempt between the last
        # progress check and now: this attempt's result is never served.
        shutil.rmtree(folder, ignore_errors=True)
        return _lost(job_id, attempt)
    job_ended(job_id)
    return "succeeded"
