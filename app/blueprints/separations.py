"""Separation jobs: upload a song, get stems."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_jwt_extended import current_user, jwt_required
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import BEARER, JobSchema
from app.models import registry
from app.records import Job
from app.services import separation

PREFIX = "/separations"
blp = Blueprint("separations", __name__, description="Split a song into stems (asynchronous jobs).")


class SeparationFormSchema(Schema):
    file = FileUpload(
        required=True,
        metadata={"description": "Audio file (mp3, wav, flac, ogg, opus, m4a, ...)."},
    )
    model = fields.String(
        load_default=None,
        validate=validate.OneOf(list(registry.SEPARATION_ENGINES)),
        metadata={"description": "Separation engine; see GET /api/v1/models.", "example": "hpss"},
    )
    output_format = fields.String(
        load_default="wav",
        validate=validate.OneOf(audio.OUTPUT_FORMATS),
        metadata={"description": "Format of the stems.", "example": "wav"},
    )
    bit_depth = fields.String(
        load_default="16",
        validate=validate.OneOf(audio.BIT_DEPTHS),
        metadata={"description": "WAV: 16, 24 or 32f (float); FLAC: 16 or 24.", "example": "16"},
    )
    mp3_bitrate = fields.Integer(
        load_default=320,
        validate=validate.OneOf(audio.MP3_BITRATES),
        metadata={"description": "MP3 bitrate in kbit/s.", "example": 320},
    )

    @validates_schema
    def _check_combinations(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("output_format") == "flac" and data.get("bit_depth") == "32f":
            raise ValidationError("FLAC stores 16 or 24 bits; use wav for 32f.", "bit_depth")


@blp.route("", methods=["POST"])
@jwt_required()
@blp.arguments(SeparationFormSchema, location="multipart")
@blp.response(202, JobSchema, headers={"Location": {"schema": {"type": "string"}}})
@blp.alt_response(413, description="The upload is larger than MAX_UPLOAD_MB.")
@blp.alt_response(415, description="The upload is not audio.")
@blp.doc(
    security=BEARER,
    description=(
        "Upload audio as multipart field `file`; the job runs in the background. Poll the "
        "`Location` URL until `status` is `succeeded`, then download `result.files[].url` "
        "or `result.archive_url`.\n\n"
        "```\ncurl -H 'Authorization: Bearer $TOKEN' -F file=@song.mp3 -F output_format=flac "
        "http://localhost:5000/api/v1/separations\n```"
    ),
)
def create_separation(form: dict[str, Any]) -> tuple[Job, int, dict]:
    """Start a separation job."""
    upload = form.pop("file")
    job = separation.submit(current_user, form, upload.stream, upload.filename)
    return job, 202, {"Location": url_for("jobs.get_job", job_id=job.id)}
