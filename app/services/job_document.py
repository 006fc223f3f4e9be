"""A job as clients see it: the JSON of ``GET /api/v1/jobs/{id}``, also what
event streams send and webhooks deliver.

It lives below the routes so that a service (a webhook scheduled by a worker)
serialises a job the same way without a request: URLs are built from the
app's URL map (``path_for``), relative as they are in answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import current_app, has_request_context, request, url_for
from marshmallow import Schema, fields, missing, utils
from marshmallow.decorators import POST_DUMP, PRE_DUMP

from app.records import JOB_STATUSES, Job


def path_for(endpoint: str, **values: Any) -> str:
    """``url_for``'s path, inside a request or not (a worker has none)."""
    if has_request_context():
        return url_for(endpoint, **values)
    return current_app.url_map.bind("localhost").build(endpoint, values)


# A job id no job has, where templates put the real one; and the ids jobs get.
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# Templates kept per app: (endpoint, script root, other values) -> the path
# around the job id. File names are the only other values, a handful per kind.
_JOB_PATH_TEMPLATES = 1024


def job_path(endpoint: str, job_id: str, **values: str) -> str:
    """``path_for(endpoint, job_id=job_id, **values)``, from a template built
    once per app, endpoint, script root and other values: every job answer
    carries several such paths, and building each through the URL map cost
    more than the rest of the document. A job id is a UUID, which a URL
    carries as it is; anything else is built the usual way."""
    if not JOB_ID.fullmatch(job_id):
        return path_for(endpoint, job_id=job_id, **values)
    root = request.script_root if has_request_context() else None
    templates = current_app.extensions.setdefault("job_paths", {})
    key = (endpoint, root, *sorted(values.items()))
    template = templates.get(key)
    if template is None:
        template = path_for(endpoint, job_id=PLACEHOLDER_ID, **values).split(PLACEHOLDER_ID)
        if len(templates) >= _JOB_PATH_TEMPLATES:
            templates.clear()
        templates[key] = template
    if len(template) != 2:
        return path_for(endpoint, job_id=job_id, **values)
    return f"{template[0]}{job_id}{template[1]}"


class UTCDateTime(fields.DateTime):
    """Timestamps are stored as naive UTC; clients get them with the offset
    spelled out (``2026-11-24T22:16:12+00:00``), so no one reads them as local time."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)


def queue_position(job: Job) -> int | None:
    """Where a queued job stands in its queue (``fair_queue.queue_position``)."""
    from app.services.fair_queue import queue_position as position

    return position(job)


_PLAIN: dict[type, Callable[[Any], Any]] = {
    fields.String: utils.ensure_text_type,
    fields.Integer: int,
    fields.Float: float,
}


def _utc_iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def compile_dump(schema: Schema) -> Callable[[Any], dict[str, Any]] | None:
    """``schema.dump`` for one object, without marshmallow's generic path
    through every field: status polls dump a job on every request. None when
    the schema uses what this does not reproduce (dump hooks, ``many``).

    The plain field types (string, integer, float, the UTC timestamps, plain
    dicts, nested plain schemas) are converted here as marshmallow converts
    them; any other field is serialised by the field itself. Values are read
    with the schema's own accessor, so objects and dicts behave as in
    marshmallow, and absent values are left out as there.
    """
    if schema.many or schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP]:
        return None
    get = schema.get_attribute
    steps: list[tuple[str, str, Callable[[Any], Any] | None, fields.Field]] = []
    for name, field in schema.dump_fields.items():
        key = field.data_key if field.data_key is not None else name
        attr = field.attribute if field.attribute is not None else name
        convert: Callable[[Any], Any] | None = None
        if field.dump_default is missing and "." not in attr:
            kind = type(field)
            if kind in _PLAIN and not getattr(field, "as_string", False):
                convert = _PLAIN[kind]
            elif (
                kind is UTCDateTime
                and isinstance(field, UTCDateTime)
                and field.format in (None, "iso", "iso8601")
            ):
                convert = _utc_iso
            elif isinstance(field, fields.Dict) and kind is fields.Dict:
                if field.key_field is None and field.value_field is None:
                    convert = dict
            elif (
                isinstance(field, fields.Nested)
                and kind is fields.Nested
                and not field.many
                and isinstance(field.schema, Schema)
            ):
                convert = compile_dump(field.schema)
        steps.append((key, attr, convert, field))

    def dump(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr, convert, field in steps:
            if convert is None:
                value = field.serialize(attr, obj, accessor=get)
            else:
                value = get(obj, attr, missing)
                if value is not None and value is not missing:
                    value = convert(value)
            if value is not missing:
                out[key] = value
        return out

    return dump


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
    url = fields.String(
        metadata={
            "description": "Input by URL: where the audio is fetched from. Until the "
            "worker has fetched it, the input has only `url` and `filename`.",
            "example": "https://example.com/music/song.mp3",
        }
    )


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
    document's ``Result`` has them all (app/blueprints/jobs/schemas.py)."""

    files = fields.List(fields.Nested(ResultFileSchema))
    archive_url = fields.String(metadata={"description": "All files as one zip."})


