"""GET /api/v1/jobs/{id}/events: Server-Sent Events, read through a real HTTP server.

Job state is driven from another thread with the same functions a worker uses
(``runner.execute`` and its ProgressReporter, ``jobs.finish``), on the embedded
default (the stream polls the database) and on a real ``redis-server``
(pub/sub; skipped with the reason printed when the binary is absent).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from app.extensions import db
from app.records import Job
from app.services import events, jobs, runner
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login, submit_separation
from tests.support.procs import free_port

pytestmark = BOTH_DATABASES

FINAL = ("succeeded", "failed", "canceled")


@contextlib.contextmanager
def serve(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, in a thread, as a browser would reach it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


class Stream:
    """Reads an event stream in a thread: ``events`` (dicts) and ``comments`` as they come."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.response = requests.get(url, headers=headers or {}, stream=True, timeout=30)
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        current: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    if "data" in current:
                        current["job"] = json.loads(current.pop("data"))
                        self.events.append(current)
                    current = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(":")
                    current[field] = value[1:] if value.startswith(" ") else value
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test (urllib3 drops its file object mid-read)
        finally:
            self.closed.set()

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; events: {self.events}")

    def close(self) -> None:
        self.response.close()


def _drive(
    app: Flask, job_id: str, steps: list[tuple[float, str]], pause: float
) -> threading.Thread:
    """Run the job's attempt in a thread the way a worker does, reporting ``steps``."""

    def work(job, attempt, report):
        for progress, stage in steps:
            time.sleep(pause)
            report(progress, stage, force=True)
        time.sleep(pause)
        return {"files": []}

    def run() -> None:
        with app.app_context():
            runner.execute(job_id, work)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _check_sequence(stream: Stream) -> None:
    """What a client must see: queued, running, monotonic progress, the final status."""
    seen = stream.events
    assert [e["event"] for e in seen[:2]] == ["status", "status"], seen
    assert [e["job"]["status"] for e in seen[:2]] == ["queued", "running"]
    assert seen[-1]["event"] == "status" and seen[-1]["job"]["status"] == "succeeded"
    assert seen[-1]["job"]["progress"] == 1.0
    progress = [e["job"]["progress"] for e in seen]
    assert progress == sorted(progress), progress
    stages = [e["job"]["stage"] for e in seen if e["event"] == "progress"]
    assert {"loading", "working"} <= set(stages), stages
    assert len({e["id"] for e in seen}) == len(seen)  # every event a new state
    for event in seen[2:-1]:
        assert event["event"] == "progress" and event["job"]["status"] == "running"
    # The data is the job exactly as GET /jobs/{id} shows it.
    assert set(seen[-1]["job"]) >= {"id", "kind", "status", "progress", "stage", "url", "result"}


def test_a_finished_job_streams_its_final_status_and_closes(app: Flask, song_wav: bytes) -> None:
    headers, job_id = submit_separation(app, song_wav)  # eager: already succeeded
    client = app.test_client()
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    body = response.get_data(as_text=True)
    blocks = [b for b in body.split("\n\n") if b.startswith("event:")]
    assert len(blocks) == 1, body
    lines = dict(line.split(": ", 1) for line in blocks[0].splitlines())
    assert lines["event"] == "status"
    job = json.loads(lines["data"])
    assert job == client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
    assert job["status"] == "succeeded"

    # Reconnecting after the final event: 204 tells EventSource to stop.
    again = client.get(
        f"/api/v1/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": lines["id"]}
    )
    assert again.status_code == 204
    # A stale id gets the final state again.
    stale = client.get(
        f"/api/v1/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": "1-running-0.5-x"}
    )
    assert stale.status_code == 200 and '"status":"succeeded"' in stale.get_data(as_text=True)


def test_events_are_owner_scoped_and_take_a_query_token(app: Flask, song_wav: bytes) -> None:
    headers, job_id = submit_separation(app, song_wav)
    client = app.test_client()
    token = headers["Authorization"].split(" ", 1)[1]
    by_query = client.get(f"/api/v1/jobs/{job_id}/events?access_token={token}")
    assert by_query.status_code == 200 and "event: status" in by_query.get_data(as_text=True)
    # Only this route reads the query token.
    assert client.get(f"/api/v1/jobs/{job_id}?access_token={token}").status_code == 401

    assert client.get(f"/api/v1/jobs/{job_id}/events").status_code == 401
    assert client.get(f"/api/v1/jobs/{job_id}/events?access_token=forged").status_code == 401
    other = register_and_login(client)
    theirs = client.get(f"/api/v1/jobs/{job_id}/events", headers=other)
    missing = client.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000/events", headers=other)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json


