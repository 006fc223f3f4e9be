"""Fixtures after the Flask tutorial: ``app``, ``client``, ``runner``, plus users and audio.

Fixtures only: the functions tests call themselves are in tests/support/.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from app import create_app
from app.extensions import db
from tests.support.apps import dispose_apps, make_app, register_and_login, submit_separation
from tests.support.audio import sine_and_clicks, wav_bytes

# No model hub is reachable from test machines: fail fast instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture
def eager_app(tmp_path: Path) -> Callable[..., Flask]:
    """Makes apps whose jobs run inline (Celery eager mode): full results, no
    worker. ``eager_app(**settings)`` keeps its data in ``tmp_path / "data"``;
    ``eager_app(data_dir, **settings)`` where the test says."""

    def make(data_dir: Path | None = None, **overrides: Any) -> Flask:
        app = make_app(data_dir or tmp_path / "data", **overrides)
        app.extensions["celery"].conf.task_always_eager = True
        return app

    return make


@pytest.fixture
def app(eager_app: Callable[..., Flask]) -> Flask:
    """An app whose jobs run inline (Celery eager mode): full results, no worker."""
    return eager_app()


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


@pytest.fixture
def auth_headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


@pytest.fixture
def login() -> Callable[..., dict[str, str]]:
    return register_and_login


@pytest.fixture
def song_wav() -> bytes:
    return wav_bytes(sine_and_clicks())


@pytest.fixture
def queued_job(queued_app: Flask, song_wav: bytes) -> str:
    """The id of a queued hpss separation on ``queued_app`` (no worker runs it)."""
    return submit_separation(queued_app, song_wav)[1]


@pytest.fixture(autouse=True)
def _release_test_resources() -> Iterator[None]:
    """Close what the test's apps keep open (tests/support/apps.py)."""
    yield
    dispose_apps()


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


@pytest.fixture(scope="session")
def vocal_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MODELS_DIR with the tiny Demucs repo and the tiny RoFormer vocal models
    ``bs_roformer_viperx_1297`` and ``mel_band_roformer_kim``
    (tests/support/roformer_models.py) under their published names."""
    from tests.support.demucs_repo import build_repo
    from tests.support.roformer_models import build_roformer_models

    root = tmp_path_factory.mktemp("vocal-models")
    build_repo(root / "demucs")
    return build_roformer_models(root)


@pytest.fixture
def demucs_app(eager_app: Callable[..., Flask], models_dir: Path) -> Flask:
    """Like ``app``, with the tiny Demucs repo as MODELS_DIR and downloads off."""
    return eager_app(MODELS_DIR=str(models_dir), ALLOW_MODEL_DOWNLOAD=False)


@pytest.fixture
def progress_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str | None]]:
    """Every progress report of the jobs run in the test, as (progress, stage).

    Reports are forced through to the database (no throttling), so tests see
    each step and a cancel takes effect at the very next one.
    """
    from app.services import runner

    seen: list[tuple[float, str | None]] = []
    original = runner.ProgressReporter.__call__

    def spy(self, progress, stage=None, *, force=False):
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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Any]:
    """One PostgreSQL cluster for the session (tests/support/procs.py), on a
    free loopback port; tests get their own databases in it. Skipped, with the
    reason, where the server is not installed."""
    from tests.support.procs import PostgresProcess

    try:
        cluster = PostgresProcess()
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc} not found; apt-get install postgresql)")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database of the session's cluster migrated to head once, which the
    ``database`` fixture copies for each test: a copy takes about 0.1 s, running
    the migrations on PostgreSQL about 1 s (tests/test_migrations.py runs them)."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    name = "template_head"
    url = postgres_cluster.create_database(name)
    data_dir = tmp_path_factory.mktemp("template")
    app = create_app({"DATA_DIR": str(data_dir), "DATABASE_URL": url, "REDIS_URL": None})
    with app.app_context():
        upgrade()
        db.engine.dispose()  # a template must have no connections while it is copied
    return name


@pytest.fixture
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL cluster of the test's own, which it may kill and restart."""
    from tests.support.procs import PostgresProcess

    try:
        server = PostgresProcess()
    except FileNotFoundError as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc} not found; apt-get install postgresql)")
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(autouse=True)
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The job database the test's apps use: ``sqlite`` (the embedded default)
    unless the test is marked ``BOTH_DATABASES`` (tests/support/apps.py); then also
    ``postgresql``, a fresh database per data directory in the session's
    cluster (a copy of ``postgres_template``, at head), dropped after the test."""
    import secrets

    from tests.support import apps

    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield backend
        return
    cluster = request.getfixturevalue("postgres_cluster")
    template = request.getfixturevalue("postgres_template")
    made: dict[Path, str] = {}

    def chooser(data_dir: Path) -> str:
        key = Path(data_dir).resolve()
        if key not in made:
            made[key] = f"t_{secrets.token_hex(6)}"
            cluster.create_database(made[key], template=template)
        return str(cluster.url(made[key]))

    apps.use_databases(chooser)
    try:
        yield backend
    finally:
        apps.use_databases(None)
        apps.dispose_apps()
        for name in made.values():
            cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_app(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app on an empty job database (no tables): SQLite's default file in
    its DATA_DIR, or a new PostgreSQL database (not the migrated copy the
    ``database`` fixture hands out)."""
    url = None
    name = f"m_{secrets.token_hex(6)}"
    cluster: Any = None
    if database == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(name)
    app = create_app(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": url,
            "REDIS_URL": None,
            "TESTING": True,
            "RATELIMIT_ENABLED": False,
        }
    )
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()
        if cluster is not None:
            cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
