"""Music analysis: key, tempo, beats, chords, meter, sections, tuning, loudness."""

from __future__ import annotations

from marshmallow import Schema, fields

from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import CallbackSchema, upload_route
from app.services import analysis

PREFIX = "/analyses"
blp = Blueprint(
    "analyses",
    __name__,
    description="Key, tempo, beats, chords, bars, sections, tuning and loudness of a song.",
)


class AnalysisResultSchema(Schema):
    """An analysis's ``result`` fields beside ``files`` (app/job_kinds.py); the same
    block is ``analysis`` in separation and karaoke results with ``analyze=true``."""

    key = fields.Dict(
        metadata={"description": "Analysis: name, tonic, mode, confidence, runner_up."}
    )
    keys = fields.List(
        fields.Dict(), metadata={"description": "Analysis: key regions (start, end, key)."}
    )
    modulations = fields.List(
        fields.Dict(), metadata={"description": "Analysis: key changes (time, from, to)."}
    )
    tuning = fields.Dict(
        metadata={
            "description": "Analysis: cents from A4 = 440 Hz and reference_hz "
            "(440 * 2^(cents/1200))."
        }
    )
    tempo = fields.Dict(metadata={"description": "Analysis: bpm, confidence."})
    tempo_bpm = fields.Float(allow_none=True, metadata={"description": "Analysis."})
    tempo_curve = fields.List(
        fields.Dict(), metadata={"description": "Analysis: local tempo per bar (time, bpm)."}
    )
    beats = fields.List(fields.Float(), metadata={"description": "Analysis: seconds."})
    meter = fields.Dict(
        metadata={"description": "Analysis: time_signature, beats_per_bar, confidence."}
    )
    downbeats = fields.List(
        fields.Float(), metadata={"description": "Analysis: the beats that start a bar."}
    )
    beat_positions = fields.List(
        fields.Integer(), metadata={"description": "Analysis: each beat's count in its bar."}
    )
    bars = fields.List(
        fields.Dict(),
        metadata={"description": "Analysis: number, start, chords (a label per beat)."},
    )
    chords = fields.List(
        fields.Dict(),
        metadata={
            "description": "Analysis: start, end, label (Harte syntax: `C:maj`, `A:min7`, "
            "`N` for none), confidence."
        },
    )
    sections = fields.List(
        fields.Dict(),
        metadata={"description": "Analysis: start, end, label (A, B, ...), likely_chorus."},
    )
    loudness = fields.Dict(
        metadata={
            "description": "Analysis: integrated_lufs, loudness_range_lu, sample_peak_dbfs, "
            "true_peak_dbtp."
        }
    )
    channels = fields.Integer(metadata={"description": "Analysis: of the input."})
    analysis = fields.Dict(
        metadata={"description": "Separation and karaoke with analyze=true: the analysis block."}
    )


class AnalysisFormSchema(CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "The song."})


create_analysis = upload_route(
    blp,
    AnalysisFormSchema,
    analysis.submit,
    summary="Start an analysis job.",
    description=(
        "The job's result: `key` (name, confidence, runner_up), `keys` (key regions: start, "
        "end, key) and `modulations` (time, from, to), `tuning` (cents from A4 = 440 Hz, "
        "reference_hz), `tempo_bpm` and `tempo` (bpm, confidence), `tempo_curve` (time, bpm "
        "per bar), `beats` (seconds), `meter` (time_signature, beats_per_bar, confidence), "
        "`downbeats`, `beat_positions` (1 = downbeat), `bars` (number, start, chords per "
        "beat), `chords` (start, end, label in Harte syntax such as `C:maj` or `A:min7`, "
        "`N` for none; confidence), `sections` (start, end, label A/B/C..., likely_chorus), "
        "`loudness` (integrated LUFS per ITU-R BS.1770, sample peak dBFS, true peak dBTP), "
        "`duration`, `sample_rate`, `channels`; `files`: the chord chart as `chords.txt` "
        "(bars between bar lines) and `chords.lab` (MIREX: start end label per line)."
    ),
)
