"""Music analysis: key, tempo, beats, loudness."""

from __future__ import annotations

from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import CallbackSchema, upload_route
from app.services import analysis

PREFIX = "/analyses"
blp = Blueprint("analyses", __name__, description="Key, tempo, beats and loudness of a song.")


class AnalysisFormSchema(CallbackSchema):
    file = FileUpload(required=True, metadata={"description": "The song."})


create_analysis = upload_route(
    blp,
    AnalysisFormSchema,
    analysis.submit,
    summary="Start an analysis job.",
    description=(
        "The job's result: `key` (name, confidence, runner_up), `tempo_bpm` and `tempo` "
        "(bpm, confidence), `beats` (seconds), `loudness` (integrated LUFS per ITU-R "
        "BS.1770, sample peak dBFS, true peak dBTP), `duration`, `sample_rate`, `channels`."
    ),
)
