"""One user's library does not starve another user's song (app/services/fair_queue.py).

A user's jobs are published to the broker ``MAX_RUNNING_JOBS`` at a time; the
rest wait in the database for a turn, which a job's end hands on. Queue
positions tell each user where they stand under that rule.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.records import Job
from app.services import jobs
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import CeleryProcess, job_env, wait_for

pytestmark = BOTH_DATABASES

SHORT_SONG = wav_bytes(sine_and_clicks(seconds=0.5))


def _submit(client: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(SHORT_SONG), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return dict(response.json)


def _messages(app: Flask, queue: str = "separation") -> int:
    from app.services.maintenance import waiting_messages

    with app.extensions["celery"].connection_for_write() as conn:
        return waiting_messages(conn.default_channel, queue)


def _position(client: FlaskClient, headers: dict[str, str], job_id: str) -> int | None:
    return client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["queue_position"]


def test_a_users_jobs_take_turns_and_a_newcomer_goes_ahead(queued_app: Flask) -> None:
    client = queued_app.test_client()
    alice, bob = register_and_login(client), register_and_login(client)
    mine = [_submit(client, alice)["id"] for _ in range(5)]
    # Two of Alice's jobs are published; the other three wait their turn.
    assert _messages(queued_app) == 2
    theirs = _submit(client, bob)
    assert theirs["status"] == "queued" and theirs["queue_position"] == 3
    assert _messages(queued_app) == 3
    assert [_position(client, alice, job_id) for job_id in mine] == [1, 2, 4, 5, 6]

    # Alice cancels her first job: its turn goes to her third at once.
    assert client.post(f"/api/v1/jobs/{mine[0]}/cancel", headers=alice).status_code == 200
    with queued_app.app_context():
        third = db.session.get(Job, mine[2])
        assert third is not None and third.dispatched_at is not None
    assert [_position(client, alice, job_id) for job_id in mine[1:]] == [1, 3, 4, 5]
    assert _position(client, bob, theirs["id"]) == 2


def test_turns_are_never_over_handed_when_many_take_them_at_once(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", MAX_RUNNING_JOBS=3)
    client = app.test_client()
    headers = register_and_login(client)
    ids = [_submit(client, headers)["id"] for _ in range(12)]
    with app.app_context():
        owner_id = db.session.get(Job, ids[0]).owner_id  # type: ignore[union-attr]
        # Nine wait; free their published jobs' turns all at once, then have
        # eight threads hand turns out together, as API processes and workers do.
        db.session.execute(
            Job.__table__.update().where(Job.id.in_(ids[:3])).values(status="canceled")
        )
        db.session.commit()
    published: list[int] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        with app.app_context():
            barrier.wait()
            published.append(jobs.next_turns(owner_id, "separation"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(published) == 3
    with app.app_context():
        dispatched = db.session.execute(
            db.select(db.func.count())
            .select_from(Job)
            .where(Job.status == "queued", Job.dispatched_at.is_not(None))
        ).scalar_one()
    assert dispatched == 3


def test_one_song_starts_before_the_tenth_of_a_30_song_library(tmp_path: Path) -> None:
    """Alice queues 30 songs, then Bob one; only then does a worker start.
    First in, first out, Bob's song would start 31st."""
    app = make_app(tmp_path / "data")
    client = app.test_client()
    alice, bob = register_and_login(client), register_and_login(client)
    library = [_submit(client, alice)["id"] for _ in range(30)]
    song = _submit(client, bob)["id"]

    log_path = tmp_path / "worker.log"
    worker = CeleryProcess(log_path, job_env(app), queues="separation")
    try:

        def all_ended() -> bool:
            with app.app_context():
                db.session.expire_all()
                left = db.session.execute(
                    db.select(db.func.count())
                    .select_from(Job)
                    .where(Job.status.in_(("queued", "running")))
                ).scalar_one()
            return left == 0

        wait_for(all_ended, 240, "all 31 jobs to end", [log_path], interval=0.5)
    finally:
        worker.stop()
    with app.app_context():
        db.session.expire_all()
        rows = {job.id: job for job in db.session.execute(db.select(Job)).scalars()}
    assert {job.status for job in rows.values()} == {"succeeded"}
    assert all(job.attempts == 1 for job in rows.values())
    started = sorted(rows.values(), key=lambda job: job.started_at)
    order = [job.id for job in started]
    assert order.index(song) < order.index(library[9])
    # Alice's songs still run in the order she queued them.
    assert [job_id for job_id in order if job_id != song] == library


def test_a_turn_the_broker_refused_is_handed_out_again(queued_app: Flask, monkeypatch: Any) -> None:
    """A job ends while the broker is down: its owner's next job cannot be
    published, so it waits again (not marked published with no message), and
    the next hand-out (a worker's turns loop, the maintenance pass) sends it."""
    from app.services import maintenance

    client = queued_app.test_client()
    headers = register_and_login(client)
    first, _second, third = (_submit(client, headers)["id"] for _ in range(3))
    original = jobs.publish_task

    def broker_down(job: Job) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(jobs, "publish_task", broker_down)
    assert client.post(f"/api/v1/jobs/{first}/cancel", headers=headers).status_code == 200
    with queued_app.app_context():
        waiting = db.session.get(Job, third)
        assert waiting is not None and waiting.dispatched_at is None
    monkeypatch.setattr(jobs, "publish_task", original)
    with queued_app.app_context():
        assert maintenance.hand_out_turns() == 1
        db.session.expire_all()
        published = db.session.get(Job, third)
        assert published is not None and published.dispatched_at is not None
        assert published.task_id == third
    assert _messages(queued_app) == 3  # the canceled job's message stays, ignored
