"""Music analysis jobs: key, tempo and beats, chords, meter and bars, sections,
tuning, loudness and peaks; and the chord chart files."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from flask import current_app

from app import harmony, storage
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, Progress, ProgressReporter, execute

KIND = "analysis"

# The chord chart as files: the chart a musician reads (bars between bar
# lines) and the timeline in MIREX .lab format for tools that score or
# display chords (mir_eval, Sonic Visualiser, DAW importers).
CHART_FILES = {
    "chords.txt": harmony.render_chart,
    "chords.lab": harmony.render_lab,
}
CHART_CONTENT_TYPE = "text/plain; charset=utf-8"


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    return jobs.submit(owner, KIND, "analysis", params, upload, filename)


def analyze_path(path: Path, report: Progress) -> dict[str, Any]:
    """The analysis block for one file; also added to separation and karaoke
    results when they ask for ``analyze=true``."""
    # scipy.signal and pyloudnorm: only in processes that analyse.
    from app import music_features

    report.stage("analysing")
    config = current_app.config
    return music_features.analyze_file(
        path,
        max_seconds=float(config["MAX_AUDIO_SECONDS"]),
        max_bytes=config["MAX_DECODED_BYTES"],
        progress=report,
    )


def write_chart_files(folder: Path, analysis: dict[str, Any]) -> list[dict[str, Any]]:
    """Write the chord chart files of an analysis into ``folder``; their ``files`` entries."""
    entries = []
    for name, render in CHART_FILES.items():
        path = folder / name
        path.write_text(render(analysis), encoding="utf-8")
        entries.append(
            {"name": name, "size": path.stat().st_size, "content_type": CHART_CONTENT_TYPE}
        )
    return entries


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    result = analyze_path(storage.input_path(job.id), report)
    return {**result, "files": write_chart_files(attempt.workdir, result)}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
