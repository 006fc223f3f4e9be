"""Gunicorn settings for production: ``gunicorn wsgi:app`` reads this file from
the working directory (the repository root, or ``/app`` in the image).

Command-line options override it (``make run`` passes its own ``--bind``).
Environment: ``HOST``/``PORT`` (bind), ``WEB_CONCURRENCY`` (processes),
``GUNICORN_THREADS`` (threads per process), ``LOG_FORMAT``/``LOG_LEVEL``.
"""

from __future__ import annotations

import os
from typing import Any

bind = [f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '5000'}"]
# Threads: status polls are short database reads, uploads wait on the network;
# neither needs a process of its own. Two processes survive one crashing. Each
# open event stream (GET /jobs/<id>/events) holds a thread while it waits (a
# database read every SSE_POLL_SECONDS, a heartbeat every 15 s), hence 32.
# Gunicorn's gthread worker, answering its own errors in JSON and closing a
# connection whose request body was left unread (app/serving.py).
worker_class = "app.serving.ApiWorker"
# Gunicorn's logger, building access-log lines only when they are written.
logger_class = "app.serving.ApiLogger"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("GUNICORN_THREADS") or 32)
# Uploads of a few hundred MB from slow clients take a while to arrive.
timeout = 300
# SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = 30
keepalive = 5

if (os.environ.get("LOG_FORMAT") or "text").strip().lower() == "json":
    # Gunicorn's own lines ("Booting worker", worker timeouts) as JSON too; the
    # app logs every request itself (with its request id), so gunicorn's access
    # log stays off.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": (os.environ.get("LOG_LEVEL") or "INFO").upper(), "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "handlers": {"json": {"()": "app.logs.make_handler", "log_format": "json"}},
        "formatters": {},
    }


def on_starting(server: Any) -> None:
    """Before the workers fork: HTTP metrics of every worker go to files that
    ``/metrics`` sums (prometheus_client multiprocess mode, app/metrics.py)."""
    from app.metrics import setup_multiprocess

    path = setup_multiprocess()
    server.log.info("Prometheus multiprocess directory: %s", path)


def post_worker_init(worker: Any) -> None:
    """Start the fork server that probes uploads (app/isolated.py) as the worker
    boots, so the first upload does not wait ~1 s for its imports.

    And skip what the standard library gathers for every log record that the
    API's log formats never show (the logging HOWTO's "Optimization"): the
    caller's file and line (a walk up the stack), the thread's name and the
    multiprocessing process name. The API logs every request: that was a
    noticeable share of a status poll. The process id stays (JSON lines carry
    it). Celery workers keep them: their default format names the process.
    """
    import logging

    from app.env import env_bool

    logging._srcfile = None  # type: ignore[attr-defined]  # documented switch, not in the stubs
    logging.logThreads = False
    logging.logMultiprocessing = False

    if env_bool("PROBE_ISOLATION", True):
        from app import isolated

        isolated.warm_up()
