"""Batches as plain functions: many inputs, one set of options, one job each.

A batch is a row (owner, kind, options, how many inputs, webhook) and the
jobs whose ``batch_id`` names it; its counts, progress and status are read
from those jobs, never stored. Each input is submitted through the kind's own
submit service, the one its single-upload route calls, so a batch job is an
ordinary job: the same checks, turns (app/services/fair_queue.py), events and
downloads. An input refused by the upload checks becomes a job that is
``failed`` at once, with the ``error`` the single route would have answered.

A batch ends once, when its last job ends (``job_ended``, called from
``jobs.job_ended``): a compare-and-set on ``finished_at`` picks the one caller
that tells its event stream and schedules its webhook.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from flask import current_app
from sqlalchemy import delete as sql_delete
from sqlalchemy import exists, func, select, update

from app import storage
from app.errors import ServiceError
from app.extensions import db
from app.records import ACTIVE_STATUSES, JOB_STATUSES, Batch, Job, User, utcnow
from app.services import events, jobs, url_input, webhooks
from app.services.batch_document import BatchSchema, BatchView

log = logging.getLogger(__name__)

# A kind's submit service: (owner, options, upload stream, file name) -> Job.
Submit = Callable[[User, dict[str, Any], IO[bytes] | None, str | None], Job]


class NotFound(ServiceError):
    code = "not_found"
    status = 404


def _not_found() -> NotFound:
    return NotFound("No batch with this id.")


@dataclass
class Input:
    """One input of a batch: an uploaded file's stream and name, or a URL the
    worker fetches (``app/services/url_input.py``). ``submit_input`` is the
    one place that chooses how an input becomes a job."""

    stream: IO[bytes] | None
    filename: str | None
    url: str | None = None


def max_inputs() -> int:
    return int(current_app.config["MAX_BATCH_INPUTS"])


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, value in params.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[name] = value
    return kept


def create(
    owner: User, kind: str, submit: Submit, params: dict[str, Any], inputs: list[Input]
) -> BatchView:
    """Accept a batch: its row, then one job per input, in order.

    ``params`` were validated by the kind's form schema. ``callback_url`` is
    the batch's (one delivery when the whole batch has ended), not each job's.
    """
    if not inputs:
        raise ServiceError(
            "A batch needs at least one input: send each file as a `file` part, "
            "or each song's address as a `url` field.",
            code="no_inputs",
            status=422,
            errors={"file": ["At least one file or url is required."]},
        )
    if len(inputs) > max_inputs():
        raise ServiceError(
            f"A batch takes at most {max_inputs()} inputs (MAX_BATCH_INPUTS); "
            f"this one has {len(inputs)}. Split it.",
            code="too_many_inputs",
            status=422,
            errors={"file": [f"At most {max_inputs()} files and urls in all."]},
        )
    params = dict(params)
    callback_url = webhooks.validate(params.pop("callback_url", None))
    batch = Batch(
        id=str(uuid.uuid4()),
        owner_id=owner.id,
        kind=kind,
        params=_jsonable(params),
        inputs=len(inputs),
        callback_url=callback_url,
        created_at=utcnow(),
    )
    db.session.add(batch)
    db.session.commit()
    batch_id = batch.id
    try:
        for item in inputs:
            submit_input(owner, batch_id, kind, submit, params, item)
    finally:
        # Sealed whatever happened: from now on the batch can end.
        db.session.rollback()
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(submitted_at=utcnow()))
        db.session.commit()
        check_ended(batch_id)
    return view(owner, batch_id)


def submit_input(
    owner: User,
    batch_id: str,
    kind: str,
    submit: Submit,
    params: dict[str, Any],
    item: Input,
) -> None:
    """One input becomes one job of the batch, through the kind's own submit
    service. Refused by its checks (not audio, too long, over the storage
    quota...), it becomes a job that failed at once with that error."""
    with jobs.in_batch(batch_id) as created:
        try:
            if item.url is not None:
                # Checked now (form, addresses), fetched by the worker.
                submit(owner, {**params, "url": item.url}, None, None)
            else:
                submit(owner, dict(params), item.stream, item.filename)
        except ServiceError as exc:
            if not created:  # a job refused after its row exists is failed already
                _refused(owner, batch_id, kind, params, item, exc.code, exc.message)
        except Exception:
            db.session.rollback()
            log.exception("an input of batch %s could not be accepted", batch_id)
            if not created:
                _refused(
                    owner,
                    batch_id,
                    kind,
                    params,
                    item,
                    "internal_error",
                    "The input could not be accepted.",
                )
        finally:
            if item.stream is not None:
                item.stream.close()


def _refused(
    owner: User,
    batch_id: str,
    kind: str,
    params: dict[str, Any],
    item: Input,
    code: str,
    message: str,
) -> None:
    db.session.rollback()
    now = utcnow()
    ttl = timedelta(hours=float(current_app.config["RESULT_TTL_HOURS"]))
    db.session.add(
        Job(
            id=str(uuid.uuid4()),
            owner_id=owner.id,
            kind=kind,
            model=str(params.get("model") or ""),
            status="failed",
            stage="failed",
            progress=0.0,
            params=_jsonable(params),
            input=_refused_input(item),
            error_code=code,
            error_message=message,
            stored_bytes=0,
            batch_id=batch_id,
            created_at=now,
            updated_at=now,
            finished_at=now,
            expires_at=now + ttl,
        )
    )
    db.session.commit()


def _refused_input(item: Input) -> dict[str, Any]:
    if item.url is None:
        return {"filename": jobs.display_name(item.filename)}
    return {"filename": jobs.display_name(url_input.filename_from_url(item.url)), "url": item.url}


def get(owner: User, batch_id: str) -> Batch:
    try:
        uuid.UUID(batch_id)
    except ValueError:
        raise _not_found() from None
    batch = db.session.execute(
        select(Batch).where(Batch.id == batch_id, Batch.owner_id == owner.id)
    ).scalar_one_or_none()
    if batch is None:
        raise _not_found()
    return batch


def _counts(batch_id: str) -> tuple[dict[str, int], float, int]:
    """Jobs per status, the sum of the active ones' progress, and how many
    jobs have started (an input refused at once, or a job canceled while
    queued, never did)."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    running_progress = 0.0
    started = 0
    for status, count, progress, began in db.session.execute(
        select(
            Job.status,
            func.count(),
            func.coalesce(func.sum(Job.progress), 0.0),
            func.count(Job.started_at),
        )
        .where(Job.batch_id == batch_id)
        .group_by(Job.status)
    ).all():
        counts[status] = int(count)
        started += int(began)
        if status in ACTIVE_STATUSES:
            running_progress += float(progress or 0.0)
    return counts, running_progress, started


