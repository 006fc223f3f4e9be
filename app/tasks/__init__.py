"""Celery tasks, one module per capability (one queue each)."""

from __future__ import annotations

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
