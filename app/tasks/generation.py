"""Tasks of the ``generation`` queue."""

from __future__ import annotations

from celery import shared_task

from app.services import generation


@shared_task(name="app.tasks.generation.generate", ignore_result=True)
def generate(job_id: str) -> str | None:
    return generation.run_job(job_id)
