"""Prometheus metrics served at ``GET /metrics``.

Two sources, so that every figure is right however many processes serve it:

- **Job figures are read from the job table at scrape time** (jobs by kind and
  status, queue depth and age, live workers). The database is the one place
  that knows every job, whichever API process answers the scrape, and
  whichever machine ran the job.
- **Events are counted where they happen**: HTTP latency in each API process,
  job durations and model load times in the worker process that ran the job.
  Gunicorn and Celery fork several processes, so these use prometheus_client's
  multiprocess mode: each process writes its values into memory-mapped files
  under ``PROMETHEUS_MULTIPROC_DIR``, and the scrape sums the files. The entry
  points (``gunicorn.conf.py``, ``celery_worker.py``) point it at
  ``DATA_DIR/metrics`` unless it is set, so the API's ``/metrics`` also shows
  the durations and model loads of workers that share its ``DATA_DIR`` on the
  same machine. Without the variable (tests, ``flask run``), values stay in
  the process, which is then the only one.

File names carry the host name as well as the pid, so containers sharing one
volume (compose) never write the same file.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from flask import Flask
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus (and most other scrapers) reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def _process_identifier() -> str:
    return f"{_HOST}-{os.getpid()}"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def setup_multiprocess(directory: str | os.PathLike[str] | None = None) -> str:
    """Turn on multiprocess mode for this process and the ones it forks.

    Call it before any metric is observed (entry points do, at start). Removes
    the files that dead processes of this host left behind, so the directory
    does not grow across restarts (their counts restart from zero, which
    Prometheus reads as a counter reset, as for any restarted process).
    """
    if directory is None:
        directory = multiprocess_dir() or (
            Path(os.environ.get("DATA_DIR") or "./var").resolve() / "metrics"
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)
    remove_dead_files(path)
    return str(path)


def remove_dead_files(path: Path) -> int:
    """Delete ``<type>_<this host>-<pid>.db`` files whose process is gone."""
    removed = 0
    for name in glob.glob(str(path / f"*_{glob.escape(_HOST)}-*.db")):
        pid_text = name.rsplit("-", 1)[-1].removesuffix(".db")
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(name)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if multiprocess_dir():  # inherited from a parent that called setup_multiprocess
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)


# ``*_created`` series only double the output; multiprocess mode has none anyway.
disable_created_metrics()

# Metrics observed in this process. Only labelled metrics: their values (and,
# in multiprocess mode, their files) are created on first use, so the mode can
# still be chosen after this module is imported.
LOCAL = CollectorRegistry()
HTTP_LATENCY = Histogram(
    "aimusic_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response headers; a streamed "
    "download's body is not included), by route template, method and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=LOCAL,
)
JOB_DURATION = Histogram(
    "aimusic_job_duration_seconds",
    "Run time of a job's last attempt (started to finished), by kind and final status.",
    ["kind", "status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=LOCAL,
)
JOB_QUEUE_WAIT = Histogram(
    "aimusic_job_queue_wait_seconds",
    "Time a job waited between submission and the start of its last attempt, by kind.",
    ["kind"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=LOCAL,
)
MODEL_LOAD = Histogram(
    "aimusic_model_load_seconds",
    "Time a worker process took to load a model into its cache, by engine kind, model and device.",
    ["kind", "model", "device"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=LOCAL,
)
ProcessCollector(registry=LOCAL)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_LATENCY.labels(method, route, str(status)).observe(seconds)


def observe_model_load(kind: str, model: str, device: str, seconds: float) -> None:
    MODEL_LOAD.labels(kind, model, device).observe(seconds)


def record_job(job_id: str) -> None:
    """Record the run of a job that just ended, and log it (``job_ended``
    in app/services/jobs.py calls this once per job). A job that never
    started (canceled while queued) has no run to record."""
    from app.extensions import db
    from app.records import Job

    try:
        job = db.session.get(Job, job_id)
        if job is None or not job.is_final or job.started_at is None:
            return
        finished = job.finished_at or job.updated_at
        run = max((finished - job.started_at).total_seconds(), 0.0)
        wait = max((job.started_at - job.created_at).total_seconds(), 0.0)
        JOB_DURATION.labels(job.kind, job.status).observe(run)
        JOB_QUEUE_WAIT.labels(job.kind).observe(wait)
        log.info(
            "job %s %s after %.2f s (queued %.2f s)",
            job.kind,
            job.status,
            run,
            wait,
            extra={
                "kind": job.kind,
                "status": job.status,
                "run_seconds": round(run, 3),
                "queue_seconds": round(wait, 3),
                "attempt": job.attempts,
                "error_code": job.error_code,
            },
        )
    except Exception:
        db.session.rollback()
        log.warning("could not record the metrics of job %s", job_id, exc_info=True)


class _Forward:
    """Collects another registry (this process's metrics when not multiprocess)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


class JobCollector:
    """Job figures from the job table, computed at each scrape."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from app import job_kinds
        from app.extensions import db
        from app.records import JOB_STATUSES, Job, WorkerHeartbeat, utcnow

        with self.app.app_context():
            try:
                by_state = db.session.execute(
                    select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
                ).all()
                queued = db.session.execute(
                    select(Job.kind, func.min(Job.created_at))
                    .where(Job.status == "queued")
                    .group_by(Job.kind)
                ).all()
                window = 3 * float(self.app.config["WORKER_HEARTBEAT_SECONDS"]) + 5
                workers = db.session.execute(
                    select(WorkerHeartbeat.queues).where(
                        WorkerHeartbeat.seen_at >= utcnow() - timedelta(seconds=window)
                    )
                ).all()
                now = utcnow()
            except Exception:
                db.session.rollback()
                log.warning("/metrics could not read the job table", exc_info=True)
                up = GaugeMetricFamily(
                    "aimusic_database_up", "1 when the job table could be read for this scrape."
                )
                up.add_metric([], 0)
                yield up
                return

        up = GaugeMetricFamily(
            "aimusic_database_up", "1 when the job table could be read for this scrape."
        )
        up.add_metric([], 1)
        yield up

        counts = {(kind, status): 0 for kind in job_kinds.names() for status in JOB_STATUSES}
        for kind, status, count in by_state:
            counts[(kind, status)] = int(count)
        jobs = GaugeMetricFamily(
            "aimusic_jobs",
            "Jobs in the database by kind and status (finished jobs count until they expire).",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(counts.items()):
            jobs.add_metric([kind, status], count)
        yield jobs

        oldest: dict[str, datetime] = {kind: when for kind, when in queued if when is not None}
        depth = GaugeMetricFamily(
            "aimusic_queue_depth",
            "Jobs waiting for a worker, by kind and the Celery queue that kind goes to.",
            labels=["kind", "queue"],
        )
        age = GaugeMetricFamily(
            "aimusic_queue_oldest_age_seconds",
            "Age of the oldest job still waiting for a worker (0 when none waits), by kind.",
            labels=["kind", "queue"],
        )
        for kind in sorted({k for k, _ in counts}):
            queue = self._queue_of(kind)
            depth.add_metric([kind, queue], counts.get((kind, "queued"), 0))
            when = oldest.get(kind)
            age.add_metric([kind, queue], max((now - when).total_seconds(), 0.0) if when else 0.0)
        yield depth
        yield age

        alive = GaugeMetricFamily(
            "aimusic_workers",
            "Worker processes with a recent heartbeat, by queue they consume.",
            labels=["queue"],
        )
        per_queue: dict[str, int] = {}
        for (consumed,) in workers:
            for queue in filter(None, (consumed or "").split(",")):
                per_queue[queue] = per_queue.get(queue, 0) + 1
        from app.config import queues

        for queue in sorted(set(queues()) | set(per_queue)):
            alive.add_metric([queue], per_queue.get(queue, 0))
        yield alive

    def _queue_of(self, kind: str) -> str:
        from app import job_kinds

        try:
            return job_kinds.queue_for(kind)
        except KeyError:  # a row of a kind this version no longer has
            return "unknown"


def render(app: Flask) -> bytes:
    """The text exposition of every metric, for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory and Path(directory).is_dir():
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Forward(LOCAL))
    registry.register(JobCollector(app))
    return generate_latest(registry)
