"""Jobs: status, list, cancel, delete, result files and the zip archive."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, request, url_for

from app import storage, transcripts
from app.access import auth_required, current_user
from app.blueprints import Blueprint, downloads
from app.blueprints.jobs.schemas import (
    EVENTS_DESCRIPTION,
    PREFER_PARAMETER,
    WAITING_REFUSED,
    JobListQuerySchema,
    JobPageSchema,
    JobQuerySchema,
    TranscriptQuerySchema,
    with_url_input,
)
from app.blueprints.jobs.streaming import (
    attachment_header,
    client_gone_check,
    event_stream,
    watch_options,
    zip_response,
)
from app.errors import ServiceError
from app.extensions import db
from app.ratelimits import limit_job_creation
from app.records import Job
from app.services import events
from app.services import jobs as job_service
from app.services.job_document import JobSchema

PREFIX = "/jobs"
blp = Blueprint("jobs", __name__, description="Jobs of every kind: poll, cancel, download.")


@blp.route("", methods=["GET"])
@auth_required()
@blp.arguments(JobListQuerySchema, location="query")
@blp.response(200, JobPageSchema)
def list_jobs(query: dict[str, Any]) -> dict[str, Any]:
    """Your jobs, newest first."""
    items, total = job_service.list_jobs(current_user, **query)
    return {"items": items, "page": query["page"], "per_page": query["per_page"], "total": total}


def preferred_wait(asked: float | None = None) -> tuple[float, bool]:
    """Seconds this request asks to wait (``?wait=``, else ``Prefer: wait=N``),
    capped at ``MAX_WAIT_SECONDS``, and whether it came from ``Prefer``.
    Preferences that do not parse are ignored, as RFC 7240 asks."""
    from_header = False
    if asked is None:
        for preference in request.headers.get("Prefer", "").split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            try:
                asked = float(value.strip().strip('"'))
            except ValueError:
                continue
            if math.isfinite(asked) and asked >= 0:
                from_header = True
                break
            asked = None
    seconds = min(asked or 0.0, float(current_app.config["MAX_WAIT_SECONDS"]))
    return seconds, from_header and seconds > 0


def answer_with_wait(
    job: Job, status: int, headers: dict[str, str] | None = None
) -> tuple[Job, int, dict[str, str]]:
    """``job`` after the wait this request prefers (``Prefer: wait=N``)."""
    headers = dict(headers or {})
    seconds, from_header = preferred_wait()
    granted = True
    if seconds > 0 and not job.is_final:
        # The job exists now: past the caps on waiting, answer it at once.
        job, granted = job_service.wait_for(
            current_user, job.id, seconds, refuse=False, client_gone=client_gone_check()
        )
    if from_header and granted:
        headers["Preference-Applied"] = f"wait={seconds:g}"
    return job, status, headers


@blp.route("/<job_id>", methods=["GET"])
@auth_required()
@blp.arguments(JobQuerySchema, location="query")
@blp.response(200, JobSchema)
@blp.alt_response(404, description="No such job (or not yours).")
@blp.doc(parameters=[PREFER_PARAMETER], responses=WAITING_REFUSED)
def get_job(query: dict[str, Any], job_id: str) -> tuple[Job, int, dict[str, str]]:
    """One job: status, progress, stage, result files, error, metrics.

    With `?wait=N` (or `Prefer: wait=N`) the answer waits until the job has
    ended or N seconds have passed.
    """
    seconds, from_header = preferred_wait(query.get("wait"))
    job, granted = job_service.wait_for(
        current_user, job_id, seconds, client_gone=client_gone_check()
    )
    headers = {"Preference-Applied": f"wait={seconds:g}"} if from_header and granted else {}
    return job, 200, headers


@blp.route("/<job_id>", methods=["DELETE"])
@auth_required()
@blp.response(204)
def delete_job(job_id: str) -> None:
    """Delete a job and its files (a running job is canceled first)."""
    job_service.delete(current_user, job_id)


@blp.route("/<job_id>/cancel", methods=["POST"])
@auth_required()
@blp.response(200, JobSchema)
@blp.alt_response(409, description="The job has already ended.")
def cancel_job(job_id: str) -> Job:
    """Cancel a queued or running job."""
    return job_service.cancel(current_user, job_id)


@blp.route("/<job_id>/events", methods=["GET"])
@auth_required(locations=["headers", "query_string"])
@blp.doc(
    summary="Live status and progress (Server-Sent Events).",
    description=EVENTS_DESCRIPTION,
    parameters=[
        {
            "in": "query",
            "name": "access_token",
            "required": False,
            "schema": {"type": "string"},
            "description": "The access token, for clients that cannot send headers (EventSource).",
        },
        {
            "in": "header",
            "name": "Last-Event-ID",
            "required": False,
            "schema": {"type": "string"},
            "description": "The id of the last event received, when reconnecting.",
        },
    ],
    responses={
        "200": {
            "description": "An event stream; each event's data is a Job.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": (
                        'event: progress\nid: 1-running-0.4200-separating\ndata: {"id": '
                        '"…", "status": "running", "progress": 0.42, "stage": "separating", …}\n\n'
                    ),
                }
            },
        },
        "204": {"description": "Last-Event-ID already names the job's final state."},
        "401": {"description": "No valid access token."},
        "404": {"description": "No such job (or not yours)."},
        **WAITING_REFUSED,
    },
)
def job_events(job_id: str) -> Response:
    """Stream the job's status and progress as Server-Sent Events."""
    job = job_service.get(current_user, job_id)
    if job.is_final and request.headers.get("Last-Event-ID") == events.event_id(job):
        return Response(status=204)
    options = watch_options()
    # A stream holds a server thread until it ends: past the caps, 429/503.
    place = job_service.hold_waiting_place(current_user)
    changes = events.watch(current_user.id, job_id, **options)
    db.session.close()
    schema = JobSchema()
    return event_stream(place, changes, lambda change: schema.dump(change.job))


