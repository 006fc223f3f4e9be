"""Karaoke package: one upload to an instrumental plus synced lyrics.

A pipeline over the separation and transcription services: separate
``vocals``/``no_vocals`` (the instrumental), transcribe the vocals with VAD and
word timestamps, build singable lines from the words, and package the lyrics
as LRC, word-timed LRC, SRT, WebVTT, ``sync.json``, and as ID3 SYLT/USLT frames
in the instrumental MP3.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
from flask import current_app

from app import audio, lyrics, storage, transcripts
from app.models import registry
from app.records import Job, User
from app.services import alignment, jobs, separation, transcription, vocals_model
from app.services.runner import Attempt, ProgressReporter, SubProgress, execute

KIND = "karaoke"
# Below this level relative to the mix the vocals stem is treated as empty.
SILENT_VOCALS_DB = -35.0


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue a karaoke job. Without a ``separation_model`` the best vocals model
    this server can run is chosen now (``vocals_model``) and kept in the params
    with how and why (``separation_model_choice``)."""
    choice = vocals_model.resolve(params.get("separation_model"), current_app.config)
    params = {
        **params,
        "separation_model": choice.model,
        "separation_model_choice": choice.to_dict(),
        "whisper_model": params.get("whisper_model") or registry.DEFAULTS["transcription"],
    }
    params = {k: v for k, v in params.items() if v is not None}
    return jobs.submit(owner, KIND, params["separation_model"], params, upload, filename)


def _rms_db(path: Path) -> float:
    """Level of a whole stem in dB relative to full scale, streamed."""
    total, count = 0.0, 0
    for block in audio.iter_decode(path, channels=1, block_frames=1 << 18):
        total += float(np.square(block, dtype=np.float64).sum())
        count += block.shape[-1]
    if count == 0 or total == 0:
        return -np.inf
    return 10 * np.log10(total / count)


LYRICS_FILES = {
    "lyrics.lrc": "lrc",
    "lyrics.words.lrc": "lrc",
    "lyrics.srt": "srt",
    "lyrics.vtt": "vtt",
    "sync.json": "json",
}


def package_lyrics(
    folder: Path,
    words: list[dict[str, Any]],
    *,
    language: str | None,
    duration: float,
    max_line_chars: int = 42,
    lines: list[lyrics.Line] | None = None,
) -> list[lyrics.Line]:
    """Write the lyrics files for timed words, or for ``lines`` already made
    (aligned lyrics keep their author's lines); returns the lines."""
    if lines is None:
        lines = lyrics.build_lines(words, max_chars=max_line_chars)
    sheet = lyrics.as_transcript(lines, language=language, duration=duration)
    sync = {
        "language": language,
        "duration": round(duration, 3),
        "lines": [line.to_dict() for line in lines],
    }
    written = {
        "lyrics.lrc": transcripts.render(sheet, "lrc"),
        "lyrics.words.lrc": transcripts.render_enhanced_lrc(sheet),
        "lyrics.srt": transcripts.render(sheet, "srt"),
        "lyrics.vtt": transcripts.render(sheet, "vtt"),
        "sync.json": json.dumps(sync, ensure_ascii=False, indent=2) + "\n",
    }
    for name, text in written.items():
        (folder / name).write_text(text, encoding="utf-8")
    return lines


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    params = job.params or {}
    folder = attempt.workdir
    source = storage.input_path(job.id)
    info = job.input or {}
    fmt = params.get("output_format", "mp3")
    stem_params = {
        "two_stems": "vocals",
        "output_format": fmt,
        "bit_depth": params.get("bit_depth", "16"),
        "mp3_bitrate": params.get("mp3_bitrate", 320),
        "clip_mode": "rescale",
    }

    report.stage("separating", 0.0)
    names, paths, rate, device, vocals_by = vocals_model.separate_vocals(
        source, info, params, stem_params, folder, SubProgress(report, 0.0, 0.6)
    )
    vocals = paths[names.index("vocals")]
    instrumental = folder / f"instrumental.{fmt}"
    os.replace(paths[names.index("no_vocals")], instrumental)

    duration = float(info.get("duration") or 0.0)
    language = params.get("language")
    words: list[dict[str, Any]] = []
    transcribed: dict[str, Any] = {}
    aligned_lines: list[lyrics.Line] | None = None
    alignment_summary: dict[str, Any] | None = None
    if params.get("lyrics"):
        report.stage("aligning", 0.6)
        aligned, _ = alignment.align_file(
            vocals,
            params["whisper_model"],
            params["lyrics"],
            language,
            SubProgress(report, 0.6, 0.9),
        )
        language = aligned.get("language") or language
        aligned_lines = alignment.as_karaoke_lines(aligned["lines"])
        alignment_summary = {
            key: aligned[key]
            for key in ("lines", "words_total", "words_aligned", "words_unaligned")
        }
    else:
        report.stage("transcribing", 0.6)
    if aligned_lines is None and _rms_db(vocals) - _rms_db(source) > SILENT_VOCALS_DB:
        result, _ = transcription.transcribe_file(
            vocals,
            params["whisper_model"],
            {
                "language": language,
                "word_timestamps": True,
                "vad_filter": True,
                "condition_on_previous_text": False,
            },
            SubProgress(report, 0.6, 0.9),
        )
        language = result.get("language") or language
        words = result.get("words", [])
        transcribed = result.get("metrics") or {}
    song_analysis = None
    if params.get("analyze"):
        from app.services.analysis import analyze_path

        song_analysis = analyze_path(source, SubProgress(report, 0.9, 0.95))

    report.stage("packaging", 0.95)
    lines = package_lyrics(
        folder,
        words,
        language=language,
        duration=duration,
        max_line_chars=int(params.get("max_line_chars", 42)),
        lines=aligned_lines,
    )

    # The instrumental as an MP3 with the lyrics inside, for karaoke players.
    tags = audio.read_tags(source)
    tagged = folder / "instrumental.mp3"
    if fmt != "mp3":
        with audio.AudioWriter(tagged, rate, 2, format="mp3", mp3_bitrate=320) as writer:
            for block in audio.iter_decode(instrumental, channels=2, block_frames=1 << 18):
                writer.write(block)
    lyrics.embed_in_mp3(
        tagged, lines, language=language, title=tags.get("title"), artist=tags.get("artist")
    )

    stems = separation.describe_files(["instrumental", "vocals"], [instrumental, vocals])
    if fmt != "mp3":
        stems += separation.describe_files(["instrumental"], [tagged])
        stems[-1]["tagged"] = True
    else:
        stems[0]["tagged"] = True
    files = stems + [
        {
            "name": name,
            "size": (folder / name).stat().st_size,
            "content_type": transcripts.CONTENT_TYPES[kind],
        }
        for name, kind in LYRICS_FILES.items()
    ]
    if song_analysis is not None:
        from app.services.analysis import write_chart_files

        files += write_chart_files(folder, song_analysis)
    report(1.0, "packaging")
    return {
        "files": files,
        "has_vocals": bool(lines),
        "language": language,
        "lyrics": "\n".join(line.text for line in lines),
        "lines": [line.to_dict() for line in lines],
        "tags": tags,
        "device": device,
        "metrics": transcribed,
        "separation_model": vocals_by,
        "lyrics_source": "aligned" if alignment_summary is not None else "transcribed",
        **({"alignment": alignment_summary} if alignment_summary is not None else {}),
        **({"analysis": song_analysis} if song_analysis is not None else {}),
    }


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
