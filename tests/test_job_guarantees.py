"""The job engine's guarantees, without worker processes: Celery settings and
the startup check, attempt takeover, time limits, storage errors, the reaper,
the reconciler and the broker-down submit path.

tests/faults/ proves the same with real workers and a real Redis.
"""

from __future__ import annotations

import errno
import io
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import Flask

from app.extensions import db
from app.records import Job, WorkerHeartbeat, utcnow
from app.services import maintenance, runner
from tests.support.apps import BOTH_DATABASES, fresh_job, make_app, register_and_login

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _waiting(app: Flask, queue: str = "separation") -> int:
    with app.extensions["celery"].connection_for_write() as conn:
        return maintenance.waiting_messages(conn.default_channel, queue)


def _purge_broker(app: Flask, queue: str = "separation") -> None:
    """What a Redis restart without persistence does to waiting messages."""
    with app.extensions["celery"].connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def _work_files(app: Flask, job_id: str) -> list[str]:
    work = Path(app.config["DATA_DIR"]) / "jobs" / job_id / "work"
    return sorted(p.name for p in work.iterdir()) if work.exists() else []


# --- Celery settings and the startup check ---------------------------------


def test_time_limits_per_kind_with_a_soft_limit_before_each(tmp_path: Path) -> None:
    app = make_app(
        tmp_path / "d",
        SEPARATION_TIME_LIMIT=600,
        TRANSCRIPTION_TIME_LIMIT=100,
        GENERATION_TIME_LIMIT=50,
    )
    tasks = app.extensions["celery"].tasks
    expected = {
        "app.tasks.separation.separate": (540, 600),
        "app.tasks.transcription.transcribe": (90, 100),
        "app.tasks.generation.generate": (45, 50),
        "app.tasks.pipelines.karaoke": (640, 700),  # both steps
        "app.tasks.analysis.analyze": (90, 100),
        "app.tasks.pipelines.analyze": (90, 100),  # its former name, for queued messages
    }
    for name, (soft, hard) in expected.items():
        assert (tasks[name].soft_time_limit, tasks[name].time_limit) == (soft, hard), name
    conf = app.extensions["celery"].conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_max_tasks_per_child == 100
    assert conf.worker_max_memory_per_child == 12288 * 1024
    assert conf.worker_soft_shutdown_timeout == 30
    assert conf.broker_connection_max_retries is None
    assert conf.task_publish_retry_policy["max_retries"] == 2
    beat = conf.beat_schedule["maintenance"]
    assert beat["task"] in app.extensions["celery"].tasks
    assert beat["options"]["queue"] == "maintenance"


