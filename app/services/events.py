"""Live job events: the job row is the truth, notices only say "look again".

Writers (the progress reporter, the claim, every final transition) call
``publish(job_id)`` after their commit. With ``REDIS_URL`` that publishes a
notice on the Redis channel ``ams:job:<id>``; without Redis (the embedded
default) it sends a local notice ``job:<id>`` to the processes of this machine
(``app/localbus.py``). A stream or a waiting request subscribed to it re-reads
the row at once. When neither works (Redis down, ``LOCAL_NOTICES=0``), they poll
the row every ``SSE_POLL_SECONDS``. Either way a stream sends a state the
client has not seen, so a lost notice costs latency, never an event.

Event ids are the state itself (``<attempts>-<status>-<progress>-<stage>``):
on reconnect, ``Last-Event-ID`` tells exactly whether the client already has
the current state, with no event log to keep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import select

from app import database, localbus
from app.errors import ServiceError
from app.extensions import db
from app.records import Job

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "ams:job:"
# After a failed publish, stay quiet this long (streams fall back to polling).
REDIS_RETRY_SECONDS = 30.0

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
_redis_down_until = 0.0


BATCH_CHANNEL_PREFIX = "ams:batch:"


def channel(job_id: str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def local_topic(job_id: str) -> str:
    return f"job:{job_id}"


@dataclass(frozen=True)
class Topic:
    """Where notices about one thing go: a local topic and a Redis channel."""

    local: str
    channel: str


def job_topic(job_id: str) -> Topic:
    return Topic(local_topic(job_id), channel(job_id))


def batch_topic(batch_id: str) -> Topic:
    """A batch's notices: one whenever one of its jobs ends, and when it ends."""
    return Topic(f"batch:{batch_id}", f"{BATCH_CHANNEL_PREFIX}{batch_id}")


def _local_bus(notify_dir: str | None) -> localbus.Bus | None:
    return localbus.get(notify_dir) if notify_dir else None


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
    _publish(job_topic(job_id))


def publish_batch(batch_id: str) -> None:
    """Tell a batch's streams that one of its jobs ended, or the batch did."""
    _publish(batch_topic(batch_id))


