"""The periodic maintenance task Celery beat sends in Redis deployments."""

from __future__ import annotations

from celery import shared_task

from app.services import maintenance


@shared_task(name="app.tasks.maintenance.run", ignore_result=True)
def run() -> dict[str, int]:
    """Reaper, reconciler and expiry (see app/services/maintenance.py)."""
    return maintenance.run_once()