def test_live_progress_through_a_real_server(queued_app: Flask, song_wav: bytes) -> None:
    queued_app.config.update(SSE_POLL_SECONDS=0.1, SSE_HEARTBEAT_SECONDS=0.5)
    headers, job_id = submit_separation(queued_app, song_wav)
    steps = [(0.0, "loading"), (0.2, "working"), (0.5, "working"), (0.8, "working")]
    with serve(queued_app) as base:
        stream = Stream(f"{base}/api/v1/jobs/{job_id}/events", headers)
        try:
            stream.wait_for(lambda: stream.events, 10, "the first event")
            # Waiting, the stream holds no database connection.
            with queued_app.app_context():
                samples = []
                for _ in range(20):
                    samples.append(db.engine.pool.checkedout())
                    time.sleep(0.05)
            assert samples.count(0) >= len(samples) - 2, samples
            driver = _drive(queued_app, job_id, steps, pause=0.3)
            assert stream.closed.wait(30), stream.events
            driver.join(10)
        finally:
            stream.close()
    _check_sequence(stream)
    assert len(stream.events) >= 5


def test_last_event_id_resumes_and_a_closed_client_frees_the_stream(
    queued_app: Flask, song_wav: bytes
) -> None:
    queued_app.config.update(SSE_POLL_SECONDS=0.1, SSE_HEARTBEAT_SECONDS=0.2)
    headers, job_id = submit_separation(queued_app, song_wav)
    url = f"/api/v1/jobs/{job_id}/events"
    with serve(queued_app) as base:
        first = Stream(base + url, headers)
        first.wait_for(lambda: first.events, 10, "the queued event")
        assert first.events[0]["job"]["status"] == "queued"
        first.wait_for(lambda: first.comments, 5, "a heartbeat")
        assert ": keepalive" in first.comments
        assert events.waiting() == 1
        first.close()
        # The server notices (its client's socket, or its next write) and lets go.
        first.wait_for(lambda: events.waiting() == 0, 10, "the stream to end")

        # Resuming from the last id: nothing repeated, only what is new.
        resumed = Stream(base + url, {**headers, "Last-Event-ID": first.events[0]["id"]})
        try:
            resumed.wait_for(lambda: len(resumed.comments) >= 3, 10, "heartbeats")
            assert resumed.events == []
            with queued_app.app_context():
                assert jobs.finish(job_id, "canceled")
            assert resumed.closed.wait(10)
        finally:
            resumed.close()
    assert [(e["event"], e["job"]["status"]) for e in resumed.events] == [("status", "canceled")]


def test_live_progress_over_redis_pub_sub(tmp_path: Path, redis_url: str, song_wav: bytes) -> None:
    # Polling and heartbeats once a minute: events can only come this fast by pub/sub.
    app = make_app(
        tmp_path / "data", REDIS_URL=redis_url, SSE_POLL_SECONDS=60, SSE_HEARTBEAT_SECONDS=60
    )
    headers, job_id = submit_separation(app, song_wav)
    steps = [(0.0, "loading"), (0.2, "working"), (0.5, "working"), (0.8, "working")]
    with serve(app) as base:
        stream = Stream(f"{base}/api/v1/jobs/{job_id}/events", headers)
        try:
            stream.wait_for(lambda: stream.events, 10, "the first event")
            driver = _drive(app, job_id, steps, pause=0.3)
            assert stream.closed.wait(20), stream.events
            driver.join(10)
        finally:
            stream.close()
    _check_sequence(stream)


def test_streams_poll_when_redis_is_down(queued_app: Flask, song_wav: bytes) -> None:
    """Redis gone (or never reachable): the stream follows the job by polling."""
    _headers, job_id = submit_separation(queued_app, song_wav)
    with queued_app.app_context():
        job = db.session.get(Job, job_id)
        assert job is not None
        owner = job.owner_id
    steps = [(0.0, "loading"), (0.2, "working"), (0.5, "working"), (0.8, "working")]
    seen: list[tuple[str, str, float]] = []
    driver = None
    with queued_app.test_request_context():
        for change in events.watch(
            owner,
            job_id,
            poll_seconds=0.1,
            heartbeat_seconds=60,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        ):
            assert change is not None
            seen.append((change.event, change.job.status, change.job.progress))
            if driver is None:
                driver = _drive(queued_app, job_id, steps, pause=0.3)
    assert driver is not None
    driver.join(10)
    assert seen[0] == ("status", "queued", 0.0)
    assert seen[1][:2] == ("status", "running")
    assert seen[-1] == ("status", "succeeded", 1.0)
    assert [p for _, _, p in seen] == sorted(p for _, _, p in seen)
    assert len(seen) >= 5


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_every_final_status_ends_the_stream(
    queued_app: Flask, song_wav: bytes, status: str
) -> None:
    queued_app.config.update(SSE_POLL_SECONDS=0.1)
    headers, job_id = submit_separation(queued_app, song_wav)
    with serve(queued_app) as base:
        stream = Stream(f"{base}/api/v1/jobs/{job_id}/events", headers)
        try:
            stream.wait_for(lambda: stream.events, 10, "the first event")
            with queued_app.app_context():
                error = ("audio_decode_failed", "bad") if status == "failed" else None
                assert jobs.finish(job_id, status, error=error)
            assert stream.closed.wait(10)
        finally:
            stream.close()
    last = stream.events[-1]
    assert last["event"] == "status" and last["job"]["status"] == status
    if status == "failed":
        assert last["job"]["error"]["code"] == "audio_decode_failed"
