"""Alignment jobs: lyrics a person already has, timed word by word."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validates_schema

from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, LyricsText, allow_lyrics_field
from app.blueprints.jobs import CallbackSchema, upload_route
from app.blueprints.transcriptions import (
    check_english_only,
    check_vocals_model,
    known_whisper,
    language_field,
    vocals_model_field,
)
from app.services import alignment

PREFIX = "/alignments"
blp = Blueprint(
    "alignments",
    __name__,
    description="Lyrics you have, timed word by word against the song (asynchronous jobs).",
)
blp.before_request(allow_lyrics_field)


class AlignmentResultSchema(Schema):
    """An alignment's ``result`` fields beside ``files`` (app/job_kinds.py)."""

    lines = fields.List(
        fields.Dict(),
        metadata={
            "description": "Alignment: the lyrics' lines in order, each `text`, `start`, `end`, "
            "`aligned` and `words` (`word`, `start`, `end`, `confidence`, `aligned`); "
            "times in seconds, null for what is not sung."
        },
    )
    words_total = fields.Integer(metadata={"description": "Alignment: lyric words."})
    words_aligned = fields.Integer(metadata={"description": "Alignment: words given a time."})
    words_unaligned = fields.Integer(metadata={"description": "Alignment: words not found."})


class AlignmentFormSchema(CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "The song (audio or video)."})
    lyrics = LyricsText(
        required=True,
        metadata={
            "description": "The lyrics: plain text, one line per sung line (blank lines between "
            "verses are fine), or an LRC file whose times are replaced. A text field or a file "
            "part; UTF-8, at most 1,000,000 bytes, 1,000 lines and 5,000 words.",
            "type": "string",
            "example": "Twinkle twinkle little star\nHow I wonder what you are",
        },
    )
    model = fields.String(
        load_default=None,
        validate=known_whisper,
        metadata={"description": "Whisper model (default tiny.en, works offline)."},
    )
    language = language_field()
    isolate_vocals = fields.Boolean(
        load_default=False,
        metadata={"description": "Separate the vocals first (separation_model), then align."},
    )
    separation_model = vocals_model_field(
        "Model for isolate_vocals, one with a vocals stem. Default: the best vocals model "
        "this server can run (`vocals_default` in GET /api/v1/models)."
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        check_english_only(data)
        if data.get("separation_model") and not data.get("isolate_vocals"):
            raise ValidationError("Only with isolate_vocals=true.", "separation_model")
        check_vocals_model(data)


create_alignment = upload_route(
    blp,
    AlignmentFormSchema,
    alignment.submit,
    summary="Start an alignment job.",
    description=(
        "Upload the song as `file` and its lyrics as `lyrics` (text, or an LRC to re-time). "
        "When the job has succeeded, `result.lines` holds every lyric line and word with "
        "`start`, `end` and `confidence`; words and lines that are not sung are "
        "`aligned: false` with no times. `GET /api/v1/jobs/{id}/transcript?format=lrc_words` "
        "gives enhanced LRC (a time tag before every word), and json, txt, srt, vtt, tsv and "
        "lrc as for transcriptions.\n\n"
        "```\ncurl -H 'Authorization: Bearer $TOKEN' -F file=@song.mp3 -F lyrics=@lyrics.txt "
        "-F isolate_vocals=true http://localhost:5000/api/v1/alignments\n```"
    ),
)
