"""Generation jobs: music from a text prompt (a generation engine from
``app.models.registry``), optionally with a melody or an audio prompt."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np
from flask import current_app

from app import audio, storage
from app.errors import ServiceError
from app.models import registry
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, Progress, ProgressReporter, execute

KIND = "generation"


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and the parameters a generation runs with, from validated
    request fields; jobs and ``flask generate`` share it."""
    name = params.get("model") or registry.DEFAULTS[KIND]
    return name, {k: v for k, v in {**params, "model": name}.items() if v is not None}


def submit(
    owner: User,
    params: dict[str, Any],
    upload: IO[bytes] | None = None,
    filename: str | None = None,
) -> Job:
    """Queue a generation; ``upload`` is the melody or continuation audio, if
    any, or ``params`` name it by address (``melody_url``, ``continuation_url``):
    then it is a job input by URL, which the worker fetches before it runs."""
    name, params = prepare(params)
    field = None
    for role in ("melody", "continuation"):
        address = params.pop(f"{role}_url", None)
        if address:
            field, params["url"], params["input_role"] = f"{role}_url", address, role
    try:
        return jobs.submit(owner, KIND, name, params, upload, filename)
    except ServiceError as exc:
        # The URL's errors are reported under the field the client filled in.
        if field is not None and exc.errors and "url" in exc.errors:
            exc.errors = {field: exc.errors["url"]}
        raise


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    source = storage.input_path(job.id) if (job.params or {}).get("input_role") else None
    return generate_file(job.model, job.params or {}, attempt.workdir, report, source)


def generate_file(
    name: str,
    params: dict[str, Any],
    folder: Path,
    report: Progress,
    source: Path | None = None,
    filename: str = "generated",
) -> dict[str, Any]:
    """Generate into ``folder/<filename>.<format>``; ``source`` is the melody or
    continuation audio when ``params["input_role"]`` names one. Returns the result."""
    config = current_app.config
    engine = registry.engine(KIND, name, config)
    report.stage("loading_model", 0.0)
    generator = engine.prepare(name, config)
    conditioning: dict[str, Any] = {}
    role = params.get("input_role")
    if role and source is not None:
        samples, rate = audio.decode(
            source,
            max_seconds=float(config["MAX_AUDIO_SECONDS"]),
            max_bytes=config["MAX_DECODED_BYTES"],
        )
        conditioning[role] = (samples, rate)
    report.stage("generating", 0.02)
    out, rate, used = generator(params, conditioning, lambda f: report(0.02 + 0.88 * f))
    report.stage("encoding", 0.9)
    peak = float(np.max(np.abs(out), initial=0.0))
    if peak > 1.0:  # never clip: scale down like the demucs "rescale" clip mode
        out = out / (1.01 * peak)
    fmt = params.get("output_format", "wav")
    path = folder / f"{filename}.{fmt}"
    audio.encode(
        out,
        rate,
        path,
        format=fmt,
        bit_depth=str(params.get("bit_depth", "16")),
        mp3_bitrate=int(params.get("mp3_bitrate", 320)),
    )
    written = audio.probe(path)
    used = {**used, "model": name, "prompt": params["prompt"]}
    return {
        "files": [
            {
                "name": path.name,
                "size": path.stat().st_size,
                "content_type": audio.CONTENT_TYPES[fmt],
                "duration": round(written.duration, 3),
                "sample_rate": written.sample_rate,
                "channels": written.channels,
            }
        ],
        "parameters": used,
        "sample_rate": rate,
        "duration": round(out.shape[-1] / rate, 3),
        "device": generator.device,
        "audio_seconds": out.shape[-1] / rate,
    }


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
