"""Karaoke packages: an instrumental with synced lyrics from one upload."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask_jwt_extended import current_user, jwt_required
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import BEARER, JobSchema
from app.blueprints.transcriptions import LANGUAGES, _known_separator, _known_whisper
from app.models import registry
from app.records import Job
from app.services import karaoke

PREFIX = "/karaoke"
blp = Blueprint("karaoke", __name__, description="Karaoke packages: instrumental + synced lyrics.")


class KaraokeFormSchema(Schema):
    file = FileUpload(required=True, metadata={"description": "The song."})
    separation_model = fields.String(
        load_default=None,
        validate=_known_separator,
        metadata={"description": "Model that removes the vocals (default htdemucs)."},
    )
    whisper_model = fields.String(
        load_default=None,
        validate=_known_whisper,
        metadata={"description": "Model that transcribes the lyrics (default tiny.en)."},
    )
    language = fields.String(
        load_default=None,
        validate=validate.OneOf(LANGUAGES),
        metadata={"description": "Language of the lyrics; detected when left out."},
    )
    output_format = fields.String(
        load_default="mp3",
        validate=validate.OneOf(audio.OUTPUT_FORMATS),
        metadata={"description": "Format of the instrumental and vocals stems."},
    )
    bit_depth = fields.String(load_default="16", validate=validate.OneOf(audio.BIT_DEPTHS))
    mp3_bitrate = fields.Integer(load_default=320, validate=validate.OneOf(audio.MP3_BITRATES))
    max_line_chars = fields.Integer(
        load_default=42,
        validate=validate.Range(min=16, max=80),
        metadata={"description": "Longest lyrics line, in characters."},
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("output_format") == "flac" and data.get("bit_depth") == "32f":
            raise ValidationError("FLAC stores 16 or 24 bits; use wav for 32f.", "bit_depth")
        name = data.get("separation_model") or registry.DEFAULTS["separation"]
        entry = registry.describe("separation", name, current_app.config)
        if entry and entry.get("stems") and "vocals" not in entry["stems"]:
            raise ValidationError("This model has no vocals stem.", "separation_model")
        whisper = data.get("whisper_model") or registry.DEFAULTS["transcription"]
        if whisper.endswith(".en") and data.get("language") not in (None, "en"):
            raise ValidationError(f"{whisper} is English-only.", "language")


@blp.route("", methods=["POST"])
@jwt_required()
@blp.arguments(KaraokeFormSchema, location="multipart")
@blp.response(202, JobSchema, headers={"Location": {"schema": {"type": "string"}}})
@blp.alt_response(413, description="The upload is larger than MAX_UPLOAD_MB.")
@blp.alt_response(415, description="The upload is not audio.")
@blp.doc(
    security=BEARER,
    description=(
        "One job: separate the vocals, transcribe them with word timings, build lyric lines. "
        "Result files: `instrumental.<fmt>`, `vocals.<fmt>`, `instrumental.mp3` with the "
        "lyrics embedded as ID3 SYLT (synced) and USLT (plain), `lyrics.lrc`, "
        "`lyrics.words.lrc` (a time tag per word), `lyrics.srt`, `lyrics.vtt`, `sync.json`. "
        "A song without vocals succeeds with `result.has_vocals = false` and empty lyrics."
    ),
)
def create_karaoke(form: dict[str, Any]) -> tuple[Job, int, dict]:
    """Start a karaoke job."""
    upload = form.pop("file")
    job = karaoke.submit(current_user, form, upload.stream, upload.filename)
    return job, 202, {"Location": url_for("jobs.get_job", job_id=job.id)}
