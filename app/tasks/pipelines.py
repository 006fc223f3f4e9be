"""Pipeline tasks: several engines in one job (karaoke: separation, then transcription)."""

from __future__ import annotations

from celery import shared_task

from app.services import karaoke


@shared_task(name="app.tasks.pipelines.karaoke", ignore_result=True)
def make_karaoke(job_id: str) -> str | None:
    return karaoke.run_job(job_id)
