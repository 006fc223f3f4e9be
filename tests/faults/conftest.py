"""Fixtures for the fault tests: a real Redis, real Celery workers, an API client.

Every test here is marked ``faults`` (``pytest -m faults`` runs just these,
``-m "not faults"`` skips them) and is skipped, with the reason printed, when
``redis-server`` is not installed. Workers run ``tests/support/slow_celery.py``
so hpss jobs last a few seconds: long enough to kill something mid-job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apps import make_app
from tests.support.faults import SETTINGS, Faults
from tests.support.procs import RedisProcess


@pytest.fixture
def redis(redis_server: RedisProcess) -> RedisProcess:
    return redis_server


@pytest.fixture
def faults_with(tmp_path: Path, redis: RedisProcess) -> Iterator[Callable[..., Faults]]:
    """A harness whose API and workers share extra settings (time limits, for
    one: the API writes them into each task message, and workers obey those)."""
    made: list[Faults] = []

    def make(redis_url: str | None = None, **overrides: Any) -> Faults:
        settings = {**SETTINGS, **overrides}
        app = make_app(
            tmp_path / "data",
            REDIS_URL=redis_url or redis.url,
            RATELIMIT_ENABLED=False,
            MAX_ACTIVE_JOBS=1000,
            **settings,
        )
        harness = Faults(app, tmp_path, settings)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.stop_all()


@pytest.fixture
def faults(faults_with: Callable[..., Faults]) -> Faults:
    return faults_with()
