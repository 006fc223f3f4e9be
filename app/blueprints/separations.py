"""Separation jobs: upload a song, get stems."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from webargs.fields import DelimitedList

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, check_output_format, known_model
from app.blueprints.jobs import CallbackSchema, upload_route
from app.models import registry
from app.services import separation

PREFIX = "/separations"
blp = Blueprint("separations", __name__, description="Split a song into stems (asynchronous jobs).")


class SeparationResultSchema(Schema):
    """A separation's ``result`` fields beside ``files`` (app/job_kinds.py)."""

    stems = fields.List(fields.String(), metadata={"description": "Separation."})
    sample_rate = fields.Integer(metadata={"description": "Separation."})


class SeparationFormSchema(CallbackSchema):
    file = FileUpload(
        required=True,
        metadata={"description": "Audio file (mp3, wav, flac, ogg, opus, m4a, ...)."},
    )
    model = fields.String(
        load_default=None,
        validate=known_model("separation"),
        metadata={
            "description": "Model name from GET /api/v1/models (default htdemucs).",
            "example": "htdemucs",
        },
    )
    two_stems = fields.String(
        load_default=None,
        metadata={
            "description": "Karaoke mode: this source and no_<source> (mix minus source).",
            "example": "vocals",
        },
    )
    stems = DelimitedList(
        fields.String(),
        metadata={"description": "Only these sources (comma-separated); default all."},
    )
    shifts = fields.Integer(
        load_default=None,
        validate=validate.Range(min=0, max=10),
        metadata={
            "description": "Demucs: random shifts averaged (better quality, N times slower). Default 1.",
            "example": 1,
        },
    )
    overlap = fields.Float(
        load_default=None,
        validate=validate.Range(min=0.0, max=0.99),
        metadata={"description": "Demucs: overlap between chunks. Default 0.25.", "example": 0.25},
    )
    segment = fields.Float(
        load_default=None,
        validate=validate.Range(min=1.0, max=100.0, min_inclusive=True),
        metadata={
            "description": "Demucs: chunk length in seconds (at most 7.8 for htdemucs models).",
            "example": 7.8,
        },
    )
    clip_mode = fields.String(
        load_default="rescale",
        validate=validate.OneOf(["rescale", "clamp", "none"]),
        metadata={
            "description": "Avoiding clipping: rescale each stem if it would clip, clamp, or none.",
            "example": "rescale",
        },
    )
    analyze = fields.Boolean(
        load_default=False,
        metadata={"description": "Also analyse the song: key, tempo, beats, loudness."},
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
        check_output_format(data)
        name = data.get("model") or registry.DEFAULTS["separation"]
        entry = registry.describe("separation", name, current_app.config)
        if entry is None:
            return
        if entry["engine"] == "hpss":
            for field in ("shifts", "overlap", "segment"):
                if data.get(field) is not None:
                    raise ValidationError("Only Demucs models take this option.", field)
        stems = entry.get("stems")
        if stems:
            if data.get("two_stems") and data["two_stems"] not in stems:
                raise ValidationError(f"Must be one of: {', '.join(stems)}.", "two_stems")
            unknown = [s for s in data.get("stems") or [] if s not in stems]
            if unknown:
                raise ValidationError(f"Must be among: {', '.join(stems)}.", "stems")
        if data.get("two_stems") and data.get("stems"):
            raise ValidationError("Give either stems or two_stems.", "stems")
        bound = entry.get("max_segment")
        if data.get("segment") is not None and bound is not None and data["segment"] > bound:
            raise ValidationError(f"At most {bound:g} s for {name}.", "segment")


create_separation = upload_route(
    blp,
    SeparationFormSchema,
    separation.submit,
    summary="Start a separation job.",
    description=(
        "Upload audio as multipart field `file`; the job runs in the background. Poll the "
        "`Location` URL until `status` is `succeeded`, then download `result.files[].url` "
        "or `result.archive_url`.\n\n"
        "```\ncurl -H 'Authorization: Bearer $TOKEN' -F file=@song.mp3 -F output_format=flac "
        "http://localhost:5000/api/v1/separations\n```"
    ),
)
