"""Tasks of the ``separation`` queue."""

from __future__ import annotations

from celery import shared_task

from app.services import separation


@shared_task(name="app.tasks.separation.separate", ignore_result=True)
def separate(job_id: str) -> str | None:
    return separation.run_job(job_id)