def _finished_job(job_id: str) -> Job:
    job = job_service.get(current_user, job_id)
    if job.status == "expired":
        raise ServiceError(
            "The job's results have expired and were deleted (RESULT_TTL_HOURS).",
            code="job_expired",
            status=410,
        )
    if job.status != "succeeded":
        raise ServiceError(
            f"The job has no results (status: {job.status}).", code="not_ready", status=409
        )
    return job


@blp.route("/<job_id>/files/<path:name>", methods=["GET"])
@auth_required()
@blp.response(200, description="The file.")
@blp.alt_response(206, description="The one byte range asked for (`Range`).")
@blp.alt_response(304, description="Unchanged (`If-None-Match`, `If-Modified-Since`).")
@blp.alt_response(404, description="No such job or file.")
@blp.alt_response(410, description="The job's results have expired (`job_expired`).")
@blp.alt_response(
    412,
    description="`If-Match` or `If-Unmodified-Since` does not hold (`precondition_failed`).",
)
@blp.alt_response(
    416,
    description="The one byte range asked for starts past the end of the file or does "
    "not parse (`range_not_satisfiable`); `Content-Range: bytes */SIZE` gives the size.",
)
def get_file(job_id: str, name: str) -> Response:
    """Download one result file.

    Conditional and range requests follow RFC 9110: `ETag` (strong) and
    `Last-Modified` validate `If-Match`, `If-Unmodified-Since` (`412` when they
    fail), `If-None-Match`, `If-Modified-Since` (`304`) and `If-Range`. One
    byte range, `bytes=-N` included, is a `206`; a suffix longer than the file
    is the whole file as a `206`. Several ranges, or a unit other than `bytes`,
    get the whole file with `200`.
    """
    job = _finished_job(job_id)
    listed = {f["name"]: f for f in (job.result or {}).get("files", [])}
    if name not in listed:
        raise ServiceError("No such file.", code="not_found", status=404)
    path = storage.result_file(job.id, job.attempts, name)
    return downloads.send_file(
        path, mimetype=listed[name]["content_type"], download_name=_download_name(job, name)
    )


def _download_name(job: Job, name: str) -> str:
    stem = (job.input or {}).get("filename", "audio").rsplit(".", 1)[0][:80] or "audio"
    return f"{stem} - {name}"


