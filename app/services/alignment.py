"""Alignment jobs: lyrics a person already has, timed word by word against the song.

Transcription guesses the words and their times; karaoke makers usually have
the words and lack only the times. An alignment job takes the lyrics as
given (plain text or an LRC to re-time, ``app/lyrics_input.py``), optionally
isolates the vocals first, and places every lyric word with the Whisper
model's forced alignment (``app/models/whisper_align.py``). A line or word
that is not sung stays unaligned, without a time.

The result keeps the user's lines (``lines``, each word with ``start``,
``end``, ``confidence`` and ``aligned``) and also carries them as
``segments`` in the transcription's shape, so ``GET /jobs/{id}/transcript``
renders an alignment in every format a transcription has (enhanced LRC
included). The karaoke pipeline uses the same function when it is given
lyrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from flask import current_app

from app import audio, lyrics, storage
from app.lyrics_input import Lyrics, parse_lyrics
from app.models import registry
from app.models.engines import Progress
from app.records import Job, User
from app.services import jobs, vocals_model
from app.services.runner import Attempt, ProgressReporter, SubProgress, execute

KIND = "alignment"


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Whisper model and the parameters an alignment runs with; jobs and
    ``flask align`` share it. With ``isolate_vocals`` and no
    ``separation_model``, the vocals model is chosen as for karaoke."""
    name = params.get("model") or registry.DEFAULTS["transcription"]
    params = {k: v for k, v in {**params, "model": name}.items() if v is not None}
    return name, vocals_model.with_choice(params, current_app.config)


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue an alignment of ``params["lyrics"]`` (validated text) to ``upload``."""
    name, params = prepare(params)
    return jobs.submit(owner, KIND, name, params, upload, filename)


def as_segments(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aligned lines as transcription segments (one per line, with ``words``).

    An unaligned word inside an aligned line keeps its place in the text: it
    is joined to the timed word before it (after it, at the start of a line),
    so every format shows the whole line and no word gets a time of its own
    that was not found. Lines with no aligned word are left out: a subtitle
    or LRC line needs a time.
    """
    segments = []
    for line in lines:
        if not line.get("aligned"):
            continue
        words: list[dict[str, Any]] = []
        pending: list[str] = []  # unaligned words before the first timed one
        for word in line["words"]:
            if word["aligned"]:
                text = " ".join([*pending, word["word"]])
                pending = []
                words.append(
                    {
                        "start": word["start"],
                        "end": word["end"],
                        "word": " " + text,
                        "probability": word["confidence"],
                    }
                )
            elif words:
                words[-1]["word"] += " " + word["word"]
            else:
                pending.append(word["word"])
        segments.append(
            {
                "start": line["start"],
                "end": line["end"],
                "text": " " + line["text"],
                "words": words,
            }
        )
    return segments


def as_karaoke_lines(lines: list[dict[str, Any]]) -> list[lyrics.Line]:
    """Aligned lines as the karaoke package's lines (the user's line breaks)."""
    return [
        lyrics.Line(
            start=float(segment["start"]),
            end=float(segment["end"]),
            words=[
                {"start": w["start"], "end": w["end"], "word": w["word"]} for w in segment["words"]
            ],
        )
        for segment in as_segments(lines)
    ]


def align_samples(
    samples: Any, name: str, text: str | Lyrics, language: str | None, report: Progress
) -> tuple[dict[str, Any], str]:
    """Align lyrics ``text`` to 16 kHz mono ``samples`` with Whisper ``name``."""
    from app.models import whisper_align

    config = current_app.config
    parsed = text if isinstance(text, Lyrics) else parse_lyrics(text)
    engine = registry.engine("transcription", name, config)
    report.stage("loading_model", 0.0)
    model, device = engine.model(name, config)
    report.stage("aligning", 0.05)
    result = whisper_align.align_lyrics(
        model, samples, parsed, language=language, progress=lambda f: report(0.05 + 0.95 * f)
    )
    result["words_unaligned"] = result["words_total"] - result["words_aligned"]
    result["segments"] = as_segments(result["lines"])
    result["text"] = "\n".join(line["text"] for line in result["lines"])
    return result, device


def align_file(
    source: Path, name: str, text: str | Lyrics, language: str | None, report: Progress
) -> tuple[dict[str, Any], str]:
    config = current_app.config
    report.stage("decoding", 0.0)
    from app.models.whisper_engine import SAMPLE_RATE

    samples, _rate = audio.decode(
        source,
        sample_rate=SAMPLE_RATE,
        channels=1,
        max_seconds=float(config["MAX_AUDIO_SECONDS"]),
        max_bytes=config["MAX_DECODED_BYTES"],
    )
    return align_samples(samples[0], name, text, language, SubProgress(report, 0.02, 1.0))


def align_path(
    source: Path,
    info: dict[str, Any],
    name: str,
    params: dict[str, Any],
    workdir: Path,
    report: Progress,
) -> tuple[dict[str, Any], str]:
    """Align a file's lyrics, first isolating its vocals when ``isolate_vocals``
    (into ``workdir``, removed afterwards). Returns the result and the device."""
    with vocals_model.vocals_first(source, info, params, workdir, report) as (audio, step, by):
        result, device = align_file(audio, name, params["lyrics"], params.get("language"), step)
    if by is not None:
        result["separation_model"] = by
    return result, device


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    result, device = align_path(
        storage.input_path(job.id),
        job.input or {},
        job.model,
        job.params or {},
        attempt.workdir,
        report,
    )
    return {**result, "files": [], "device": device}


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
