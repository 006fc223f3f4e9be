"""Several machines, simulated on one: the deployment docs/deployment.md lays
out for more than one machine, and a node, PostgreSQL or Redis lost under it.

Each test starts, sharing only PostgreSQL, Redis and ``DATA_DIR``:

- the API as production runs it (``gunicorn wsgi:app``, two processes), which
  is what the user's requests go to;
- two worker "nodes", ``worker@node-a`` and ``worker@node-b``: each a Celery
  worker in a process group of its own (so ``kill_all`` is the machine
  crashing), with its own ``MODELS_DIR`` and metrics directory;
- Celery beat and a maintenance worker (``-Q maintenance``), as
  docs/deployment.md prescribes, which run the reaper and the reconciler.

Jobs are hpss separations slowed down by tests/support/slow_celery.py, so a
test can strike while they run. Every test asserts what a user sees through
the API (status codes and JSON, the job's status and attempts, its result
files), and that every job ran to success exactly once: one committed result,
in the folder of the attempt the job records. The recovery times measured are
printed (``-s``) and recorded in docs/deployment.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from app.records import Job
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.faults import Faults
from tests.support.procs import (
    ApiProcess,
    CeleryProcess,
    PostgresProcess,
    RedisProcess,
    wait_for,
)

pytestmark = pytest.mark.faults

PASSWORD = "a long enough password"
DELAY = 0.5  # seconds of sleep per 1 s window: a 4 s song takes about 3 s


@dataclass
class Cluster:
    faults: Faults
    postgres: PostgresProcess
    redis: RedisProcess
    api: ApiProcess
    nodes: dict[str, CeleryProcess]
    headers: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # -- what a user does, through the real API ------------------------------------

    def login(self) -> None:
        account = {"email": "nodes@example.com", "password": PASSWORD}
        created = requests.post(f"{self.api.url}/api/v1/auth/register", json=account, timeout=30)
        assert created.status_code == 201, created.text
        token = requests.post(f"{self.api.url}/api/v1/auth/login", json=account, timeout=30)
        assert token.status_code == 200, token.text
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        # The harness checks results with the same account (same secrets, same database).
        self.faults.headers = self.headers

    def submit(self, seconds: float = 4.0) -> requests.Response:
        return requests.post(
            f"{self.api.url}/api/v1/separations",
            files={"file": ("song.wav", wav_bytes(sine_and_clicks(seconds)), "audio/wav")},
            data={"model": "hpss", "output_format": "wav"},
            headers=self.headers,
            timeout=30,
        )

    def submit_ok(self, seconds: float = 4.0) -> str:
        response = self.submit(seconds)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def shown(self, job_id: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.api.url}/api/v1/jobs/{job_id}", headers=self.headers, timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def user_requests(self, job_id: str) -> dict[str, requests.Response]:
        """Every kind of request a user makes while something is down."""
        url, headers = self.api.url, self.headers
        account = {"email": "nodes@example.com", "password": PASSWORD}
        return {
            "status": requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=30),
            "list": requests.get(f"{url}/api/v1/jobs", headers=headers, timeout=30),
            "login": requests.post(f"{url}/api/v1/auth/login", json=account, timeout=30),
            "submit": self.submit(1.0),
        }

    # -- what the database says ------------------------------------------------

    def busy_nodes(self, job_ids: list[str]) -> dict[str, Job] | None:
        """Both nodes mid-job: the running job of each, by node, else None."""
        running = {}
        for job_id in job_ids:
            job = self.faults.job(job_id)
            if job.status == "running" and job.progress > 0.1 and job.worker:
                running[job.worker] = job
        return running if set(running) == set(self.nodes) else None

    def wait_busy(self, job_ids: list[str], timeout: float = 60) -> dict[str, Job]:
        found: dict[str, Job] = wait_for(
            lambda: self.busy_nodes(job_ids), timeout, "both nodes mid-job", self.faults.logs
        )
        return found

    def assert_all_succeeded_once(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        shown = {}
        for job_id in job_ids:
            self.faults.assert_succeeded_once(job_id)  # one result, its attempt's
            shown[job_id] = self.shown(job_id)
            assert shown[job_id]["status"] == "succeeded", shown[job_id]
        return shown


@pytest.fixture
def cluster(
    faults_with: Callable[..., Faults],
    postgres_server: PostgresProcess,
    redis: RedisProcess,
    tmp_path: Path,
) -> Iterator[Cluster]:
    # Every job goes to Redis at once (no fair-queue turns held back in the
    # database), so the broker holds a queue when a node or Redis is lost.
    faults = faults_with(
        DATABASE_URL=postgres_server.create_database("nodes"), MAX_RUNNING_JOBS=1000
    )
    nodes = {}
    for letter in "ab":
        local = tmp_path / f"node-{letter}"  # the machine's own disk
        (local / "models").mkdir(parents=True)
        worker = faults.worker(
            f"node-{letter}",
            delay=DELAY,
            hostname=f"worker@node-{letter}",
            MODELS_DIR=local / "models",
            PROMETHEUS_MULTIPROC_DIR=local / "metrics",
            REMAP_SIGTERM="SIGQUIT",
        )
        nodes[worker.name] = worker
    maintenance = faults.worker(
        "maintenance",
        queues="maintenance",
        hostname="maintenance@node-m",
        PROMETHEUS_MULTIPROC_DIR=tmp_path / "node-m" / "metrics",
    )
    faults.beat(PROMETHEUS_MULTIPROC_DIR=tmp_path / "node-m" / "metrics")
    api = faults.track(
        ApiProcess(
            tmp_path / "api.log",
            faults.env(
                RATELIMIT_ENABLED=0,
                MAX_ACTIVE_JOBS=1000,
                PROMETHEUS_MULTIPROC_DIR=tmp_path / "api" / "metrics",
                LOG_LEVEL="WARNING",
            ),
            processes=2,
        )
    )
    for worker in (*nodes.values(), maintenance):
        faults.wait_ready(worker)
    api.wait_ready()
    made = Cluster(faults, postgres_server, redis, api, nodes)
    made.login()
    yield made
    print(f"\nrecovery timings (s): {made.timings}")


def _outage_answers(responses: dict[str, requests.Response]) -> dict[str, tuple[int, str]]:
    """Status and error code of each answer; every one must be JSON."""
    seen = {}
    for name, response in responses.items():
        assert response.headers.get("Content-Type", "").startswith("application/json"), (
            name,
            response.status_code,
            response.text[:300],
        )
        body = response.json()
        seen[name] = (response.status_code, body.get("code", body.get("status", "")))
    return seen


def test_a_node_killed_mid_job_has_its_job_finished_on_the_other(cluster: Cluster) -> None:
    """A whole node lost (``kill -9`` of its process group): the reaper, run
    by the maintenance worker on beat's schedule, sees its attempt's lock
    freed and re-queues the job; node B runs it, and everything else."""
    job_ids = [cluster.submit_ok() for _ in range(4)]
    busy = cluster.wait_busy(job_ids)
    victim, survivor = cluster.nodes["worker@node-a"], cluster.nodes["worker@node-b"]
    lost = busy[victim.name].id
    killed = time.monotonic()
    victim.kill_all()
    # Killed mid-job, not after (a maintenance pass may have re-queued it already).
    at_kill = cluster.faults.job(lost)
    assert (at_kill.status, at_kill.attempts) in {("running", 1), ("queued", 1)}

    cluster.faults.wait_job(
        lost, lambda j: j.status == "queued" or j.attempts == 2, "the lost job re-queued", 60
    )
    cluster.timings["node_lost_to_job_requeued"] = round(time.monotonic() - killed, 1)
    rows = cluster.faults.wait_final(job_ids, timeout=120)
    cluster.timings["node_lost_to_all_jobs_done"] = round(time.monotonic() - killed, 1)

    shown = cluster.assert_all_succeeded_once(job_ids)
    assert shown[lost]["attempts"] == 2  # attempt 1 died with node A
    assert all(shown[j]["attempts"] == 1 for j in job_ids if j != lost), shown
    assert rows[lost].worker == survivor.name
    assert {rows[j].worker for j in job_ids} == {survivor.name}
    maintenance_log = next(
        p for p in cluster.faults.processes if p.log_path.name == "maintenance.log"
    )
    assert f"job {lost}: attempt 1 on {victim.name} is gone; re-queued" in (
        maintenance_log.log_path.read_text(errors="replace")
    )


def test_postgresql_restarted_mid_job_answers_503_and_loses_no_job(cluster: Cluster) -> None:
    """PostgreSQL ``kill -9``-ed while both nodes run a job, down for a few
    seconds: the API answers 503 JSON (never 500) to everything that needs
    it, the jobs carry on and record their results once it is back, each on
    its first attempt; the API recovers without a restart."""
    job_ids = [cluster.submit_ok() for _ in range(3)]
    running = [job.id for job in cluster.wait_busy(job_ids).values()]
    cluster.postgres.kill()
    down = time.monotonic()

    answers = []
    while time.monotonic() - down < 8:
        answers.append(_outage_answers(cluster.user_requests(job_ids[0])))
        ready = requests.get(f"{cluster.api.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        assert requests.get(f"{cluster.api.url}/healthz", timeout=30).status_code == 200
        time.sleep(0.5)
    for seen in answers:
        assert set(seen.values()) == {(503, "service_unavailable")}, seen

    cluster.postgres.start()
    back = time.monotonic()
    wait_for(
        lambda: (
            requests.get(
                f"{cluster.api.url}/api/v1/jobs/{job_ids[0]}", headers=cluster.headers, timeout=30
            ).status_code
            == 200
        ),
        30,
        "the API to answer again",
        cluster.faults.logs,
    )
    cluster.timings["postgres_back_to_api_200"] = round(time.monotonic() - back, 1)
    cluster.faults.wait_final(running, timeout=60)
    cluster.timings["postgres_back_to_running_jobs_recorded"] = round(time.monotonic() - back, 1)
    rows = cluster.faults.wait_final(job_ids, timeout=120)
    cluster.timings["postgres_back_to_all_jobs_done"] = round(time.monotonic() - back, 1)

    shown = cluster.assert_all_succeeded_once(job_ids)
    assert all(shown[j]["attempts"] == 1 for j in job_ids), shown
    assert all(rows[j].error_code is None for j in job_ids)
    # The submits refused during the outage left nothing behind.
    listed = requests.get(
        f"{cluster.api.url}/api/v1/jobs?per_page=100", headers=cluster.headers, timeout=30
    ).json()
    assert sorted(j["id"] for j in listed["items"]) == sorted(job_ids)
    assert requests.get(f"{cluster.api.url}/readyz", timeout=30).status_code == 200
    after = cluster.submit_ok(seconds=2)
    cluster.faults.wait_final([after], timeout=60)
    cluster.assert_all_succeeded_once([after])
    for node in cluster.nodes.values():
        assert node.alive()
        assert "the database is unavailable" in node.log_text()


def test_redis_restarted_with_jobs_queued_runs_every_one(cluster: Cluster) -> None:
    """Redis ``kill -9``-ed with both nodes busy and jobs waiting in its
    queues, started again on its append-only file: the nodes finish what they
    run, reconnect and take every waiting job; none is lost or run twice."""
    job_ids = [cluster.submit_ok(seconds=3) for _ in range(6)]
    cluster.wait_busy(job_ids)
    time.sleep(1.5)  # appendfsync everysec: what the last second wrote may go
    cluster.redis.kill()
    down = time.monotonic()
    while time.monotonic() - down < 3:
        for name, (status, code) in _outage_answers(cluster.user_requests(job_ids[0])).items():
            assert status in (200, 503), (name, status, code)  # tokens may need Redis
        time.sleep(0.5)
    cluster.redis.start()
    back = time.monotonic()

    rows = cluster.faults.wait_final(job_ids, timeout=120)
    cluster.timings["redis_back_to_all_jobs_done"] = round(time.monotonic() - back, 1)
    shown = cluster.assert_all_succeeded_once(job_ids)
    assert all(shown[j]["attempts"] == 1 for j in job_ids), shown
    assert {rows[j].worker for j in job_ids} <= set(cluster.nodes)
    after = cluster.submit_ok(seconds=2)
    cluster.faults.wait_final([after], timeout=60)
    cluster.assert_all_succeeded_once([after])
