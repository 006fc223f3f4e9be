"""The embedded default (``make run``: SQLite for jobs and queue, no Redis).

The SQLite transport never hands out again a message a dead worker had taken,
so recovery is the reaper's alone; here the worker runs it in a thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.apps import make_app
from tests.support.faults import SETTINGS, Faults

pytestmark = pytest.mark.faults


def test_a_restarted_embedded_worker_reruns_the_job_its_crash_interrupted(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path / "data", RATELIMIT_ENABLED=False, MAX_ACTIVE_JOBS=1000, **SETTINGS)
    assert app.config["CELERY"]["broker_url"].startswith("sqla+sqlite")
    faults = Faults(app, tmp_path, SETTINGS)
    try:
        crashed = faults.worker("embedded", delay=0.4)
        faults.wait_ready(crashed)
        job_id = faults.submit_ok()
        faults.wait_running(job_id)
        crashed.kill_all()  # power cut: make run and its worker are gone

        # make run again: the same worker name, and the maintenance thread.
        restarted = faults.worker("embedded", delay=0.1)
        job = faults.wait_final([job_id], timeout=90)[job_id]
        assert job.worker == restarted.name
        shown = faults.assert_succeeded_once(job_id)
        assert shown["attempts"] == 2
        assert "re-queued" in restarted.log_text()
    finally:
        faults.stop_all()