def test_child_recycling_can_be_turned_off(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", WORKER_MAX_TASKS_PER_CHILD=0, WORKER_MAX_MEMORY_PER_CHILD_MB=0)
    conf = app.extensions["celery"].conf
    assert conf.worker_max_tasks_per_child is None
    assert conf.worker_max_memory_per_child is None


def test_redis_visibility_timeout_outlasts_every_hard_limit_in_all_three_places(
    tmp_path: Path,
) -> None:
    app = make_app(
        tmp_path / "d",
        REDIS_URL="redis://127.0.0.1:6399/0",
        SEPARATION_TIME_LIMIT=8000,
        TRANSCRIPTION_TIME_LIMIT=4000,
    )
    conf = app.config["CELERY"]
    longest = 12000  # karaoke: both steps
    values = {
        conf["broker_transport_options"]["visibility_timeout"],
        conf["result_backend_transport_options"]["visibility_timeout"],
        conf["visibility_timeout"],
    }
    assert values == {1.25 * longest}
    # The defaults: 4 h, above 1.25 x the 2 h karaoke limit.
    default = make_app(tmp_path / "e", REDIS_URL="redis://127.0.0.1:6399/0").config["CELERY"]
    assert default["visibility_timeout"] == 4 * 3600


def test_startup_refuses_a_visibility_timeout_shorter_than_the_time_limits(
    tmp_path: Path,
) -> None:
    from app import create_app

    with pytest.raises(RuntimeError, match=r"VISIBILITY_TIMEOUT is 3600 s .* 9000 s"):
        create_app(
            {
                "DATA_DIR": str(tmp_path / "d"),
                "REDIS_URL": "redis://127.0.0.1:6399/0",
                "VISIBILITY_TIMEOUT": 3600,
            }
        )
    # A hand-written Celery config that sets it in only one place is refused too.
    from app import config as config_module

    settings = config_module.from_environment()
    settings.update({"DATA_DIR": str(tmp_path / "e"), "REDIS_URL": "redis://127.0.0.1:6399/0"})
    celery = config_module.celery_settings(settings)
    del celery["result_backend_transport_options"]
    with pytest.raises(RuntimeError, match="one value in each of"):
        create_app({**settings, "CELERY": celery})


def test_a_worker_will_not_start_with_a_short_visibility_timeout(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(tmp_path / "d"),
        "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
        "SEPARATION_TIME_LIMIT": "2000",
        "TRANSCRIPTION_TIME_LIMIT": "2000",
        "VISIBILITY_TIMEOUT": "4000",  # karaoke's 4000 s limit needs 5000
    }
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert b"VISIBILITY_TIMEOUT is 4000 s but must be at least" in done.stdout + done.stderr


def test_startup_refuses_a_visibility_timeout_under_the_longest_retry_countdown(
    tmp_path: Path,
) -> None:
    from app import create_app

    with pytest.raises(RuntimeError, match=r"retried after up to 1800 s"):
        create_app(
            {
                "DATA_DIR": str(tmp_path / "d"),
                "REDIS_URL": "redis://127.0.0.1:6399/0",
                "SEPARATION_TIME_LIMIT": 60,
                "TRANSCRIPTION_TIME_LIMIT": 60,
                "VISIBILITY_TIMEOUT": 600,  # enough for the time limits, not for retries
            }
        )


def test_no_task_is_delayed_past_the_longest_allowed_countdown() -> None:
    """R-J12: on Redis, a countdown or ETA past the visibility timeout runs the
    task twice. Every ``countdown=``/``eta=`` in app/ must be a number, or an
    index into a module-level tuple of numbers, within LONGEST_COUNTDOWN_SECONDS."""
    import ast

    from app.worker_settings import LONGEST_COUNTDOWN_SECONDS

    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        tree = ast.parse(path.read_text())
        tuples = {
            target.id: node.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg not in ("countdown", "eta"):
                    continue
                where = f"{path.relative_to(ROOT)}:{keyword.value.lineno}"
                assert keyword.arg == "countdown", f"{where}: use a countdown, not an ETA"
                value = keyword.value
                if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Attribute):
                    # webhooks.RETRY_DELAYS[tries]: the tuple lives in another module
                    module = value.value.value
                    assert isinstance(module, ast.Name), where
                    source = ROOT / "app" / "services" / f"{module.id}.py"
                    tuples = {
                        target.id: node.value
                        for node in ast.parse(source.read_text()).body
                        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
                        for target in node.targets
                        if isinstance(target, ast.Name)
                    }
                    value = tuples[value.value.attr]
                elif isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):
                    value = tuples[value.value.id]
                numbers = [
                    element.value
                    for element in getattr(value, "elts", [value])
                    if isinstance(element, ast.Constant)
                ]
                assert numbers, f"{where}: a countdown the test cannot read"
                found.append((where, max(numbers)))
                assert max(numbers) <= LONGEST_COUNTDOWN_SECONDS, where
    assert found  # the webhook retries are seen, so the check does check something


# --- Attempts: takeover of a dead attempt, no-op beside a live one ----------


@BOTH_DATABASES
def test_a_delivery_beside_a_live_attempt_does_nothing(queued_app: Flask, queued_job: str) -> None:
    with queued_app.app_context():
        live = runner.start(queued_job)  # holds attempt 1's lock, like a running worker
        assert live is not None and live.number == 1
        calls: list[int] = []
        assert runner.execute(queued_job, lambda job, a, r: calls.append(1) or {}) is None
        assert calls == [] and fresh_job(queued_job).attempts == 1
        assert fresh_job(queued_job).status == "running"
        live.lock.release()  # type: ignore[union-attr]  # a started attempt holds its lock


