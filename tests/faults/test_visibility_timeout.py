"""R-J3 with real processes: what a visibility timeout shorter than a job does.

On Redis, kombu hands a message that is not acknowledged within the
visibility timeout to another worker, even while its task still runs, and
nothing renews that timeout. Startup therefore refuses a visibility timeout
under 1.25 x the longest hard time limit; tests/test_job_guarantees.py checks
the production settings and the refusal. Here the workers get a 3 s timeout
anyway (``FAULT_VISIBILITY_TIMEOUT``, set after that check, in the test entry
point only) and a job of about 8 s: Redis does deliver the job twice, to both
workers, and the job still ends ``succeeded`` once, by its first attempt, with
one result whose files are the ones the job row describes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import soundfile as sf

from tests.support.faults import Faults

pytestmark = pytest.mark.faults


def _received(log: str, job_id: str) -> int:
    return len(re.findall(rf"Task app\.tasks\.separation\.separate\[{job_id}\] received", log))


def test_a_job_redelivered_while_it_runs_still_succeeds_exactly_once(faults: Faults) -> None:
    workers = [
        faults.worker(name, delay=1.0, FAULT_VISIBILITY_TIMEOUT=3) for name in ("first", "second")
    ]
    for worker in workers:
        faults.wait_ready(worker)
    job_id = faults.submit_ok(seconds=6)  # about 7 windows of 1 s, each 1 s late: ~8 s

    job = faults.wait_final([job_id], timeout=60)[job_id]
    runner = next(w for w in workers if w.name == job.worker)
    other = next(w for w in workers if w is not runner)
    runner_log, other_log = runner.log_text(), other.log_text()

    # The duplicate: Redis gave the message to the other worker as well, and
    # that delivery found attempt 1's lock held (its process still running).
    assert _received(other_log, job_id) >= 1, other_log[-3000:]
    assert "attempt 1 is still running; delivery ignored" in other_log, other_log[-3000:]
    assert f"job {job_id}: the process of attempt" not in other_log  # no takeover
    assert _received(runner_log, job_id) == 1  # busy (prefetch 1): never took its copy
    assert "delivery ignored" not in runner_log

    # Succeeded once: attempt 1 committed, nothing of a second attempt exists.
    assert (job.status, job.attempts, job.metrics["attempt"]) == ("succeeded", 1, 1)
    shown = faults.assert_succeeded_once(job_id)  # one results/1 folder, work/ empty
    assert "separation succeeded" not in other_log  # the duplicate ended nothing

    # The files on disk and served are the ones the job row describes.
    folder = Path(faults.app.config["DATA_DIR"]) / "jobs" / job_id / "results" / "1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f["name"] for f in shown["result"]["files"]
    )
    for entry in shown["result"]["files"]:
        on_disk = (folder / entry["name"]).read_bytes()
        served = faults.client.get(entry["url"], headers=faults.headers).data
        assert hashlib.sha256(served).digest() == hashlib.sha256(on_disk).digest()
        assert len(on_disk) == entry["size"]
        info = sf.info(folder / entry["name"])
        assert (info.samplerate, info.channels) == (entry["sample_rate"], entry["channels"])
        assert info.duration == pytest.approx(entry["duration"], abs=0.002)
        assert info.duration == pytest.approx(6.0, abs=0.01)
