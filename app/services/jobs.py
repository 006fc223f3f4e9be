"""Job lifecycle as plain functions: submit, look up, list, cancel, delete, expire.

Routes call these; tests can too, without HTTP. Every lookup is scoped to the
owner, so another user's job id behaves exactly like one that does not exist.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from flask import current_app
from sqlalchemy import bindparam, select, update

from app import audio, job_kinds, metrics, storage
from app.errors import ServiceError
from app.extensions import db
from app.records import ACTIVE_STATUSES, Job, User, utcnow
from app.services import events, fair_queue, quotas, webhooks

log = logging.getLogger(__name__)


class NotFound(ServiceError):
    code = "not_found"
    status = 404


def _not_found() -> NotFound:
    return NotFound("No job with this id.")


def display_name(filename: str | None) -> str:
    """The client's file name, kept only for display and download names.

    Stored files always get server-chosen names; this strips any directory part,
    control characters and excess length so the name is safe to echo back.
    """
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "upload"


def store_upload(stream: IO[bytes], filename: str | None) -> tuple[Path, dict[str, Any]]:
    """Stream an upload to disk and check that it is audio the service can use.

    Returns the temporary path and the input metadata. Anything wrong raises a
    ServiceError and leaves nothing behind.
    """
    limit = int(current_app.config["MAX_UPLOAD_MB"]) * 1024 * 1024
    path, size = storage.save_stream(stream, limit)
    try:
        meta = check_audio(path, size, filename)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, meta


def check_audio(path: Path, size: int, filename: str | None) -> dict[str, Any]:
    """The input metadata of a stored file, after the checks every input gets
    (an upload, a file fetched from a URL): ``audio.probe``, in a child process
    unless ``PROBE_ISOLATION`` is off. Raises the ``AudioError`` that says
    what is wrong; the caller removes the file."""
    config = current_app.config
    if size == 0:
        raise audio.AudioError("The uploaded file is empty.", code="empty_audio", status=422)
    limits = {
        "max_seconds": float(config["MAX_AUDIO_SECONDS"]),
        "max_bytes": config["MAX_DECODED_BYTES"],
    }
    if config["PROBE_ISOLATION"]:
        info = audio.probe_isolated(path, memory_mb=int(config["PROBE_MEMORY_MB"]), **limits)
    else:
        info = audio.probe(path, **limits)
    meta = info.to_dict()
    meta["filename"] = display_name(filename)
    meta["size"] = size
    return meta


# The batch whose inputs are being submitted (``in_batch``): each job the
# kinds' submit services create in it gets its ``batch_id``, with no change
# to those services.
_batch: ContextVar[tuple[str, list[str]] | None] = ContextVar("batch", default=None)


@contextlib.contextmanager
def in_batch(batch_id: str) -> Iterator[list[str]]:
    """Jobs submitted inside belong to ``batch_id``; yields the ids of the
    jobs created so far (a job is created, then failed, when the broker
    refuses its message)."""
    created: list[str] = []
    token = _batch.set((batch_id, created))
    try:
        yield created
    finally:
        _batch.reset(token)


def submit(
    owner: User,
    kind: str,
    model: str,
    params: dict[str, Any],
    upload: IO[bytes] | None,
    filename: str | None,
) -> Job:
    """Accept a job: store its input (if it has one), commit its row, then enqueue it.

    The row and the input are durable before the message is published, so a
    job the client was told about can always be found. If the broker refuses
    the message the job is marked failed (never left queued with no message)
    and the client gets a 503. ``params["callback_url"]``, if any, is checked
    first (form and SSRF rules) and kept in its own column.

    ``params["url"]``, if any, is the input instead of ``upload``: an http(s)
    URL, checked now (form and SSRF rules, 422 with ``errors.url``) and
    fetched by the worker when the job runs (``url_input.fetch_input``); the
    job's ``input`` holds it until then.
    """
    from app.services import url_input  # it builds on this module

    params = dict(params)
    callback_url = webhooks.validate(params.pop("callback_url", None))
    source_url = params.pop("url", None) or None
    if source_url is not None and upload is not None:
        message = url_input.BOTH_GIVEN
        raise ServiceError(
            message,
            code="validation_error",
            status=422,
            errors={"file": [message], "url": [message]},
        )
    if source_url is not None:
        url_input.check(source_url)
    # Quotas first: a user at their limit is refused before the upload is stored.
    quotas.check_active_jobs(owner)
    quotas.check_storage(owner)
    job_id = str(uuid.uuid4())
    meta = None
    if source_url is not None:
        meta = url_input.pending_input(source_url)
    elif upload is not None:
        path, meta = store_upload(upload, filename)
        try:
            storage.adopt_input(job_id, path, meta["format"] or "bin")
        except BaseException:
            path.unlink(missing_ok=True)
            storage.remove_job_files(job_id)
            raise
    ttl = timedelta(hours=float(current_app.config["RESULT_TTL_HOURS"]))
    now = utcnow()
    batch = _batch.get()
    job = Job(
        id=job_id,
        owner_id=owner.id,
        kind=kind,
        model=model,
        status="queued",
        stage="queued",
        progress=0.0,
        params=params,
        input=meta,
        stored_bytes=(meta or {}).get("size", 0),
        callback_url=callback_url,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
        batch_id=batch[0] if batch else None,
    )
    try:
        # Again, atomically with the insert: parallel submissions were all
        # checked against the same count above.
        quotas.reserve(owner, incoming=job.stored_bytes)
        db.session.add(job)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        storage.remove_job_files(job_id)
        raise
    if batch:
        batch[1].append(job_id)
    enqueue(job)
    return job


def publish_task(job: Job) -> str:
    """Publish the job's task message, with the job id as the task id.

    Raises whatever the broker raises once Celery's bounded publish retries
    (``task_publish_retry_policy``) are spent. A second message for the same
    job is harmless: only one delivery can claim it (see ``runner.start``).
    """
    task = current_app.extensions["celery"].tasks[job_kinds.get(job.kind).task]
    return str(task.apply_async(args=[job.id], task_id=job.id).id)


def enqueue(job: Job) -> None:
    """Publish the new job now if its owner has a free turn in its queue
    (``fair_queue``); otherwise it waits in the database for one.

    If the broker refuses the new job's message, the job is marked failed and
    the client gets a 503, as before it was accepted. Other jobs given a turn
    here (none, normally) are published on a best-effort basis: one whose
    message is lost is published again by the maintenance pass.
    """
    for job_id in fair_queue.take_turns(job.owner_id, job_kinds.queue_for(job.kind)):
        if job_id == job.id:
            _publish_new(job)
        else:
            publish_turn(job_id)


def _publish_new(job: Job) -> None:
    try:
        task_id = publish_task(job)
    except Exception as exc:
        log.exception("Could not publish job %s", job.id)
        finish(job.id, "failed", error=("broker_unavailable", "The job queue is unavailable."))
        raise ServiceError(
            "The job queue is unavailable; try again shortly.",
            code="broker_unavailable",
            status=503,
        ) from exc
    db.session.execute(update(Job).where(Job.id == job.id).values(task_id=task_id))
    db.session.commit()


def publish_turn(job_id: str) -> bool:
    """Publish a job that was given its owner's turn. A broker that refuses
    gives the turn back (the job waits again), and whoever hands out turns
    next publishes it: a job ending, a worker's turns loop or the maintenance
    pass (``maintenance.hand_out_turns``)."""
    job = db.session.get(Job, job_id)
    if job is None or job.status != "queued":
        return False
    try:
        task_id = publish_task(job)
    except Exception:
        log.warning("job %s got its turn but could not be published", job_id, exc_info=True)
        db.session.rollback()
        db.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.task_id.is_(None))
            .values(dispatched_at=None)
        )
        db.session.commit()
        return False
    db.session.execute(update(Job).where(Job.id == job_id).values(task_id=task_id))
    db.session.commit()
    return True


def next_turns(owner_id: str, queue: str) -> int:
    """Give the owner's waiting jobs of ``queue`` the turns they have free and
    publish them. Returns how many were published."""
    return sum(publish_turn(job_id) for job_id in fair_queue.take_turns(owner_id, queue))


# Built once: composing the statement cost a status poll more than running it.
_OWNED_JOB = select(Job).where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))


# The same read on a connection, without the session (``peek``).
_OWNED_ROW = select(*Job.__table__.columns).where(
    Job.__table__.c.id == bindparam("job_id"), Job.__table__.c.owner_id == bindparam("owner_id")
)
_ATTRIBUTES = [Job.__mapper__.get_property_by_column(c).key for c in Job.__table__.columns]


def peek(owner_id: str, job_id: str) -> Job | None:
    """The owner's job read on a connection of its own, not through the
    session, as a copy that belongs to no session: nothing on it loads
    lazily or is ever written back. None when there is no such job of theirs.

    The status poll answered before Flask's dispatch reads with it: opening
    the session, loading the row into its identity map and closing it cost
    that poll more than the query did.
    """
    try:
        uuid.UUID(job_id)
    except ValueError:
        return None
    with db.engine.connect() as connection:
        row = connection.execute(_OWNED_ROW, {"job_id": job_id, "owner_id": owner_id}).first()
    if row is None:
        return None
    return Job(**dict(zip(_ATTRIBUTES, row, strict=True)))


def get(owner: User, job_id: str) -> Job:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise _not_found() from None
    job = db.session.execute(
        _OWNED_JOB, {"job_id": job_id, "owner_id": owner.id}
    ).scalar_one_or_none()
    if job is None:
        raise _not_found()
    return job


def wait_for(
    owner: User,
    job_id: str,
    seconds: float,
    *,
    refuse: bool = True,
    client_gone: Callable[[], bool] | None = None,
) -> tuple[Job, bool]:
    """The job once it has ended, or as it is after ``seconds``: one request
    instead of a polling loop, answered the moment the job ends. Also whether
    the wait was granted.

    A waiting request holds a server thread, so it needs one of this
    process's places for waiting requests (``events.hold``). Past the caps,
    ``refuse`` raises the 429/503 that says so; otherwise the job is answered
    as it is (a wait is a preference, RFC 7240). The database connection is
    given back while waiting, and the wait ends early once ``client_gone()``.
    """
    job = get(owner, job_id)
    if seconds <= 0 or job.is_final:
        return job, True
    try:
        place = hold_waiting_place(owner)
    except events.TooManyWaiting:
        if refuse:
            raise
        return job, False
    config = current_app.config
    owner_id = owner.id
    try:
        db.session.close()
        waited = events.wait_until_final(
            owner_id,
            job_id,
            seconds,
            poll_seconds=float(config["SSE_POLL_SECONDS"]),
            redis_url=config.get("REDIS_URL"),
            notify_dir=config.get("NOTIFY_DIR"),
            client_gone=client_gone or (lambda: False),
        )
    finally:
        place.release()
    if waited is None:  # deleted while we waited
        raise _not_found()
    return waited, True


def hold_waiting_place(owner: User) -> events.Hold:
    """One of this process's places for requests that wait (MAX_WAITING_REQUESTS
    in all, MAX_WAITING_PER_USER per user)."""
    config = current_app.config
    return events.hold(
        owner.id,
        max_total=int(config["MAX_WAITING_REQUESTS"]),
        max_per_user=int(config["MAX_WAITING_PER_USER"]),
    )


def list_jobs(
    owner: User,
    *,
    page: int = 1,
    per_page: int = 20,
    status: str | None = None,
    kind: str | None = None,
    batch_id: str | None = None,
) -> tuple[list[Job], int]:
    query = select(Job).where(Job.owner_id == owner.id)
    if batch_id:
        query = query.where(Job.batch_id == batch_id)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    total = db.session.execute(select(db.func.count()).select_from(query.subquery())).scalar_one()
    items = (
        db.session.execute(
            query.order_by(Job.created_at.desc(), Job.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        .scalars()
        .all()
    )
    return list(items), int(total)


def finish(
    job_id: str,
    status: str,
    *,
    error: tuple[str, str] | None = None,
    only_from: tuple[str, ...] = ACTIVE_STATUSES,
    attempt: int | None = None,
) -> bool:
    """Move a job to a final status if it is still in one of ``only_from``.

    A compare-and-set: when two parties race (a cancel and a finishing worker,
    two attempts), exactly one wins and the other sees False.
    """
    now = utcnow()
    values: dict[str, Any] = {"status": status, "finished_at": now, "updated_at": now}
    if status == "canceled":
        values["stage"] = "canceled"
    if error is not None:
        values["error_code"], values["error_message"] = error
        values["stage"] = "failed"
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(only_from))
    if attempt is not None:
        stmt = stmt.where(Job.attempts == attempt)
    result = db.session.execute(stmt.values(**values))
    db.session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        return False
    job_ended(job_id)
    return True


def job_ended(job_id: str) -> None:
    """The one hook for "a job ended": called once per job, by whoever won the
    move to a final status (a worker's commit, a cancel, the reaper). Live
    streams hear about it, the webhook (if any) is scheduled, and the run is
    recorded in the metrics; the job's batch, if any, may end with it."""
    events.publish(job_id)
    webhooks.schedule_delivery(job_id)
    metrics.record_job(job_id)
    _pass_turn(job_id)
    _batch_ended(job_id)


def _batch_ended(job_id: str) -> None:
    # Its batch may have ended with it: that batch's stream and webhook are told.
    from app.services import batches  # batches builds on this module

    try:
        batches.job_ended(job_id)
    except Exception:
        db.session.rollback()
        log.warning("could not check the batch of job %s", job_id, exc_info=True)


def _pass_turn(job_id: str) -> None:
    # The turn this job held goes to its owner's next waiting job. A failure
    # here must not undo the ending; the maintenance pass hands the turn out.
    try:
        row = db.session.execute(select(Job.owner_id, Job.kind).where(Job.id == job_id)).first()
        if row is not None:
            next_turns(row.owner_id, job_kinds.queue_for(row.kind))
    except Exception:
        db.session.rollback()
        log.warning("could not pass job %s's turn on", job_id, exc_info=True)


def cancel(owner: User, job_id: str) -> Job:
    """Cancel a queued or running job; finished jobs answer 409.

    A queued job never starts (the task checks its status first); a running one
    stops at its next progress report, and its partial output is discarded.
    """
    job = get(owner, job_id)
    if job.is_final:
        raise ServiceError(
            f"The job has already ended ({job.status}).", code="job_finished", status=409
        )
    finish(job.id, "canceled")
    _revoke(job)
    db.session.refresh(job)
    return job


def _revoke(job: Job) -> None:
    # Best effort: brokers without broadcast (the SQLite one) ignore it, and the
    # status check at task start covers them.
    try:
        current_app.extensions["celery"].control.revoke(job.task_id or job.id)
    except Exception:
        log.debug("revoke not delivered for %s", job.id, exc_info=True)


def delete(owner: User, job_id: str) -> None:
    job = get(owner, job_id)
    if not job.is_final:
        finish(job.id, "canceled")
        _revoke(job)
    db.session.delete(job)
    db.session.commit()
    storage.remove_job_files(job.id)


def purge_expired(now: Any = None) -> int:
    """Delete the files of finished jobs past ``expires_at`` and mark them ``expired``.

    The row stays (status ``expired``, result cleared), so a client polling an
    old job learns what happened to it instead of getting a 404. Each row moves
    with a compare-and-set, so several workers or beat running this at once
    expire each job once.
    """
    now = now or utcnow()
    candidates = (
        db.session.execute(
            select(Job.id).where(
                Job.expires_at < now, Job.status.in_(("succeeded", "failed", "canceled"))
            )
        )
        .scalars()
        .all()
    )
    expired = 0
    for job_id in candidates:
        moved = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("succeeded", "failed", "canceled")))
            .values(status="expired", stage="expired", result=None, stored_bytes=0, updated_at=now)
        ).rowcount
        db.session.commit()
        if moved == 1:
            storage.remove_job_files(job_id)
            expired += 1
    return expired
