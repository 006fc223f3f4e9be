"""Separation jobs: stream the input through an engine window by window, write stems.

Every engine (Demucs models, the weight-free ``hpss``) goes through the same
pipeline: decode in blocks at the engine's rate, separate windows with a
cross-fade at the joins (``app.models.windowing``), write each stem
incrementally, then apply the clip mode. Peak memory depends on the window
size, not on the song's length.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf
from flask import current_app

from app import audio, storage
from app.errors import ServiceError
from app.models import demucs_engine, registry
from app.models.windowing import separate_in_windows
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, Progress, ProgressReporter, SubProgress, execute

log = logging.getLogger(__name__)

KIND = "separation"
DEMUCS_DEFAULTS = {"shifts": 1, "overlap": 0.25, "segment": None}
STATS_BLOCK = 1 << 18


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and the parameters a separation runs with (defaults filled
    in), from validated request fields; jobs and ``flask separate`` share it."""
    name = params.get("model") or registry.DEFAULTS[KIND]
    params = {**params, "model": name}
    if name != "hpss":
        params = {k: (DEMUCS_DEFAULTS.get(k) if v is None else v) for k, v in params.items()}
    return name, params


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue a separation of ``upload`` with validated ``params``."""
    name, params = prepare(params)
    return jobs.submit(owner, KIND, name, params, upload, filename)


@dataclass
class Plan:
    """What one job will run: the window function, its rate, channels and stems."""

    separate: Callable[[np.ndarray, Callable[[float], None]], np.ndarray]
    sample_rate: int
    channels: int
    sources: list[str]
    device: str


def _hpss_plan(info: dict[str, Any]) -> Plan:
    from app.models.hpss import hpss

    rate = int(info.get("sample_rate") or 44100)

    def separate(window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        stems = hpss(window, rate, progress=progress)
        return np.stack([stems["harmonic"], stems["percussive"]])

    channels = 2 if int(info.get("channels") or 2) >= 2 else 1
    return Plan(separate, rate, channels, ["harmonic", "percussive"], "cpu")


def _demucs_plan(
    name: str, params: dict[str, Any], report: Progress, source: Path, max_seconds: float
) -> Plan:
    config = current_app.config
    report.stage("loading_model", 0.0)
    model, device = registry.separation_model(name, config)
    segment = params.get("segment")
    bound = demucs_engine.max_segment(model)
    if segment is not None and bound is not None and segment > bound:
        raise ServiceError(
            f"segment must be at most {bound:g} s for model '{name}'.",
            code="invalid_parameter",
            status=422,
        )
    report.stage("analysing", 0.02)
    rate, channels = int(model.samplerate), int(model.audio_channels)
    mean, std = _reference_level(source, rate, channels, max_seconds)
    separator = demucs_engine.WindowSeparator(
        model,
        device,
        shifts=int(params.get("shifts", 1)),
        overlap=float(params.get("overlap", 0.25)),
        segment=segment,
        ref_mean=mean,
        ref_std=std,
    )
    return Plan(separator, separator.sample_rate, separator.channels, separator.sources, device)


def _reference_level(
    path: Path, rate: int, channels: int, max_seconds: float
) -> tuple[float, float]:
    """Mean and standard deviation of the mono mix over the whole track.

    Demucs normalises its input with these (as its CLI does); computing them in
    a streaming pass keeps every window on the same scale.
    """
    count, total, squares = 0, 0.0, 0.0
    with contextlib.closing(
        audio.iter_decode(
            path,
            sample_rate=rate,
            channels=channels,
            block_frames=STATS_BLOCK,
            max_seconds=max_seconds,
            max_bytes=current_app.config["MAX_DECODED_BYTES"],
        )
    ) as blocks:
        for block in blocks:
            mono = block.mean(axis=0, dtype=np.float64)
            count += mono.size
            total += float(mono.sum())
            squares += float(np.square(mono).sum())
    mean = total / max(count, 1)
    variance = max(squares / max(count, 1) - mean * mean, 0.0)
    return mean, float(np.sqrt(variance * count / max(count - 1, 1)))


def select_outputs(
    sources: list[str], params: dict[str, Any]
) -> tuple[list[str], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Which stems to write, and how to get them from the model's output.

    ``two_stems=vocals`` gives ``vocals`` and ``no_vocals = mix - vocals`` (as
    the demucs CLI does); ``stems`` picks a subset of the sources.
    """
    two = params.get("two_stems")
    if two:
        if two not in sources:
            raise ServiceError(
                f"two_stems must be one of the model's sources: {', '.join(sources)}.",
                code="invalid_parameter",
                status=422,
            )
        index = sources.index(two)

        def pick_two(mix: np.ndarray, out: np.ndarray) -> np.ndarray:
            return np.stack([out[index], mix - out[index]])

        return [two, f"no_{two}"], pick_two
    wanted = params.get("stems") or sources
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise ServiceError(
            f"stems must be among the model's sources: {', '.join(sources)}.",
            code="invalid_parameter",
            status=422,
        )
    indices = [sources.index(s) for s in wanted]
    if indices == list(range(len(sources))):
        return list(sources), lambda mix, out: out
    return list(wanted), lambda mix, out: out[indices]


