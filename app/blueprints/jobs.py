"""Jobs: status, list, cancel, delete, result files and the zip archive."""

from __future__ import annotations

import copy
import importlib
import json
import math
import select
import socket
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, request, stream_with_context, url_for
from marshmallow import EXCLUDE, Schema, fields, validate

from app import job_kinds, storage, transcripts
from app.access import auth_required, current_user
from app.blueprints import Blueprint, downloads
from app.blueprints.fields import UTCDateTime
from app.errors import ServiceError
from app.extensions import db
from app.ratelimits import limit_job_creation
from app.records import JOB_STATUSES, Job
from app.services import events
from app.services import jobs as job_service

PREFIX = "/jobs"
blp = Blueprint("jobs", __name__, description="Jobs of every kind: poll, cancel, download.")
BEARER = [{"bearerAuth": []}]


class OneOfKinds(validate.OneOf):
    """``?kind=``: the job-kind table's names, read when asked (app/job_kinds.py)."""

    def __init__(self) -> None:
        super().__init__(job_kinds.names())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return job_kinds.names()

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass

    @property  # type: ignore[override]
    def choices_text(self) -> str:
        return ", ".join(str(choice) for choice in self.choices)

    @choices_text.setter
    def choices_text(self, _value: Any) -> None:
        pass


class JobErrorSchema(Schema):
    code = fields.String(metadata={"example": "audio_decode_failed"})
    message = fields.String()


class InputSchema(Schema):
    filename = fields.String(metadata={"example": "song.mp3"})
    format = fields.String(metadata={"example": "mp3"})
    codec = fields.String(metadata={"example": "mp3"})
    duration = fields.Float(metadata={"description": "Seconds.", "example": 214.3})
    sample_rate = fields.Integer(metadata={"example": 44100})
    channels = fields.Integer(metadata={"example": 2})
    size = fields.Integer(metadata={"description": "Bytes."})


class ResultFileSchema(Schema):
    name = fields.String(metadata={"example": "harmonic.wav"})
    stem = fields.String(metadata={"example": "harmonic"})
    size = fields.Integer(metadata={"description": "Bytes."})
    content_type = fields.String(metadata={"example": "audio/wav"})
    duration = fields.Float(metadata={"description": "Seconds."})
    sample_rate = fields.Integer()
    channels = fields.Integer()
    url = fields.String(metadata={"description": "Download URL (send the Bearer token)."})


class ResultSchema(Schema):
    """What every kind's result holds; each kind adds its own fields in the
    schema the job-kind table names (``result_schema``), and the OpenAPI
    document's ``Result`` has them all (``result_document_schema``)."""

    files = fields.List(fields.Nested(ResultFileSchema))
    archive_url = fields.String(metadata={"description": "All files as one zip."})


def result_document_schema() -> type[Schema]:
    """``Result`` for the OpenAPI document: the common fields and every kind's."""
    declared: dict[str, Any] = dict(ResultSchema._declared_fields)
    for kind in job_kinds.JOB_KINDS:
        if kind.result_schema:
            module, _, name = kind.result_schema.rpartition(".")
            schema = getattr(importlib.import_module(module), name)
            declared.update(schema._declared_fields)
    return Schema.from_dict(
        {name: copy.copy(field) for name, field in declared.items()}, name="ResultSchema"
    )


class MetricsSchema(Schema):
    queue_seconds = fields.Float(metadata={"description": "Time spent waiting for a worker."})
    run_seconds = fields.Float(metadata={"description": "Time the worker spent on the job."})
    audio_seconds = fields.Float(metadata={"description": "Duration of the input audio."})
    real_time_factor = fields.Float(
        allow_none=True, metadata={"description": "run_seconds / audio_seconds."}
    )
    device = fields.String(metadata={"example": "cpu"})
    attempt = fields.Integer()


class WebhookSchema(Schema):
    event_id = fields.String(
        metadata={"description": "Sent as X-AMS-Event-Id, for de-duplication."}
    )
    state = fields.String(
        metadata={"enum": ["pending", "retrying", "delivered", "failed"], "example": "delivered"}
    )
    attempts = fields.Integer(metadata={"description": "Tries so far (at most 5)."})
    last_status = fields.Integer(
        allow_none=True, metadata={"description": "The receiver's HTTP status at the last try."}
    )
    last_error = fields.String(allow_none=True)
    delivered_at = fields.String(allow_none=True, metadata={"example": "2026-01-01T12:00:00Z"})