def _publish(topic: Topic) -> None:
    global _redis_down_until
    if not has_app_context():
        return
    url = current_app.config.get("REDIS_URL")
    if not url:
        bus = _local_bus(current_app.config.get("NOTIFY_DIR"))
        if bus is not None:
            bus.publish(topic.local)
        return
    if time.monotonic() < _redis_down_until:
        return
    try:
        _client(url).publish(topic.channel, "changed")
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
    """Notices about one job (or a ``Topic``): a Redis pub/sub subscription, a
    local one, or nothing (``live`` False: the caller polls)."""

    def __init__(self, url: str | None, job_id: str | Topic, notify_dir: str | None = None) -> None:
        topic = job_id if isinstance(job_id, Topic) else job_topic(job_id)
        self.pubsub: Any = None
        self.local: localbus.Subscription | None = None
        if not url:
            bus = _local_bus(notify_dir)
            self.local = bus.subscribe(topic.local) if bus is not None else None
            return
        try:
            pubsub = _client(url).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(topic.channel)
            self.pubsub = pubsub
        except Exception:
            log.warning("Redis pub/sub unavailable; this stream polls the database")

    @property
    def live(self) -> bool:
        return self.pubsub is not None or self.local is not None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a notice; False without notices or on timeout."""
        if self.local is not None:
            return self.local.wait(seconds)
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
        if self.local is not None:
            self.local.close()
            self.local = None
        if self.pubsub is not None:
            pubsub, self.pubsub = self.pubsub, None
            try:
                pubsub.close()
            except Exception:
                log.debug("closing a pub/sub connection failed", exc_info=True)


# With notices, re-read the row this often anyway (a notice may be lost).
BACKSTOP_SECONDS = 1.0
# How often a waiting request looks whether its client is still there.
CLIENT_CHECK_SECONDS = 1.0
# Past a cap, when to try again.
RETRY_AFTER_SECONDS = 5


class TooManyWaiting(ServiceError):
    """Past the caps on requests that hold a server thread while they wait."""

    retry_after = RETRY_AFTER_SECONDS


class Hold:
    """One request of this process holding a server thread while it waits (an
    event stream, ``?wait=``, ``Prefer: wait``, the OpenAI-compatible route).
    ``release`` may be called more than once."""

    def __init__(self, owner_id: str) -> None:
        self.owner_id = owner_id
        self.released = False

    def release(self) -> None:
        global _held
        with _held_lock:
            if self.released:
                return
            self.released = True
            _held -= 1
            left = _held_by_owner[self.owner_id] - 1
            if left:
                _held_by_owner[self.owner_id] = left
            else:
                del _held_by_owner[self.owner_id]


_held = 0
_held_by_owner: dict[str, int] = {}
_held_lock = threading.Lock()


def waiting() -> int:
    """Requests of this process holding a thread while they wait (streams included)."""
    return _held


def hold(owner_id: str, *, max_total: int, max_per_user: int) -> Hold:
    """A place for one more waiting request of ``owner_id`` in this process.

    Each such request holds one of the process's server threads for as long as
    it waits, and threads are what every other request needs too: at most
    ``max_total`` may wait at once, and one user at most ``max_per_user`` of
    them. Past either, TooManyWaiting (429 for the user's own cap, 503 when
    the server is full), with a Retry-After.
    """
    global _held
    with _held_lock:
        mine = _held_by_owner.get(owner_id, 0)
        if mine >= max_per_user:
            raise TooManyWaiting(
                f"You already have {mine} requests waiting on jobs on this server "
                f"(event streams and waits; at most {max_per_user}). Close one, or poll.",
                code="too_many_waiting_requests",
                status=429,
            )
        if _held >= max_total:
            raise TooManyWaiting(
                "The server is holding as many waiting requests as it can; "
                "retry shortly, or poll without waiting.",
                code="server_busy",
                status=503,
            )
        _held += 1
        _held_by_owner[owner_id] = mine + 1
    return Hold(owner_id)


def _never() -> bool:
    return False


def wait_until_final(
    owner_id: str,
    job_id: str,
    seconds: float,
    *,
    poll_seconds: float = 0.5,
    redis_url: str | None = None,
    notify_dir: str | None = None,
    client_gone: Callable[[], bool] = _never,
) -> Job | None:
    """The job (read afresh) once it has ended, or as it is after ``seconds``
    or when ``client_gone()`` says nobody waits for the answer any more; None
    when it does not exist or is not ``owner_id``'s."""
    deadline = time.monotonic() + seconds
    # Subscribed before the first read: no notice is lost in between.
    subscription = _Subscription(redis_url, job_id, notify_dir)
    try:
        while True:
            job = _load(owner_id, job_id)
            remaining = deadline - time.monotonic()
            if job is None or job.is_final or remaining <= 0 or client_gone():
                return job
            step = min(remaining, CLIENT_CHECK_SECONDS)
            if subscription.live:
                subscription.wait(min(step, BACKSTOP_SECONDS))
            else:
                time.sleep(min(step, poll_seconds))
    finally:
        subscription.close()


