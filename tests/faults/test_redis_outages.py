"""Redis killed and restarted under load (R-J1, R-J9, R-J10).

Redis runs with the persistence docs/deployment.md prescribes (AOF,
``appendfsync everysec``, ``noeviction``). Job state lives in SQL, so the
API keeps answering (503 JSON where it needs Redis, never a 500) and every
accepted job ends exactly once when Redis comes back; without persistence,
the reconciler publishes again what Redis forgot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faults import Faults
from tests.support.procs import RedisProcess

pytestmark = pytest.mark.faults


def test_redis_killed_and_restarted_mid_queue_loses_no_job(
    faults: Faults, redis: RedisProcess
) -> None:
    worker = faults.worker("steady", delay=0.3)
    faults.wait_ready(worker)
    accepted = [faults.submit_ok(seconds=4) for _ in range(4)]
    faults.wait_running(accepted[0])
    time.sleep(1.5)  # appendfsync everysec: what the last second wrote may go
    redis.kill()

    # While Redis is down: health answers, readiness says why not, new jobs
    # get a 503 JSON error and no job is left pretending to be queued.
    assert faults.client.get("/healthz").status_code == 200
    ready = faults.client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["broker"]["ok"] is False
    # A new job either gets a 503, or (its owner's turns taken: it waits in
    # the database, nothing is published; the login is cached) a 202, and
    # then it runs once Redis is back.
    during = faults.submit()
    if during.status_code == 202:
        accepted.append(during.json["id"])
    else:
        assert during.status_code == 503, during.json
        assert during.json["code"] in ("broker_unavailable", "service_unavailable")
        assert during.json["status"] == 503 and during.json["message"]
    shown = faults.client.get(f"/api/v1/jobs/{accepted[0]}", headers=faults.headers)
    assert shown.status_code in (200, 503) and shown.is_json  # tokens may need Redis
    time.sleep(3)  # the worker carries on with its job meanwhile
    redis.start()

    rows = faults.wait_final(accepted, timeout=120)
    for job_id in accepted:
        assert rows[job_id].status == "succeeded", (job_id, rows[job_id].error_code)
        faults.assert_succeeded_once(job_id)
    # The submit refused while Redis was down left either no row or a failed one.
    listed = faults.client.get("/api/v1/jobs?per_page=100", headers=faults.headers).json
    others = [j for j in listed["items"] if j["id"] not in accepted]
    assert all(j["status"] == "failed" for j in others), others
    assert faults.client.get("/readyz").status_code == 200
    after = faults.submit_ok(seconds=2)
    faults.wait_final([after], timeout=60)
    faults.assert_succeeded_once(after)


def test_the_worker_keeps_consuming_across_redis_restarts(
    faults: Faults, redis: RedisProcess
) -> None:
    """The known Celery/kombu regression: a worker that silently stops
    consuming after Redis reconnects. Restart Redis again and again."""
    worker = faults.worker("loyal")
    faults.wait_ready(worker)
    for restart in range(4):
        redis.restart()  # kill -9, then start again with the AOF
        job_id = faults.submit_ok(seconds=2)
        job = faults.wait_final([job_id], timeout=45)[job_id]
        assert job.status == "succeeded", (restart, job.error_code)
        assert job.attempts == 1
    assert worker.alive()


def test_queued_jobs_lost_by_a_redis_without_persistence_are_published_again(
    faults_with: Callable[..., Faults], tmp_path: Path
) -> None:
    """The negative control of the persistence test: a Redis without AOF
    forgets its queue on ``kill -9``. Celery alone would leave those jobs
    queued forever; the reconciler sees the queue is short of the jobs the
    database has waiting and publishes them again."""
    volatile = RedisProcess(tmp_path / "volatile", appendonly=False)
    volatile.start()
    try:
        faults = faults_with(redis_url=volatile.url)
        worker = faults.worker("forgetful", delay=0.3, MAINTENANCE_IN_WORKER=1)
        faults.wait_ready(worker)
        first = faults.submit_ok(seconds=4)
        faults.wait_running(first)
        waiting = [faults.submit_ok(seconds=2) for _ in range(2)]
        volatile.restart()  # kill -9: the two waiting messages are gone

        rows = faults.wait_final([first, *waiting], timeout=90)
        assert {job.status for job in rows.values()} == {"succeeded"}
        for job_id in (first, *waiting):
            faults.assert_succeeded_once(job_id)
        assert "published again" in worker.log_text()
    finally:
        volatile.kill()
