"""Music analysis jobs: key, tempo and beats, loudness and peaks."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from flask import current_app

from app import storage
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, Progress, ProgressReporter, execute

KIND = "analysis"


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


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    result = analyze_path(storage.input_path(job.id), report)
    return {**result, "files": []}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