class CallbackSchema(Schema):
    """The field every job-creating route takes: where to POST the job when it ends."""

    callback_url = fields.String(
        load_default=None,
        validate=validate.Length(max=2048),
        metadata={
            "description": (
                "Webhook: when the job ends (succeeded, failed or canceled) its JSON is "
                "POSTed here, signed (X-AMS-Signature). http or https; the host must "
                "resolve to public addresses."
            ),
            "example": "https://example.com/hooks/ams",
        },
    )


class JobSchema(Schema):
    id = fields.String(metadata={"example": "0b6f7c1e-5d0e-4a52-9a8e-2f3d6c1b9a10"})
    kind = fields.String(metadata={"example": "separation"})
    model = fields.String(attribute="engine", metadata={"example": "hpss"})
    status = fields.String(
        metadata={"enum": list(JOB_STATUSES), "example": "running"},
    )
    progress = fields.Float(metadata={"description": "0..1", "example": 0.42})
    stage = fields.String(allow_none=True, metadata={"example": "separating"})
    queue_position = fields.Method(
        "_queue_position",
        allow_none=True,
        metadata={
            "type": "integer",
            "nullable": True,
            "description": "While queued: 1 is the next job to start in this job's queue when "
            "a worker is free (every user's jobs count, as a number only); null otherwise.",
            "example": 2,
        },
    )
    params = fields.Dict()
    input = fields.Nested(InputSchema, allow_none=True)
    result = fields.Method(
        "_result",
        allow_none=True,
        metadata={"allOf": [{"$ref": "#/components/schemas/Result"}], "nullable": True},
    )
    error = fields.Nested(JobErrorSchema, allow_none=True)
    metrics = fields.Nested(MetricsSchema, allow_none=True)
    attempts = fields.Integer()
    created_at = UTCDateTime()
    started_at = UTCDateTime(allow_none=True)
    finished_at = UTCDateTime(allow_none=True)
    expires_at = UTCDateTime(allow_none=True)
    callback_url = fields.String(allow_none=True)
    webhook = fields.Nested(
        WebhookSchema, allow_none=True, metadata={"description": "The webhook's delivery."}
    )
    url = fields.Method("_url")
    events_url = fields.Method("_events_url")

    def _queue_position(self, job: Job) -> int | None:
        return job_service.queue_position(job)

    def _events_url(self, job: Job) -> str:
        return url_for("jobs.job_events", job_id=job.id)

    def _url(self, job: Job) -> str:
        return url_for("jobs.get_job", job_id=job.id)

    def _result(self, job: Job) -> dict[str, Any] | None:
        if job.status != "succeeded" or not job.result:
            return None
        result = dict(job.result)
        result["files"] = [
            {**f, "url": url_for("jobs.get_file", job_id=job.id, name=f["name"])}
            for f in result.get("files", [])
        ]
        if result["files"]:
            result["archive_url"] = url_for("jobs.get_archive", job_id=job.id)
        if job.kind == "transcription":
            result["transcript_url"] = url_for("jobs.get_transcript", job_id=job.id)
        return result


class JobListQuerySchema(Schema):
    # Bounded so page * per_page stays a valid SQL OFFSET.
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    kind = fields.String(validate=OneOfKinds())


