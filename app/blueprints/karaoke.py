"""Karaoke packages: an instrumental with synced lyrics from one upload."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import (
    FileUpload,
    LyricsText,
    allow_lyrics_field,
    check_output_format,
)
from app.blueprints.jobs import CallbackSchema, upload_route
from app.blueprints.transcriptions import (
    check_vocals_model,
    known_whisper,
    language_field,
    vocals_model_field,
)
from app.models import registry
from app.services import karaoke

PREFIX = "/karaoke"
blp = Blueprint("karaoke", __name__, description="Karaoke packages: instrumental + synced lyrics.")
blp.before_request(allow_lyrics_field)


class KaraokeFormSchema(CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "The song."})
    separation_model = vocals_model_field(
        "Model that removes the vocals, one with a vocals stem. Default: the best vocals "
        "model this server can run (`vocals_default` in GET /api/v1/models): the highest "
        "published vocals SDR on Multisong whose weights are here or downloadable, else "
        f"{registry.DEFAULTS['separation']}. The job's `params.separation_model` says which "
        "ran, `params.separation_model_choice` why."
    )
    whisper_model = fields.String(
        load_default=None,
        validate=known_whisper,
        metadata={"description": "Model that transcribes the lyrics (default tiny.en)."},
    )
    language = language_field()
    analyze = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also analyse the song (`result.analysis`: key, tempo, beats, "
            "chords, meter and bars, sections, tuning, loudness) and add the chord chart "
            "files `chords.txt` and `chords.lab`."
        },
    )
    output_format = fields.String(
        load_default="mp3",
        validate=validate.OneOf(audio.OUTPUT_FORMATS),
        metadata={"description": "Format of the instrumental and vocals stems."},
    )
    bit_depth = fields.String(load_default="16", validate=validate.OneOf(audio.BIT_DEPTHS))
    mp3_bitrate = fields.Integer(load_default=320, validate=validate.OneOf(audio.MP3_BITRATES))
    lyrics = LyricsText(
        load_default=None,
        metadata={
            "description": "The song's lyrics, if you have them: plain text, one line per sung "
            "line, or an LRC to re-time (a text field or a file part). The package then "
            "uses them, aligned word by word, instead of transcribed words; lines that are "
            "not sung are left out of the timed files (`result.alignment` lists them).",
            "type": "string",
        },
    )
    max_line_chars = fields.Integer(
        load_default=42,
        validate=validate.Range(min=16, max=80),
        metadata={"description": "Longest lyrics line, in characters."},
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        check_output_format(data)
        check_vocals_model(data)
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
        "A song without vocals succeeds with `result.has_vocals = false` and empty lyrics.\n\n"
        "Without `separation_model` the server picks the best vocals model it can run when "
        "the job is submitted: separation models with a `vocals` stem ranked by their "
        "published vocals SDR on Multisong (MVSep), the first whose weights are here or "
        "will be downloaded on first use (`ALLOW_MODEL_DOWNLOAD`), else "
        f"{registry.DEFAULTS['separation']}. `GET /api/v1/models` names it "
        "(`vocals_default`); the job keeps it in `params.separation_model` and how it was "
        "chosen in `params.separation_model_choice` (`how`: `best`, `fallback` or "
        "`requested`; `reason`)."
    ),
)
