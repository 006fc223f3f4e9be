"""Celery wired the way the Flask docs show ("Background Tasks with Celery").

Tasks run inside the Flask app context. Each worker process also keeps a
heartbeat row (``/readyz`` and the reaper read it on any broker) and, in the
embedded default (``MAINTENANCE_IN_WORKER``), runs the periodic maintenance
pass: reaper, reconciler, expiry (``app/services/maintenance.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from flask import Flask

from app import database

log = logging.getLogger(__name__)


def celery_init_app(app: Flask) -> Celery:
    from app.logs import job_context

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            # Job tasks take the job id first (and use it as the task id): every
            # log line of the task carries it.
            job_id = args[0] if args and isinstance(args[0], str) else None
            with app.app_context(), job_context(job_id):
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    # sqla+ broker URLs (the embedded default) use app/broker.py's transport:
    # kombu's, woken by local notices instead of polling fast.
    from app import broker

    broker.install()

    from app.tasks import import_task_modules

    import_task_modules()

    _connect_worker_signals(app)
    return celery_app


_heartbeat_stop = threading.Event()


def _connect_worker_signals(app: Flask) -> None:
    def on_ready(sender: Any = None, **_: Any) -> None:
        hostname = getattr(sender, "hostname", None) or f"{socket.gethostname()}:{os.getpid()}"
        queues = ""
        with contextlib.suppress(Exception):
            queues = ",".join(sorted(q.name for q in sender.task_consumer.queues))
        _heartbeat_stop.clear()
        _install_fork_guard()
        thread = threading.Thread(
            target=_heartbeat_loop, args=(app, hostname, queues), daemon=True, name="heartbeat"
        )
        thread.start()
        if app.config.get("MAINTENANCE_IN_WORKER"):
            threading.Thread(
                target=_maintenance_loop, args=(app,), daemon=True, name="maintenance"
            ).start()
        elif runs_jobs(queues):
            threading.Thread(target=_turns_loop, args=(app,), daemon=True, name="turns").start()

        # With the solo and threads pools, tasks run in this process; a
        # worker for webhooks alone never loads a model.
        pool_module = type(getattr(sender, "pool", None)).__module__
        if pool_module.endswith((".solo", ".threads")) and runs_jobs(queues):
            start_model_housekeeping(app)

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        _heartbeat_stop.set()

    def on_process_init(**_: Any) -> None:
        # A prefork child: never use a connection inherited from the parent
        # (dropped without closing it, as SQLAlchemy advises for fork).
        from app.extensions import db

        with app.app_context():
            db.engine.dispose(close=False)
        # The process whose model cache jobs use.
        start_model_housekeeping(app)

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    worker_process_init.connect(on_process_init, weak=False)


def runs_jobs(queues: str) -> bool:
    """Whether a worker consuming these queues (comma-separated) runs jobs;
    unknown (empty) counts as yes."""
    from app.job_kinds import job_queues

    names = set(filter(None, queues.split(",")))
    return not names or bool(names & set(job_queues()))


def start_model_housekeeping(app: Flask) -> threading.Thread:
    """In the process that runs tasks: load ``PRELOAD_MODELS``, then unload
    models idle for ``MODEL_IDLE_SECONDS``, in a background thread so the
    worker starts taking jobs at once."""

    def run() -> None:
        from app.models import registry
        from app.models.cache import get_cache

        with app.app_context():
            for name in app.config.get("PRELOAD_MODELS") or []:
                try:
                    registry.preload(name, app.config)
                except Exception:
                    log.warning("could not preload model %s", name, exc_info=True)
            cache = get_cache(app.config)
            if not cache.idle_seconds:
                return
            while True:
                time.sleep(max(1.0, min(cache.idle_seconds / 4, 60.0)))
                cache.evict_idle()

    thread = threading.Thread(target=run, daemon=True, name="model-housekeeping")
    thread.start()
    return thread


# SQLite keeps per-process lock state in memory, which a forked child inherits:
# a pool child forked while this process has the database open can never write
# to it ("database is locked" after the busy timeout). So the worker's own
# threads use the database only while holding this lock and close their
# connections before letting go, and a fork (a new pool child after a crash or
# recycle) waits for it: every child starts with no database state at all.
_db_fork_lock = threading.Lock()
_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(
            before=_db_fork_lock.acquire,
            after_in_parent=_db_fork_lock.release,
            after_in_child=_db_fork_lock.release,
        )
        _fork_guard_installed = True


@contextlib.contextmanager
def _worker_db(app: Flask) -> Iterator[None]:
    """Database work in the worker's main process (see ``_db_fork_lock``)."""
    from app.extensions import db

    with _db_fork_lock:
        try:
            with app.app_context():
                yield
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def _heartbeat_loop(app: Flask, hostname: str, queues: str) -> None:
    from app.extensions import db
    from app.records import WorkerHeartbeat, utcnow

    interval = float(app.config["WORKER_HEARTBEAT_SECONDS"])
    while True:
        with _worker_db(app):
            try:
                row = db.session.get(WorkerHeartbeat, hostname) or WorkerHeartbeat(
                    hostname=hostname
                )
                row.queues = queues
                row.seen_at = utcnow()
                db.session.add(row)
                db.session.commit()
            except Exception as exc:
                db.session.rollback()
                # A database outage (every beat until it ends) needs no trace.
                log.warning("worker heartbeat failed", exc_info=not database.is_unavailable(exc))
        if _heartbeat_stop.wait(interval):
            with _worker_db(app):
                try:
                    last = db.session.get(WorkerHeartbeat, hostname)
                    if last is not None:
                        db.session.delete(last)
                        db.session.commit()
                except Exception:
                    db.session.rollback()
            return


def _turns_loop(app: Flask) -> None:
    """Job workers hand out the turns a failed hand-over left unused (a job
    ended while the broker was down: ``jobs.publish_turn``), every heartbeat
    interval, without waiting for beat's maintenance pass. With nothing
    waiting this is one indexed query."""
    from app.extensions import db
    from app.services.maintenance import hand_out_turns

    interval = float(app.config["WORKER_HEARTBEAT_SECONDS"])
    while not _heartbeat_stop.wait(interval):
        with _worker_db(app):
            try:
                hand_out_turns()
            except Exception as exc:
                db.session.rollback()
                log.warning("handing out turns failed", exc_info=not database.is_unavailable(exc))


def _maintenance_loop(app: Flask) -> None:
    """The embedded default's periodic task (Redis deployments use Celery beat):
    reaper, reconciler and expiry every ``MAINTENANCE_INTERVAL_SECONDS``, in its
    own thread so a slow pass (broker down) never delays the heartbeat."""
    from app.extensions import db
    from app.services.maintenance import run_once

    interval = float(app.config["MAINTENANCE_INTERVAL_SECONDS"])
    # The first pass comes soon after start (a restarted worker picks up what
    # its previous life left running), then one per interval.
    delay = min(interval, 2 * float(app.config["WORKER_HEARTBEAT_SECONDS"]))
    while not _heartbeat_stop.wait(delay):
        delay = interval
        with _worker_db(app):
            try:
                run_once()
            except Exception as exc:
                db.session.rollback()
                log.warning("maintenance pass failed", exc_info=not database.is_unavailable(exc))
