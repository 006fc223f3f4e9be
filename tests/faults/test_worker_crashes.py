"""Workers killed mid-job (R-J2, R-J4): the job runs again and succeeds, or,
killed too often, fails with ``worker_lost``; never stays ``running``."""

from __future__ import annotations

import pytest

from tests.support.apps import BOTH_DATABASES
from tests.support.faults import Faults
from tests.support.procs import wait_for

pytestmark = pytest.mark.faults


def test_a_killed_worker_child_is_replaced_and_the_job_redelivered(faults: Faults) -> None:
    worker = faults.worker("crash", delay=0.4)
    faults.wait_ready(worker)
    job_id = faults.submit_ok()
    faults.wait_running(job_id, attempt=1)
    killed = worker.kill_child()  # what the OOM killer does

    # Celery requeues the message (task_reject_on_worker_lost); the new child
    # finds attempt 1's process gone and runs attempt 2.
    jobs = faults.wait_final([job_id], timeout=90)
    assert worker.alive() and killed not in worker.children()
    job = faults.assert_succeeded_once(job_id)
    assert job["attempts"] == 2 and job["metrics"]["attempt"] == 2
    assert jobs[job_id].worker == worker.name


def test_a_job_whose_worker_dies_every_time_fails_with_worker_lost(faults: Faults) -> None:
    worker = faults.worker("doomed", delay=0.4)
    faults.wait_ready(worker)
    job_id = faults.submit_ok()
    for attempt in (1, 2, 3):
        faults.wait_running(job_id, attempt=attempt)
        worker.kill_child()

    job = faults.wait_final([job_id], timeout=60)[job_id]
    assert (job.status, job.error_code, job.attempts) == ("failed", "worker_lost", 3)
    shown = faults.client.get(f"/api/v1/jobs/{job_id}", headers=faults.headers).json
    assert shown["error"]["code"] == "worker_lost" and shown["status"] == "failed"
    # The worker is fine and keeps serving.
    next_job = faults.submit_ok(seconds=2)
    faults.wait_final([next_job], timeout=60)
    faults.assert_succeeded_once(next_job)
    assert faults.job(job_id).attempts == 3  # and the lost job was not run again


@BOTH_DATABASES
def test_a_crashed_worker_machine_is_reaped_and_the_job_rerun(faults: Faults) -> None:
    """The whole worker (main process and child) dies at once. Redis would
    hand its message out again only after the visibility timeout (2000 s
    here, hours in production); the reaper, sent by Celery beat, re-queues it now."""
    workers = [
        faults.worker(name, delay=0.5, queues="separation,maintenance")
        for name in ("left", "right")
    ]
    faults.beat()
    for worker in workers:
        faults.wait_ready(worker)
    job_id = faults.submit_ok()
    running = faults.wait_running(job_id, attempt=1)
    victim = next(w for w in workers if w.name == running.worker)
    survivor = next(w for w in workers if w is not victim)
    victim.kill_all()
    assert faults.job(job_id).status == "running"  # killed mid-job, not after

    job = faults.wait_final([job_id], timeout=90)[job_id]
    assert job.worker == survivor.name
    shown = faults.assert_succeeded_once(job_id)
    assert shown["attempts"] == 2
    wait_for(lambda: "re-queued" in survivor.log_text(), 10, "the reaper's log line", faults.logs)
