"""Music analysis: key, tempo, beats, chords, meter, sections, tuning, loudness."""

from __future__ import annotations

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
