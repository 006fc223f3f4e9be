"""Settings that keep jobs alive through faults: time limits, the Redis
visibility timeout, worker recycling, shutdown and periodic maintenance.

``app/config.py`` merges these into the app config and the Celery settings;
they live here so the rules that tie them together (a soft limit before every
hard limit, a visibility timeout longer than any hard limit) sit in one place.
"""

from __future__ import annotations

import os
from typing import Any

from app import job_kinds
from app.env import env_bool, env_float

# Periodic upkeep (reaper, reconciler, expiry) that Celery beat sends in Redis mode.
MAINTENANCE_QUEUE = "maintenance"
MAINTENANCE_TASK = "app.tasks.maintenance.run"


# The visibility timeout must be at least this many times the longest hard limit.
VISIBILITY_MARGIN = 1.25
# The longest countdown (or ETA) any task is published with: webhook retries.
# On Redis a delayed message waits unacknowledged in a worker, so it must come
# due within the visibility timeout or it is delivered twice (celery#4766).
# tests/test_job_guarantees.py checks every countdown in app/ against it.
LONGEST_COUNTDOWN_SECONDS = 1800.0


def from_environment(redis_url: str | None) -> dict[str, Any]:
    """The job-engine settings read from ``os.environ`` (README has the table)."""
    return {
        "SEPARATION_TIME_LIMIT": env_float("SEPARATION_TIME_LIMIT", 3600.0),
        "TRANSCRIPTION_TIME_LIMIT": env_float("TRANSCRIPTION_TIME_LIMIT", 3600.0),
        "GENERATION_TIME_LIMIT": env_float("GENERATION_TIME_LIMIT", 1800.0),
        "VISIBILITY_TIMEOUT": env_float("VISIBILITY_TIMEOUT", 0.0) or None,
        "WORKER_MAX_TASKS_PER_CHILD": int(env_float("WORKER_MAX_TASKS_PER_CHILD", 100)),
        "WORKER_MAX_MEMORY_PER_CHILD_MB": int(env_float("WORKER_MAX_MEMORY_PER_CHILD_MB", 12288)),
        "WORKER_SOFT_SHUTDOWN_SECONDS": env_float("WORKER_SOFT_SHUTDOWN_SECONDS", 30.0),
        "MAINTENANCE_INTERVAL_SECONDS": env_float("MAINTENANCE_INTERVAL_SECONDS", 30.0),
        # Who runs the maintenance pass: the workers' heartbeat thread (the
        # embedded default), or Celery beat (Redis deployments).
        "MAINTENANCE_IN_WORKER": env_bool("MAINTENANCE_IN_WORKER", not redis_url),
        "RECONCILE_QUEUED_SECONDS": env_float("RECONCILE_QUEUED_SECONDS", 60.0),
    }


def soft_limit(hard: float) -> float:
    """The soft time limit for a hard one: a minute earlier, or 90% of a short
    one, so the job has time to clean up and record ``time_limit_exceeded``."""
    return round(max(hard - 60.0, 0.9 * hard), 3)


