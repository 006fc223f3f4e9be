"""The jobs routes' request schemas and documentation, and the ``callback_url``
field every job-creating route takes."""

from __future__ import annotations

import copy
import importlib
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from app import job_kinds, transcripts
from app.records import JOB_STATUSES
from app.services import url_input
from app.services.job_document import JobSchema, ResultSchema


class OneOfKinds(validate.OneOf):
    """``?kind=``: the job-kind table's names, read when asked (app/job_kinds.py)."""

    def __init__(self) -> None:
        super().__init__(job_kinds.names())

    @property  # type: ignore[override]  # OneOf stores choices as an attribute; read live here
    def choices(self) -> tuple[str, ...]:
        return job_kinds.names()

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass

    @property
    def choices_text(self) -> str:
        return ", ".join(str(choice) for choice in self.choices)

    @choices_text.setter
    def choices_text(self, _value: Any) -> None:
        pass


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


class UrlInputSchema(Schema):
    """``url``: the audio's address instead of a ``file`` part; exactly one of
    the two. ``upload_route`` adds it to every form with a ``file``."""

    url = fields.String(
        load_default=None,
        validate=validate.Length(max=2048),
        metadata={
            "description": (
                "Instead of `file`: an http or https URL of the audio, fetched by the "
                "worker (at most MAX_UPLOAD_MB, within URL_FETCH_TIMEOUT_SECONDS) and "
                "checked as an upload is. The host must resolve to public addresses, "
                "also after each redirect."
            ),
            "example": "https://example.com/music/song.mp3",
        },
    )

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_kwargs: Any) -> None:
        has_file, has_url = data.get("file") is not None, bool(data.get("url"))
        if has_file and has_url:
            message = url_input.BOTH_GIVEN
        elif not has_file and not has_url:
            message = url_input.NONE_GIVEN
        else:
            return
        raise ValidationError({"file": [message], "url": [message]})


def with_url_input(schema: type[Schema]) -> type[Schema]:
    """A job form whose required ``file`` may be replaced by ``url``: the same
    fields (under the same name, so the OpenAPI document's component keeps
    it), ``file`` optional, plus ``UrlInputSchema``. A form without ``file``
    is returned as it is."""
    declared = schema._declared_fields
    if "file" not in declared or "url" in declared:
        return schema
    upload = copy.copy(declared["file"])
    upload.required = False
    derived = type(schema.__name__, (UrlInputSchema, schema), {"file": upload})
    derived.__doc__ = schema.__doc__
    return derived


class JobListQuerySchema(Schema):
    # Bounded so page * per_page stays a valid SQL OFFSET.
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    kind = fields.String(validate=OneOfKinds())
    batch_id = fields.String(metadata={"description": "Only the jobs of this batch."})


class JobPageSchema(Schema):
    items = fields.List(fields.Nested(JobSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


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
        load_default=None,
        validate=validate.Range(min=10, max=200),
        metadata={
            "description": "Characters per subtitle line (srt, vtt) and per LRC line; longer "
            "segments are split at word boundaries, with word times when the job has them. "
            "Default 42 for transcriptions; an alignment keeps the lyrics' own lines unless "
            "this is given."
        },
    )
    max_lines = fields.Integer(
        load_default=2,
        validate=validate.Range(min=1, max=4),
        metadata={"description": "Lines per subtitle cue (srt, vtt)."},
    )
