"""Tasks of alignment jobs (the ``transcription`` queue)."""

from __future__ import annotations

from celery import shared_task

from app.services import alignment


@shared_task(name="app.tasks.alignment.align", ignore_result=True)
def align(job_id: str) -> str | None:
    return alignment.run_job(job_id)