class MetricsSchema(Schema):
    queue_seconds = fields.Float(metadata={"description": "Time spent waiting for a worker."})
    run_seconds = fields.Float(
        metadata={"description": "Time the worker spent on the job (an input's download apart)."}
    )
    fetch_seconds = fields.Float(
        metadata={"description": "Input by URL: time the worker spent downloading it."}
    )
    audio_seconds = fields.Float(metadata={"description": "Duration of the input audio."})
    real_time_factor = fields.Float(
        allow_none=True, metadata={"description": "run_seconds / audio_seconds."}
    )
    device = fields.String(metadata={"example": "cpu"})
    attempt = fields.Integer()
    decoding = fields.String(
        metadata={
            "description": "Transcription and karaoke: the Whisper decoder that ran.",
            "enum": ["sequential", "batched"],
        }
    )
    separation_path = fields.String(
        metadata={
            "description": "Separations: how the model ran: `batched` (several chunks per "
            "network call) or `plain` (one at a time, as the demucs CLI).",
            "example": "plain",
        }
    )
    precision = fields.String(
        metadata={
            "description": "Separations: the number format the network ran in: `float32`, "
            "`bfloat16` (on a CPU that multiplies it natively, `SEPARATION_PRECISION`) or "
            "`float16` (a RoFormer/MDX23C model's mixed precision on a GPU). An ensemble "
            "whose members differ lists theirs, comma-separated.",
            "example": "float32",
        }
    )
    threads = fields.Integer(
        allow_none=True,
        metadata={
            "description": "CPU threads the model ran with: CTranslate2's for Whisper "
            "(transcription, karaoke), torch's intra-op threads for separations."
        },
    )
    batch_size = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Chunks per batch: Whisper's when batched (null when sequential); "
            "a separation's chunks per network call.",
            "example": 1,
        },
    )


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


class JobSchema(Schema):
    id = fields.String(metadata={"example": "0b6f7c1e-5d0e-4a52-9a8e-2f3d6c1b9a10"})
    kind = fields.String(metadata={"example": "separation"})
    model = fields.String(metadata={"example": "hpss"})
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
    batch_id = fields.String(
        allow_none=True,
        metadata={"description": "The batch the job was submitted in (`/api/v1/batches/{id}`)."},
    )
    url = fields.Method("_url")
    events_url = fields.Method("_events_url")

    def dump(self, obj: Any, *, many: bool | None = None) -> Any:
        """Marshmallow's dump, compiled for one job (``compile_dump``): the
        same JSON, for a fraction of the time a status poll used to spend."""
        if many or (many is None and self.many):
            return super().dump(obj, many=many)
        fast = self.__dict__.get("_fast_dump", False)
        if fast is False:
            fast = self.__dict__["_fast_dump"] = compile_dump(self)
        if fast is None:
            return super().dump(obj, many=many)
        return fast(obj)

    def _queue_position(self, job: Job) -> int | None:
        return queue_position(job)

    def _events_url(self, job: Job) -> str:
        return job_path("jobs.job_events", job.id)

    def _url(self, job: Job) -> str:
        return job_path("jobs.get_job", job.id)

    def _result(self, job: Job) -> dict[str, Any] | None:
        if job.status != "succeeded" or not job.result:
            return None
        result = dict(job.result)
        result["files"] = [
            {**f, "url": job_path("jobs.get_file", job.id, name=f["name"])}
            for f in result.get("files", [])
        ]
        if result["files"]:
            result["archive_url"] = job_path("jobs.get_archive", job.id)
        if job.kind == "transcription":
            result["transcript_url"] = job_path("jobs.get_transcript", job.id)
        return result