def watch(
    owner_id: str,
    job_id: str,
    *,
    last_event_id: str | None = None,
    poll_seconds: float = 0.5,
    heartbeat_seconds: float = 15.0,
    redis_url: str | None = None,
    notify_dir: str | None = None,
    client_gone: Callable[[], bool] = _never,
) -> Iterator[Change | None]:
    """Yield a Change whenever the job's status, progress or stage changes, and
    None every ``heartbeat_seconds`` (the caller sends a comment). Ends after
    the final status, when the job disappears, or within about a second of
    ``client_gone()`` turning true: a stream whose client left must give its
    server thread back then, not at its next write.

    With notices (Redis or local), the row is read on each notice and at every
    heartbeat; without, every ``poll_seconds``. Closing the generator releases everything.
    """
    # Subscribed before the first read: no notice is lost in between.
    subscription = _Subscription(redis_url, job_id, notify_dir)
    try:
        sent = last_event_id
        sent_status = status_of(last_event_id)
        next_beat = time.monotonic() + heartbeat_seconds
        while True:
            try:
                job = _load(owner_id, job_id)
            except Exception as exc:
                if not database.is_unavailable(exc):
                    raise
                # The database is away: keep the stream (and its heartbeats)
                # and read again at the next notice, beat or poll.
                log.info("job %s stream: %s; waiting", job_id, database.describe(exc))
            else:
                if job is None:
                    return
                current = event_id(job)
                if current != sent:
                    name = "status" if job.status != sent_status else "progress"
                    yield Change(name, current, job)
                    sent, sent_status = current, job.status
                if job.is_final:
                    return
            next_read = time.monotonic() + poll_seconds
            while True:
                if client_gone():
                    return
                now = time.monotonic()
                until_beat = next_beat - now
                if until_beat <= 0:
                    yield None
                    next_beat = time.monotonic() + heartbeat_seconds
                    break  # re-read at every heartbeat too (a notice may have been lost)
                step = min(until_beat, CLIENT_CHECK_SECONDS)
                if subscription.live:
                    if subscription.wait(step):
                        break
                else:
                    time.sleep(max(0.0, min(step, next_read - now)))
                    if time.monotonic() >= next_read:
                        break
    finally:
        subscription.close()


@dataclass
class State:
    """What ``watch_state`` reads each time: the id of the event carrying this
    state, its status, whether it is final, and the document to send."""

    id: str
    status: str
    final: bool
    document: dict[str, Any]


@dataclass
class StateChange:
    event: str
    id: str
    document: dict[str, Any]
    final: bool


def watch_state(
    load: Callable[[], State | None],
    topic: Topic,
    *,
    last_event_id: str | None = None,
    poll_seconds: float = 0.5,
    heartbeat_seconds: float = 15.0,
    redis_url: str | None = None,
    notify_dir: str | None = None,
    client_gone: Callable[[], bool] = _never,
) -> Iterator[StateChange | None]:
    """``watch`` for something made of many jobs (a batch): yield a StateChange
    whenever ``load()``'s id differs from the last one sent (``status`` when
    the status changed, else ``progress``), None every ``heartbeat_seconds``;
    end after a final state, when ``load()`` finds nothing, or once
    ``client_gone()``. Its jobs' progress writes send no notice to ``topic``,
    so the state is re-read every ``poll_seconds`` as well as on each notice
    (a job ending, the batch ending)."""
    subscription = _Subscription(redis_url, topic, notify_dir)
    try:
        sent = last_event_id
        sent_status = (last_event_id or "").split("-", 1)[0] or None
        next_beat = time.monotonic() + heartbeat_seconds
        while True:
            state = load()
            if state is None:
                return
            if state.id != sent:
                name = "status" if state.status != sent_status else "progress"
                yield StateChange(name, state.id, state.document, state.final)
                sent, sent_status = state.id, state.status
            if state.final:
                return
            next_read = time.monotonic() + poll_seconds
            while True:
                if client_gone():
                    return
                now = time.monotonic()
                if next_beat - now <= 0:
                    yield None
                    next_beat = time.monotonic() + heartbeat_seconds
                    break
                step = max(0.0, min(next_beat - now, next_read - now, CLIENT_CHECK_SECONDS))
                if subscription.live:
                    if subscription.wait(step):
                        break
                else:
                    time.sleep(step)
                if time.monotonic() >= next_read:
                    break
    finally:
        subscription.close()
