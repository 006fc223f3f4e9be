"""What every benchmark here shares: its processes, this service on a temporary
``DATA_DIR``, and a user of its HTTP API.

Every process a benchmark starts is the leader of a new session, so stopping
its whole group also stops what it forked (gunicorn and Celery workers, the
demucs CLI's helpers); ``run_benchmark`` stops them all on exit, Ctrl-C,
SIGTERM, SIGHUP or error and deletes the temporary folder unless asked to keep
it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FINAL = ("succeeded", "failed", "canceled")


# --------------------------------------------------------------------------- utilities


def say(text: str = "") -> None:
    print(text, flush=True)


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(x) for x in handle.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def check_load(label: str) -> str:
    """The load average and current CPU use, with a warning when other work competes."""
    load = loadavg()
    busy = cpu_busy()
    note = "  (other processes are using the CPU: timings are noisy)" if busy > 0.25 else ""
    say(f"  before {label}: load average {load}, CPUs {busy:.0%} busy{note}")
    return load


def verdict(value: float, goal: float) -> str:
    return "PASS" if value < goal else "MISS"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


# The columns of a job's own metrics in the reports (``metrics_cells``).
METRICS_HEADER = f"{'queue_s':>9}{'run_s':>8}{'job RTF':>9}{'audio_s':>9}"


def metrics_cells(metrics: dict[str, Any]) -> str:
    """A job's queue_seconds, run_seconds, real_time_factor and audio_seconds under
    ``METRICS_HEADER`` (nan where the job did not report one)."""
    nan = float("nan")
    return (
        f"{metrics.get('queue_seconds', nan):9.2f}{metrics.get('run_seconds', nan):8.2f}"
        f"{metrics.get('real_time_factor') or nan:9.3f}{metrics.get('audio_seconds', nan):9.2f}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- processes


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process's pid and the fields of its /proc/<pid>/stat after the
    command name: state, ppid, pgrp, session, ..., utime (index 11), stime (12),
    cutime (13), cstime (14)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                yield int(entry), handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def _group_alive(pgid: int) -> bool:
    """Whether any process is still in process group (and session) ``pgid``."""
    return any(int(f[2]) == pgid and int(f[3]) == pgid for _pid, f in proc_stats())


def group_cpu_seconds(pgids: list[int]) -> float:
    """CPU time (user + system, with reaped children) of every live process in these groups.

    Wall time on a shared machine depends on what else runs; CPU time much less.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for _pid, f in proc_stats():
        if int(f[2]) in pgids:
            total += sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Processes:
    """Every process the benchmark starts, each the leader of a new session, so
    stopping its whole group also stops what it forked (gunicorn and Celery
    workers, the demucs CLI's helpers)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, process, handle))
        return process

    def run(self, name: str, cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
        """Start, wait (stopped on timeout or Ctrl-C like everything else)."""
        process = self.start(name, cmd, env, log)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name} did not finish in {timeout:g} s; log: {log}") from None
        finally:
            self.stop(process)

    def stop(self, process: subprocess.Popen, grace: float = 30.0) -> None:
        pgid = process.pid
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # The leader may be gone while its children are not (a killed gunicorn
        # master leaves its workers behind): kill what is left of the group.
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for _name, process, handle in reversed(self.started):
            self.stop(process)
            handle.close()
        self.started.clear()


def wait_until(predicate: Any, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.25)
    detail = "\n".join(f"--- {log.name} ---\n{tail(log)}" for log in logs)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the cleanup always runs."""

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_benchmark(
    prefix: str, workdir: Path | None, keep: bool, body: Callable[[Processes, Path], None]
) -> int:
    """``body(procs, work)`` in a new temporary folder ``work``; the exit status
    (0, 1 after a printed failure, 130 when interrupted). Every process in
    ``procs`` is stopped and ``work`` deleted (unless ``keep``) whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    procs = Processes()
    status = 1
    with stop_on_signals():
        try:
            body(procs, work)
            status = 0
        except KeyboardInterrupt as exc:
            say(f"\ninterrupted ({exc.args[0] if exc.args else 'Ctrl-C'}): stopping")
            status = 130
        except (RuntimeError, subprocess.SubprocessError) as exc:
            say(f"\nFAILED: {exc}")
        finally:
            procs.stop_all()
            if keep:
                say(f"\nkept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return status


def run_direct_script(
    procs: Processes,
    work: Path,
    script: str,
    spec: dict[str, Any],
    env: dict[str, str],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """The library used directly, the side a benchmark compares the service with:
    ``script`` (Python source) runs in a fresh process as ``script spec.json
    out.json`` and writes its measurements to ``out.json``. Those, plus the
    process's wall seconds (``process_seconds``) and CPU seconds (``cpu_seconds``)."""
    path, spec_path = work / "direct.py", work / "direct-spec.json"
    path.write_text(script)
    spec_path.write_text(json.dumps(spec))
    out, log = work / "direct-out.json", work / "direct.log"
    check_load("direct")
    cpu = children_cpu_seconds()
    started = time.monotonic()
    code = procs.run("direct", [PYTHON, str(path), str(spec_path), str(out)], env, log, timeout)
    wall = time.monotonic() - started
    cpu = children_cpu_seconds() - cpu
    if code != 0 or not out.is_file():
        raise RuntimeError(f"the direct {what} process failed ({code}):\n{tail(log)}")
    return {**json.loads(out.read_text()), "process_seconds": wall, "cpu_seconds": cpu}


