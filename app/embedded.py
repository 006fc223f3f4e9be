"""``make run``: the API and the Celery workers together, in the foreground.

Two workers: one for jobs, and one with a few threads for webhook
deliveries, so that a slow receiver never delays a job and a long job never
delays a delivery.

The embedded default needs nothing but this checkout: SQLite for jobs, a
SQLite broker for Celery, files under ``DATA_DIR``. With ``REDIS_URL`` set the
same command uses Redis, though production runs API and workers separately
(docs/deployment.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from app.config import WEBHOOK_QUEUE
from app.job_kinds import job_queues

ROOT = Path(__file__).resolve().parent.parent
# Deliveries the webhook worker makes at once.
WEBHOOK_THREADS = 4


def migrate_database() -> None:
    """The job tables, and (with the embedded SQLite broker) the broker's tables
    and queues, before any other process starts: the API and two workers
    creating kombu's tables at once raced, and a publish that lost the race
    failed with 503 broker_unavailable."""
    from flask_migrate import upgrade

    from app import create_app
    from app.config import queues

    app = create_app()
    with app.app_context():
        upgrade()
    if not app.config.get("REDIS_URL"):
        with app.extensions["celery"].connection_for_write() as connection:
            for queue in queues():
                connection.default_channel.queue_declare(queue=queue)


def _wait_until_up(url: str, timeout: float, *processes: subprocess.Popen[bytes]) -> bool:
    """Whether ``url`` answered 200 within ``timeout`` (not if a process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "5000")
    os.environ.setdefault("DATA_DIR", str(ROOT / "var"))
    # The embedded default is for one machine: a front-end served from this
    # host may call the API; production configs list their origins themselves.
    os.environ.setdefault("CORS_ORIGINS", f"http://localhost:{port},http://127.0.0.1:{port}")
    migrate_database()

    python = sys.executable
    worker_cmd = [
        python, "-m", "celery", "-A", "celery_worker", "worker",
        "-Q", ",".join(job_queues()),
        "--concurrency", os.environ.get("WORKER_CONCURRENCY", "1"),
        "--loglevel", os.environ.get("LOG_LEVEL", "INFO"),
        "--hostname", f"embedded@{os.uname().nodename}",
    ]  # fmt: skip
    # Deliveries spend their time waiting on receivers: threads, not processes.
    webhook_worker_cmd = [
        python, "-m", "celery", "-A", "celery_worker", "worker",
        "-Q", WEBHOOK_QUEUE,
        "--pool", "threads", "--concurrency", str(WEBHOOK_THREADS),
        "--loglevel", os.environ.get("LOG_LEVEL", "INFO"),
        "--hostname", f"webhooks@{os.uname().nodename}",
    ]  # fmt: skip
    web_processes = os.environ.get("WEB_CONCURRENCY") or (
        "2" if os.environ.get("REDIS_URL") else "1"
    )
    api_cmd = [
        python, "-m", "gunicorn", "wsgi:app",
        "--bind", f"{host}:{port}",
        # An open event stream (GET /jobs/<id>/events) holds a thread while it
        # waits: enough threads for a few dozen watching browser tabs.
        # Without Redis, rate-limit counters live in each API process: one
        # process keeps every limit exact (threads serve the concurrency).
        # The worker is gunicorn.conf.py's (app/serving.py): gthread, with JSON
        # errors, closing connections that carry an unread body.
        "--worker-class", "app.serving.ApiWorker", "--workers", web_processes,
        "--threads", os.environ.get("GUNICORN_THREADS") or "32",
        "--timeout", "300", "--graceful-timeout", "30",
        "--control-socket", str(Path(os.environ["DATA_DIR"]).resolve() / "gunicorn.ctl"),
    ]  # fmt: skip
    # No Celery beat here: the worker's own thread runs the periodic
    # maintenance (reaper, reconciler, expiry), with REDIS_URL set too.
    worker_env = {
        **os.environ,
        "MAINTENANCE_IN_WORKER": os.environ.get("MAINTENANCE_IN_WORKER", "1"),
    }
    # One maintenance pass is enough: the job worker's.
    webhook_worker_env = {**os.environ, "MAINTENANCE_IN_WORKER": "0"}
    api = subprocess.Popen(api_cmd, cwd=ROOT)
    children = {
        "the worker": subprocess.Popen(worker_cmd, cwd=ROOT, env=worker_env),
        "the webhook worker": subprocess.Popen(
            webhook_worker_cmd, cwd=ROOT, env=webhook_worker_env
        ),
        "the API": api,
    }
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    shown_host = "localhost" if host in ("0.0.0.0", "127.0.0.1") else host
    base = f"http://{shown_host}:{port}"
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    probe = f"http://{probe_host}:{port}"
    if _wait_until_up(f"{probe}/healthz", 60, api):
        # Ready means a worker too (its heartbeat): a job sent before would
        # only wait in the queue, but the URLs say "use me now".
        workers_up = _wait_until_up(f"{probe}/readyz", 90, *children.values())
        print(
            "\nAiMusicSeparator is running (embedded default: SQLite jobs and queue, "
            f"data in {os.environ['DATA_DIR']})\n"
            f"  API:      {base}/api/v1\n"
            f"  API docs: {base}/docs\n"
            f"  Web page: {base}/\n"
            + (
                ""
                if workers_up
                else "  (the worker is still starting: jobs wait in the queue until it is up)\n"
            )
            + "Press Ctrl-C to stop.\n",
            flush=True,
        )
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; stopping", flush=True)
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.2)

    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