@blp.route("/<job_id>/archive", methods=["GET"])
@auth_required()
@blp.response(200, description="A zip of every result file, streamed.")
@blp.alt_response(404, description="No such job.")
@blp.alt_response(410, description="The job's results have expired (`job_expired`).")
def get_archive(job_id: str) -> Response:
    """Download every result file as one zip (streamed, never built in memory)."""
    job = _finished_job(job_id)
    paths = [
        (f["name"], storage.result_file(job.id, job.attempts, f["name"]))
        for f in (job.result or {}).get("files", [])
    ]
    stem = (job.input or {}).get("filename", "audio").rsplit(".", 1)[0][:80] or "audio"
    return zip_response(paths, f"{stem}.zip")


@blp.route("/<job_id>/transcript", methods=["GET"])
@auth_required()
@blp.arguments(TranscriptQuerySchema, location="query")
@blp.response(200, description="The transcript in the asked format.")
@blp.alt_response(404, description="No such job.")
@blp.alt_response(410, description="The job's results have expired (`job_expired`).")
@blp.alt_response(409, description="Not a finished transcription.")
def get_transcript(query: dict[str, Any], job_id: str) -> Response:
    """A transcription's text as JSON, plain text, SRT, WebVTT, TSV or LRC."""
    job = _finished_job(job_id)
    if "segments" not in (job.result or {}):
        raise ServiceError("This job has no transcript.", code="not_a_transcript", status=409)
    fmt = query["format"]
    width, lines = (
        transcripts.line_width(job.result or {}, query["max_line_chars"]),
        query["max_lines"],
    )
    if fmt == "lrc_words":  # enhanced LRC: a time tag before every word
        body, fmt = transcripts.render_enhanced_lrc(job.result or {}, max_line_chars=width), "lrc"
    else:
        body = transcripts.render(job.result or {}, fmt, max_line_chars=width, max_lines=lines)
    response = Response(body, content_type=transcripts.CONTENT_TYPES[fmt])
    if query["download"]:
        stem = (job.input or {}).get("filename", "audio").rsplit(".", 1)[0][:80] or "audio"
        response.headers["Content-Disposition"] = attachment_header(
            f"{stem}.{transcripts.EXTENSIONS[fmt]}"
        )
    return response


Submit = Callable[[Any, dict[str, Any], Any, str | None], Job]


@dataclass(frozen=True)
class UploadKind:
    """How jobs of one kind are created from an upload: the form schema that
    validates the request (``file`` and options) and the service that submits
    one input. ``upload_route`` records each kind's here, by route module, so
    the batch route creates jobs of any kind the same way as its own route."""

    schema: type
    submit: Submit


# Route module (a job kind's ``route`` in app/job_kinds.py) -> how its jobs
# are created. Filled in by ``upload_route`` as the route modules are imported.
UPLOAD_KINDS: dict[str, UploadKind] = {}


def upload_kind(route_module: str) -> UploadKind | None:
    """The upload a kind's route module takes (None: its jobs take no upload)."""
    return UPLOAD_KINDS.get(route_module)


def upload_route(
    blp: Blueprint, schema: type, submit: Submit, *, summary: str, description: str
) -> Callable:
    """``POST`` on the blueprint's root: a multipart upload that starts a job.

    Every job kind is created the same way: validate the form (file included)
    with ``schema``, hand the file stream to the kind's ``submit`` service, and
    answer ``202`` with the job and its ``Location``. A form with a ``file``
    also takes ``url`` instead (``with_url_input``), which reaches the service
    in its params and ``jobs.submit`` records as the input to fetch. The schema
    and service are also what ``POST /batches`` uses for this kind
    (``UPLOAD_KINDS``).
    """
    UPLOAD_KINDS[blp.import_name] = UploadKind(schema, submit)

    @blp.route("", methods=["POST"])
    @auth_required()
    @limit_job_creation
    @blp.arguments(with_url_input(schema), location="multipart")
    @blp.response(202, JobSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(413, description="The upload is larger than MAX_UPLOAD_MB.")
    @blp.alt_response(415, description="The upload is not audio.")
    @blp.doc(summary=summary, description=description, parameters=[PREFER_PARAMETER])
    def create(form: dict[str, Any]) -> tuple[Job, int, dict[str, str]]:
        upload = form.pop("file", None)
        if upload is None:
            job = submit(current_user, form, None, None)
        else:
            job = submit(current_user, form, upload.stream, upload.filename)
        return answer_with_wait(job, 202, {"Location": url_for("jobs.get_job", job_id=job.id)})

    return create
