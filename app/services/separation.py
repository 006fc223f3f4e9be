"""Separation jobs: decode the input, run the named engine, encode each stem."""

from __future__ import annotations

from typing import IO, Any

from flask import current_app

from app import audio, storage
from app.models import registry
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, ProgressReporter, execute

KIND = "separation"


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue a separation of ``upload`` with validated ``params``."""
    engine = params.get("model") or registry.DEFAULTS[KIND]
    params = {**params, "model": engine}
    return jobs.submit(owner, KIND, engine, params, upload, filename)


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    params = job.params or {}
    engine = registry.separation_engine(job.engine)
    report.stage("decoding", 0.0)
    info = job.input or {}
    channels = 2 if int(info.get("channels") or 2) >= 2 else 1
    samples, sample_rate = audio.decode(
        storage.input_path(job.id),
        sample_rate=engine.sample_rate,
        channels=channels,
        max_seconds=float(current_app.config["MAX_AUDIO_SECONDS"]),
    )
    report(0.05, "separating")
    stems = engine.run(samples, sample_rate, params, lambda f: report(0.05 + 0.85 * f))
    del samples

    report(0.9, "encoding")
    fmt = params.get("output_format", "wav")
    files = []
    for index, (stem, data) in enumerate(stems.items()):
        name = f"{stem}.{fmt}"
        path = attempt.workdir / name
        audio.encode(
            data,
            sample_rate,
            path,
            format=fmt,
            bit_depth=str(params.get("bit_depth", "16")),
            mp3_bitrate=int(params.get("mp3_bitrate", 320)),
        )
        # Describe the file as written: MP3 may have been resampled to a rate
        # LAME supports, and its frames pad the length slightly.
        written = audio.probe(path)
        files.append(
            {
                "name": name,
                "stem": stem,
                "size": path.stat().st_size,
                "content_type": audio.CONTENT_TYPES[fmt],
                "duration": round(written.duration, 3),
                "sample_rate": written.sample_rate,
                "channels": written.channels,
            }
        )
        report(0.9 + 0.1 * (index + 1) / len(stems))
    return {"files": files, "stems": list(stems), "sample_rate": sample_rate}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