class JobPageSchema(Schema):
    items = fields.List(fields.Nested(JobSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


@blp.route("", methods=["GET"])
@auth_required()
@blp.arguments(JobListQuerySchema, location="query")
@blp.response(200, JobPageSchema)
@blp.doc(security=BEARER)
def list_jobs(query: dict[str, Any]) -> dict[str, Any]:
    """Your jobs, newest first."""
    items, total = job_service.list_jobs(current_user, **query)
    return {"items": items, "page": query["page"], "per_page": query["per_page"], "total": total}


class JobQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # cache-busting parameters and the like are ignored

    wait = fields.Float(
        validate=validate.Range(min=0, max=3600),
        metadata={
            "description": (
                "Seconds to wait for the job to end before answering (at most "
                "`MAX_WAIT_SECONDS`, 60 by default): the answer comes the moment the job "
                "ends, so one request replaces a polling loop. `Prefer: wait=N` "
                "(RFC 7240) does the same."
            ),
            "example": 30,
        },
    )


WAITING_REFUSED = {
    "429": {
        "description": "too_many_waiting_requests: this user already holds "
        "MAX_WAITING_PER_USER waiting requests (streams and waits); see Retry-After."
    },
    "503": {
        "description": "server_busy: MAX_WAITING_REQUESTS requests already wait; see Retry-After."
    },
}


def client_gone_check() -> Callable[[], bool]:
    """A check, cheap enough to call every second, of whether this request's
    client has closed its connection: a waiting request or an event stream
    then gives its server thread back at once instead of at its next write.
    Needs the socket gunicorn puts in the WSGI environ; elsewhere (tests'
    clients, other servers) it always says no."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None or not hasattr(select, "poll"):
        return lambda: False
    try:
        fd = sock.fileno()
    except OSError:
        return lambda: True
    hangup = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)

    def gone() -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN | hangup)
        for _, mask in poller.poll(0):
            if mask & hangup:
                return True
            if mask & select.POLLIN and not hasattr(select, "POLLRDHUP"):
                try:  # without POLLRDHUP: readable with nothing to read is EOF
                    return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    return True
        return False

    return gone


PREFER_DESCRIPTION = (
    "`wait=N` (RFC 7240): wait up to N seconds (at most `MAX_WAIT_SECONDS`) for the job "
    "to end before answering; the job is then answered as it is. Honoured waits are "
    "echoed in `Preference-Applied`."
)
PREFER_PARAMETER = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"type": "string", "example": "wait=30"},
    "description": PREFER_DESCRIPTION,
}


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
@blp.doc(security=BEARER, parameters=[PREFER_PARAMETER], responses=WAITING_REFUSED)
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
@blp.doc(security=BEARER)
def delete_job(job_id: str) -> None:
    """Delete a job and its files (a running job is canceled first)."""
    job_service.delete(current_user, job_id)


@blp.route("/<job_id>/cancel", methods=["POST"])
@auth_required()
@blp.response(200, JobSchema)
@blp.alt_response(409, description="The job has already ended.")
@blp.doc(security=BEARER)
def cancel_job(job_id: str) -> Job:
    """Cancel a queued or running job."""
    return job_service.cancel(current_user, job_id)


EVENTS_DESCRIPTION = """\
Server-Sent Events (`text/event-stream`) until the job ends, instead of polling.

- `event: status` (the first event, and whenever `status` changes) or
  `event: progress` (`progress` or `stage` changed); `data:` is the job JSON
  exactly as `GET /api/v1/jobs/{id}` returns it; `id:` names that state.
- A comment line (`: keepalive`) every `SSE_HEARTBEAT_SECONDS` (15 s).
- The stream closes after the event with the final status
  (`succeeded`, `failed`, `canceled`).
- Reconnecting with `Last-Event-ID` (browsers do it by themselves) sends only
  states the client has not seen; if it names the final state, the answer is
  `204` (which tells `EventSource` to stop reconnecting).

Browsers' `EventSource` cannot send an `Authorization` header, so this route
(and only this one) also accepts the access token as `?access_token=`. Such
URLs can end up in proxy logs and browser history: the token is a short-lived
access token (15 min), `make run` logs request paths without query strings,
and clients that can send headers (fetch streaming, curl) should.

```
curl -N -H "Authorization: Bearer $TOKEN" http://localhost:5000/api/v1/jobs/$JOB/events
```
"""


@blp.route("/<job_id>/events", methods=["GET"])
@auth_required(locations=["headers", "query_string"])
@blp.doc(
    security=BEARER,
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
    last = request.headers.get("Last-Event-ID") or None
    if job.is_final and last == events.event_id(job):
        return Response(status=204)
    owner_id = current_user.id
    config = current_app.config
    options = {
        "last_event_id": last,
        "poll_seconds": float(config["SSE_POLL_SECONDS"]),
        "heartbeat_seconds": float(config["SSE_HEARTBEAT_SECONDS"]),
        "redis_url": config.get("REDIS_URL"),
        "notify_dir": config.get("NOTIFY_DIR"),
        "client_gone": client_gone_check(),
    }
    # A stream holds a server thread until it ends: past the caps, 429/503.
    place = job_service.hold_waiting_place(current_user)
    # The stream may stay open for minutes: hold no connection while it waits.
    db.session.close()
    schema = JobSchema()

    def generate() -> Iterator[str]:
        try:
            yield "retry: 3000\n\n"
            for change in events.watch(owner_id, job_id, **options):
                if change is None:
                    yield ": keepalive\n\n"
                    continue
                data = json.dumps(schema.dump(change.job), separators=(",", ":"), sort_keys=True)
                db.session.close()  # queue_position read the database
                yield f"event: {change.event}\nid: {change.id}\ndata: {data}\n\n"
        finally:
            place.release()

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    # Also when the body was never iterated (the generator's own finally then never runs).
    response.call_on_close(place.release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


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
@blp.doc(security=BEARER)
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


class _ZipSink:
    """A write-only file object whose bytes are handed to the response as they come."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


@blp.route("/<job_id>/archive", methods=["GET"])
@auth_required()
@blp.response(200, description="A zip of every result file, streamed.")
@blp.alt_response(404, description="No such job.")
@blp.alt_response(410, description="The job's results have expired (`job_expired`).")
@blp.doc(security=BEARER)
def get_archive(job_id: str) -> Response:
    """Download every result file as one zip (streamed, never built in memory)."""
    job = _finished_job(job_id)
    paths = [
        (f["name"], storage.result_file(job.id, job.attempts, f["name"]))
        for f in (job.result or {}).get("files", [])
    ]

    def generate() -> Iterator[bytes]:
        sink = _ZipSink()
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
            for arcname, path in paths:
                with (
                    archive.open(arcname, mode="w", force_zip64=True) as entry,
                    open(path, "rb") as fh,
                ):
                    while chunk := fh.read(1024 * 1024):
                        entry.write(chunk)
                        yield from sink.drain()
                yield from sink.drain()
        yield from sink.drain()

    stem = (job.input or {}).get("filename", "audio").rsplit(".", 1)[0][:80] or "audio"
    response = Response(stream_with_context(generate()), mimetype="application/zip")
    response.headers["Content-Disposition"] = attachment_header(f"{stem}.zip")
    return response


def attachment_header(name: str) -> str:
    """``Content-Disposition`` for any file name: an ASCII fallback plus the
    RFC 6266 ``filename*`` form, as ``send_file`` does, so names like ``曲.mp3``
    survive and never break the header."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = "".join(c for c in ascii_name if c.isprintable() and c not in '"\\') or "download"
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class TranscriptQuerySchema(Schema):
    format = fields.String(
        load_default="json",
        validate=validate.OneOf([*transcripts.FORMATS, "lrc_words"]),
        metadata={"description": "json, txt, srt, vtt, tsv, lrc or lrc_words (enhanced LRC)."},
    )
    download = fields.Boolean(
        load_default=False, metadata={"description": "Send as an attachment."}
    )
    max_line_chars = fields.Integer(
        load_default=42,
        validate=validate.Range(min=10, max=200),
        metadata={
            "description": "Characters per subtitle line (srt, vtt) and per LRC line; longer "
            "segments are split at word boundaries, with word times when the job has them."
        },
    )
    max_lines = fields.Integer(
        load_default=2,
        validate=validate.Range(min=1, max=4),
        metadata={"description": "Lines per subtitle cue (srt, vtt)."},
    )


@blp.route("/<job_id>/transcript", methods=["GET"])
@auth_required()
@blp.arguments(TranscriptQuerySchema, location="query")
@blp.response(200, description="The transcript in the asked format.")
@blp.alt_response(404, description="No such job.")
@blp.alt_response(410, description="The job's results have expired (`job_expired`).")
@blp.alt_response(409, description="Not a finished transcription.")
@blp.doc(security=BEARER)
def get_transcript(query: dict[str, Any], job_id: str) -> Response:
    """A transcription's text as JSON, plain text, SRT, WebVTT, TSV or LRC."""
    job = _finished_job(job_id)
    if "segments" not in (job.result or {}):
        raise ServiceError("This job has no transcript.", code="not_a_transcript", status=409)
    fmt = query["format"]
    width, lines = query["max_line_chars"], query["max_lines"]
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


def upload_route(
    blp: Blueprint, schema: type, submit: Submit, *, summary: str, description: str
) -> Callable:
    """``POST`` on the blueprint's root: a multipart upload that starts a job.

    Every job kind is created the same way: validate the form (file included)
    with ``schema``, hand the file stream to the kind's ``submit`` service, and
    answer ``202`` with the job and its ``Location``.
    """

    @blp.route("", methods=["POST"])
    @auth_required()
    @limit_job_creation
    @blp.arguments(schema, location="multipart")
    @blp.response(202, JobSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(413, description="The upload is larger than MAX_UPLOAD_MB.")
    @blp.alt_response(415, description="The upload is not audio.")
    @blp.doc(
        security=BEARER, summary=summary, description=description, parameters=[PREFER_PARAMETER]
    )
    def create(form: dict[str, Any]) -> tuple[Job, int, dict[str, str]]:
        upload = form.pop("file")
        job = submit(current_user, form, upload.stream, upload.filename)
        return answer_with_wait(job, 202, {"Location": url_for("jobs.get_job", job_id=job.id)})

    return create
