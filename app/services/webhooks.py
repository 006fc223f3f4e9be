"""Webhooks: when a job ends, POST its JSON to the ``callback_url`` given at submit.

Safety first, because the service makes requests to addresses users choose
(SSRF): only http/https, no credentials in the URL, and every address the
host resolves to must be a public one, checked at submit and again at each
delivery, which then connects to the address it vetted (a DNS answer that
changes in between, "DNS rebinding", cannot point it inward). The guard is
``services/outbound.py``, shared with input by URL.
``WEBHOOK_ALLOW_PRIVATE=1`` lifts the address rule for trusted networks.

Receivers verify ``X-AMS-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<X-AMS-Timestamp>.<raw body>`` under their account's signing secret
(``GET /api/v1/webhooks/secret``; derived from ``WEBHOOK_SECRET``, so no
table is needed and rotating that one value rotates every account's).
``X-AMS-Event-Id`` stays the same across retries, for de-duplication.

Each try has a wall-clock deadline (``WEBHOOK_DEADLINE_SECONDS``): socket
timeouts bound each read, not the whole answer, and a receiver sending a
byte now and then would otherwise hold a worker for as long as it liked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from app.database import retry_while_unavailable
from app.errors import ServiceError
from app.extensions import db
from app.records import Batch, Job, utcnow
from app.services import outbound
from app.services.job_document import JobSchema

log = logging.getLogger(__name__)

# Delays before each retry: five tries over about 36 minutes. On Redis every
# countdown must stay below the broker's visibility_timeout (4 h), or the
# message would be handed out twice.
RETRY_DELAYS = (10, 60, 300, 1800)
READ_TIMEOUT = 10.0
# A whole try (connect, send, read) ends here whatever the receiver does.
DEFAULT_DEADLINE_SECONDS = 15.0
USER_AGENT = "AiMusicSeparator-Webhook/1"
# The Celery task that delivers (app/tasks/webhooks.py), published by name
# through the Celery app's registry: services never import app.tasks.
DELIVER_TASK = "app.tasks.webhooks.deliver"
# A batch's delivery: the same tries, recorded on the batch (``batches.webhook``).
DELIVER_BATCH_TASK = "app.tasks.webhooks.deliver_batch"


def check(url: str, config: Any = None) -> outbound.Target:
    """Validate a callback URL the way submit and every delivery do."""
    config = config if config is not None else current_app.config
    return outbound.check(
        url,
        field="callback_url",
        allow_private=bool(config.get("WEBHOOK_ALLOW_PRIVATE")),
        hint="WEBHOOK_ALLOW_PRIVATE=1 allows them",
    )


def validate(url: str | None) -> str | None:
    """Submit-time check: the URL to store, or None when none was given."""
    if url is None or url == "":
        return None
    check(url)
    return url


def signing_key(owner_id: str, config: Any = None) -> str:
    """An account's signing secret: HMAC of its id under ``WEBHOOK_SECRET``."""
    config = config if config is not None else current_app.config
    master = str(config["WEBHOOK_SECRET"]).encode()
    return hmac.new(master, f"webhook:{owner_id}".encode(), hashlib.sha256).hexdigest()


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The ``X-AMS-Signature`` value for a body sent at ``timestamp``."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def _record(job_id: str, subject: str = "job", **values: Any) -> None:
    """Update the job's (or with ``subject="batch"`` the batch's) delivery
    record (never ``updated_at``: that is the job's own).

    The receiver has its answer by now: a database outage delays the record
    (retried, as a worker does for a job's result) rather than losing it."""
    table: Any = Batch if subject == "batch" else Job

    def write() -> None:
        row = db.session.execute(select(table.webhook).where(table.id == job_id)).first()
        if row is None:  # deleted meanwhile: the delivery still goes out
            db.session.rollback()
            return
        record = dict(row[0] or {})
        record.update(values)
        db.session.execute(update(table).where(table.id == job_id).values(webhook=record))
        db.session.commit()

    retry_while_unavailable(write, f"webhook of {subject} {job_id}: recording the delivery")


def _job_json(job: Job) -> dict[str, Any]:
    """The job as ``GET /api/v1/jobs/<id>`` shows it (URLs are relative, as there)."""
    return JobSchema().dump(job)


def schedule_delivery(job_id: str) -> None:
    """Schedule the webhook of a job that just ended, if it asked for one.

    Called once per job, by whoever won the move to a final status. The body
    is taken now (a job deleted right after its cancel still gets its
    webhook); delivery happens in the ``webhooks`` queue. Never raises.
    """
    try:
        job = db.session.get(Job, job_id)
        if job is None or not job.callback_url:
            return
        event = str(uuid.uuid4())
        record = {
            "event_id": event,
            "state": "pending",
            "attempts": 0,
            "last_status": None,
            "last_error": None,
            "delivered_at": None,
        }
        db.session.execute(update(Job).where(Job.id == job_id).values(webhook=record))
        db.session.commit()
        db.session.refresh(job)
        body = json.dumps(_job_json(job), separators=(",", ":"), sort_keys=True)
        deliver = current_app.extensions["celery"].tasks[DELIVER_TASK]
        deliver.apply_async(
            args=[job_id, job.owner_id, job.callback_url, f"job.{job.status}", event, body]
        )
    except Exception:
        db.session.rollback()
        log.exception("could not schedule the webhook of job %s", job_id)
        try:
            _record(job_id, state="failed", last_error="The webhook could not be scheduled.")
        except Exception:
            db.session.rollback()


