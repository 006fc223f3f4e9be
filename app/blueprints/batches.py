"""Batches: many inputs, one set of options, one job each (app/services/batches.py).

Every job kind whose route takes an upload takes batches: the kind's form
schema (``upload_route``, app/blueprints/jobs/routes.py) checks the options
once, and its submit service creates each job.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request, url_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app import job_kinds
from app.access import auth_required, current_user
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import upload_kind
from app.blueprints.jobs.schemas import WAITING_REFUSED
from app.blueprints.jobs.streaming import event_stream, watch_options, zip_response
from app.extensions import db
from app.ratelimits import limit_job_creation
from app.services import batches as batch_service
from app.services import jobs as job_service
from app.services.batch_document import BatchSchema, BatchView

PREFIX = "/batches"
blp = Blueprint(
    "batches",
    __name__,
    description="Many inputs with one set of options: a job each, followed as one.",
)


def batch_kinds() -> tuple[str, ...]:
    """The job kinds a batch may be of: those whose route takes an upload."""
    return tuple(kind.name for kind in job_kinds.JOB_KINDS if upload_kind(kind.route))


def _check_kind(name: str) -> None:
    if name not in batch_kinds():
        raise ValidationError(f"Must be one of: {', '.join(batch_kinds())}.")


class BatchFormSchema(Schema):
    """What every batch has; the rest of the form is the kind's options."""

    class Meta:
        unknown = EXCLUDE  # the kind's options: its own form schema checks them

    kind = fields.String(
        required=True,
        validate=_check_kind,
        metadata={
            "description": "The job kind: any kind whose route takes an upload "
            "(separation, transcription, alignment, karaoke, analysis).",
            "example": "separation",
        },
    )
    file: fields.List[Any] = fields.List(
        FileUpload(),
        load_default=list,
        metadata={
            "description": "The inputs: one file part each (repeat `file`). Each becomes a "
            "job, checked as the kind's own route checks its upload.",
        },
    )
    url: fields.List[Any] = fields.List(
        fields.String(),
        load_default=list,
        metadata={
            "description": "More inputs: one http(s) address each (repeat `url`), fetched by "
            "the worker as the kind's own route fetches its `url`. Files and urls may be mixed.",
        },
    )


class BatchListQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class BatchQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(
        load_default=1,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "The page of the batch's `jobs`."},
    )
    per_page = fields.Integer(
        load_default=100,
        validate=validate.Range(min=0, max=500),
        metadata={"description": "Jobs listed per page (0: none, only the counts)."},
    )


