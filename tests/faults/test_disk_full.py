"""A full data volume (R-S1): uploads get ``507 insufficient_storage`` and leave
nothing behind; a job that runs out of space while writing its results fails
with ``storage_error``, its partial files removed; the same worker carries on
once there is space again.

DATA_DIR is a 4 MB tmpfs mounted for the test (so it needs root, or the
test is skipped with the reason); the job database stays outside it, as a
production database does. A filler file sets how much space is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apps import make_app
from tests.support.faults import SETTINGS, Faults
from tests.support.procs import RedisProcess

pytestmark = pytest.mark.faults

SIZE = 4 * 1024 * 1024


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs as DATA_DIR needs root; disk-full test skipped")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); test skipped")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def leave_free(volume: Path, wanted: int) -> None:
    """Grow or shrink the filler file until about ``wanted`` bytes are free."""
    filler = volume / "filler"
    filler.unlink(missing_ok=True)
    size = max(0, free_bytes(volume) - wanted)
    with open(filler, "wb") as out:
        out.truncate(0)
        out.write(b"\0" * size)  # tmpfs allocates written pages only


@pytest.fixture
def full_disk_faults(tmp_path: Path, small_volume: Path, redis: RedisProcess) -> Iterator[Faults]:
    app = make_app(
        small_volume,
        DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        REDIS_URL=redis.url,
        RATELIMIT_ENABLED=False,
        MAX_ACTIVE_JOBS=1000,
        **SETTINGS,
    )
    harness = Faults(app, tmp_path, SETTINGS)
    try:
        yield harness
    finally:
        harness.stop_all()


def test_a_full_data_volume(full_disk_faults: Faults, small_volume: Path) -> None:
    faults = full_disk_faults
    worker = faults.worker("cramped")
    faults.wait_ready(worker)
    tmp = small_volume / "tmp"

    # 1. Full: the upload (350 KB) cannot be stored.
    leave_free(small_volume, 100 * 1024)
    refused = faults.submit(seconds=2)
    assert refused.status_code == 507, refused.json
    assert refused.json["code"] == "insufficient_storage" and refused.json["status"] == 507
    assert not tmp.exists() or list(tmp.iterdir()) == []
    jobs_dir = small_volume / "jobs"
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []
    assert faults.client.get("/api/v1/jobs", headers=faults.headers).json["total"] == 0

    # 2. Room for the upload, not for the results (1.4 MB of float stems first).
    leave_free(small_volume, 1024 * 1024)
    job_id = faults.submit_ok(seconds=2)
    job = faults.wait_final([job_id], timeout=60)[job_id]
    assert (job.status, job.error_code) == ("failed", "storage_error")
    shown = faults.client.get(f"/api/v1/jobs/{job_id}", headers=faults.headers).json
    assert shown["error"]["code"] == "storage_error" and shown["result"] is None
    folder = small_volume / "jobs" / job_id
    assert not (folder / "results").exists()
    assert not (folder / "work").exists() or list((folder / "work").iterdir()) == []
    assert free_bytes(small_volume) > 600 * 1024  # the partial stems are gone

    # 3. Space again: the same worker process takes the next job.
    (small_volume / "filler").unlink()
    retry = faults.submit_ok(seconds=2)
    faults.wait_final([retry], timeout=60)
    faults.assert_succeeded_once(retry)
    assert worker.alive()
