"""Celery tasks, one module per capability; which task runs which job kind,
and on which queue, is the job-kind table's (app/job_kinds.py)."""

from __future__ import annotations

import importlib

from app import job_kinds


def import_task_modules() -> None:
    """Register every task: the job kinds' task modules, webhooks and maintenance."""
    for module in (*job_kinds.task_modules(), "app.tasks.webhooks", "app.tasks.maintenance"):
        importlib.import_module(module)
