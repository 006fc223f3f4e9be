"""Pipeline tasks: several engines in one job."""

from __future__ import annotations

from celery import shared_task

from app.services import analysis, karaoke


@shared_task(name="app.tasks.pipelines.karaoke", ignore_result=True)
def make_karaoke(job_id: str) -> str | None:
    return karaoke.run_job(job_id)


@shared_task(name="app.tasks.pipelines.analyze", ignore_result=True)
def analyze(job_id: str) -> str | None:
    return analysis.run_job(job_id)
