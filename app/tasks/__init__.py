"""Celery tasks, one module per capability; which task runs which job kind,
and on which queue, is the job-kind table's (app/job_kinds.py)."""

from __future__ import annotations

import importlib

from celery import Task, current_app

from app import job_kinds


def import_task_modules() -> None:
    """Register every task: the job kinds' task modules, webhooks and maintenance."""
    for module in (*job_kinds.task_modules(), "app.tasks.webhooks", "app.tasks.maintenance"):
        importlib.import_module(module)


def task_for_kind(kind: str) -> Task:
    """The Celery task that runs jobs of ``kind``."""
    return current_app.tasks[job_kinds.get(kind).task]


def queue_for_kind(kind: str) -> str:
    """The Celery queue jobs of ``kind`` go to."""
    return job_kinds.queue_for(kind)
