"""Stopping a worker mid-job (R-J5) and jobs that overrun (R-J7)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faults import Faults
from tests.support.procs import wait_for

pytestmark = pytest.mark.faults


def test_sigterm_lets_the_running_job_finish(faults: Faults) -> None:
    """Celery's default warm shutdown: no new job, the running one completes."""
    worker = faults.worker("graceful", delay=0.3)
    faults.wait_ready(worker)
    job_id = faults.submit_ok(seconds=4)
    faults.wait_running(job_id)
    worker.signal(signal.SIGTERM)

    assert worker.process.wait(timeout=60) == 0
    job = faults.job(job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    faults.assert_succeeded_once(job_id)


def test_a_deploy_sigterm_hands_the_job_to_another_worker(faults: Faults) -> None:
    """``REMAP_SIGTERM=SIGQUIT`` (docs/deployment.md): SIGTERM starts a soft
    shutdown; after ``WORKER_SOFT_SHUTDOWN_SECONDS`` the job is stopped and its
    message goes back to Redis, where the next worker takes it at once."""
    leaving = faults.worker(
        "leaving", delay=0.6, REMAP_SIGTERM="SIGQUIT", WORKER_SOFT_SHUTDOWN_SECONDS=1
    )
    faults.wait_ready(leaving)
    job_id = faults.submit_ok(seconds=6)
    faults.wait_running(job_id)
    leaving.signal(signal.SIGTERM)

    leaving.process.wait(timeout=60)
    log = leaving.log_text()
    assert "Initiating Soft Shutdown" in log
    assert "Restoring 1 unacknowledged message(s)" in log
    assert faults.job(job_id).status == "running"  # stopped mid-job, not finished
    staying = faults.worker("staying", delay=0.1)
    job = faults.wait_final([job_id], timeout=60)[job_id]
    assert job.worker == staying.name
    shown = faults.assert_succeeded_once(job_id)
    assert shown["attempts"] == 2


def test_a_job_past_its_soft_time_limit_fails_once_and_cleanly(
    faults_with: Callable[..., Faults],
) -> None:
    faults = faults_with(SEPARATION_TIME_LIMIT=3)  # soft limit 2.7 s
    worker = faults.worker("strict", delay=0.5)
    faults.wait_ready(worker)
    job_id = faults.submit_ok(seconds=6)  # about 6 s of work against a 2.7 s soft limit
    job = faults.wait_final([job_id], timeout=60)[job_id]
    assert (job.status, job.error_code, job.attempts) == ("failed", "time_limit_exceeded", 1)
    assert "3 seconds" in (job.error_message or "")
    faults.wait_work_cleaned(job_id)
    assert not (Path(faults.app.config["DATA_DIR"]) / "jobs" / job_id / "results").exists()
    # The message was acknowledged: no redelivery loop.
    time.sleep(3)
    assert faults.job(job_id).attempts == 1
    wait_for(lambda: "soft time limit" in worker.log_text(), 5, "the log line", faults.logs)
    assert worker.alive()
