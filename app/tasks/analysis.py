"""Tasks of analysis jobs (key, tempo, beats, loudness)."""

from __future__ import annotations

from celery import shared_task

from app.services import analysis


@shared_task(name="app.tasks.analysis.analyze", ignore_result=True)
def analyze(job_id: str) -> str | None:
    return analysis.run_job(job_id)


# The task's name before it moved here (``former_tasks`` in app/job_kinds.py):
# messages a previous version queued under it still run.
@shared_task(name="app.tasks.pipelines.analyze", ignore_result=True)
def analyze_queued_by_a_previous_version(job_id: str) -> str | None:
    return analysis.run_job(job_id)
