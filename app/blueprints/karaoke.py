"""Karaoke packages: an instrumental with synced lyrics from one upload."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import ValidationError, fields, validate, validates_schema

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, check_output_format
from app.blueprints.jobs import CallbackSchema, upload_route
from app.blueprints.transcriptions import LANGUAGES, known_separator, known_whisper
from app.models import registry
from app.services import karaoke

PREFIX = "/karaoke"
blp = Blueprint("karaoke", __name__, description="Karaoke packages: instrumental + synced lyrics.")


class KaraokeFormSchema(CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "The song."})
    separation_model = fields.String(
        load_default=None,
        validate=known_separator,
        metadata={
            "description": "Model that removes the vocals, one with a vocals stem "
            f"(default {registry.DEFAULTS['separation']})."
        },
    )
    whisper_model = fields.String(
        load_default=None,
        validate=known_whisper,
        metadata={"description": "Model that transcribes the lyrics (default tiny.en)."},
    )
    language = fields.String(
        load_default=None,
        validate=validate.OneOf(LANGUAGES),
        metadata={"description": "Language of the lyrics; detected when left out."},
    )
    analyze = fields.Boolean(
        load_default=False,
        metadata={"description": "Also analyse the song: key, tempo, beats, loudness."},
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
        check_output_format(data)
        name = data.get("separation_model") or registry.DEFAULTS["separation"]
        entry = registry.describe("separation", name, current_app.config)
        if entry and entry.get("stems") and "vocals" not in entry["stems"]:
            raise ValidationError("This model has no vocals stem.", "separation_model")
        whisper = data.get("whisper_model") or registry.DEFAULTS["transcription"]
        if whisper.endswith(".en") and data.get("language") not in (None, "en"):
            raise ValidationError(f"{whisper} is English-only.", "language")


create_karaoke = upload_route(
    blp,
    KaraokeFormSchema,
    karaoke.submit,
    summary="Start a karaoke job.",
    description=(
        "One job: separate the vocals, transcribe them with word timings, build lyric lines. "
        "Result files: `instrumental.<fmt>`, `vocals.<fmt>`, `instrumental.mp3` with the "
        "lyrics embedded as ID3 SYLT (synced) and USLT (plain), `lyrics.lrc`, "
        "`lyrics.words.lrc` (a time tag per word), `lyrics.srt`, `lyrics.vtt`, `sync.json`. "
        "A song without vocals succeeds with `result.has_vocals = false` and empty lyrics."
    ),
)
