"""Fixtures after the Flask tutorial: ``app``, ``client``, ``runner``, plus users and audio."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from app import create_app
from app.extensions import db
from app.records import Job

SR = 44100

# No model hub is reachable from test machines: fail fast instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    from flask_migrate import upgrade

    config = {
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "TESTING": True,
        # Production keeps rate limits on; tests that exercise them turn them
        # back on (tests/test_rate_limits.py), the rest create jobs in bursts.
        "RATELIMIT_ENABLED": False,
        **overrides,
    }
    app = create_app(config)
    with app.app_context():
        upgrade()
    _apps.append(app)
    return app


# Apps made during the current test, whose connections end with it.
_apps: list[Flask] = []


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """An app whose jobs run inline (Celery eager mode): full results, no worker."""
    app = make_app(tmp_path / "data")
    app.extensions["celery"].conf.task_always_eager = True
    yield app


@pytest.fixture
def queued_app(tmp_path: Path) -> Iterator[Flask]:
    """An app that publishes to its SQLite broker with no worker: jobs stay queued."""
    yield make_app(tmp_path / "data")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def register_and_login(client: FlaskClient, email: str | None = None) -> dict[str, str]:
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    password = "a long enough password"
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.json
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def submit_separation(app: Flask, audio: bytes) -> tuple[dict[str, str], str]:
    """A new user uploads ``audio`` for an hpss separation: their headers and the job id."""
    client = app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(audio), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return headers, response.json["id"]


def fresh_job(job_id: str) -> Job:
    """The job's row as the database has it now (not the session's cached copy)."""
    db.session.expire_all()
    job = db.session.get(Job, job_id)
    assert job is not None
    return job


@pytest.fixture
def auth_headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


@pytest.fixture
def login() -> Callable[..., dict[str, str]]:
    return register_and_login


def sine_and_clicks(seconds: float = 2.0, sr: int = SR, channels: int = 2) -> np.ndarray:
    """A 440 Hz sine plus a click every 0.25 s: one clearly harmonic, one clearly percussive part."""
    t = np.arange(int(seconds * sr)) / sr
    sine = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    clicks = np.zeros_like(t)
    clicks[:: int(0.25 * sr)] = 0.9
    mono = (sine + clicks).astype(np.float32)
    return np.stack([mono] * channels)


def wav_bytes(audio: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture
def song_wav() -> bytes:
    return wav_bytes(sine_and_clicks())


@pytest.fixture
def queued_job(queued_app: Flask, song_wav: bytes) -> str:
    """The id of a queued hpss separation on ``queued_app`` (no worker runs it)."""
    return submit_separation(queued_app, song_wav)[1]


@pytest.fixture(autouse=True)
def _release_test_resources() -> Iterator[None]:
    """A test's apps keep open files after it: SQLite connections to their job
    database and broker (three descriptors each), a local-notice socket and its
    thread. Released here, or a whole run passes 1,024 descriptors."""
    yield
    from kombu.transport import sqlalchemy as kombu_sqla

    from app import localbus

    while _apps:
        app = _apps.pop()
        with app.app_context():
            db.engine.dispose()
    for engine, _session in list(kombu_sqla.Channel._engines.values()):
        engine.dispose()
    localbus.close_all()


@pytest.fixture(autouse=True)
def _same_random_shifts() -> None:
    """Demucs draws each shift's offset from ``random``: seeded, every run
    separates the same chunks. (Unseeded, about 1 run in 11 of a 6 s input with
    2 s segments left a last chunk under 2048 samples, which the tiny
    time-only HDemucs of tests/support/demucs_repo.py cannot take: its STFT
    needs more. Pretrained hybrid models pad such chunks first.)"""
    import random

    random.seed(0)


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Iterator[None]:
    """Each test starts with an empty per-process model cache."""
    from app.models.cache import reset_cache

    reset_cache()
    yield
    reset_cache()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MODELS_DIR with a local Demucs repo of tiny random models
    (tests/support/demucs_repo.py)."""
    from tests.support.demucs_repo import build_repo

    root = tmp_path_factory.mktemp("models")
    build_repo(root / "demucs")
    return root


@pytest.fixture
def demucs_app(tmp_path: Path, models_dir: Path) -> Iterator[Flask]:
    """Like ``app``, with the tiny Demucs repo as MODELS_DIR and downloads off."""
    app = make_app(tmp_path / "data", MODELS_DIR=str(models_dir), ALLOW_MODEL_DOWNLOAD=False)
    app.extensions["celery"].conf.task_always_eager = True
    yield app


@pytest.fixture
def progress_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str | None]]:
    """Every progress report of the jobs run in the test, as (progress, stage).

    Reports are forced through to the database (no throttling), so tests see
    each step and a cancel takes effect at the very next one.
    """
    from app.services import runner

    seen: list[tuple[float, str | None]] = []
    original = runner.ProgressReporter.__call__

    def spy(self, progress, stage=None, *, force=False):  # type: ignore[no-untyped-def]
        original(self, progress, stage, force=True)
        seen.append((self.progress, stage))

    monkeypatch.setattr(runner.ProgressReporter, "__call__", spy)
    return seen


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A real redis-server on a free loopback port (tests/support/procs.py) with the
    persistence docs/deployment.md prescribes; the test is skipped, with the
    reason, when redis-server is not installed."""
    import shutil

    from tests.support.procs import RedisProcess

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); test skipped")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    return str(redis_server.url)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start the service as ``make run`` does (tests/support/live.py), with the
    given settings as environment variables; stopped (Ctrl-C) after the test."""
    from tests.support.live import LiveService

    started: list[LiveService] = []

    def start(**env: str) -> LiveService:
        service = LiveService(tmp_path / f"live{len(started)}", **env)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()
