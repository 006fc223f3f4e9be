"""Configuration from the environment only.

Every setting a deployment changes is an environment variable (README has the
table); tests pass overrides to ``create_app``. Nothing secret is ever a literal
in code: a missing secret is generated once and kept in ``DATA_DIR``.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from limits import parse_many

from app import job_kinds, localbus, worker_settings
from app.env import env_bool, env_float, env_int, env_list

MIN_SECRET_BYTES = 32
# SEPARATION_PRECISION's choices (app/models/precision.py resolves them).
PRECISIONS = ("auto", "float32", "bfloat16")
# Webhook deliveries: each waits on someone else's server, so they get a
# worker of their own rather than a place in line behind (or before) jobs.
WEBHOOK_QUEUE = "webhooks"


def queues() -> tuple[str, ...]:
    """Every queue a worker may consume: the job kinds' (app/job_kinds.py), which
    keep a worker process busy for minutes, and the webhooks'."""
    return (*job_kinds.job_queues(), WEBHOOK_QUEUE)


def from_environment() -> dict[str, Any]:
    """Read every setting the service knows from ``os.environ``."""
    data_dir = Path(os.environ.get("DATA_DIR") or "./var").resolve()
    redis_url = os.environ.get("REDIS_URL") or None
    return {
        "DATA_DIR": str(data_dir),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or None,
        "JWT_SECRET_KEY": os.environ.get("JWT_SECRET_KEY") or None,
        "DATABASE_URL": os.environ.get("DATABASE_URL") or None,
        "REDIS_URL": redis_url,
        "MAX_UPLOAD_MB": env_int("MAX_UPLOAD_MB", 200),
        "MAX_AUDIO_SECONDS": env_float("MAX_AUDIO_SECONDS", 1200.0),
        "MAX_DECODED_MB": env_int("MAX_DECODED_MB", 2048),
        # Uploads are probed in a child process with this much memory at most
        # (app/isolated.py); PROBE_ISOLATION=false probes in the API process.
        "PROBE_ISOLATION": env_bool("PROBE_ISOLATION", True),
        "PROBE_MEMORY_MB": env_int("PROBE_MEMORY_MB", 256),
        # No cross-origin browser access unless the operator lists origins;
        # `make run` (app/embedded.py) lists its own localhost addresses.
        "CORS_ORIGINS": env_list("CORS_ORIGINS", []),
        "RESULT_TTL_HOURS": env_float("RESULT_TTL_HOURS", 24.0),
        "MODEL_DEVICE": (os.environ.get("MODEL_DEVICE") or "auto").lower(),
        "MODELS_DIR": os.environ.get("MODELS_DIR") or str(data_dir / "models"),
        "ALLOW_MODEL_DOWNLOAD": env_bool("ALLOW_MODEL_DOWNLOAD", True),
        # Whisper (app/models/whisper_engine.py): inputs at least this long are
        # decoded in VAD chunks, several at a time, when a request leaves
        # `decoding` at auto; docs/architecture.md says why this default.
        "WHISPER_BATCHED_MIN_SECONDS": env_float("WHISPER_BATCHED_MIN_SECONDS", 120.0),
        # Chunks per batch on that path; 0: 4 on CPU, 16 on a GPU.
        "WHISPER_BATCH_SIZE": env_int("WHISPER_BATCH_SIZE", 0),
        # CTranslate2's threads on CPU; 0: the worker's CPUs, at most 4.
        "WHISPER_CPU_THREADS": env_int("WHISPER_CPU_THREADS", 0),
        # The model that isolates vocals for karaoke and isolate_vocals when a
        # request names none; empty: the best vocals model that can run here
        # (app/services/vocals_model.py). A CPU-only server may prefer htdemucs.
        "VOCALS_MODEL": (os.environ.get("VOCALS_MODEL") or "").strip() or None,
        "LOG_LEVEL": (os.environ.get("LOG_LEVEL") or "INFO").upper(),
        "LOG_FORMAT": (os.environ.get("LOG_FORMAT") or "text").strip().lower(),
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN") or None,
        "JWT_ACCESS_MINUTES": env_int("JWT_ACCESS_MINUTES", 15),
        "JWT_REFRESH_DAYS": env_int("JWT_REFRESH_DAYS", 30),
        # Reverse proxies in front of the API that each append the address they
        # got the request from to X-Forwarded-For (compose's nginx: 1). 0 trusts
        # no such header: anyone can send one.
        "TRUSTED_PROXY_HOPS": env_int("TRUSTED_PROXY_HOPS", 0),
        "RATELIMIT_ENABLED": env_bool("RATELIMIT_ENABLED", True),
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT") or "5/minute",
        "REFRESH_RATE_LIMIT": os.environ.get("REFRESH_RATE_LIMIT") or "10/minute",
        # No daily cap: one person's library is the embedded default's user.
        # Multi-tenant services add one ("60/minute;500/day", docs/deployment.md).
        "JOB_RATE_LIMIT": os.environ.get("JOB_RATE_LIMIT") or "60/minute",
        # Queued + running jobs per user; 0 = only the storage quota bounds it.
        "MAX_ACTIVE_JOBS": env_int("MAX_ACTIVE_JOBS", 0),
        # Jobs of one user a worker queue holds at once (app/services/fair_queue.py).
        "MAX_RUNNING_JOBS": env_int("MAX_RUNNING_JOBS", 2),
        "MAX_STORAGE_MB": env_int("MAX_STORAGE_MB", 5000),
        # POST /batches: inputs per batch, and the whole request body (each
        # input is still held to MAX_UPLOAD_MB). Every file part is spooled to
        # DATA_DIR/tmp and held open until the request is handled.
        "MAX_BATCH_INPUTS": env_int("MAX_BATCH_INPUTS", 500),
        "MAX_BATCH_UPLOAD_MB": env_int("MAX_BATCH_UPLOAD_MB", 4096),
        "WORKER_HEARTBEAT_SECONDS": env_float("WORKER_HEARTBEAT_SECONDS", 10.0),
        "BROKER_POLL_SECONDS": env_float("BROKER_POLL_SECONDS", 0.1),
        # Without Redis: wake the worker and waiting requests with local
        # notices (app/localbus.py) instead of polling fast.
        "LOCAL_NOTICES": env_bool("LOCAL_NOTICES", True),
        # With notices, the worker still polls this often (a lost notice).
        "BROKER_BACKSTOP_SECONDS": env_float("BROKER_BACKSTOP_SECONDS", 1.0),
        "MODEL_CACHE_SIZE": os.environ.get("MODEL_CACHE_SIZE") or "3",
        "MODEL_IDLE_SECONDS": env_float("MODEL_IDLE_SECONDS", 0.0) or None,
        "PRELOAD_MODELS": env_list("PRELOAD_MODELS", []),
        "OPENAI_WAIT_SECONDS": env_float("OPENAI_WAIT_SECONDS", 300.0),
        "SEPARATION_WINDOW_SECONDS": env_float("SEPARATION_WINDOW_SECONDS", 60.0),
        "SEPARATION_OVERLAP_SECONDS": env_float("SEPARATION_OVERLAP_SECONDS", 4.0),
        # Chunks per network call (app/models/batching.py); 1 runs them one at
        # a time, as the demucs CLI does. The stems are the same either way;
        # on the CPUs measured, batches did not pay (docs/architecture.md).
        "SEPARATION_BATCH_SIZE": env_int("SEPARATION_BATCH_SIZE", 1),
        # The network's number format on a CPU (app/models/precision.py):
        # auto is bfloat16 where the cores multiply it natively, else float32.
        "SEPARATION_PRECISION": (os.environ.get("SEPARATION_PRECISION") or "auto").lower(),
        "SSE_POLL_SECONDS": env_float("SSE_POLL_SECONDS", 0.5),
        # GET /jobs/{id}?wait= and Prefer: wait: each holds a server thread.
        "MAX_WAIT_SECONDS": env_float("MAX_WAIT_SECONDS", 60.0),
        # Requests that hold a server thread while they wait (event streams,
        # waits, the OpenAI-compatible route), per API process: leave threads
        # for everything else.
        "MAX_WAITING_REQUESTS": env_int(
            "MAX_WAITING_REQUESTS", max(1, env_int("GUNICORN_THREADS", 32) - 8)
        ),
        "MAX_WAITING_PER_USER": env_int("MAX_WAITING_PER_USER", 8),
        "SSE_HEARTBEAT_SECONDS": env_float("SSE_HEARTBEAT_SECONDS", 15.0),
        # How long an API process believes "this token is not revoked" and
        # "this token's user exists" before reading them again (0: every
        # request). Revocations and deletions made by the same process count
        # at once; those made by another process within this bound.
        "AUTH_CACHE_SECONDS": env_float("AUTH_CACHE_SECONDS", 5.0),
        "WEBHOOK_SECRET": os.environ.get("WEBHOOK_SECRET") or None,
        "WEBHOOK_ALLOW_PRIVATE": env_bool("WEBHOOK_ALLOW_PRIVATE", False),
        # A delivery try (connect, send, read) is cut after this long.
        "WEBHOOK_DEADLINE_SECONDS": env_float("WEBHOOK_DEADLINE_SECONDS", 15.0),
        # Input by URL (app/services/url_input.py): the whole fetch is cut
        # after this long, and these host[:port] are exempt from the address
        # rule (a trusted media server on the LAN). The size cap is MAX_UPLOAD_MB.
        "URL_FETCH_TIMEOUT_SECONDS": env_float("URL_FETCH_TIMEOUT_SECONDS", 120.0),
        "URL_FETCH_ALLOW_HOSTS": env_list("URL_FETCH_ALLOW_HOSTS", []),
        **worker_settings.from_environment(redis_url),
    }