class StemWriters:
    """One incremental writer per stem, plus the clip mode.

    ``rescale`` (the demucs default) divides each stem by its peak when it
    would clip, which needs the whole stem first: stems go to 32-bit float WAV
    files and are transcoded at the end. ``clamp`` clips; ``none`` writes the
    values as they are (integer formats cannot hold more than full scale).
    """

    def __init__(
        self, folder: Path, names: list[str], rate: int, channels: int, params: dict[str, Any]
    ) -> None:
        self.folder = folder
        self.names = names
        self.rate = rate
        self.channels = channels
        self.format = params.get("output_format", "wav")
        self.options = {
            "format": self.format,
            "bit_depth": str(params.get("bit_depth", "16")),
            "mp3_bitrate": int(params.get("mp3_bitrate", 320)),
        }
        self.clip_mode = params.get("clip_mode", "rescale")
        self.peaks = [0.0] * len(names)
        self._stack = contextlib.ExitStack()
        if self.clip_mode == "rescale":
            targets = [folder / f".{name}.f32.wav" for name in names]
            options = {"format": "wav", "bit_depth": "32f"}
        else:
            targets = [self.final_path(name) for name in names]
            options = self.options
        self.writers = [
            self._stack.enter_context(audio.AudioWriter(path, rate, channels, **options))
            for path in targets
        ]
        self.targets = targets

    def final_path(self, name: str) -> Path:
        return self.folder / f"{name}.{self.format}"

    def write(self, piece: np.ndarray) -> None:
        for index, writer in enumerate(self.writers):
            block = piece[index]
            if self.clip_mode == "clamp":
                block = np.clip(block, -1.0, 1.0)
            elif self.clip_mode == "rescale":
                self.peaks[index] = max(
                    self.peaks[index], float(np.max(np.abs(block), initial=0.0))
                )
            writer.write(block)

    def finish(self, progress: Callable[[float], None]) -> list[Path]:
        self._stack.close()
        if self.clip_mode != "rescale":
            return [self.final_path(name) for name in self.names]
        paths = []
        for index, name in enumerate(self.names):
            gain = 1.0 / max(1.01 * self.peaks[index], 1.0)
            source, target = self.targets[index], self.final_path(name)
            with (
                sf.SoundFile(source) as reader,
                audio.AudioWriter(target, self.rate, self.channels, **self.options) as writer,
            ):
                for block in reader.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                    writer.write(block.T * gain)
            source.unlink()
            paths.append(target)
            progress((index + 1) / len(self.names))
        return paths

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def separate_file(
    source: Path,
    info: dict[str, Any],
    model: str,
    params: dict[str, Any],
    folder: Path,
    report: Progress,
) -> tuple[list[str], list[Path], int, str]:
    """Separate one audio file into stem files in ``folder``.

    Returns the stem names, their paths, the output sample rate and the device.
    Shared by separation jobs and the pipelines built on them (vocals for
    lyrics, karaoke).
    """
    config = current_app.config
    max_seconds = float(config["MAX_AUDIO_SECONDS"])
    if model == "hpss":
        plan = _hpss_plan(info)
    else:
        plan = _demucs_plan(model, params, report, source, max_seconds)
    names, pick = select_outputs(plan.sources, params)

    window = int(float(config["SEPARATION_WINDOW_SECONDS"]) * plan.sample_rate)
    overlap = int(float(config["SEPARATION_OVERLAP_SECONDS"]) * plan.sample_rate)
    overlap = min(overlap, window // 2)
    total = int(float(info.get("duration") or 0.0) * plan.sample_rate)
    if total <= window * 1.25:
        # Slightly past one window: one pass costs less than a second, mostly
        # empty window (the probe's duration is an estimate, hence the margin).
        window = int(window * 1.25) + plan.sample_rate

    def separate(mix: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        return pick(mix, plan.separate(mix, progress))

    report.stage("separating", 0.05)
    writers = StemWriters(folder, names, plan.sample_rate, plan.channels, params)
    try:
        blocks = audio.iter_decode(
            source,
            sample_rate=plan.sample_rate,
            channels=plan.channels,
            block_frames=window - overlap,
            max_seconds=max_seconds,
            max_bytes=config["MAX_DECODED_BYTES"],
        )
        with contextlib.closing(blocks):
            pieces: Iterator[np.ndarray] = separate_in_windows(
                blocks,
                separate,
                overlap_frames=overlap,
                total_frames=total,
                progress=lambda f: report(0.05 + 0.85 * f),
            )
            for piece in pieces:
                writers.write(piece)
        report.stage("encoding", 0.9)
        paths = writers.finish(lambda f: report(0.9 + 0.1 * f))
    except BaseException:
        writers.abort()
        raise
    return names, paths, plan.sample_rate, plan.device


def describe_files(names: list[str], paths: list[Path]) -> list[dict[str, Any]]:
    """Result entries for written stems, read back from the files themselves:
    MP3 may have been resampled to a rate LAME supports and its frames pad the
    length slightly."""
    files = []
    for stem, path in zip(names, paths, strict=True):
        written = audio.probe(path)
        files.append(
            {
                "name": path.name,
                "stem": stem,
                "size": path.stat().st_size,
                "content_type": audio.CONTENT_TYPES[path.suffix.lstrip(".")],
                "duration": round(written.duration, 3),
                "sample_rate": written.sample_rate,
                "channels": written.channels,
            }
        )
    return files


def run(job: Job, attempt: Attempt, report: ProgressReporter) -> dict[str, Any]:
    params = job.params or {}
    source = storage.input_path(job.id)
    analyze = bool(params.get("analyze"))
    names, paths, rate, device = separate_file(
        source,
        job.input or {},
        job.engine,
        params,
        attempt.workdir,
        SubProgress(report, 0.0, 0.9) if analyze else report,
    )
    result: dict[str, Any] = {
        "files": describe_files(names, paths),
        "stems": names,
        "sample_rate": rate,
        "device": device,
    }
    if analyze:
        from app.services.analysis import analyze_path

        result["analysis"] = analyze_path(source, SubProgress(report, 0.9, 1.0))
    return result


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