@BOTH_DATABASES
def test_a_redelivery_after_the_attempt_died_runs_the_job_again(
    queued_app: Flask, queued_job: str
) -> None:
    with queued_app.app_context():
        dead = runner.start(queued_job)
        assert dead is not None
        dead.workdir.mkdir(parents=True)
        (dead.workdir / "partial.wav").write_bytes(b"half a stem")
        # It even published its results, then died before committing them.
        orphan = dead.workdir.parent.parent / "results" / "1"
        orphan.mkdir(parents=True)
        (orphan / "x.wav").write_bytes(b"never served")
        dead.lock.release()  # type: ignore[union-attr]  # what the kernel does when a process dies

        def work(job, attempt, report):
            (attempt.workdir / "x.wav").write_bytes(b"RIFF")
            return {"files": []}

        assert runner.execute(queued_job, work) == "succeeded"
        job = fresh_job(queued_job)
        assert job.status == "succeeded" and job.attempts == 2
        assert job.metrics["attempt"] == 2
        assert _work_files(queued_app, queued_job) == []  # the dead attempt's files too
        results = Path(queued_app.config["DATA_DIR"]) / "jobs" / queued_job / "results"
        assert sorted(p.name for p in results.iterdir()) == ["2"]


@BOTH_DATABASES
def test_an_attempt_dying_too_often_fails_the_job_with_worker_lost(
    queued_app: Flask, queued_job: str
) -> None:
    with queued_app.app_context():
        for number in (1, 2, 3):
            attempt = runner.start(queued_job)
            assert attempt is not None and attempt.number == number
            attempt.lock.release()  # type: ignore[union-attr]  # a started attempt holds its lock
        assert runner.start(queued_job) is None
        job = fresh_job(queued_job)
        assert job.status == "failed" and job.error["code"] == "worker_lost"
        assert job.attempts == 3
        assert runner.start(queued_job) is None  # and stays so
        assert fresh_job(queued_job).attempts == 3


@BOTH_DATABASES
def test_the_soft_time_limit_fails_the_job_cleanly(queued_app: Flask, queued_job: str) -> None:
    seen: list[Path] = []

    def work(job, attempt, report):
        (attempt.workdir / "partial.wav").write_bytes(b"x" * 1000)
        seen.append(attempt.workdir)
        raise SoftTimeLimitExceeded()

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        job = fresh_job(queued_job)
        assert job.status == "failed" and job.error["code"] == "time_limit_exceeded"
        assert "time limit" in job.error["message"]
        assert not seen[0].exists() and _work_files(queued_app, queued_job) == []
        # The message is acknowledged normally: a redelivery does nothing.
        assert runner.execute(queued_job, work) is None
        assert fresh_job(queued_job).attempts == 1


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OSError(errno.EROFS, "Read-only file system"),
        PermissionError(errno.EACCES, "Permission denied"),
    ],
    ids=["ENOSPC", "EDQUOT", "EROFS", "EACCES"],
)
def test_a_full_or_unwritable_disk_fails_the_job_with_storage_error(
    queued_app: Flask, queued_job: str, error: OSError
) -> None:
    def work(job, attempt, report):
        (attempt.workdir / "partial.wav").write_bytes(b"x" * 1000)
        try:
            raise error
        except OSError as exc:
            raise RuntimeError("the encoder failed") from exc

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        job = fresh_job(queued_job)
        assert job.error["code"] == "storage_error"
        assert error.strerror.lower() in job.error["message"]
        assert _work_files(queued_app, queued_job) == []


@BOTH_DATABASES
def test_libsndfile_write_errors_count_as_storage_errors(
    queued_app: Flask, queued_job: str
) -> None:
    import soundfile

    def work(job, attempt, report):
        raise soundfile.LibsndfileError(2, "Error writing: ")  # SFE_SYSTEM: write(2) failed

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        assert fresh_job(queued_job).error["code"] == "storage_error"


@BOTH_DATABASES
def test_other_errors_stay_internal_errors(queued_app: Flask, queued_job: str) -> None:
    def work(job, attempt, report):
        raise OSError(errno.ECONNRESET, "Connection reset by peer")

    with queued_app.app_context():
        assert runner.execute(queued_job, work) == "failed"
        assert fresh_job(queued_job).error["code"] == "internal_error"