def load_secret(data_dir: Path, name: str) -> str:
    """Return the secret kept in ``DATA_DIR/<name>``, creating it on first use.

    Generated secrets survive restarts (tokens stay valid) and are shared by
    every process using the same ``DATA_DIR`` (API and worker), without anyone
    having to invent one. The file is created 0600 atomically so two processes
    starting together agree on one value.
    """
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def finalise(config: dict[str, Any]) -> dict[str, Any]:
    """Derive Flask, SQLAlchemy, JWT and Celery settings from the service settings."""
    data_dir = Path(config["DATA_DIR"]).resolve()
    config["DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)

    secret = config.get("SECRET_KEY") or load_secret(data_dir, "secret_key")
    jwt_secret = config.get("JWT_SECRET_KEY") or secret
    for label, value in (("SECRET_KEY", secret), ("JWT_SECRET_KEY", jwt_secret)):
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise RuntimeError(
                f"{label} must be at least {MIN_SECRET_BYTES} bytes of random data; "
                "unset it to have one generated in DATA_DIR"
            )
    config["SECRET_KEY"] = secret
    config["JWT_SECRET_KEY"] = jwt_secret
    # Webhook signing keys are derived from this one per account (app/services/webhooks.py).
    webhook_secret = config.get("WEBHOOK_SECRET") or load_secret(data_dir, "webhook_secret")
    if len(webhook_secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(
            f"WEBHOOK_SECRET must be at least {MIN_SECRET_BYTES} bytes of random data; "
            "unset it to have one generated in DATA_DIR"
        )
    config["WEBHOOK_SECRET"] = webhook_secret
    if not float(config.get("WEBHOOK_DEADLINE_SECONDS") or 0) > 0:
        raise RuntimeError("WEBHOOK_DEADLINE_SECONDS must be a positive number of seconds")
    if not float(config.get("URL_FETCH_TIMEOUT_SECONDS") or 0) > 0:
        raise RuntimeError("URL_FETCH_TIMEOUT_SECONDS must be a positive number of seconds")

    database_url = config.get("DATABASE_URL") or f"sqlite:///{data_dir / 'jobs.sqlite'}"
    config["DATABASE_URL"] = database_url
    config["SQLALCHEMY_DATABASE_URI"] = database_url
    # A database server can drop connections (a restart, an idle timeout): each
    # checkout is pinged first. A SQLite file cannot, and the ping was a query
    # of its own on every request.
    engine_options = config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": not database_url.startswith("sqlite")}
    )
    if database_url.startswith("postgresql"):
        # A database host that is down (not just its server) would hold each
        # connection attempt for the kernel's TCP timeout, minutes: give up
        # after 5 s, so requests answer 503 and workers retry (app/database.py).
        engine_options.setdefault("connect_args", {}).setdefault("connect_timeout", 5)

    if int(config["MAX_RUNNING_JOBS"]) < 1:
        raise RuntimeError("MAX_RUNNING_JOBS must be 1 or more (jobs of one user a queue holds)")
    if str(config.get("SEPARATION_PRECISION") or "auto").lower() not in PRECISIONS:
        raise RuntimeError(f"SEPARATION_PRECISION must be one of {', '.join(PRECISIONS)}")
    if int(config.get("TRUSTED_PROXY_HOPS") or 0) < 0:
        raise RuntimeError("TRUSTED_PROXY_HOPS must be 0 (no proxy) or more")
    config["MAX_CONTENT_LENGTH"] = int(config["MAX_UPLOAD_MB"]) * 1024 * 1024 + 64 * 1024
    # Bodies that are not multipart uploads (JSON, urlencoded forms) are read
    # into memory whole: they get this much, not MAX_CONTENT_LENGTH (UploadRequest).
    config["MAX_BODY_BYTES"] = 1024 * 1024
    # Each text field of a multipart form (files stream to disk). Werkzeug's
    # multipart parser holds 64 KB chunks plus a boundary's worth of look-behind
    # in the same buffer, so the limit must sit above 64 KB.
    config["MAX_FORM_MEMORY_SIZE"] = 128 * 1024
    # The largest form (generation) has about 15 fields.
    config["MAX_FORM_PARTS"] = 32
    # Float32 samples an upload may decode to at its own rate and channel count.
    config["MAX_DECODED_BYTES"] = int(config["MAX_DECODED_MB"]) * 1024 * 1024
    if int(config["PROBE_MEMORY_MB"]) < 16:
        raise RuntimeError("PROBE_MEMORY_MB must be at least 16 (MB)")

    config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(minutes=int(config["JWT_ACCESS_MINUTES"]))
    config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(days=int(config["JWT_REFRESH_DAYS"]))
    config["JWT_ALGORITHM"] = "HS256"
    config["JWT_DECODE_ALGORITHMS"] = ["HS256"]
    config["JWT_TOKEN_LOCATION"] = ["headers"]
    # Only GET /jobs/<id>/events also reads ?access_token= (browsers' EventSource
    # cannot send headers); every other route takes the header alone.
    config["JWT_QUERY_STRING_NAME"] = "access_token"

    # flask-limiter: counters live in Redis when there is one, so every API
    # process shares them; in memory (per process) otherwise.
    config["RATELIMIT_STORAGE_URI"] = config.get("REDIS_URL") or "memory://"
    config["RATELIMIT_KEY_PREFIX"] = "ams-limits"
    for name in ("LOGIN_RATE_LIMIT", "REFRESH_RATE_LIMIT", "JOB_RATE_LIMIT"):
        try:
            parse_many(config[name])
        except ValueError as exc:
            raise RuntimeError(
                f"{name} must look like '5/minute' or '10/minute;100/day', got {config[name]!r}"
            ) from exc
    config["RATELIMIT_STORAGE_OPTIONS"] = (
        {"socket_timeout": 2, "socket_connect_timeout": 2} if config.get("REDIS_URL") else {}
    )

    config["API_TITLE"] = "AiMusicSeparator API"
    config["API_VERSION"] = "v1"
    config["OPENAPI_VERSION"] = "3.0.3"
    config["OPENAPI_URL_PREFIX"] = "/"
    config["OPENAPI_JSON_PATH"] = "openapi.json"
    config["OPENAPI_SWAGGER_UI_PATH"] = "/docs"
    config["OPENAPI_SWAGGER_UI_URL"] = "/docs/assets/"

    # The folder of local notices, shared by every process with this DATA_DIR
    # (empty: none). With Redis, its pub/sub carries the notices instead.
    config["NOTIFY_DIR"] = (
        str(localbus.folder_for(data_dir))
        if config.get("LOCAL_NOTICES", True) and not config.get("REDIS_URL")
        else ""
    )

    config.setdefault("CELERY", celery_settings(config))
    worker_settings.check_celery_settings(config["CELERY"])
    return config


def celery_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Celery settings for the embedded default (SQLite) or Redis.

    The job status API reads the SQL job table, never the result backend, so
    results are not stored; the backend is only configured so Celery tools work.
    """
    data_dir = Path(config["DATA_DIR"])
    redis_url = config.get("REDIS_URL")
    if redis_url:
        broker, backend = redis_url, redis_url
        transport_options: dict[str, Any] = {}
    else:
        broker = f"sqla+sqlite:///{data_dir / 'broker.sqlite'}"
        backend = f"db+sqlite:///{data_dir / 'celery-results.sqlite'}"
        # app/broker.py: with notices, a worker polls only as a backstop;
        # without, every BROKER_POLL_SECONDS.
        transport_options = {
            "polling_interval": float(config.get("BROKER_POLL_SECONDS", 0.1)),
            "notify_dir": config.get("NOTIFY_DIR") or "",
            "backstop_seconds": float(config.get("BROKER_BACKSTOP_SECONDS", 1.0)),
        }
    # Time limits, visibility timeout, recycling, shutdown, beat: worker_settings.py.
    reliability = worker_settings.celery_settings(config, redis=bool(redis_url))
    transport_options.update(reliability.pop("broker_transport_options", {}))
    return {
        **reliability,
        "broker_url": broker,
        "result_backend": backend,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": job_kinds.job_queues()[0],
        "task_routes": {
            **job_kinds.task_routes(),
            "app.tasks.webhooks.*": {"queue": WEBHOOK_QUEUE},
            "app.tasks.maintenance.*": {"queue": worker_settings.MAINTENANCE_QUEUE},
        },
        "worker_hijack_root_logger": False,
        "broker_connection_timeout": 2,
    }
