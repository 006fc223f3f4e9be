"""Real processes for tests: ``redis-server``, ``postgres``, ``gunicorn`` and
``celery worker``/``beat``.

No Docker on our machines (so no pytest-celery): tests start the binaries the
way a deployment does, each on a free loopback port, in its own process group
so a test can kill a worker child, the whole worker, or Redis with ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    logs: list[Path] | None = None,
    interval: float = 0.2,
) -> T:
    """Poll until ``predicate`` returns something truthy; on timeout fail with
    the end of every log given, which is what one needs to see why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tails = []
    for path in logs or []:
        if path.exists():
            tails.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n" + "\n".join(tails))


class RedisProcess:
    """``redis-server`` with the persistence docs/deployment.md prescribes
    (AOF, ``appendfsync everysec``, ``noeviction``), restartable on the same
    port and directory so a test sees what survives ``kill -9``."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
             "--maxmemory-policy", "noeviction", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.ping, 10, "redis-server to answer", interval=0.05)

    def ping(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9``: no shutdown save, whatever the AOF has is what survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def child_pids(pid: int) -> list[int]:
    """Direct children of a process, from /proc (no psutil needed)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


class CeleryProcess:
    """``celery -A celery_worker worker`` (or ``beat``) as a deployment runs it.

    ``env`` goes on top of the test's environment; ``entry`` replaces
    ``celery`` with a module that starts it (tests/support/slow_celery.py
    slows the hpss engine down so a test can act while a job runs).
    """

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        *,
        command: str = "worker",
        name: str | None = None,
        queues: str = "separation,transcription,generation",
        entry: str = "celery",
        extra_args: list[str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.name = name or f"worker-{free_port()}@localhost"
        cmd = [sys.executable, "-m", entry, "-A", "celery_worker", command, "--loglevel", "INFO"]
        if command == "worker":
            cmd += ["-Q", queues, "--concurrency", "1", "--hostname", self.name,
                    "--without-mingle", "--without-gossip"]  # fmt: skip
        cmd += extra_args or []
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
        if not env.get("REDIS_URL"):
            full_env.pop("REDIS_URL", None)
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_all() takes the children too
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def kill_child(self) -> int:
        """SIGKILL the pool process running the job (what the OOM killer does)."""
        children = wait_for(self.children, 30, "a worker child process", [self.log_path])
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def kill_all(self) -> None:
        """SIGKILL the worker and its children at once: a crashed machine or container."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM); SIGKILL for the group if it does not exit in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Children outlive a killed parent for a moment: take the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.log.close()


class ApiProcess:
    """``gunicorn wsgi:app`` with gunicorn.conf.py, as the image runs the API,
    on a free loopback port in its own process group. ``env`` (on top of the
    test's environment, without its REDIS_URL, DATABASE_URL and gunicorn
    settings) gives it its data, secret, database and broker: ``job_env(app)``."""

    def __init__(self, log_path: Path, env: dict[str, str], *, processes: int = 1) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {
            key: value
            for key, value in os.environ.items()
            if key
            not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY")
        }
        full_env = {
            **base,
            "HF_HUB_OFFLINE": "1",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(processes),
            **env,
        }
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a gunicorn worker has loaded the app and answers ``/healthz``."""
        import requests

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gunicorn exited with {self.process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                return requests.get(f"{self.url}/healthz", timeout=5).ok
            except requests.RequestException:
                return False

        wait_for(up, timeout, f"gunicorn on {self.url} to serve /healthz", [self.log_path])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the master (graceful), then SIGKILL for the group."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.log.close()


def job_env(app: Any, **extra: str) -> dict[str, str]:
    """The environment a worker needs to share an app's data, secrets and broker."""
    config = app.config
    env = {
        "DATA_DIR": config["DATA_DIR"],
        "SECRET_KEY": config["SECRET_KEY"],
        "DATABASE_URL": config["DATABASE_URL"],
        "WORKER_HEARTBEAT_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    if config.get("REDIS_URL"):
        env["REDIS_URL"] = config["REDIS_URL"]
    env.update(extra)
    return env


def postgres_bindir() -> Path | None:
    """Where the PostgreSQL server programs are: on PATH, else Debian's
    ``/usr/lib/postgresql/<major>/bin`` (the package keeps ``initdb`` and
    ``postgres`` off PATH), newest major first."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    return candidates[0].parent if candidates else None


class PostgresProcess:
    """A throwaway PostgreSQL cluster: ``initdb`` into a temporary directory,
    then ``postgres`` on a free loopback port in its own process group, so a
    test can ``kill -9`` it and start it again on the same data.

    PostgreSQL refuses to run as root; under root (CI's containers) the
    cluster belongs to the ``postgres`` account Debian's package creates.
    ``fsync`` is off (an OS crash is not what these tests simulate), while
    commits stay synchronous, so a killed server keeps every committed row.
    """

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError("initdb")
        self.bindir = bindir
        self.user: str | None = None
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise FileNotFoundError("the postgres account (running as root)") from exc
            self.user = "postgres"
        import tempfile

        # Not under pytest's root-only temp directory: the postgres account must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="ams-postgres-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        if self.user is not None:
            shutil.chown(self.directory, self.user, self.user)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip

    def _run(self, cmd: list[str]) -> None:
        result = subprocess.run(
            cmd,
            capture_output=True,
            user=self.user,
            group=self.user,
            cwd=self.directory,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
             "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=400",
             "-c", "shared_buffers=32MB"],
            user=self.user,
            group=self.user,
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self.ping, 30, "postgres to accept connections", [self.log_path], interval=0.05)

    def ping(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            return False
        import psycopg

        try:
            with psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(self.url(database).replace("+psycopg", ""), autocommit=True) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which nobody may
        be connected to meanwhile); its SQLAlchemy URL."""
        copy = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def _halt(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Backends outlive a killed postmaster for a moment: take the group.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """``kill -9`` of the postmaster and its backends: a crash; recovery replays the WAL."""
        self._halt(signal.SIGKILL)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, sessions are cut."""
        self._halt(signal.SIGINT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