def status_of(batch: Batch, counts: dict[str, int], started: int) -> str:
    """The batch's status from its jobs' (see ``BATCH_STATUSES``)."""
    active = counts["queued"] + counts["running"]
    ended = sum(counts.values()) - active
    if batch.submitted_at is None or active:
        return "running" if counts["running"] or started else "queued"
    if ended == counts["succeeded"]:
        return "succeeded"
    if ended == counts["canceled"]:
        return "canceled"
    if ended == counts["expired"]:
        return "expired"
    if counts["succeeded"] + counts["expired"] == 0 and counts["failed"]:
        return "failed"
    return "completed_with_errors"


def summarise(batch: Batch, *, page: int = 1, per_page: int = 100) -> BatchView:
    counts, active_progress, started = _counts(batch.id)
    active = counts["queued"] + counts["running"]
    total = sum(counts.values())
    # While inputs are still being accepted, the ones to come count too.
    size = max(total, batch.inputs) if batch.submitted_at is None else total
    progress = ((total - active) + active_progress) / size if size else 1.0
    items = list(
        db.session.execute(
            select(Job)
            .where(Job.batch_id == batch.id)
            .order_by(Job.created_at, Job.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).scalars()
    )
    return BatchView(
        batch=batch,
        counts={name: counts[name] for name in JOB_STATUSES},
        progress=round(min(max(progress, 0.0), 1.0), 4),
        status=status_of(batch, counts, started),
        jobs=items,
        page=page,
        per_page=per_page,
    )


def view(owner: User, batch_id: str, *, page: int = 1, per_page: int = 100) -> BatchView:
    return summarise(get(owner, batch_id), page=page, per_page=per_page)


def list_batches(owner: User, *, page: int = 1, per_page: int = 20) -> tuple[list[BatchView], int]:
    """The owner's batches, newest first, each with its counts (and no jobs listed)."""
    query = select(Batch).where(Batch.owner_id == owner.id)
    total = db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = db.session.execute(
        query.order_by(Batch.created_at.desc(), Batch.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).scalars()
    return [summarise(batch, per_page=0) for batch in rows], int(total)


def event_id(batch_view: BatchView) -> str:
    """The id of the event carrying this state of the batch: its status, its
    counts and its progress (a reconnecting client's Last-Event-ID)."""
    counts = ".".join(str(batch_view.counts[name]) for name in JOB_STATUSES)
    return f"{batch_view.status}-{counts}-{batch_view.progress:.4f}"


def check_ended(batch_id: str) -> bool:
    """End the batch if every input has its job and none is still queued or
    running. True for the one caller that ended it: it has told the batch's
    stream and scheduled its webhook."""
    still_active = exists().where(Job.batch_id == batch_id, Job.status.in_(ACTIVE_STATUSES))
    result = db.session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.submitted_at.is_not(None),
            Batch.finished_at.is_(None),
            ~still_active,
        )
        .values(finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        return False
    events.publish_batch(batch_id)
    _schedule_webhook(batch_id)
    return True


# The request that accepts a batch's inputs ends within gunicorn's timeout
# (300 s); a batch still unsealed this long after it was created lost that
# request (an API process killed or crashed mid-submission).
ABANDONED_AFTER = timedelta(minutes=15)


def seal_abandoned(now: datetime | None = None) -> int:
    """Seal the batches whose accepting request died before sealing them, so
    they end with the jobs they got (maintenance pass). Returns how many."""
    now = now or utcnow()
    stale = db.session.execute(
        select(Batch.id).where(
            Batch.submitted_at.is_(None), Batch.created_at < now - ABANDONED_AFTER
        )
    ).scalars()
    sealed = 0
    for batch_id in list(stale):
        moved = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            update(Batch)
            .where(Batch.id == batch_id, Batch.submitted_at.is_(None))
            .values(submitted_at=now)
        ).rowcount
        db.session.commit()
        if moved == 1:
            sealed += 1
            log.warning("batch %s lost its request while accepting inputs; sealed", batch_id)
            check_ended(batch_id)
    return sealed


def _schedule_webhook(batch_id: str) -> None:
    batch = db.session.get(Batch, batch_id)
    if batch is None or not batch.callback_url:
        return
    summary = summarise(batch)

    def document() -> dict[str, Any]:
        db.session.refresh(batch)
        return BatchSchema().dump(summarise(batch))

    webhooks.schedule_batch_delivery(
        batch_id, batch.owner_id, batch.callback_url, f"batch.{summary.status}", document
    )


def job_ended(job_id: str) -> None:
    """A job ended (``jobs.job_ended``): its batch's stream hears of it, and the
    batch ends if that was its last job."""
    batch_id = db.session.execute(select(Job.batch_id).where(Job.id == job_id)).scalar()
    if batch_id is None:
        return
    events.publish_batch(batch_id)
    check_ended(batch_id)


def cancel(owner: User, batch_id: str) -> BatchView:
    """Cancel every job of the batch that has not ended; 409 when all have."""
    batch = get(owner, batch_id)
    active = list(
        db.session.execute(
            select(Job).where(Job.batch_id == batch.id, Job.status.in_(ACTIVE_STATUSES))
        ).scalars()
    )
    if not active and batch.submitted_at is not None:
        raise ServiceError(
            "Every job of the batch has already ended.", code="batch_finished", status=409
        )
    for job in active:
        try:
            jobs.cancel(owner, job.id)
        except ServiceError:
            continue  # it ended (or was deleted) meanwhile
    db.session.expire_all()
    return view(owner, batch_id)


def delete(owner: User, batch_id: str) -> None:
    """Delete the batch, every job of it and their files (running ones are
    canceled first)."""
    batch = get(owner, batch_id)
    job_ids = list(db.session.execute(select(Job.id).where(Job.batch_id == batch.id)).scalars())
    for job_id in job_ids:
        try:
            jobs.delete(owner, job_id)
        except jobs.NotFound:
            continue  # deleted meanwhile
    db.session.execute(sql_delete(Batch).where(Batch.id == batch.id))
    db.session.commit()


def archive_entries(owner: User, batch_id: str) -> tuple[Batch, list[tuple[str, Path]]]:
    """(name in the zip, file) for every result of the batch's succeeded jobs:
    a folder per input named after it (``song``, ``song (2)`` for a second
    input called the same). 409 when no job has results yet."""
    batch = get(owner, batch_id)
    done = list(
        db.session.execute(
            select(Job)
            .where(Job.batch_id == batch.id, Job.status == "succeeded")
            .order_by(Job.created_at, Job.id)
        ).scalars()
    )
    entries: list[tuple[str, Path]] = []
    folders: set[str] = set()
    for job in done:
        files = (job.result or {}).get("files", [])
        if not files:
            continue
        folder = folder_name((job.input or {}).get("filename"), folders)
        for item in files:
            entries.append(
                (
                    f"{folder}/{item['name']}",
                    storage.result_file(job.id, job.attempts, item["name"]),
                )
            )
    if not entries:
        raise ServiceError("No job of the batch has results yet.", code="not_ready", status=409)
    return batch, entries


def folder_name(filename: str | None, taken: set[str]) -> str:
    """The input's name without its extension, made unique among ``taken``
    (which it joins), and safe as a zip folder."""
    stem = jobs.display_name(filename).rsplit(".", 1)[0].strip(" .")[:120] or "input"
    stem = stem.replace("/", "_").replace("\\", "_")
    name, number = stem, 1
    while name.lower() in taken:
        number += 1
        name = f"{stem} ({number})"
    taken.add(name.lower())
    return name


def watch(
    owner_id: str,
    batch_id: str,
    *,
    per_page: int = 100,
    **options: Any,
) -> Iterator[events.StateChange | None]:
    """The batch's document each time it changes, until the batch has ended
    (``events.watch_state``: notices, polling and heartbeats as for jobs)."""
    schema = BatchSchema()

    def load() -> events.State | None:
        try:
            batch = db.session.execute(
                select(Batch).where(Batch.id == batch_id, Batch.owner_id == owner_id)
            ).scalar_one_or_none()
            if batch is None:
                return None
            state = summarise(batch, per_page=per_page)
            return events.State(event_id(state), state.status, state.is_final, schema.dump(state))
        finally:
            db.session.close()

    yield from events.watch_state(load, events.batch_topic(batch_id), **options)
