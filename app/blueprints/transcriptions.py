"""Transcription jobs: speech or lyrics to text with timestamps."""

from __future__ import annotations

from typing import Any

from faster_whisper.tokenizer import _LANGUAGE_CODES
from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, known_model
from app.blueprints.jobs import CallbackSchema, upload_route
from app.models import registry, whisper_engine
from app.services import transcription

PREFIX = "/transcriptions"
blp = Blueprint(
    "transcriptions", __name__, description="Speech and lyrics to text (asynchronous jobs)."
)

LANGUAGES = sorted(_LANGUAGE_CODES)


class TranscriptionResultSchema(Schema):
    """A transcription's ``result`` fields beside ``files`` (app/job_kinds.py)."""

    text = fields.String(metadata={"description": "Transcription: the whole text."})
    language = fields.String(metadata={"description": "Transcription: detected or given."})
    language_probability = fields.Float()
    duration = fields.Float()
    segments = fields.List(
        fields.Dict(),
        metadata={"description": "Transcription: start, end, text, avg_logprob, no_speech_prob"},
    )
    words = fields.List(
        fields.Dict(),
        metadata={
            "description": "Transcription with word_timestamps: start, end, word, probability"
        },
    )
    transcript_url = fields.String(
        metadata={"description": "Transcription: rendered as json, txt, srt, vtt, tsv or lrc."}
    )
    separation_model = fields.Dict(
        metadata={
            "description": "Transcription with isolate_vocals, and karaoke: the model that "
            "isolated the vocals (`model`), and `how` and why (`reason`) it was chosen."
        }
    )


known_whisper = known_model("transcription")
known_separator = known_model("separation", "separation model")

LYRICS_LANGUAGE = "Language of the lyrics; detected when left out."


def language_field(description: str = LYRICS_LANGUAGE, **metadata: Any) -> fields.String:
    """``language``: a code Whisper knows, or left out to detect it."""
    return fields.String(
        load_default=None,
        validate=validate.OneOf(LANGUAGES),
        metadata={"description": description, **metadata},
    )


def vocals_model_field(description: str) -> fields.String:
    """``separation_model``: the model that isolates vocals (karaoke, lyrics)."""
    return fields.String(
        load_default=None, validate=known_separator, metadata={"description": description}
    )


def check_vocals_model(data: dict[str, Any]) -> None:
    """A ``separation_model`` that cannot isolate vocals is refused, naming it."""
    name = data.get("separation_model")
    entry = registry.describe("separation", name, current_app.config) if name else None
    if entry and entry.get("stems") and "vocals" not in entry["stems"]:
        raise ValidationError("This model has no vocals stem.", "separation_model")


