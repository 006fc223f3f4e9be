"""Live job events: the job row is the truth, Redis pub/sub only says "look again".

Writers (the progress reporter, the claim, every final transition) call
``publish(job_id)`` after their commit. With ``REDIS_URL`` that publishes a
notice on ``ams:job:<id>``; a stream waiting on that channel re-reads the row
at once. Without Redis (the embedded default), or when Redis fails, streams
poll the row every ``SSE_POLL_SECONDS``. Either way a stream sends a state the
client has not seen, so a lost notice costs latency, never an event.

Event ids are the state itself (``<attempts>-<status>-<progress>-<stage>``):
on reconnect, ``Last-Event-ID`` tells exactly whether the client already has
the current state, with no event log to keep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import select

from app.extensions import db
from app.records import Job

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "ams:job:"
# After a failed publish, stay quiet this long (streams fall back to polling).
REDIS_RETRY_SECONDS = 30.0

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
_redis_down_until = 0.0
_open_streams = 0
_open_lock = threading.Lock()


def channel(job_id: str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def _client(url: str) -> Any:
    import redis

    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
            _clients[url] = client
        return client


def publish(job_id: str) -> None:
    """Tell live streams that ``job_id`` changed. Never raises: a job's progress
    must not fail because the notice channel is down."""
    global _redis_down_until
    if not has_app_context():
        return
    url = current_app.config.get("REDIS_URL")
    if not url or time.monotonic() < _redis_down_until:
        return
    try:
        _client(url).publish(channel(job_id), "changed")
    except Exception:
        _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        log.warning("could not publish a job event on Redis; streams poll the database instead")


def event_id(job: Job) -> str:
    """The id of the event that carries this state of the job."""
    stage = "".join(ch for ch in (job.stage or "") if ch.isalnum() or ch in "_.")
    return f"{job.attempts}-{job.status}-{job.progress or 0.0:.4f}-{stage}"


def status_of(event: str | None) -> str | None:
    """The status an event id names (None for no or a foreign id)."""
    parts = (event or "").split("-")
    return parts[1] if len(parts) >= 4 else None


@dataclass
class Change:
    """One event: ``status`` when the status changed (and the first one sent),
    ``progress`` when only progress or stage did."""

    event: str
    id: str
    job: Job

    @property
    def final(self) -> bool:
        return self.job.is_final


def open_streams() -> int:
    """Streams open in this process (each holds one server thread)."""
    return _open_streams


def _load(owner_id: str, job_id: str) -> Job | None:
    """Read the row and give the connection back at once: a stream must not keep
    a transaction (or a pooled connection) open while it waits."""
    try:
        return db.session.execute(
            select(Job).where(Job.id == job_id, Job.owner_id == owner_id)
        ).scalar_one_or_none()
    finally:
        db.session.close()


class _Subscription:
    """A Redis pub/sub subscription to one job's channel, or nothing."""

    def __init__(self, url: str | None, job_id: str) -> None:
        self.pubsub: Any = None
        if not url:
            return
        try:
            pubsub = _client(url).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(job_id))
            self.pubsub = pubsub
        except Exception:
            log.warning("Redis pub/sub unavailable; this stream polls the database")

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a notice; False without Redis or on timeout."""
        if self.pubsub is None:
            return False
        deadline = time.monotonic() + seconds
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                message = self.pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "message":
                    while self.pubsub.get_message(timeout=0):  # several notices, one read
                        pass
                    return True
        except Exception:
            log.warning("Redis pub/sub failed; this stream polls the database now")
            self.close()
        return False

    def close(self) -> None:
        if self.pubsub is not None:
            pubsub, self.pubsub = self.pubsub, None
            try:
                pubsub.close()
            except Exception:
                log.debug("closing a pub/sub connection failed", exc_info=True)


def watch(
    owner_id: str,
    job_id: str,
    *,
    last_event_id: str | None = None,
    poll_seconds: float = 0.5,
    heartbeat_seconds: float = 15.0,
    redis_url: str | None = None,
) -> Iterator[Change | None]:
    """Yield a Change whenever the job's status, progress or stage changes, and
    None every ``heartbeat_seconds`` (the caller sends a comment, which is also
    how a disconnected client is noticed). Ends after the final status, or when
    the job disappears.

    With Redis, the row is read on each notice and at every heartbeat; without,
    every ``poll_seconds``. Closing the generator releases everything.
    """
    global _open_streams
    with _open_lock:
        _open_streams += 1
    subscription = _Subscription(redis_url, job_id)  # before the first read: no notice lost
    try:
        sent = last_event_id
        sent_status = status_of(last_event_id)
        next_beat = time.monotonic() + heartbeat_seconds
        while True:
            job = _load(owner_id, job_id)
            if job is None:
                return
            current = event_id(job)
            if current != sent:
                name = "status" if job.status != sent_status else "progress"
                yield Change(name, current, job)
                sent, sent_status = current, job.status
            if job.is_final:
                return
            while True:
                until_beat = next_beat - time.monotonic()
                if until_beat <= 0:
                    yield None
                    next_beat = time.monotonic() + heartbeat_seconds
                    break  # re-read at every heartbeat too (a notice may have been lost)
                if subscription.pubsub is not None:
                    if subscription.wait(until_beat):
                        break
                else:
                    time.sleep(min(poll_seconds, until_beat))
                    if until_beat > poll_seconds:
                        break
    finally:
        subscription.close()
        with _open_lock:
            _open_streams -= 1