def time_limits(config: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(soft, hard) time limit in seconds of every job task."""
    limits = {}
    # The settings whose sum is each job task's hard limit (a pipeline's is the
    # sum of its steps'), from the job-kind table.
    for task, keys in job_kinds.time_limit_keys().items():
        hard = sum(float(config.get(key) or 0.0) for key in keys)
        if hard <= 0:
            raise RuntimeError(f"{' and '.join(keys)} must be a positive number of seconds")
        limits[task] = (soft_limit(hard), hard)
    return limits


def hard_limit_for(config: dict[str, Any], task_name: str) -> float | None:
    keys = job_kinds.time_limit_keys().get(task_name)
    if not keys:
        return None
    return sum(float(config.get(key) or 0.0) for key in keys) or None


def celery_settings(config: dict[str, Any], redis: bool) -> dict[str, Any]:
    """Celery settings for long jobs that must survive worker and broker faults."""
    limits = time_limits(config)
    settings: dict[str, Any] = {
        # A worker keeps reconnecting however long the broker is down.
        "broker_connection_max_retries": None,
        # Publishing (API, reaper, reconciler) retries a lost connection
        # briefly, then gives up: a submit answers 503 in seconds, never hangs.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "task_annotations": {
            task: {"soft_time_limit": soft, "time_limit": hard}
            for task, (soft, hard) in limits.items()
        },
        # Recycle a worker's child process now and then against slow leaks;
        # each recycle drops that child's model cache, hence not too often.
        "worker_max_tasks_per_child": int(config.get("WORKER_MAX_TASKS_PER_CHILD") or 0) or None,
        "worker_max_memory_per_child": (
            int(config.get("WORKER_MAX_MEMORY_PER_CHILD_MB") or 0) * 1024 or None  # KiB
        ),
        # On a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT)
        # running jobs get this long to finish before their messages go back.
        "worker_soft_shutdown_timeout": float(config.get("WORKER_SOFT_SHUTDOWN_SECONDS") or 0.0),
        "beat_schedule": {
            "maintenance": {
                "task": MAINTENANCE_TASK,
                "schedule": float(config.get("MAINTENANCE_INTERVAL_SECONDS") or 30.0),
                "options": {
                    "queue": MAINTENANCE_QUEUE,
                    # A pass nobody ran in time is dropped, not piled up.
                    "expires": float(config.get("MAINTENANCE_INTERVAL_SECONDS") or 30.0),
                },
            }
        },
        "beat_schedule_filename": os.path.join(str(config["DATA_DIR"]), "celerybeat-schedule"),
    }
    if redis:
        # Redis hands a message not acknowledged within the visibility timeout
        # to another worker, even while its task still runs: it must outlast
        # the longest hard time limit. Celery reads it in three places.
        longest = max(hard for _soft, hard in limits.values())
        visibility = float(
            config.get("VISIBILITY_TIMEOUT") or max(4 * 3600.0, VISIBILITY_MARGIN * longest)
        )
        settings["broker_transport_options"] = {"visibility_timeout": visibility}
        settings["result_backend_transport_options"] = {"visibility_timeout": visibility}
        settings["visibility_timeout"] = visibility
    return settings


def check_celery_settings(celery: dict[str, Any]) -> None:
    """Refuse a Redis configuration whose visibility timeout is shorter than
    1.25 x the longest hard time limit, or not the same in every place Celery
    reads it: Redis would start a still-running job again on another worker."""
    if not str(celery.get("broker_url", "")).startswith(("redis", "rediss", "sentinel")):
        return
    places = {
        "broker_transport_options": (celery.get("broker_transport_options") or {}).get(
            "visibility_timeout"
        ),
        "result_backend_transport_options": (
            celery.get("result_backend_transport_options") or {}
        ).get("visibility_timeout"),
        "visibility_timeout": celery.get("visibility_timeout"),
    }
    if None in places.values() or len({float(v) for v in places.values()}) != 1:  # type: ignore[arg-type]  # None is ruled out by the test before it
        raise RuntimeError(
            "The Redis visibility timeout must be set to one value in each of "
            f"{', '.join(places)}; got {places}"
        )
    visibility = float(places["visibility_timeout"])  # type: ignore[arg-type]  # not None: checked above
    hard_limits = {
        task: float(options["time_limit"])
        for task, options in (celery.get("task_annotations") or {}).items()
        if isinstance(options, dict) and options.get("time_limit")
    }
    if visibility <= LONGEST_COUNTDOWN_SECONDS:
        raise RuntimeError(
            f"VISIBILITY_TIMEOUT is {visibility:g} s but tasks are retried after up to "
            f"{LONGEST_COUNTDOWN_SECONDS:g} s (webhooks): on Redis a retry due after the "
            "visibility timeout is delivered twice. Raise VISIBILITY_TIMEOUT."
        )
    if not hard_limits:
        return
    task, longest = max(hard_limits.items(), key=lambda item: item[1])
    if visibility < VISIBILITY_MARGIN * longest:
        raise RuntimeError(
            f"VISIBILITY_TIMEOUT is {visibility:g} s but must be at least "
            f"{VISIBILITY_MARGIN:g} x the longest hard time limit ({task}: {longest:g} s), "
            f"i.e. {VISIBILITY_MARGIN * longest:g} s: on Redis a job still running when it "
            "expires is started again on another worker. Raise VISIBILITY_TIMEOUT or lower "
            "the *_TIME_LIMIT settings."
        )