class TranscriptionOptionsSchema(Schema):
    """Options shared by the native and the OpenAI-compatible routes."""

    model = fields.String(
        load_default=None,
        validate=known_whisper,
        metadata={
            "description": "Whisper model (default tiny.en, works offline).",
            "example": "tiny.en",
        },
    )
    language = language_field("ISO 639-1 code; detected when left out.", example="en")
    temperature = fields.Float(
        load_default=None,
        validate=validate.Range(min=0.0, max=1.0),
        metadata={"description": "Sampling temperature; default falls back 0.0 to 1.0 as needed."},
    )
    decoding = fields.String(
        load_default="auto",
        validate=validate.OneOf(whisper_engine.DECODING_MODES),
        metadata={
            "description": "sequential: 30 s windows in order, each conditioned on the "
            "previous text, with temperature fallback. batched: speech chunks found by VAD "
            "(up to 30 s), decoded batch_size at a time, each on its own: often faster on "
            "long inputs, and one window's mistake cannot carry into the next. auto: batched from "
            "WHISPER_BATCHED_MIN_SECONDS of audio (default 120), unless an option only "
            "sequential decoding uses is set. The job's metrics say which ran.",
            "example": "auto",
        },
    )
    batch_size = fields.Integer(
        validate=validate.Range(min=1, max=64),
        metadata={
            "description": "Chunks decoded together on the batched path (default 4 on CPU, "
            "16 on a GPU). Not with decoding=sequential."
        },
    )

    @validates_schema
    def _check_decoding(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("decoding") == "sequential" and "batch_size" in data:
            raise ValidationError("Only with decoding=batched or auto.", "batch_size")
        if data.get("decoding") == "batched":
            for field in whisper_engine.SEQUENTIAL_ONLY:
                if field in data:
                    raise ValidationError(
                        f"{field} only applies to sequential decoding.", "decoding"
                    )


class TranscriptionFormSchema(TranscriptionOptionsSchema, CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "Audio or video file."})
    task = fields.String(
        load_default="transcribe",
        validate=validate.OneOf(["transcribe", "translate"]),
        metadata={
            "description": "translate: English text from any language (multilingual models)."
        },
    )
    word_timestamps = fields.Boolean(load_default=False, metadata={"description": "Add `words`."})
    vad_filter = fields.Boolean(
        load_default=False,
        metadata={"description": "Skip non-speech with Silero VAD (long files, music)."},
    )
    vad_threshold = fields.Float(validate=validate.Range(min=0.0, max=1.0))
    vad_min_speech_duration_ms = fields.Integer(validate=validate.Range(min=0, max=60_000))
    vad_max_speech_duration_s = fields.Float(validate=validate.Range(min=1.0, max=3600.0))
    vad_min_silence_duration_ms = fields.Integer(validate=validate.Range(min=0, max=60_000))
    vad_speech_pad_ms = fields.Integer(validate=validate.Range(min=0, max=10_000))
    initial_prompt = fields.String(
        load_default=None,
        validate=validate.Length(max=1000),
        metadata={"description": "Vocabulary hints, e.g. names or lyrics lines."},
    )
    hotwords = fields.String(
        validate=validate.Length(max=1000),
        metadata={
            "description": "Words or phrases to expect (names, a song title), given to the "
            "decoder in every 30 s window, unlike initial_prompt which only starts it."
        },
    )
    beam_size = fields.Integer(load_default=5, validate=validate.Range(min=1, max=10))
    no_speech_threshold = fields.Float(
        validate=validate.Range(min=0.0, max=1.0),
        metadata={"description": "A window whose no-speech probability is above this (and whose "
                  "text is unlikely) is silence (default 0.6)."},
    )  # fmt: skip
    log_prob_threshold = fields.Float(
        validate=validate.Range(min=-20.0, max=0.0),
        metadata={"description": "Decode again at a higher temperature when the average log "
                  "probability is below this (default -1.0)."},
    )  # fmt: skip
    compression_ratio_threshold = fields.Float(
        validate=validate.Range(min=1.0, max=10.0),
        metadata={"description": "Decode again when the text compresses better than this: "
                  "repeated lines (default 2.4)."},
    )  # fmt: skip
    repetition_penalty = fields.Float(
        validate=validate.Range(min=1.0, max=2.0),
        metadata={"description": "Above 1 penalises tokens already produced (default 1)."},
    )
    no_repeat_ngram_size = fields.Integer(
        validate=validate.Range(min=0, max=10),
        metadata={"description": "Never repeat a sequence of this many tokens (0: off)."},
    )
    hallucination_silence_threshold = fields.Float(
        validate=validate.Range(min=0.1, max=30.0),
        metadata={
            "description": "Seconds: skip silences longer than this where the text looks "
            "hallucinated (music between verses). Needs word_timestamps=true."
        },
    )
    condition_on_previous_text = fields.Boolean(load_default=True)
    compute_type = fields.String(
        load_default=None,
        validate=validate.OneOf(whisper_engine.COMPUTE_TYPES),
        metadata={"description": "Default int8 on CPU, float16 on GPU."},
    )
    isolate_vocals = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Separate the vocals first (separation_model) and transcribe "
            "those: lyrics."
        },
    )
    separation_model = vocals_model_field(
        "Model for isolate_vocals, one with a vocals stem. Default: the best vocals model "
        "this server can run, as for karaoke (`vocals_default` in GET /api/v1/models)."
    )

    @validates_schema
    def _check_combinations(self, data: dict[str, Any], **_: Any) -> None:
        check_english_only(data)
        if "hallucination_silence_threshold" in data and not data.get("word_timestamps"):
            raise ValidationError(
                "Only with word_timestamps=true.", "hallucination_silence_threshold"
            )
        if data.get("separation_model") and not data.get("isolate_vocals"):
            raise ValidationError("Only with isolate_vocals=true.", "separation_model")
        check_vocals_model(data)


def check_english_only(data: dict[str, Any]) -> None:
    name = data.get("model") or registry.DEFAULTS["transcription"]
    if name in whisper_engine.KNOWN and whisper_engine.english_only(name):
        if data.get("task") == "translate":
            raise ValidationError(
                f"{name} is English-only and cannot translate; use a multilingual model.", "task"
            )
        if data.get("language") not in (None, "en"):
            raise ValidationError(f"{name} is English-only.", "language")


create_transcription = upload_route(
    blp,
    TranscriptionFormSchema,
    transcription.submit,
    summary="Start a transcription job.",
    description=(
        "Upload audio as multipart field `file`. When the job has succeeded its `result` holds "
        "`text`, `language`, `duration`, `segments` (and `words` with `word_timestamps`), and "
        "`result.transcript_url` renders it as json, txt, srt, vtt, tsv or lrc.\n\n"
        "```\ncurl -H 'Authorization: Bearer $TOKEN' -F file=@song.mp3 -F isolate_vocals=true "
        "-F word_timestamps=true http://localhost:5000/api/v1/transcriptions\n```"
    ),
)