class BatchPageSchema(Schema):
    items = fields.List(fields.Nested(BatchSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


@blp.before_request
def _batch_body_limits() -> None:
    """A batch's body holds many uploads: it gets MAX_BATCH_UPLOAD_MB and a
    form part per input instead of one upload's limits (set before the form
    is read)."""
    if request.method != "POST" or request.endpoint != "batches.create_batch":
        return
    config = current_app.config
    inputs = int(config["MAX_BATCH_INPUTS"])
    # Beyond the files: the text fields and each part's headers.
    request.max_content_length = (
        int(config["MAX_BATCH_UPLOAD_MB"]) * 1024 * 1024 + 64 * 1024 + 1024 * inputs
    )
    request.max_form_parts = inputs + int(config["MAX_FORM_PARTS"])


CREATE_DESCRIPTION = """\
One request, many inputs: send `kind`, that kind's options (the fields of its
own route, e.g. `model` for separations) and one `file` part or `url` field
per input (fetched by the worker, as the kind's route does with `url`). The
options are checked once, by the kind's own rules (the same `422`s); nothing is
stored when they fail. Each input then becomes a job of the batch. An input
the upload checks refuse (not audio, too long, broken...) becomes a job that
is `failed` at once, with the `error.code` and message its own route would
have answered; the others run. `callback_url` is the batch's: one signed
delivery when the whole batch has ended.

At most `MAX_BATCH_INPUTS` (500) inputs and `MAX_BATCH_UPLOAD_MB` (4096) in
all; each input is held to `MAX_UPLOAD_MB` and the storage quota. The batch
counts as one request against `JOB_RATE_LIMIT`. Its jobs take their turns on
the workers as any of the user's jobs do (`MAX_RUNNING_JOBS` at a time).

```
curl -H "Authorization: Bearer $TOKEN" -F kind=separation -F model=htdemucs \\
     -F file=@a.mp3 -F file=@b.mp3 http://localhost:5000/api/v1/batches
```
"""


@blp.route("", methods=["POST"])
@auth_required()
@limit_job_creation
@blp.arguments(BatchFormSchema, location="multipart")
@blp.response(202, BatchSchema, headers={"Location": {"schema": {"type": "string"}}})
@blp.alt_response(413, description="The body is larger than MAX_BATCH_UPLOAD_MB.")
@blp.doc(summary="Start a batch of jobs.", description=CREATE_DESCRIPTION)
def create_batch(form: dict[str, Any]) -> tuple[BatchView, int, dict[str, str]]:
    """Start a batch: one job per input, one set of options."""
    kind = job_kinds.get(form["kind"])
    upload = upload_kind(kind.route)
    assert upload is not None  # the form's kind check
    options = blp.ARGUMENTS_PARSER.parse(
        upload.schema(partial=("file",)), request, location="batch_options"
    )
    options.pop("file", None)
    inputs = [batch_service.Input(part.stream, part.filename) for part in form["file"]]
    inputs += [batch_service.Input(None, None, url=url) for url in form["url"]]
    batch = batch_service.create(current_user, kind.name, upload.submit, options, inputs)
    return batch, 202, {"Location": url_for("batches.get_batch", batch_id=batch.batch.id)}


@blp.route("", methods=["GET"])
@auth_required()
@blp.arguments(BatchListQuerySchema, location="query")
@blp.response(200, BatchPageSchema)
def list_batches(query: dict[str, Any]) -> dict[str, Any]:
    """Your batches, newest first (counts and status; `jobs` is not listed here)."""
    items, total = batch_service.list_batches(current_user, **query)
    return {"items": items, "page": query["page"], "per_page": query["per_page"], "total": total}


@blp.route("/<batch_id>", methods=["GET"])
@auth_required()
@blp.arguments(BatchQuerySchema, location="query")
@blp.response(200, BatchSchema)
@blp.alt_response(404, description="No such batch (or not yours).")
def get_batch(query: dict[str, Any], batch_id: str) -> BatchView:
    """One batch: status, progress, counts per job status and a page of its jobs."""
    return batch_service.view(current_user, batch_id, **query)


@blp.route("/<batch_id>/cancel", methods=["POST"])
@auth_required()
@blp.response(200, BatchSchema)
@blp.alt_response(404, description="No such batch (or not yours).")
@blp.alt_response(409, description="Every job of the batch has already ended.")
def cancel_batch(batch_id: str) -> BatchView:
    """Cancel every job of the batch that has not ended."""
    return batch_service.cancel(current_user, batch_id)


@blp.route("/<batch_id>", methods=["DELETE"])
@auth_required()
@blp.response(204)
@blp.alt_response(404, description="No such batch (or not yours).")
def delete_batch(batch_id: str) -> None:
    """Delete the batch, all its jobs and their files (running ones are canceled first)."""
    batch_service.delete(current_user, batch_id)


@blp.route("/<batch_id>/archive", methods=["GET"])
@auth_required()
@blp.response(200, description="A zip of every result, a folder per input, streamed.")
@blp.alt_response(404, description="No such batch (or not yours).")
@blp.alt_response(409, description="No job of the batch has results yet (`not_ready`).")
def get_batch_archive(batch_id: str) -> Response:
    """Download the results of every succeeded job as one zip: a folder per
    input, named after it (`song/`, and `song (2)/` for a second input of the
    same name). Jobs that failed, were canceled or have not ended are left out."""
    _batch, entries = batch_service.archive_entries(current_user, batch_id)
    return zip_response(entries, f"batch-{batch_id[:8]}.zip")


EVENTS_DESCRIPTION = """\
Server-Sent Events until the batch ends: each event's `data:` is the batch
JSON as `GET /api/v1/batches/{id}` returns it (its first 100 jobs). `event:
status` when the batch's status changes (and first), `event: progress` when
its counts or progress do; `id:` names that state, so a reconnect with
`Last-Event-ID` sends only what is new (`204` when it names the final state).
The stream ends after the event with the final status. Keepalives, the
`?access_token=` parameter and the caps on waiting requests are those of a
job's stream.

```
curl -N -H "Authorization: Bearer $TOKEN" http://localhost:5000/api/v1/batches/$BATCH/events
```
"""


@blp.route("/<batch_id>/events", methods=["GET"])
@auth_required(locations=["headers", "query_string"])
@blp.doc(
    summary="Live status of a batch (Server-Sent Events).",
    description=EVENTS_DESCRIPTION,
    responses={
        "200": {
            "description": "An event stream; each event's data is a Batch.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "204": {"description": "Last-Event-ID already names the batch's final state."},
        "404": {"description": "No such batch (or not yours)."},
        **WAITING_REFUSED,
    },
)
def batch_events(batch_id: str) -> Response:
    """Stream the batch's status, counts and progress as Server-Sent Events."""
    state = batch_service.view(current_user, batch_id, per_page=0)
    if state.is_final and request.headers.get("Last-Event-ID") == batch_service.event_id(state):
        return Response(status=204)
    options = watch_options()
    place = job_service.hold_waiting_place(current_user)
    changes = batch_service.watch(current_user.id, batch_id, **options)
    db.session.close()
    return event_stream(place, changes, lambda change: change.document)