def test_an_upload_on_a_full_disk_gets_507_and_leaves_nothing(
    queued_app: Flask, song_wav: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import storage

    client = queued_app.test_client()
    headers = register_and_login(client)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 507
    assert response.json["code"] == "insufficient_storage"
    tmp = Path(queued_app.config["DATA_DIR"]) / "tmp"
    assert list(tmp.iterdir()) == []
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


# --- The reaper ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt_alive", "worker_alive", "over", "expected"),
    [
        (True, True, False, "keep"),
        (True, False, False, "keep"),  # an orphaned child still finishing its job
        (True, None, True, "time_limit"),
        (False, True, False, "requeue"),  # a killed child under a live worker
        (False, None, False, "requeue"),
        (False, True, True, "time_limit"),  # killed by the hard time limit
        (None, True, False, "keep"),  # no lock support: trust the heartbeat
        (None, False, False, "requeue"),
        (None, None, False, "keep"),
        (None, False, True, "time_limit"),
    ],
)
def test_reaper_verdicts(
    attempt_alive: bool | None, worker_alive: bool | None, over: bool, expected: str
) -> None:
    assert maintenance.verdict(attempt_alive, worker_alive, over) == expected


def _claim_and_die(app: Flask, job_id: str, worker: str = "celery@gone") -> None:
    attempt = runner.start(job_id)
    assert attempt is not None
    db.session.execute(db.update(Job).where(Job.id == job_id).values(worker=worker))
    db.session.commit()
    attempt.lock.release()  # type: ignore[union-attr]  # a started attempt holds its lock


@BOTH_DATABASES
def test_the_reaper_requeues_a_job_whose_attempt_died(queued_app: Flask, queued_job: str) -> None:
    with queued_app.app_context():
        before = _waiting(queued_app)
        _claim_and_die(queued_app, queued_job)
        assert maintenance.reap_lost_jobs() == 1
        job = fresh_job(queued_job)
        assert (job.status, job.attempts, job.worker) == ("queued", 1, None)
        assert _waiting(queued_app) == before + 1  # published again
        assert maintenance.reap_lost_jobs() == 0  # idempotent
        # The next delivery runs it as attempt 2; the spare message does nothing.
        assert runner.execute(queued_job, lambda job, a, r: {"files": []}) == "succeeded"
        assert runner.execute(queued_job, lambda job, a, r: {"files": []}) is None
        assert fresh_job(queued_job).attempts == 2


@BOTH_DATABASES
def test_the_reaper_leaves_live_attempts_alone(queued_app: Flask, queued_job: str) -> None:
    with queued_app.app_context():
        attempt = runner.start(queued_job)
        assert attempt is not None
        # Even with its worker's heartbeat gone: the process still holds the lock.
        assert maintenance.reap_lost_jobs() == 0
        assert fresh_job(queued_job).status == "running"
        attempt.lock.release()  # type: ignore[union-attr]  # a started attempt holds its lock


@BOTH_DATABASES
def test_the_reaper_fails_jobs_past_their_attempts_or_time_limit(
    queued_app: Flask, song_wav: bytes
) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    ids = [
        client.post(
            "/api/v1/separations",
            data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
            headers=headers,
            content_type="multipart/form-data",
        ).json["id"]
        for _ in range(2)
    ]
    with queued_app.app_context():
        worn, slow = ids
        db.session.execute(db.update(Job).where(Job.id == worn).values(attempts=2))
        db.session.commit()
        _claim_and_die(queued_app, worn)  # its third attempt died
        _claim_and_die(queued_app, slow)
        limit = float(queued_app.config["SEPARATION_TIME_LIMIT"])
        started = utcnow() - timedelta(seconds=limit + 1)
        db.session.execute(db.update(Job).where(Job.id == slow).values(started_at=started))
        db.session.commit()
        assert maintenance.reap_lost_jobs() == 2
        assert fresh_job(worn).error["code"] == "worker_lost"
        assert fresh_job(slow).error["code"] == "time_limit_exceeded"
        assert _work_files(queued_app, worn) == _work_files(queued_app, slow) == []


