"""A job kind that lives in the tests: its service, task and route, which the
job-kind table names in one entry (tests/test_job_kinds.py). The job reads
its input's length back: small, but a real job through the real machinery."""

from __future__ import annotations

from typing import IO, Any

from celery import shared_task

from app import audio, storage
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import CallbackSchema, upload_route
from app.job_kinds import JobKind
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, ProgressReporter, execute

ECHO = JobKind(
    name="echo",
    route="tests.support.echo_kind",
    task="tests.support.echo_kind.echo",
    queue="echoes",
    time_limits=("ECHO_TIME_LIMIT",),
    runner="tests.support.echo_kind.run_job",
)

# ------------------------------------------------------------------ service


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    return jobs.submit(owner, "echo", "echo", params, upload, filename)


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    report(0.5, "listening")
    info = audio.probe(storage.input_path(job.id))
    return {"files": [], "heard_seconds": round(info.duration, 3)}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)


# ------------------------------------------------------------------ task


@shared_task(name="tests.support.echo_kind.echo", ignore_result=True)
def echo(job_id: str) -> str | None:
    return run_job(job_id)


# ------------------------------------------------------------------ route

PREFIX = "/echoes"
blp = Blueprint("echoes", __name__, description="Hear how long a file is.")


class EchoFormSchema(CallbackSchema):
    file = FileUpload(required=True)


create_echo = upload_route(
    blp, EchoFormSchema, submit, summary="Start an echo job.", description="Test kind."
)
