"""The service as ``make run`` starts it (``python -m app.embedded``), for tests
that must go through the real server: gunicorn with its threads and keep-alive,
the Celery worker(s), the SQLite job database and broker on a fresh DATA_DIR.

Tests talk HTTP to it like curl would. Settings go in as environment
variables, exactly as a user would set them before ``make run``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from tests.support.procs import ROOT, child_pids, free_port, wait_for

PASSWORD = "a long enough password"


class LiveService:
    """``make run`` in a process group of its own, on a free loopback port."""

    def __init__(self, directory: Path, **env: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = directory / "data"
        self.log_path = directory / "run.log"
        self.secret_key = secrets.token_urlsafe(48)
        base = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "REDIS_URL",
                "DATABASE_URL",
                "WEB_CONCURRENCY",
                "CORS_ORIGINS",
                "PROMETHEUS_MULTIPROC_DIR",
            )
        }
        self.env = {
            **base,
            "DATA_DIR": str(self.data_dir),
            "SECRET_KEY": self.secret_key,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "HF_HUB_OFFLINE": "1",
            "LOG_LEVEL": "WARNING",
            # Tests register and log in many users from one address.
            "LOGIN_RATE_LIMIT": "1000/minute",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> LiveService:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.embedded"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, "make run to start", [self.log_path])
        # The banner waits for the API only; jobs need the worker's pool too.
        wait_for(self._pool_children, timeout, "the worker's pool", [self.log_path])
        return self

    def _pool_children(self) -> list[int]:
        """The job worker's pool processes, once every job worker has them."""
        mains = [pid for pid, command in self._celery_mains() if b"threads" not in command]
        children = [child_pids(pid) for pid in mains]
        if not mains or not all(children):
            return []
        return [pid for group in children for pid in group]

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"make run exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
        return "Press Ctrl-C to stop." in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; SIGKILL for the group after 60 s."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None

    # ------------------------------------------------------------- helpers

    def _celery_mains(self) -> list[tuple[int, list[bytes]]]:
        """The Celery main processes, each with its command line."""
        assert self.process is not None
        found = []
        for pid in child_pids(self.process.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"celery" in command:
                found.append((pid, command))
        return found

    @contextlib.contextmanager
    def paused_workers(self) -> Iterator[None]:
        """Stop the processes that run jobs (SIGSTOP) meanwhile: jobs stay
        queued, as they do while every worker is busy with long jobs.

        Only the prefork pool's children are stopped: a worker's main process
        writes heartbeats and polls the SQLite broker, and stopped while it
        holds a write lock it would block the API too. A child still finishing
        a job (its ending's hooks write too) is let go on and stopped again
        once it holds no lock.
        """
        pids = self._pool_children()
        assert pids, "make run started no worker with a process pool"

        def stopped_idle() -> bool:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            if self._databases_writable():
                return True
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            return False

        wait_for(stopped_idle, 30, "the worker's pool to hold no database lock", [self.log_path])
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _databases_writable(self) -> bool:
        """Whether nobody holds a write lock on the job database or broker."""
        for name in ("jobs.sqlite", "broker.sqlite"):
            path = self.data_dir / name
            if not path.exists():
                continue
            connection = sqlite3.connect(path, timeout=0.5, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
            except sqlite3.OperationalError:
                return False
            finally:
                connection.close()
        return True

    def register(self, email: str | None = None) -> dict[str, str]:
        """A new account, logged in: its ``Authorization`` header."""
        email = email or f"user-{secrets.token_hex(4)}@example.com"
        account = {"email": email, "password": PASSWORD}
        created = requests.post(f"{self.url}/api/v1/auth/register", json=account, timeout=30)
        assert created.status_code == 201, created.text
        login = requests.post(f"{self.url}/api/v1/auth/login", json=account, timeout=30)
        assert login.status_code == 200, login.text
        return {"Authorization": f"Bearer {login.json()['access_token']}"}

    def wait_for_job(self, headers: dict[str, str], job_id: str, timeout: float = 90) -> Any:
        def ended() -> Any:
            job = requests.get(f"{self.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30)
            body = job.json()
            return body if body["status"] in ("succeeded", "failed", "canceled") else None

        return wait_for(ended, timeout, f"job {job_id} to end", [self.log_path], interval=0.2)


@contextlib.contextmanager
def live_service(directory: Path, **env: str) -> Iterator[LiveService]:
    service = LiveService(directory, **env)
    try:
        yield service.start()
    finally:
        service.stop()
