"""``celery``, with the weight-free hpss engine slowed down for fault tests.

``FAULT_HPSS_DELAY`` seconds of sleep before each separated window make a
job last long enough (and report progress often enough) for a test to kill a
worker, Redis or the disk in the middle of it, without burning CPU. The job
still runs the real engine and produces real stems.

``FAULT_VISIBILITY_TIMEOUT`` seconds replace the Redis visibility timeout
*after* the app has been built with its real settings, so the startup check
(``app/worker_settings.py``: at least 1.25 x the longest hard time limit) runs
and passes unchanged. Production has no way to do this: the override lives
only in this test entry point. It lets tests/faults/test_visibility_timeout.py
show what that check prevents: a job redelivered to another worker while it
still runs. kombu scans for expired messages only every 10 x 10 s by default,
so the override also makes it scan every second.

``FAULT_CLAIMS_LOG``, a file each worker process appends its deliveries and
claims to (``record_claims``).

    python -m tests.support.slow_celery -A celery_worker worker ...
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    delay = float(os.environ.get("FAULT_HPSS_DELAY") or 0.0)
    if delay:
        from app.models import hpss as engine

        original = engine.hpss

        def slow_hpss(*args, **kwargs):
            time.sleep(delay)
            return original(*args, **kwargs)

        engine.hpss = slow_hpss

    visibility = float(os.environ.get("FAULT_VISIBILITY_TIMEOUT") or 0.0)
    if visibility:
        # The app ``celery -A celery_worker`` loads (a module is imported once).
        import celery_worker

        conf = celery_worker.celery_app.conf
        conf.broker_transport_options = {
            **conf.broker_transport_options,
            "visibility_timeout": visibility,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
        conf.result_backend_transport_options = {
            **conf.result_backend_transport_options,
            "visibility_timeout": visibility,
        }
        conf.visibility_timeout = visibility

    claims_log = os.environ.get("FAULT_CLAIMS_LOG")
    if claims_log:
        record_claims(claims_log)

    from celery.__main__ import main as celery_main

    sys.exit(celery_main())


def record_claims(path: str) -> None:
    """Append a line to ``path`` for every delivery that reaches ``runner.start``
    (``delivery <job>``) and every claim it makes (``claim <job> <attempt>``),
    from every worker process: what a test needs to count claims across
    workers. One ``write`` on an O_APPEND file each, so lines never interleave."""
    from app.services import runner

    original = runner.start

    def start(job_id: str):  # type: ignore[no-untyped-def]
        _append(path, f"delivery {job_id} {os.getpid()}\n")
        attempt = original(job_id)
        if attempt is not None:
            _append(path, f"claim {job_id} {attempt.number} {os.getpid()}\n")
        return attempt

    runner.start = start


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
