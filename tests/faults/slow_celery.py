"""``celery``, with the weight-free hpss engine slowed down for fault tests.

``FAULT_HPSS_DELAY`` seconds of sleep before each separated window make a
job last long enough (and report progress often enough) for a test to kill a
worker, Redis or the disk in the middle of it, without burning CPU. The job
still runs the real engine and produces real stems.

    python -m tests.faults.slow_celery -A celery_worker worker ...
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

        def slow_hpss(*args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return original(*args, **kwargs)

        engine.hpss = slow_hpss  # type: ignore[assignment]

    from celery.__main__ import main as celery_main

    sys.exit(celery_main())


if __name__ == "__main__":
    main()
