"""Celery wired the way the Flask docs show ("Background Tasks with Celery").

Tasks run inside the Flask app context. Each worker process also keeps a
heartbeat row (``/readyz`` reads it on any broker) and purges expired jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from flask import Flask

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 300.0


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    # The SQLAlchemy transport polls once a second by default and takes no
    # option for it (its options go to create_engine). A job waits half the
    # interval on average before a worker sees it, but every poll costs CPU
    # (measured idle: about 6% of a core at 0.1 s, 23% at 0.02 s).
    from kombu.transport import sqlalchemy as kombu_sqla

    kombu_sqla.Transport.polling_interval = float(app.config.get("BROKER_POLL_SECONDS", 0.1))

    from app.tasks import (  # noqa: F401  (register the shared tasks)
        generation,
        pipelines,
        separation,
        transcription,
    )

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
        thread = threading.Thread(
            target=_heartbeat_loop, args=(app, hostname, queues), daemon=True, name="heartbeat"
        )
        thread.start()

        # With the solo and threads pools, tasks run in this process.
        pool_module = type(getattr(sender, "pool", None)).__module__
        if pool_module.endswith((".solo", ".threads")):
            start_model_housekeeping(app)

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        _heartbeat_stop.set()

    def on_process_init(**_: Any) -> None:
        # A prefork child: the process whose model cache jobs use.
        start_model_housekeeping(app)

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    worker_process_init.connect(on_process_init, weak=False)


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


def _heartbeat_loop(app: Flask, hostname: str, queues: str) -> None:
    from app.extensions import db
    from app.records import WorkerHeartbeat, utcnow
    from app.services.auth import purge_revoked
    from app.services.jobs import purge_expired

    interval = float(app.config["WORKER_HEARTBEAT_SECONDS"])
    since_purge = PURGE_EVERY_SECONDS
    while True:
        with app.app_context():
            try:
                row = db.session.get(WorkerHeartbeat, hostname) or WorkerHeartbeat(
                    hostname=hostname
                )
                row.queues = queues
                row.seen_at = utcnow()
                db.session.add(row)
                db.session.commit()
                if since_purge >= PURGE_EVERY_SECONDS:
                    since_purge = 0.0
                    purged = purge_expired()
                    purge_revoked()
                    if purged:
                        log.info("purged %d expired jobs", purged)
            except Exception:
                db.session.rollback()
                log.warning("worker heartbeat failed", exc_info=True)
            if _heartbeat_stop.wait(interval):
                try:
                    row = db.session.get(WorkerHeartbeat, hostname)
                    if row is not None:
                        db.session.delete(row)
                        db.session.commit()
                except Exception:
                    db.session.rollback()
                return
        since_purge += interval
