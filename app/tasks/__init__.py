"""Celery tasks, one module per capability (one queue each)."""

from __future__ import annotations

from typing import Any

from celery import Task


def task_for_kind(kind: str) -> Task:
    from app.tasks import generation, pipelines, separation, transcription

    tasks: dict[str, Task] = {
        "separation": separation.separate,
        "transcription": transcription.transcribe,
        "karaoke": pipelines.make_karaoke,
        "analysis": pipelines.analyze,
        "generation": generation.generate,
    }
    return tasks[kind]


def queue_for_kind(kind: str) -> str:
    """The Celery queue jobs of ``kind`` go to (``task_routes`` in app/config.py)."""
    task = task_for_kind(kind)
    route = task.app.amqp.router.route({}, task.name)
    queue: Any = route.get("queue")
    return str(getattr(queue, "name", queue) or task.app.conf.task_default_queue)