@BOTH_DATABASES
def test_workers_heartbeats_count_only_when_recent(queued_app: Flask, queued_job: str) -> None:
    """Where attempt locks cannot be read, a job's worker must have a fresh heartbeat."""
    with queued_app.app_context():
        now = utcnow()
        db.session.add(WorkerHeartbeat(hostname="celery@alive", queues="separation", seen_at=now))
        db.session.add(
            WorkerHeartbeat(
                hostname="celery@gone",
                queues="separation",
                seen_at=now - timedelta(seconds=maintenance.stale_after() + 1),
            )
        )
        db.session.commit()
        attempt = runner.start(queued_job)
        assert attempt is not None
        db.session.execute(db.update(Job).where(Job.id == queued_job).values(worker="celery@gone"))
        db.session.commit()
        # The lock is held (a live process), so a stale heartbeat alone moves nothing...
        assert maintenance.reap_lost_jobs() == 0
        attempt.lock.release()  # type: ignore[union-attr]  # a started attempt holds its lock
        # ...and once the process is gone the job goes back to the queue.
        assert maintenance.reap_lost_jobs() == 1


# --- The reconciler -------------------------------------------------------------


@BOTH_DATABASES
def test_the_reconciler_republishes_queued_jobs_whose_message_was_lost(
    queued_app: Flask, queued_job: str
) -> None:
    with queued_app.app_context():
        assert _waiting(queued_app) == 1
        assert maintenance.republish_lost_messages() == 0  # too young, and its message is there
        _purge_broker(queued_app)
        assert maintenance.republish_lost_messages() == 0  # waits RECONCILE_QUEUED_SECONDS
        later = utcnow() + timedelta(seconds=61)
        assert maintenance.republish_lost_messages(later) == 1
        assert _waiting(queued_app) == 1
        # Nothing is missing any more: no second copy, however often it runs.
        assert maintenance.republish_lost_messages(later + timedelta(seconds=61)) == 0
        assert _waiting(queued_app) == 1
        assert fresh_job(queued_job).status == "queued"


@BOTH_DATABASES
def test_the_reconciler_does_not_duplicate_a_backlog(queued_app: Flask, song_wav: bytes) -> None:
    client = queued_app.test_client()
    for _ in range(3):  # three users: each job is published at once (fair_queue)
        headers = register_and_login(client)
        response = client.post(
            "/api/v1/separations",
            data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 202
    with queued_app.app_context():
        later = utcnow() + timedelta(hours=1)
        assert maintenance.republish_lost_messages(later) == 0  # all three are waiting
        with queued_app.extensions["celery"].connection_for_write() as conn:
            conn.default_channel.basic_get("separation", no_ack=True)  # one message lost
        assert maintenance.republish_lost_messages(later) == 1
        assert _waiting(queued_app) == 3


@BOTH_DATABASES
def test_a_maintenance_pass_reports_each_step(queued_app: Flask, queued_job: str) -> None:
    with queued_app.app_context():
        done = maintenance.run_once()
    assert done == {
        "reaped": 0,
        "republished": 0,
        "dispatched": 0,
        "batches": 0,
        "expired": 0,
        "tokens": 0,
        "uploads": 0,
    }


# --- Broker down at submit --------------------------------------------------------


@BOTH_DATABASES
def test_submitting_with_the_broker_down_answers_503_quickly(
    tmp_path: Path, song_wav: bytes
) -> None:
    """The broker (Redis on a closed port) refuses the message: the client gets a
    503 JSON within seconds (bounded publish retries), the job is recorded as
    failed, and nothing is left queued without a message."""
    from app import config as config_module

    broker = f"redis://127.0.0.1:{closed_port()}/0"
    settings = config_module.from_environment()
    settings.update({"DATA_DIR": str(tmp_path / "d"), "REDIS_URL": broker})
    # Only Celery uses the dead Redis: accounts and tokens stay in SQL here.
    app = make_app(tmp_path / "d", CELERY=config_module.celery_settings(settings))
    assert app.extensions["celery"].conf.broker_url == broker
    client = app.test_client()
    headers = register_and_login(client)
    began = time.monotonic()
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    elapsed = time.monotonic() - began
    assert response.status_code == 503, response.json
    assert response.json["code"] == "broker_unavailable"
    assert response.json["status"] == 503 and response.json["message"]
    # A hang guard, not a benchmark: Celery's default policy would retry for minutes.
    assert elapsed < 20, f"a submit with the broker down took {elapsed:.1f} s"
    listed = client.get("/api/v1/jobs", headers=headers).json["items"]
    assert [(j["status"], j["error"]["code"]) for j in listed] == [("failed", "broker_unavailable")]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["broker"]["ok"] is False
