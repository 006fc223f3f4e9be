"""Tasks of the ``transcription`` queue."""

from __future__ import annotations

from celery import shared_task

from app.services import transcription


@shared_task(name="app.tasks.transcription.transcribe", ignore_result=True)
def transcribe(job_id: str) -> str | None:
    return transcription.run_job(job_id)
