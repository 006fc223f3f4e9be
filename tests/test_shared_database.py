"""Several machines' worth of the service on one PostgreSQL database.

Two API processes (``gunicorn wsgi:app``, one process each, as two API
containers) and two Celery workers (two pool processes each) share the
PostgreSQL job database, Redis and DATA_DIR (a shared volume). Clients submit
and cancel through both APIs at once while the workers claim, and every job's
message is published twice (what the reconciler does after a lost message,
or a redelivery), so deliveries of one job race in different workers.

What users must see, however the races fall: every job ends in a final state;
a job ran at most once (one claim, one attempt, one result folder, whatever
the deliveries); a cancel the API confirmed stays canceled and serves no
result; both APIs show the same jobs; the quota counters match what is on
disk, and a burst over a user's job limit is refused past it exactly.

Skipped, with the reason, without PostgreSQL or redis-server.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.extensions import db
from app.records import FINAL_STATUSES, Job, User
from app.services import jobs
from tests.support.apps import POSTGRESQL_ONLY, make_app
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.faults import SETTINGS
from tests.support.procs import ApiProcess, CeleryProcess, job_env, wait_for

pytestmark = POSTGRESQL_ONLY

PASSWORD = "a long enough password"
USERS = 3
JOBS_PER_USER = 8


class Cluster:
    """The two APIs, the two workers, and an app of the test's own reading
    the shared database (its rows are what every process sees)."""

    def __init__(self, app: Flask, tmp_path: Path) -> None:
        self.app = app
        self.claims_log = tmp_path / "claims.log"
        settings = {key: str(value) for key, value in SETTINGS.items()}
        env = job_env(app, **settings, RATELIMIT_ENABLED="0", MAX_ACTIVE_JOBS="100")
        self.apis = [
            ApiProcess(tmp_path / f"api{n}.log", {**env, "GUNICORN_THREADS": "16"}) for n in (1, 2)
        ]
        self.workers = [
            CeleryProcess(
                tmp_path / f"{name}.log",
                {**env, "FAULT_HPSS_DELAY": "0.2", "FAULT_CLAIMS_LOG": str(self.claims_log)},
                name=f"{name}@localhost",
                entry="tests.support.slow_celery",
                queues="separation",  # transcriptions stay queued: the quota burst needs that
                extra_args=["--concurrency", "2"],
            )
            for name in ("left", "right")
        ]

    @property
    def logs(self) -> list[Path]:
        return [p.log_path for p in (*self.apis, *self.workers)]

    def wait_ready(self) -> None:
        for api in self.apis:
            api.wait_ready()
        for worker in self.workers:
            wait_for(
                lambda w=worker: self.heartbeat(w.name), 90, f"{worker.name} to start", self.logs
            )

    def heartbeat(self, hostname: str) -> bool:
        from app.records import WorkerHeartbeat

        with self.app.app_context():
            db.session.expire_all()
            return db.session.get(WorkerHeartbeat, hostname) is not None

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for api in self.apis:
            api.stop()

    def rows(self) -> dict[str, Job]:
        with self.app.app_context():
            db.session.expire_all()
            found = db.session.scalars(db.select(Job)).all()
            for job in found:
                db.session.expunge(job)
            return {job.id: job for job in found}

    def republish(self, job_id: str) -> None:
        """A second message for the job, as the reconciler sends."""
        with self.app.app_context():
            job = db.session.get(Job, job_id)
            assert job is not None
            jobs.publish_task(job)
            db.session.rollback()

    def claims(self) -> tuple[Counter[str], Counter[str]]:
        """Deliveries and claims per job, from every worker process."""
        deliveries: Counter[str] = Counter()
        claims: Counter[str] = Counter()
        text = self.claims_log.read_text() if self.claims_log.exists() else ""
        for line in text.splitlines():
            what, job_id, *_ = line.split()
            (claims if what == "claim" else deliveries)[job_id] += 1
        return deliveries, claims


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str) -> Iterator[Cluster]:
    # make_app migrates the database the ``database`` fixture gives this data directory.
    app = make_app(tmp_path / "data", REDIS_URL=redis_url, **SETTINGS)
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    started = Cluster(app, tmp_path)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def account(cluster: Cluster, n: int) -> dict[str, str]:
    """Registered through one API, logged in through the other."""
    email = f"user{n}-{random.randrange(10**9)}@example.com"
    body = {"email": email, "password": PASSWORD}
    first, second = cluster.apis[n % 2], cluster.apis[(n + 1) % 2]
    created = requests.post(f"{first.url}/api/v1/auth/register", json=body, timeout=60)
    assert created.status_code == 201, created.text
    login = requests.post(f"{second.url}/api/v1/auth/login", json=body, timeout=60)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def submit(api: ApiProcess, headers: dict[str, str], path: str, audio: bytes) -> requests.Response:
    fields = {"model": "hpss"} if path == "separations" else {}
    return requests.post(
        f"{api.url}/api/v1/{path}",
        headers=headers,
        files={"file": ("song.wav", audio)},
        data=fields,
        timeout=120,
    )


def disk_bytes(data_dir: Path, job_id: str) -> int:
    """What a job keeps on disk: its input and its published results."""
    folder = data_dir / "jobs" / job_id
    files = [*folder.glob("input.*"), *(folder / "results").rglob("*")]
    return sum(path.stat().st_size for path in files if path.is_file())


def test_two_apis_and_two_workers_race_on_one_postgresql_database(cluster: Cluster) -> None:
    apis = cluster.apis
    data_dir = Path(cluster.app.config["DATA_DIR"])
    users = [account(cluster, n) for n in range(USERS)]
    song = wav_bytes(sine_and_clicks(seconds=2.0))

    # --- Submits, duplicate deliveries and cancels, all at once ---------------
    accepted: list[tuple[int, str]] = []  # (user, job id)
    cancels: dict[str, requests.Response] = {}
    lock = threading.Lock()
    rng = random.Random(7)
    plan = [(u, j) for u in range(USERS) for j in range(JOBS_PER_USER)]
    rng.shuffle(plan)
    delays = {step: rng.uniform(0.0, 2.0) for step in plan}

    def cancel_later(user: int, job_id: str, api: ApiProcess, delay: float) -> None:
        time.sleep(delay)
        answer = requests.post(
            f"{api.url}/api/v1/jobs/{job_id}/cancel", headers=users[user], timeout=60
        )
        with lock:
            cancels[job_id] = answer

    def one(step: tuple[int, int]) -> None:
        user, n = step
        api, other = apis[n % 2], apis[(n + 1) % 2]
        response = submit(api, users[user], "separations", song)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        with lock:
            accepted.append((user, job_id))
        cluster.republish(job_id)
        if n % 3 == 0:  # a third of the jobs are canceled, queued or mid-run, via the other API
            cancel_later(user, job_id, other, delays[step])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, plan))
    assert len(accepted) == USERS * JOBS_PER_USER

    def all_final() -> dict[str, Job] | None:
        rows = cluster.rows()
        mine = {job_id: rows[job_id] for _user, job_id in accepted}
        return mine if all(j.status in FINAL_STATUSES for j in mine.values()) else None

    rows = wait_for(all_final, 180, "every job to end", cluster.logs, interval=0.5)

    # Every message was taken (none left to start a job later).
    def drained() -> bool:
        with cluster.app.extensions["celery"].connection_for_write() as conn:
            return conn.default_channel.client.llen("separation") == 0

    wait_for(drained, 60, "the separation queue to drain", cluster.logs)

    # A running job canceled is final at once; its attempt stops at its next
    # progress write and then removes its files: give the workers that moment.
    def leftovers() -> list[str]:
        left = []
        for job_id, job in rows.items():
            folder = data_dir / "jobs" / job_id
            if any((folder / "work").glob("*")):
                left.append(f"{job_id}: work/ not empty")
            if job.status == "canceled" and any((folder / "results").glob("*")):
                left.append(f"{job_id}: a canceled job has results/")
        return left

    try:
        wait_for(lambda: not leftovers(), 30, "canceled attempts to clean up", cluster.logs)
    except AssertionError:
        assert leftovers() == []
    deliveries, claims = cluster.claims()

    # --- Each job ran at most once, and ended as its users were told ----------
    statuses = Counter(job.status for job in rows.values())
    assert set(statuses) <= {"succeeded", "canceled"}, {
        job_id: (job.status, job.error_code, job.error_message) for job_id, job in rows.items()
    }
    assert statuses["succeeded"] > 0 and statuses["canceled"] > 0, statuses
    for _user, job_id in accepted:
        job = rows[job_id]
        assert claims[job_id] <= 1, f"job {job_id} was claimed {claims[job_id]} times"
        assert job.attempts == claims[job_id], (job_id, job.attempts, claims[job_id])
        results = data_dir / "jobs" / job_id / "results"
        folders = sorted(p.name for p in results.iterdir()) if results.exists() else []
        if job.status == "succeeded":
            assert (job.attempts, job.metrics["attempt"], folders) == (1, 1, ["1"]), job_id
            assert job.worker in {w.name for w in cluster.workers}
        else:
            assert folders == [] and job.result is None, (job_id, folders)
        cancel = cancels.get(job_id)
        if cancel is not None:
            if cancel.status_code == 200:
                # The answer tells the job's state after the cancel: canceled,
                # or succeeded when the worker's commit won the race.
                assert cancel.json()["status"] == job.status, (job_id, cancel.json(), job.status)
            else:
                assert cancel.status_code == 409, cancel.text
                assert cancel.json()["code"] == "job_finished" and job.status == "succeeded"
        else:
            assert job.status == "succeeded", (job_id, job.status)
    # The duplicate messages reached workers, and found their job taken or ended.
    assert sum(deliveries.values()) > sum(claims.values()), (deliveries, claims)

    # --- Both APIs show the same, and quotas match the disk ----------------------
    for user, headers in enumerate(users):
        mine = sorted(job_id for owner, job_id in accepted if owner == user)
        seen = []
        for api in apis:
            listed = requests.get(
                f"{api.url}/api/v1/jobs?per_page=100", headers=headers, timeout=60
            ).json()
            seen.append(sorted((j["id"], j["status"]) for j in listed["items"]))
            assert listed["total"] == JOBS_PER_USER
        assert seen[0] == seen[1] == sorted((job_id, rows[job_id].status) for job_id in mine)
        for api in apis:
            usage = requests.get(f"{api.url}/api/v1/auth/me", headers=headers, timeout=60)
            assert usage.json()["usage"]["active_jobs"] == 0
            on_disk = sum(disk_bytes(data_dir, job_id) for job_id in mine)
            assert usage.json()["usage"]["stored_bytes"] == on_disk
        for job_id in mine:
            assert rows[job_id].stored_bytes == disk_bytes(data_dir, job_id), job_id

    # --- A burst over the job limit through both APIs is refused past it -------
    headers = account(cluster, USERS)
    with cluster.app.app_context():
        user = db.session.scalars(db.select(User).order_by(User.created_at.desc())).first()
        user.max_active_jobs = 3  # what `flask users set-quota` sets
        db.session.commit()
    # Transcriptions: no worker here takes them, so the three stay active.
    with ThreadPoolExecutor(max_workers=12) as pool:
        burst = list(
            pool.map(lambda n: submit(apis[n % 2], headers, "transcriptions", song), range(12))
        )
    codes = Counter(response.status_code for response in burst)
    assert codes == {202: 3, 429: 9}, [(r.status_code, r.text[:200]) for r in burst]
    assert {r.json()["code"] for r in burst if r.status_code == 429} == {"too_many_active_jobs"}
    held = [r.json()["id"] for r in burst if r.status_code == 202]
    me = requests.get(f"{apis[0].url}/api/v1/auth/me", headers=headers, timeout=60).json()
    assert me["usage"]["active_jobs"] == 3
    for n, job_id in enumerate(held):
        answer = requests.post(
            f"{apis[n % 2].url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=60
        )
        assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
    me = requests.get(f"{apis[1].url}/api/v1/auth/me", headers=headers, timeout=60).json()
    assert me["usage"]["active_jobs"] == 0
    assert submit(apis[1], headers, "transcriptions", song).status_code == 202