def schedule_batch_delivery(
    batch_id: str,
    owner_id: str,
    url: str,
    event: str,
    document: Callable[[], dict[str, Any]],
) -> None:
    """Schedule the one delivery of a batch that just ended (``batches.check_ended``,
    once per batch): ``document()`` is its JSON, taken once the record says
    ``pending``. Signed, retried and recorded as a job's are. Never raises."""
    try:
        event_id = str(uuid.uuid4())
        record = {
            "event_id": event_id,
            "state": "pending",
            "attempts": 0,
            "last_status": None,
            "last_error": None,
            "delivered_at": None,
        }
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(webhook=record))
        db.session.commit()
        body = json.dumps(document(), separators=(",", ":"), sort_keys=True)
        deliver = current_app.extensions["celery"].tasks[DELIVER_BATCH_TASK]
        deliver.apply_async(args=[batch_id, owner_id, url, event, event_id, body])
    except Exception:
        db.session.rollback()
        log.exception("could not schedule the webhook of batch %s", batch_id)
        try:
            _record(
                batch_id, "batch", state="failed", last_error="The webhook could not be scheduled."
            )
        except Exception:
            db.session.rollback()


def tls_context() -> ssl.SSLContext:
    return outbound.tls_context()


class DeliveryError(Exception):
    """A try that did not get a 2xx answer (the message says why). ``retry``
    is False when trying again cannot help (the URL is refused now)."""

    def __init__(self, message: str, status: int | None = None, *, retry: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retry = retry


def post(url: str, headers: dict[str, str], body: bytes, config: Any = None) -> int:
    """POST once to a re-checked address; returns the 2xx status, raises
    DeliveryError otherwise. Redirects are not followed (they could point inward).

    The status line is the answer: a body that fails or trickles after it
    does not turn a 2xx into a failure (the receiver has the event by then).
    """
    config = config if config is not None else current_app.config
    seconds = float(config.get("WEBHOOK_DEADLINE_SECONDS") or DEFAULT_DEADLINE_SECONDS)
    with outbound.Watchdog(seconds) as watchdog:
        target = check(url, config)
        last: Exception | None = None
        for address in target.addresses:
            if watchdog.passed:
                break
            context = tls_context() if target.scheme == "https" else None
            conn = outbound.connection(target, address, READ_TIMEOUT, watchdog, context)
            response: http.client.HTTPResponse | None = None
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                response = conn.getresponse()
                status = response.status
                # Drained so that closing does not reset a receiver still writing.
                with contextlib.suppress(OSError, http.client.HTTPException):
                    response.read(64 * 1024)
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                continue
            finally:
                if response is not None:
                    response.close()
                conn.close()
                watchdog.release()
            if 200 <= status < 300:
                return status
            raise DeliveryError(f"The receiver answered HTTP {status}.", status)
        if watchdog.passed:
            raise DeliveryError(
                f"The receiver did not answer within the {seconds:g} s deadline "
                "(WEBHOOK_DEADLINE_SECONDS); the connection was cut."
            )
    reason = type(last).__name__ if last else "no address"
    detail = str(last) if last else ""
    raise DeliveryError(f"Could not reach the receiver ({reason}: {detail})"[:500])


def attempt(
    job_id: str,
    owner_id: str,
    url: str,
    event: str,
    event_id: str,
    body: str,
    number: int,
    subject: str = "job",
) -> int:
    """One delivery try (``number`` counts from 1), recorded on the job (or
    the batch, ``subject="batch"``). Returns the receiver's status; raises
    DeliveryError when it must be retried."""
    data = body.encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-AMS-Event": event,
        "X-AMS-Event-Id": event_id,
        "X-AMS-Timestamp": timestamp,
        "X-AMS-Signature": sign(signing_key(owner_id), timestamp, data),
        "X-AMS-Attempt": str(number),
    }
    try:
        status = post(url, headers, data)
    except (DeliveryError, ServiceError) as exc:
        if isinstance(exc, DeliveryError):
            error = exc
        else:  # the URL no longer passes the checks: only a DNS failure may pass later
            error = DeliveryError(exc.message, retry=exc.code != "callback_url_not_allowed")
        final = not error.retry or number > len(RETRY_DELAYS)
        _record(
            job_id,
            subject,
            attempts=number,
            last_status=error.status,
            last_error=str(error),
            state="failed" if final else "retrying",
        )
        log.info("webhook of job %s, try %d: %s", job_id, number, error)
        raise error from exc
    _record(
        job_id,
        subject,
        attempts=number,
        last_status=status,
        last_error=None,
        state="delivered",
        delivered_at=utcnow().isoformat() + "Z",
    )
    return status