# --------------------------------------------------------------------------- the service


def service_env(data: Path, models: Path) -> dict[str, str]:
    """The environment of the API and worker: this one without a broker or database
    URL (so SQLite in ``data``), no model downloads, a fresh 48-character secret."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        {
            "DATA_DIR": str(data),
            "MODELS_DIR": str(models),
            "ALLOW_MODEL_DOWNLOAD": "0",
            "HF_HUB_OFFLINE": "1",
            "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def db_upgrade(procs: Processes, work: Path, env: dict[str, str]) -> None:
    """``flask --app wsgi db upgrade``, as ``make run`` does before starting."""
    log = work / "db-upgrade.log"
    code = procs.run(
        "db upgrade", [PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"], env, log, 120
    )
    if code != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{tail(log)}")


def start_worker(
    procs: Processes,
    env: dict[str, str],
    log: Path,
    name: str,
    *,
    queues: str = "separation,transcription,generation",
    extra: tuple[str, ...] = ("--loglevel", "INFO"),
) -> subprocess.Popen:
    """One Celery worker with one process, named ``name-<our pid>@localhost``."""
    cmd = [
        PYTHON, "-m", "celery", "-A", "celery_worker", "worker", "-Q", queues,
        "--concurrency", "1", "--hostname", f"{name}-{os.getpid()}@localhost", *extra,
    ]  # fmt: skip
    return procs.start("celery worker", cmd, env, log)


def start_redis(procs: Processes, work: Path) -> str | None:
    """redis-server as docs/deployment.md runs it (AOF, fsync every second,
    noeviction) on a free loopback port, stopped with everything else; None
    when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    folder = work / "redis"
    folder.mkdir()
    procs.start(
        "redis-server",
        [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction", "--save", "",
        ],
        dict(os.environ),
        work / "redis.log",
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_until(lambda: redis.Redis.from_url(url).ping(), 30, "redis", [work / "redis.log"])
    return url


@dataclass
class Service:
    """The API and the worker of ``start_service``, and a logged-in user of them."""

    base: str
    client: Client
    api: subprocess.Popen
    worker: subprocess.Popen
    api_log: Path
    worker_log: Path


def start_service(
    procs: Processes, work: Path, env: dict[str, str], name: str, label: str = ""
) -> Service:
    """The service as ``make run`` starts it: migrations, one Celery worker and
    gunicorn (gthread, 2 x 8) on a free loopback port; waits for /healthz and for
    /readyz (the worker's heartbeat), then registers and logs in a new account."""
    db_upgrade(procs, work, env)
    port = free_port()
    worker_log, api_log = work / "worker.log", work / "api.log"
    worker = start_worker(procs, env, worker_log, name)
    api = procs.start(
        "gunicorn",
        [
            PYTHON, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "gthread", "--workers", "2", "--threads", "8",
            "--timeout", "300", "--graceful-timeout", "30", "--access-logfile", "-",
            "--control-socket", str(Path(env["DATA_DIR"]).resolve() / "gunicorn.ctl"),
        ],
        env,
        api_log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    say(f"  {label}API on {base} (log {api_log}), one worker (log {worker_log})")
    client = Client(base)
    logs = [api_log, worker_log]
    wait_until(lambda: client.http.get(base + "/healthz", timeout=2).ok, 90, "/healthz", logs)
    wait_until(lambda: client.http.get(base + "/readyz", timeout=5).ok, 120, "/readyz", logs)
    client.register_and_login()
    return Service(base, client, api, worker, api_log, worker_log)


# --------------------------------------------------------------------------- a user


class Client:
    """A user of the HTTP API, with requests."""

    def __init__(self, base: str) -> None:
        import requests

        self.base = base
        self.http = requests.Session()
        self.email = f"bench-{secrets.token_hex(4)}@example.com"
        self.password = "a long enough benchmark password"

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def _account(self, action: str, status: int) -> Any:
        """POST the email and password to /api/v1/auth/<action>; the answer, or a
        RuntimeError when its status is not ``status``."""
        response = self.http.post(
            self.url(f"/api/v1/auth/{action}"),
            json={"email": self.email, "password": self.password},
            timeout=30,
        )
        if response.status_code != status:
            raise RuntimeError(f"{action}: {response.status_code} {response.text}")
        return response

    def register_and_login(self) -> None:
        self._account("register", 201)
        self.login()

    def login(self) -> None:
        response = self._account("login", 200)
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; logs in again once if the access token expired meanwhile."""
        response = self.http.request(method, self.url(path), timeout=600, **kwargs)
        if response.status_code == 401:
            self.login()
            for value in kwargs.values():  # rewind an upload before sending it again
                for item in value.values() if isinstance(value, dict) else ():
                    if isinstance(item, tuple) and hasattr(item[1], "seek"):
                        item[1].seek(0)
            response = self.http.request(method, self.url(path), timeout=600, **kwargs)
        return response

    def run_job(
        self,
        label: str,
        submit: Callable[[], Any],
        poll: float,
        *,
        fetch: Callable[[dict[str, Any]], Any] | None = None,
        notes: bool = False,
        timeout: float | None = None,
        logs: tuple[Path, ...] = (),
        wait: float = 0.0,
    ) -> dict[str, Any]:
        """What a user waits for: ``submit()`` (the request that answers 202 with the
        job's Location), GET the job every ``poll`` seconds until it ends (with
        ``wait``, ``GET ?wait=`` long-polls instead: the server answers when the
        job ends, so ``polls`` counts requests, not sleeps), then
        ``fetch(job)`` (the downloads). The succeeded job, the number of polls, what
        ``fetch`` returned, and the seconds of each step and in all. With ``notes``,
        a progress line every 15 s; past ``timeout`` seconds, a RuntimeError with the
        end of each of ``logs``."""
        started = last_note = time.monotonic()
        response = submit()
        if response.status_code != 202:
            raise RuntimeError(f"submitting {label}: {response.status_code} {response.text}")
        accepted = time.monotonic()
        location = response.headers["Location"]
        polls = 0
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        while True:
            job = self.request("GET", location, params=params).json()
            polls += 1
            if job.get("status") in FINAL:
                break
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                detail = "".join(f"\n--- {log.name} ---\n{tail(log)}" for log in logs)
                raise RuntimeError(
                    f"the {label} job did not finish in {timeout:g} s: {job}{detail}"
                )
            if notes and now - last_note >= 15:
                last_note = now
                say(
                    f"    {label}: {now - started:6.1f} s  {job.get('status')}"
                    f" / {job.get('stage')}  progress {job.get('progress')}"
                )
            if not params:
                time.sleep(poll)
        finished = time.monotonic()
        if job["status"] != "succeeded":
            raise RuntimeError(f"the {label} job ended {job['status']}: {job.get('error')}")
        fetched = fetch(job) if fetch is not None else None
        done = time.monotonic()
        return {
            "job": job,
            "polls": polls,
            "fetched": fetched,
            "seconds": done - started,
            "submit_seconds": accepted - started,
            "wait_seconds": finished - accepted,
            "fetch_seconds": done - finished,
        }

    def download_files(self, job: dict[str, Any], out: Path) -> int:
        """Every file of a succeeded job into ``out``; the bytes downloaded."""
        size = 0
        for entry in job["result"]["files"]:
            with self.request("GET", entry["url"], stream=True) as body:
                if body.status_code != 200:
                    raise RuntimeError(f"download {entry['name']}: {body.status_code}")
                with open(out / entry["name"], "wb") as target:
                    for block in body.iter_content(1 << 20):
                        target.write(block)
                        size += len(block)
        return size
