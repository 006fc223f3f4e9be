"""Tasks of the ``webhooks`` queue: deliveries, retried with backoff."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.services import webhooks


@shared_task(
    name=webhooks.DELIVER_TASK,
    bind=True,
    ignore_result=True,
    max_retries=len(webhooks.RETRY_DELAYS),
)
def deliver(
    self: Any, job_id: str, owner_id: str, url: str, event: str, event_id: str, body: str
) -> int | None:
    """POST a finished job to its callback URL; on failure try again after
    10 s, 1 min, 5 min and 30 min (``webhooks.RETRY_DELAYS``)."""
    tries = self.request.retries
    try:
        return webhooks.attempt(job_id, owner_id, url, event, event_id, body, tries + 1)
    except webhooks.DeliveryError as exc:
        if exc.retry and tries < len(webhooks.RETRY_DELAYS):
            raise self.retry(countdown=webhooks.RETRY_DELAYS[tries], exc=exc) from exc
        return None


@shared_task(
    name=webhooks.DELIVER_BATCH_TASK,
    bind=True,
    ignore_result=True,
    max_retries=len(webhooks.RETRY_DELAYS),
)
def deliver_batch(
    self: Any, batch_id: str, owner_id: str, url: str, event: str, event_id: str, body: str
) -> int | None:
    """POST an ended batch to its callback URL, retried as a job's delivery is."""
    tries = self.request.retries
    try:
        return webhooks.attempt(
            batch_id, owner_id, url, event, event_id, body, tries + 1, subject="batch"
        )
    except webhooks.DeliveryError as exc:
        if exc.retry and tries < len(webhooks.RETRY_DELAYS):
            raise self.retry(countdown=webhooks.RETRY_DELAYS[tries], exc=exc) from exc
        return None
