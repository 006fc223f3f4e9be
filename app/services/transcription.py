"""Transcription jobs: speech or lyrics to timed text (a transcription engine from
``app.models.registry``), optionally on vocals isolated first."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from flask import current_app

from app import audio, storage
from app.models import registry
from app.records import Job, User
from app.services import jobs, vocals_model
from app.services.runner import Attempt, Progress, ProgressReporter, execute

KIND = "transcription"


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and the parameters a transcription runs with, from
    validated request fields; jobs and ``flask transcribe`` share it.

    With ``isolate_vocals`` and no ``separation_model``, the best vocals model
    this server can run is chosen (``vocals_model``); how and why is kept in
    ``separation_model_choice``."""
    name = params.get("model") or registry.DEFAULTS[KIND]
    params = {k: v for k, v in {**params, "model": name}.items() if v is not None}
    return name, vocals_model.with_choice(params, current_app.config)


def submit(
    owner: User, params: dict[str, Any], upload: IO[bytes] | None, filename: str | None
) -> Job:
    """Queue a transcription of ``upload`` (or of ``params["url"]``) with validated ``params``."""
    name, params = prepare(params)
    return jobs.submit(owner, KIND, name, params, upload, filename)


def transcribe_file(
    source: Any, name: str, params: dict[str, Any], report: Progress
) -> tuple[dict[str, Any], str]:
    """Transcribe one audio file; returns the result and the device used."""
    config = current_app.config
    engine = registry.engine(KIND, name, config)
    report.stage("loading_model", 0.0)
    transcriber = engine.prepare(name, params, config)
    report.stage("decoding", 0.02)
    samples, _rate = audio.decode(
        source,
        sample_rate=engine.sample_rate,
        channels=1,
        max_seconds=float(config["MAX_AUDIO_SECONDS"]),
        max_bytes=config["MAX_DECODED_BYTES"],
    )
    report.stage("transcribing", 0.05)
    result = transcriber(samples[0], lambda f: report(0.05 + 0.95 * f))
    # The runner moves these into the job's metrics (how it ran, not what it found).
    result["metrics"] = dict(getattr(transcriber, "metrics", {}))
    return result, transcriber.device


def transcribe_path(
    source: Path,
    info: dict[str, Any],
    name: str,
    params: dict[str, Any],
    workdir: Path,
    report: Progress,
) -> tuple[dict[str, Any], str]:
    """Transcribe a file, first isolating its vocals when ``isolate_vocals``
    (into ``workdir``, removed afterwards). Returns the result and the device."""
    with vocals_model.vocals_first(source, info, params, workdir, report) as (audio, step, by):
        result, device = transcribe_file(audio, name, params, step)
    if by is not None:
        result["separation_model"] = by
    return result, device


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    params = job.params or {}
    result, device = transcribe_path(
        storage.input_path(job.id), job.input or {}, job.model, params, attempt.workdir, report
    )
    return {**result, "files": [], "device": device}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
