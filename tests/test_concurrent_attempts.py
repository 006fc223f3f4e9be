"""R-J6: two attempts of one job at the same time, forced at the runner level.

Each delivery runs the real separation (hpss) in its own thread with its own
app context and database session. ``flock`` locks belong to an open file, not
to a process, so two threads contend for an attempt lock exactly as two worker
processes do. Events placed in the engine and the storage functions decide
the interleaving, so each case happens every time.

- A delivery beside a live attempt (its lock held) does nothing, and that
  attempt commits.
- Two deliveries racing for a queued job: one attempt runs, once.
- An attempt that lost its lock while its process still runs (an NFS lease
  that expired, a lock file someone deleted) is taken over by the next
  delivery as attempt 2. Both then run, and both may reach the commit; the
  compare-and-set on (job, attempt, running) lets only attempt 2 commit, the
  loser's folders are removed, and the job's result is attempt 2's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import storage
from app.extensions import db
from app.models import hpss as hpss_engine
from app.records import Job
from app.services import jobs, runner, separation
from tests.support.apps import BOTH_DATABASES, register_and_login

pytestmark = BOTH_DATABASES

WAIT = 30.0  # seconds any step may take on a loaded machine before the test fails


class Job1:
    """A queued hpss job and the client that submitted it."""

    def __init__(self, app: Flask, client: FlaskClient, headers: dict[str, str], job_id: str):
        self.app, self.client, self.headers, self.id = app, client, headers, job_id
        self.folder = Path(app.config["DATA_DIR"]) / "jobs" / job_id

    def row(self) -> Job:
        with self.app.app_context():
            job = db.session.get(Job, self.id)
            assert job is not None
            db.session.expunge(job)
            return job

    def folders(self, kind: str) -> list[str]:
        path = self.folder / kind
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    def assert_one_result(self, attempt: int) -> None:
        """Succeeded by ``attempt``, with exactly its files, served as described."""
        shown = self.client.get(f"/api/v1/jobs/{self.id}", headers=self.headers).json
        assert (shown["status"], shown["attempts"]) == ("succeeded", attempt), shown
        assert shown["metrics"]["attempt"] == attempt
        assert self.folders("results") == [str(attempt)]
        assert self.folders("work") == []  # no work folder or lock file left by anyone
        results = self.folder / "results" / str(attempt)
        files = shown["result"]["files"]
        assert sorted(p.name for p in results.iterdir()) == sorted(f["name"] for f in files)
        assert {f["stem"] for f in files} == {"harmonic", "percussive"}
        for entry in files:
            on_disk = (results / entry["name"]).read_bytes()
            assert len(on_disk) == entry["size"]
            served = self.client.get(entry["url"], headers=self.headers)
            assert served.status_code == 200
            assert hashlib.sha256(served.data).digest() == hashlib.sha256(on_disk).digest()


@pytest.fixture
def job(queued_app: Flask, song_wav: bytes) -> Job1:
    client = queued_app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss", "output_format": "wav"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return Job1(queued_app, client, headers, response.json["id"])


class Delivery(threading.Thread):
    """One delivery of the job's message: ``separation.run_job`` in a thread,
    as a worker's task runs it. ``outcome`` is what the task returns."""

    def __init__(self, app: Flask, job_id: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.app, self.job_id = app, job_id
        self.outcome: str | None = "not run"
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with self.app.app_context():
                self.outcome = separation.run_job(self.job_id)
        except BaseException as exc:  # shown by finish()
            self.error = exc
        finally:
            self.done.set()

    def finish(self) -> str | None:
        self.join(WAIT)
        assert not self.is_alive(), f"{self.name} did not end"
        if self.error is not None:
            raise self.error
        return self.outcome


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"timed out waiting for {what}"


@pytest.fixture
def engine_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many hpss windows each thread separated: who did work."""
    calls: dict[str, int] = {}
    original = hpss_engine.hpss

    def counting(*args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        calls[name] = calls.get(name, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(hpss_engine, "hpss", counting)
    return calls


@pytest.fixture
def endings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every move of the job to a final status (``jobs.job_ended``: events,
    webhook, metrics)."""
    seen: list[str] = []
    original = jobs.job_ended

    def counting(job_id: str) -> None:
        seen.append(threading.current_thread().name)
        original(job_id)

    monkeypatch.setattr(jobs, "job_ended", counting)
    monkeypatch.setattr(runner, "job_ended", counting)
    return seen


def pause_in(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    when: Callable[..., bool],
    *,
    after: bool = False,
) -> tuple[threading.Event, threading.Event]:
    """Make the thread calling ``owner.name`` stop, the first time ``when(*args)``
    holds, before the call (or just after it) until released. Returns
    (reached, release)."""
    reached, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def pausing(*args: Any, **kwargs: Any) -> Any:
        if reached.is_set() or not when(*args, **kwargs):
            return original(*args, **kwargs)
        value = original(*args, **kwargs) if after else None
        reached.set()
        wait(release, f"the test to release {name}")
        return value if after else original(*args, **kwargs)

    monkeypatch.setattr(owner, name, pausing)
    return reached, release


def in_thread(name: str) -> Callable[..., bool]:
    return lambda *args, **kwargs: threading.current_thread().name == name


# --- (a) a live attempt's lock turns other deliveries away -------------------


def test_a_delivery_beside_a_live_attempt_does_nothing_and_the_first_commits(
    job: Job1, engine_calls: dict[str, int], endings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid_work, resume = pause_in(monkeypatch, hpss_engine, "hpss", in_thread("first"))
    first = Delivery(job.app, job.id, "first")
    first.start()
    wait(mid_work, "attempt 1 to be mid-work")

    # Redelivered (visibility timeout, reconciler, broker reconnect) meanwhile.
    second = Delivery(job.app, job.id, "second")
    second.start()
    assert second.finish() is None
    row = job.row()
    assert (row.status, row.attempts) == ("running", 1)
    assert job.folders("work") == ["1", "1.lock"]  # no attempt 2: no folder, no lock
    assert "second" not in engine_calls

    resume.set()
    assert first.finish() == "succeeded"
    job.assert_one_result(attempt=1)
    assert endings == ["first"]
    # A delivery after the commit does nothing either.
    late = Delivery(job.app, job.id, "late")
    late.start()
    assert late.finish() is None
    assert job.row().attempts == 1 and set(engine_calls) == {"first"}


def test_deliveries_racing_for_a_queued_job_run_one_attempt(
    job: Job1, engine_calls: dict[str, int], endings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    racers = [Delivery(job.app, job.id, f"racer-{i}") for i in range(2)]
    # Whoever gets to work holds on until the other delivery has returned, so
    # the two overlap for sure.
    both_claimed = threading.Event()
    original = hpss_engine.hpss

    def hold(*args: Any, **kwargs: Any) -> Any:
        me = threading.current_thread().name
        other = next(r for r in racers if r.name != me)
        if not both_claimed.is_set():
            both_claimed.set()
            wait(other.done, "the other delivery to return")
        return original(*args, **kwargs)

    monkeypatch.setattr(hpss_engine, "hpss", hold)
    barrier = threading.Barrier(2)
    monkeypatch.setattr(runner, "start", _after(barrier.wait, runner.start))
    for racer in racers:
        racer.start()
    outcomes = sorted(racer.finish() or "none" for racer in racers)

    assert outcomes == ["none", "succeeded"]
    winner = next(r for r in racers if r.outcome == "succeeded")
    job.assert_one_result(attempt=1)
    assert endings == [winner.name]


def _after(first: Callable[[], Any], then: Callable[[str], Any]) -> Callable[[str], Any]:
    def call(job_id: str) -> Any:
        first()
        return then(job_id)

    return call


# --- (b) two attempts both running: the compare-and-set picks one -----------


def lose_the_lock(job: Job1, attempts: dict[str, runner.Attempt], name: str) -> None:
    """Drop an attempt's flock while its thread still runs, as an expired NFS
    lease does: the next delivery sees that attempt as dead."""
    attempt = attempts[name]
    assert attempt.lock is not None and attempt.lock.fd is not None
    with job.app.app_context():
        assert storage.attempt_alive(attempt.job_id, attempt.number) is True
        fcntl.flock(attempt.lock.fd, fcntl.LOCK_UN)
        assert storage.attempt_alive(attempt.job_id, attempt.number) is False


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> dict[str, runner.Attempt]:
    """The attempt each thread claimed."""
    claimed: dict[str, runner.Attempt] = {}
    original = runner.start

    def recording(job_id: str) -> runner.Attempt | None:
        attempt = original(job_id)
        if attempt is not None:
            claimed[threading.current_thread().name] = attempt
        return attempt

    monkeypatch.setattr(runner, "start", recording)
    return claimed


def test_a_superseded_attempt_stops_at_its_next_progress_write(
    job: Job1,
    attempts: dict[str, runner.Attempt],
    engine_calls: dict[str, int],
    endings: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mid_work, resume = pause_in(monkeypatch, hpss_engine, "hpss", in_thread("first"))
    first = Delivery(job.app, job.id, "first")
    first.start()
    wait(mid_work, "attempt 1 to be mid-work")
    lose_the_lock(job, attempts, "first")

    second = Delivery(job.app, job.id, "second")
    second.start()
    assert second.finish() == "succeeded"  # took the job over as attempt 2
    resume.set()
    # Attempt 1 learns at its next progress write that it was superseded. It
    # did not end the job, so it reports no ending (the job counts once in
    # the job metrics, from attempt 2).
    assert first.finish() is None

    job.assert_one_result(attempt=2)
    assert endings == ["second"]
    assert engine_calls["second"] >= 1


@pytest.mark.parametrize("loser_commits", ["after the winner", "before the winner"])
def test_two_attempts_reaching_the_commit_make_one_result(
    loser_commits: str,
    job: Job1,
    attempts: dict[str, runner.Attempt],
    engine_calls: dict[str, int],
    endings: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Attempt 1 has done all its work, passed its last progress write and
    # published results/1; it stops just before its compare-and-set.
    published, commit = pause_in(
        monkeypatch, storage, "publish_results", lambda job_id, number: number == 1, after=True
    )
    if loser_commits == "before the winner":
        # Attempt 2 stops right after its claim, before it clears what dead
        # attempts left, so attempt 1's own clean-up is what is tested.
        claimed, carry_on = pause_in(
            monkeypatch, storage, "remove_dead_attempts", lambda job_id, keep=None: keep == 2
        )
    first = Delivery(job.app, job.id, "first")
    first.start()
    wait(published, "attempt 1 to reach its commit")
    lose_the_lock(job, attempts, "first")
    second = Delivery(job.app, job.id, "second")
    second.start()

    if loser_commits == "after the winner":
        assert second.finish() == "succeeded"
        assert job.folders("results") == ["2"]  # attempt 2 cleared results/1
        commit.set()
        assert first.finish() is None  # its compare-and-set matched nothing
    else:
        wait(claimed, "attempt 2's claim")
        assert (job.row().status, job.row().attempts) == ("running", 2)
        assert job.folders("results") == ["1"]
        commit.set()
        assert first.finish() is None
        assert job.folders("results") == []  # the loser removed its own result folder
        assert job.row().result is None
        carry_on.set()
        assert second.finish() == "succeeded"

    assert set(engine_calls) == {"first", "second"}  # both attempts really ran
    job.assert_one_result(attempt=2)
    assert endings == ["second"]
