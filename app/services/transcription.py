"""Transcription jobs: Whisper through faster-whisper, optionally on isolated vocals."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO, Any

from flask import current_app

from app import audio, storage
from app.errors import ServiceError
from app.models import registry, whisper_engine
from app.records import Job, User
from app.services import jobs, separation
from app.services.runner import Attempt, Progress, ProgressReporter, SubProgress, execute

KIND = "transcription"
VAD_FIELDS = {
    "vad_threshold": "threshold",
    "vad_min_speech_duration_ms": "min_speech_duration_ms",
    "vad_max_speech_duration_s": "max_speech_duration_s",
    "vad_min_silence_duration_ms": "min_silence_duration_ms",
    "vad_speech_pad_ms": "speech_pad_ms",
}
# Decoding options passed to faster-whisper as they are, when given.
DECODING_FIELDS = (
    "hotwords",
    "no_speech_threshold",
    "log_prob_threshold",
    "compression_ratio_threshold",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "hallucination_silence_threshold",
)
# Vocals for lyrics: only the source and its complement, as float so nothing clips.
VOCALS_PARAMS = {
    "two_stems": "vocals",
    "output_format": "wav",
    "bit_depth": "32f",
    "clip_mode": "none",
}


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and the parameters a transcription runs with, from
    validated request fields; jobs and ``flask transcribe`` share it."""
    name = params.get("model") or registry.DEFAULTS[KIND]
    params = {k: v for k, v in {**params, "model": name}.items() if v is not None}
    if params.get("isolate_vocals"):
        params.setdefault("separation_model", registry.DEFAULTS["separation"])
    return name, params


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue a transcription of ``upload`` with validated ``params``."""
    name, params = prepare(params)
    return jobs.submit(owner, KIND, name, params, upload, filename)


def whisper_options(params: dict[str, Any]) -> dict[str, Any]:
    """Map request parameters onto ``WhisperModel.transcribe`` keyword arguments."""
    options: dict[str, Any] = {
        "language": params.get("language"),
        "task": params.get("task", "transcribe"),
        "word_timestamps": bool(params.get("word_timestamps", False)),
        "vad_filter": bool(params.get("vad_filter", False)),
        "beam_size": int(params.get("beam_size", 5)),
        "condition_on_previous_text": bool(params.get("condition_on_previous_text", True)),
    }
    if params.get("initial_prompt"):
        options["initial_prompt"] = params["initial_prompt"]
    if params.get("temperature") is not None:
        options["temperature"] = float(params["temperature"])
    options.update({field: params[field] for field in DECODING_FIELDS if field in params})
    vad = {target: params[field] for field, target in VAD_FIELDS.items() if field in params}
    if vad:
        options["vad_parameters"] = vad
    return options


def _check_model_fits(model: Any, name: str, options: dict[str, Any]) -> None:
    if model.model.is_multilingual:
        return
    if options["task"] == "translate":
        raise ServiceError(
            f"Model '{name}' is English-only and cannot translate; use a multilingual "
            "model such as 'small' or 'large-v3'.",
            code="invalid_parameter",
            status=422,
        )
    if options["language"] not in (None, "en"):
        raise ServiceError(
            f"Model '{name}' is English-only; language must be 'en' or left out.",
            code="invalid_parameter",
            status=422,
        )


def transcribe_file(
    source: Any, name: str, params: dict[str, Any], report: Progress
) -> tuple[dict[str, Any], str]:
    """Transcribe one audio file; returns the result and the device used."""
    config = current_app.config
    options = whisper_options(params)
    report.stage("loading_model", 0.0)
    model, device, _compute = registry.transcription_model(name, params.get("compute_type"), config)
    _check_model_fits(model, name, options)
    report.stage("decoding", 0.02)
    samples, _rate = audio.decode(
        source,
        sample_rate=whisper_engine.SAMPLE_RATE,
        channels=1,
        max_seconds=float(config["MAX_AUDIO_SECONDS"]),
        max_bytes=config["MAX_DECODED_BYTES"],
    )
    samples = samples[0]
    report.stage("transcribing", 0.05)
    result = whisper_engine.transcribe(model, samples, options, lambda f: report(0.05 + 0.95 * f))
    return result, device


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
    step: Progress = report
    if params.get("isolate_vocals"):
        folder = workdir / "vocals"
        folder.mkdir()
        names, paths, _rate, _device = separation.separate_file(
            source,
            info,
            params["separation_model"],
            VOCALS_PARAMS,
            folder,
            SubProgress(report, 0.0, 0.6),
        )
        source = paths[names.index("vocals")]
        step = SubProgress(report, 0.6, 1.0)
    try:
        return transcribe_file(source, name, params, step)
    finally:
        if params.get("isolate_vocals"):
            shutil.rmtree(workdir / "vocals", ignore_errors=True)


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    params = job.params or {}
    result, device = transcribe_path(
        storage.input_path(job.id), job.input or {}, job.engine, params, attempt.workdir, report
    )
    return {**result, "files": [], "device": device}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
