"""Separation jobs: stream the input through an engine window by window, write stems.

Every separation engine registered in ``app.models.registry`` goes through the
same pipeline: the engine prepares a ``Separator`` (loading its model, reading
what it needs of the input), then the input is decoded in blocks at the
engine's rate, separated in windows with a cross-fade at the joins
(``app.models.windowing``), each stem written incrementally, and the clip mode
applied. Peak memory depends on the window size, not on the song's length.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf
from flask import current_app

from app import audio, storage
from app.errors import ServiceError
from app.models import registry
from app.models.engines import OptionError, Separator, resolve_options
from app.models.windowing import separate_in_windows
from app.records import Job, User
from app.services import jobs
from app.services.runner import Attempt, Progress, ProgressReporter, SubProgress, execute

log = logging.getLogger(__name__)

KIND = "separation"


def prepare(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and the parameters a separation runs with (the model's
    option defaults filled in), from validated request fields; jobs and
    ``flask separate`` share it."""
    name = params.get("model") or registry.DEFAULTS[KIND]
    params = {**params, "model": name}
    for option in registry.options(KIND, name, current_app.config):
        if params.get(option.name) is None:
            params[option.name] = option.default
    return name, params


def submit(owner: User, params: dict[str, Any], upload: IO[bytes], filename: str | None) -> Job:
    """Queue a separation of ``upload`` with validated ``params``."""
    name, params = prepare(params)
    return jobs.submit(owner, KIND, name, params, upload, filename)


@dataclass
class SourceAudio:
    """The file being separated, as engines read it (``SeparationInput``):
    decoded with the server's length and size limits."""

    path: Path
    info: dict[str, Any]
    max_seconds: float
    max_bytes: float

    def blocks(
        self, sample_rate: int, channels: int, block_frames: int
    ) -> Generator[np.ndarray, None, None]:
        return audio.iter_decode(
            self.path,
            sample_rate=sample_rate,
            channels=channels,
            block_frames=block_frames,
            max_seconds=self.max_seconds,
            max_bytes=self.max_bytes,
        )


def _options(engine: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every option of model ``name``, from ``params`` or its default."""
    try:
        return resolve_options(engine.options(name, current_app.config), params)
    except OptionError as exc:
        raise ServiceError(str(exc), code="invalid_parameter", status=422) from None


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
        self.options: dict[str, Any] = {
            "format": self.format,
            "bit_depth": str(params.get("bit_depth", "16")),
            "mp3_bitrate": int(params.get("mp3_bitrate", 320)),
        }
        self.clip_mode = params.get("clip_mode", "rescale")
        self.peaks = [0.0] * len(names)
        self._stack = contextlib.ExitStack()
        if self.clip_mode == "rescale":
            targets = [folder / f".{name}.f32.wav" for name in names]
            options: dict[str, Any] = {"format": "wav", "bit_depth": "32f"}
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
    facts: dict[str, Any] | None = None,
) -> tuple[list[str], list[Path], int, str]:
    """Separate one audio file into stem files in ``folder``.

    Returns the stem names, their paths, the output sample rate and the device.
    Shared by separation jobs and the pipelines built on them (vocals for
    lyrics, karaoke). ``facts``, if given, receives how the engine ran (its
    ``Separator.facts``), for the job's metrics.
    """
    config = current_app.config
    engine = registry.engine(KIND, model, config)
    source_input = SourceAudio(
        source, info, float(config["MAX_AUDIO_SECONDS"]), config["MAX_DECODED_BYTES"]
    )
    plan: Separator = engine.prepare(
        model, _options(engine, model, params), source_input, config, report
    )
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
        blocks = source_input.blocks(plan.sample_rate, plan.channels, window - overlap)
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
        if facts is not None and plan.facts is not None:
            facts.update(plan.facts())
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
    facts: dict[str, Any] = {}
    names, paths, rate, device = separate_file(
        source,
        job.input or {},
        job.model,
        params,
        attempt.workdir,
        SubProgress(report, 0.0, 0.9) if analyze else report,
        facts,
    )
    result: dict[str, Any] = {
        "files": describe_files(names, paths),
        "stems": names,
        "sample_rate": rate,
        "device": device,
        "metrics": facts,
    }
    if analyze:
        from app.services.analysis import analyze_path, write_chart_files

        result["analysis"] = analyze_path(source, SubProgress(report, 0.9, 1.0))
        result["files"] += write_chart_files(attempt.workdir, result["analysis"])
    return result


def run_job(job_id: str) -> str | None:
    return execute(job_id, run)
