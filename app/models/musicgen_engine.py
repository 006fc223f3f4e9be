"""MusicGen (text, melody and audio-prompt to music) through transformers.

A model name resolves, in order, to a local ``save_pretrained`` folder
``MODELS_DIR/musicgen/<last part of the name>/`` (``facebook/musicgen-small`` ->
``musicgen-small/``), to the HuggingFace cache, or to a download by name when
``ALLOW_MODEL_DOWNLOAD`` is on. A request never passes a path. Whatever fails
ends as ``model_unavailable`` with a message that says how to provide weights.

Generation follows audiocraft's ``MusicGen``:

* Sampling as audiocraft does it: top-k 250, temperature 1, classifier-free
  guidance 3; ``top_p > 0`` replaces top-k; ``temperature == 0`` is greedy.
* The decoder sees ``num_codebooks`` codebooks with a delay of one frame per
  codebook, so ``frames + delay`` decoding steps give ``frames`` frames of
  audio (at 50 frames/s, 253 steps -> exactly 5 s with 4 codebooks).
* Longer than the model's window (30 s for the released models), audiocraft's
  extend-stride scheme: the first window is generated from scratch, each next
  window is conditioned on the last ``window - extend_stride`` seconds of
  *tokens* already generated and adds ``extend_stride`` seconds. The prompt is
  passed as decoder tokens (what audiocraft does), not re-encoded audio, so
  nothing is lost at each hand-over. Each window's audio is decoded by EnCodec
  together with its context; the output switches to it with a short linear
  cross-fade in the middle of the overlap, where both decodings of the same
  tokens agree (a linear fade of equal signals keeps the level; an equal-power
  one would add up to 3 dB).
* Melody models condition every window on the chroma of the melody from that
  window's start time, the melody looping when shorter (audiocraft again).
* Continuation: like audiocraft's ``generate_continuation``, the result is the
  prompt followed by its continuation and ``duration`` counts both. Unlike
  audiocraft, the prompt part is the caller's own samples (resampled to the
  model rate and channels), not EnCodec's re-synthesis of them; the model is
  conditioned on the prompt's whole frames (its last ``window - extend_stride``
  seconds at most) and the join is cross-faded like the windows'.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ServiceError
from app.models import catalogue_facts
from app.models.engines import GenerationEngine, Option, model_entry

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/musicgen-small"
SAMPLE_RATE = 32000  # every released MusicGen model
AUDIOCRAFT_WINDOW = 30.0  # seconds: the length MusicGen was trained on
EXTEND_STRIDE_RATIO = 0.6  # audiocraft's extend_stride of 18 s for its 30 s window
CROSSFADE_SECONDS = 0.04

# MusicgenMelodyFeatureExtractor's defaults (used when a folder has no preprocessor_config.json).
CHROMA_DEFAULTS = {
    "sampling_rate": SAMPLE_RATE,
    "n_fft": 16384,
    "hop_length": 4096,
    "chunk_length": 30,
    "num_chroma": 12,
}


@dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    melody: bool
    channels: int


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            "facebook/musicgen-small",
            "MusicGen small (300 M): text to music, mono 32 kHz; the default and the fastest.",
            False,
            1,
        ),
        Pretrained(
            "facebook/musicgen-medium", "MusicGen medium (1.5 B): text to music, mono.", False, 1
        ),
        Pretrained(
            "facebook/musicgen-large",
            "MusicGen large (3.3 B): text to music, mono; best quality, slowest.",
            False,
            1,
        ),
        Pretrained(
            "facebook/musicgen-melody",
            "MusicGen melody (1.5 B): text plus a melody to follow (chroma), mono.",
            True,
            1,
        ),
        Pretrained(
            "facebook/musicgen-melody-large",
            "MusicGen melody large (3.3 B): text plus a melody to follow, mono.",
            True,
            1,
        ),
        Pretrained(
            "facebook/musicgen-stereo-small",
            "MusicGen stereo small (300 M): text to music, stereo.",
            False,
            2,
        ),
        Pretrained(
            "facebook/musicgen-stereo-medium",
            "MusicGen stereo medium (1.5 B): text to music, stereo.",
            False,
            2,
        ),
        Pretrained(
            "facebook/musicgen-stereo-large",
            "MusicGen stereo large (3.3 B): text to music, stereo.",
            False,
            2,
        ),
        Pretrained(
            "facebook/musicgen-stereo-melody",
            "MusicGen stereo melody (1.5 B): text plus a melody to follow, stereo.",
            True,
            2,
        ),
        Pretrained(
            "facebook/musicgen-stereo-melody-large",
            "MusicGen stereo melody large (3.3 B): text plus a melody to follow, stereo.",
            True,
            2,
        ),
    )
}
_BY_FOLDER = {name.rsplit("/", 1)[-1]: name for name in PRETRAINED}
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------- names


def root_dir(config: dict[str, Any]) -> Path:
    return Path(config["MODELS_DIR"]) / "musicgen"


def _folder_name(name: str) -> str | None:
    """The local folder a name maps to: its last part; ``None`` for anything path-like.

    A name is a bare folder name (``musicgen-small``) or ``owner/name`` with one
    slash; every part starts with a letter or digit (no ``.``/``..``).
    """
    if not isinstance(name, str) or "\\" in name:
        return None
    parts = name.split("/")
    if len(parts) > 2 or not all(_PART.fullmatch(part) for part in parts):
        return None
    return parts[-1]


def _canonical(name: str) -> str:
    """``musicgen-small`` -> ``facebook/musicgen-small``; other names unchanged."""
    return _BY_FOLDER.get(name, name) if "/" not in name else name


def local_dir(name: str, config: dict[str, Any]) -> Path | None:
    folder_name = _folder_name(name)
    if folder_name is None:
        return None
    if "/" in name and name not in PRETRAINED:
        return None  # only the released models' owner prefix maps onto a local folder
    folder = root_dir(config) / folder_name
    return folder if (folder / "config.json").is_file() else None


def local_names(config: dict[str, Any]) -> list[str]:
    """Names usable from local folders: a released model's full name, else the folder name."""
    root = root_dir(config)
    if not root.is_dir():
        return []
    names = []
    for path in root.iterdir():
        if path.is_dir() and _PART.fullmatch(path.name) and (path / "config.json").is_file():
            names.append(_BY_FOLDER.get(path.name, path.name))
    return sorted(names)


def known_names(config: dict[str, Any]) -> set[str]:
    return set(PRETRAINED) | set(local_names(config))


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return False
        return any(
            isinstance(try_to_load_from_cache(name, weights), str)
            for weights in (
                "model.safetensors",
                "model.safetensors.index.json",
                "pytorch_model.bin",
            )
        )
    except Exception:
        return False


def _local_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def catalogue(config: dict[str, Any]) -> list[dict[str, Any]]:
    return MusicGenEngine().catalogue(config)


def how_to_provide(name: str, config: dict[str, Any]) -> str:
    folder = _folder_name(name) or "<name>"
    return (
        f"put a transformers save_pretrained folder (config.json, weights, tokenizer and "
        f"preprocessor files) in {root_dir(config) / folder}/, or run "
        f"`flask models download {name}` on a machine with internet access and copy that folder"
        + ("" if config.get("ALLOW_MODEL_DOWNLOAD") else ", or set ALLOW_MODEL_DOWNLOAD=1")
    )


def _unavailable(name: str, config: dict[str, Any], why: str) -> ServiceError:
    return ServiceError(
        f"MusicGen model '{name}' {why}: " + how_to_provide(name, config) + ".",
        code="model_unavailable",
    )


def _invalid(message: str, field: str | None = None) -> ServiceError:
    return ServiceError(
        message,
        code="invalid_parameter",
        status=422,
        errors={field: message} if field else None,
    )


# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """A loaded model and what generation needs to know about it."""

    name: str
    model: Any
    processor: Any  # MusicgenProcessor; the tokenizer for melody models (text side only)
    sample_rate: int
    frame_rate: float  # EnCodec frames (decoder steps) per second
    hop_length: int  # samples per frame
    num_codebooks: int  # decoder codebooks (both channels for stereo models)
    audio_channels: int
    max_window_seconds: float
    is_melody: bool
    device: str
    dtype: Any
    chroma_params: dict[str, Any] | None = None  # melody models: the feature extractor's settings

    @property
    def delay(self) -> int:
        """Extra decoding steps the codebook delay pattern costs per generate call."""
        return self.num_codebooks // self.audio_channels - 1


def _from_pretrained(source: str, local_files_only: bool) -> tuple[Any, Any, dict[str, Any] | None]:
    """Model, text processor and (melody models) feature-extractor settings from a folder or name.

    Melody models' ``MusicgenMelodyFeatureExtractor`` needs torchaudio, so only
    its settings are read; :func:`chroma` computes its features.
    """
    from transformers import (
        AutoConfig,
        AutoProcessor,
        AutoTokenizer,
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
    model: MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    if config.model_type == "musicgen_melody":
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(
            source, local_files_only=local_files_only
        )
        processor = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        try:
            features, _ = FeatureExtractionMixin.get_feature_extractor_dict(
                source, local_files_only=local_files_only
            )
        except OSError:
            features = {}
        return model, processor, {**CHROMA_DEFAULTS, **features}
    if config.model_type != "musicgen":
        raise ValueError(f"not a MusicGen model: model_type {config.model_type!r}")
    model = MusicgenForConditionalGeneration.from_pretrained(
        source, local_files_only=local_files_only
    )
    processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    return model, processor, None


def _describe(name: str, model: Any, processor: Any, features: dict | None, device: str) -> Loaded:
    import torch

    codec = model.config.audio_encoder
    decoder = model.config.decoder
    sample_rate = int(codec.sampling_rate)
    hop = int(np.prod(codec.upsampling_ratios))
    frame_rate = sample_rate / hop
    codebooks = int(decoder.num_codebooks)
    channels = int(decoder.audio_channels)
    # The decoder sequence of a window is frames + delay + 1 positions; the released
    # models were trained on 30 s and a melody model sees at most chroma_length frames.
    positions = int(decoder.max_position_embeddings) - codebooks // channels
    window = min(AUDIOCRAFT_WINDOW, positions / frame_rate)
    if features is not None and getattr(model.config, "chroma_length", None):
        chroma_window = (
            int(model.config.chroma_length) * features["hop_length"] / features["sampling_rate"]
        )
        window = min(window, chroma_window)
    return Loaded(
        name=name,
        model=model,
        processor=processor,
        sample_rate=sample_rate,
        frame_rate=frame_rate,
        hop_length=hop,
        num_codebooks=codebooks,
        audio_channels=channels,
        max_window_seconds=math.floor(window * frame_rate) / frame_rate,
        is_melody=features is not None,
        device=device,
        dtype=torch.float16 if device.startswith("cuda") else torch.float32,
        chroma_params=features,
    )


def load(name: str, config: dict[str, Any], device: str) -> Loaded:
    """Load a MusicGen model by name: local folder, then the hub cache, then a download."""
    import torch

    folder = local_dir(name, config)
    canonical = _canonical(name)
    allow_download = bool(config.get("ALLOW_MODEL_DOWNLOAD"))
    if folder is not None:
        source, local_only = str(folder), True
    elif canonical in PRETRAINED and (allow_download or _in_hub_cache(canonical)):
        source, local_only = canonical, not allow_download
    else:
        raise _unavailable(name, config, "is not available on this server")
    try:
        model, processor, features = _from_pretrained(source, local_only)
    except Exception as exc:
        log.warning("could not load musicgen model %s from %s: %r", name, source, exc)
        raise _unavailable(name, config, f"could not be loaded ({type(exc).__name__})") from None
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = model.to(device, dtype=dtype).eval()
    return _describe(canonical, model, processor, features, device)


def download(name: str, config: dict[str, Any]) -> Path:
    """Fetch a released model from the hub and save it in ``MODELS_DIR/musicgen/<name>``.

    Goes through ``from_pretrained`` + ``save_pretrained`` so the folder is what
    this transformers version reads (the model is held in memory meanwhile:
    about 4 bytes per parameter). Returns the folder.
    """
    canonical = _canonical(name)
    if canonical not in PRETRAINED:
        raise ValueError(f"{name!r} is not a MusicGen model name: {', '.join(PRETRAINED)}")
    target = root_dir(config) / canonical.rsplit("/", 1)[-1]
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model, processor, features = _from_pretrained(canonical, False)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if features is not None:
            (tmp / "preprocessor_config.json").write_text(json.dumps(features, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- audio helpers


MAX_CHANNELS = 8


def _as_channels_first(audio: np.ndarray, field: str | None = None) -> np.ndarray:
    """float32 ``(channels, samples)`` from a 1-D or channels-first 2-D array."""
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2 or not 1 <= data.shape[0] <= MAX_CHANNELS:
        raise _invalid("Audio must be a 1-D or a (channels, samples) array.", field)
    return data


def _audio_argument(value: Any, field: str) -> tuple[np.ndarray, int]:
    """A ``(samples, sample_rate)`` argument checked: channels first, finite, not empty."""
    try:
        samples, rate = value
        rate = int(rate)
    except (TypeError, ValueError):
        raise _invalid(f"{field} must be (samples, sample_rate).", field) from None
    data = _as_channels_first(samples, field)
    if rate <= 0:
        raise _invalid(f"The {field} audio's sample rate must be positive.", field)
    if data.shape[-1] == 0:
        raise _invalid(f"The {field} audio is empty.", field)
    if not np.isfinite(data).all():
        raise _invalid(f"The {field} audio has non-finite samples.", field)
    return data, rate


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise _invalid(f"{field} must be a number.", field)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"{field} must be a number.", field) from None
    if not math.isfinite(number):
        raise _invalid(f"{field} must be a finite number.", field)
    return number


def _resample(data: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(channels, samples) float32 from ``rate`` to ``target`` with soxr."""
    if rate == target or data.shape[-1] == 0:
        return np.ascontiguousarray(data, dtype=np.float32)
    import soxr

    out = soxr.resample(np.ascontiguousarray(data.T), rate, target)
    out = out.reshape(out.shape[0], -1) if out.ndim == 2 else out[:, None]
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _to_model_audio(audio: np.ndarray, rate: int, loaded: Loaded) -> np.ndarray:
    """Caller audio as (model channels, samples) float32 at the model rate."""
    data = _as_channels_first(audio)
    if data.shape[0] != loaded.audio_channels:
        mono = data.mean(axis=0, keepdims=True)
        data = np.repeat(mono, loaded.audio_channels, axis=0)
    return _resample(data, int(rate), loaded.sample_rate)


@lru_cache(maxsize=8)
def _chroma_filters(sampling_rate: int, n_fft: int, num_chroma: int) -> np.ndarray:
    from transformers.audio_utils import chroma_filter_bank

    filters = chroma_filter_bank(
        num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sampling_rate, tuning=0
    )
    return filters.astype(np.float32)


def _power_spectrogram(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """torchaudio ``Spectrogram(n_fft, hop_length=hop, power=2, normalized=True)``:
    periodic Hann window, centred reflect padding; returns (n_fft // 2 + 1, frames)."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft, signal

    padded = np.pad(wave, n_fft // 2, mode="reflect")
    frames = sliding_window_view(padded, n_fft)[::hop]
    window = signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    spectrum = fft.rfft(frames * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2) / np.float32(np.sum(window**2))
    return power.T.astype(np.float32)


def chroma(audio: np.ndarray, sample_rate: int, loaded: Loaded | None = None) -> np.ndarray:
    """The melody conditioning of ``MusicgenMelodyFeatureExtractor``: ``(frames, num_chroma)``.

    Same definition, numpy/scipy only: mono mix, resampled to the extractor's
    rate (soxr here, torchaudio's sinc resampler there), cut to ``chunk_length``
    seconds, zero-padded symmetrically to ``n_fft`` when shorter, power
    spectrogram (periodic Hann, ``n_fft`` 16384, hop 4096, centred reflect
    padding, window-normalised), librosa's chroma filter bank, max-normalised
    over the pitch classes and then one-hot at the strongest class of each frame.
    """
    params = {**CHROMA_DEFAULTS, **((loaded.chroma_params if loaded else None) or {})}
    rate = int(params["sampling_rate"])
    n_fft = int(params["n_fft"])
    hop = int(params["hop_length"])
    num_chroma = int(params["num_chroma"])
    wave = _as_channels_first(audio).mean(axis=0, keepdims=True)
    wave = _resample(wave, int(sample_rate), rate)[0]
    wave = wave[: int(params["chunk_length"]) * rate]
    if wave.shape[0] < n_fft:
        pad = n_fft - wave.shape[0]
        wave = np.pad(wave, (pad // 2, pad // 2 + pad % 2))
    spec = _power_spectrogram(wave, n_fft, hop)
    raw = _chroma_filters(rate, n_fft, num_chroma) @ spec  # (num_chroma, frames)
    norm = raw / np.maximum(np.abs(raw).max(axis=0, keepdims=True), 1e-6)
    strongest = norm.argmax(axis=0)
    out = np.zeros((raw.shape[1], num_chroma), dtype=np.float32)
    out[np.arange(raw.shape[1]), strongest] = 1.0
    return out


# --------------------------------------------------------------------------- generation


def _step_counter(total_steps: int, progress: Callable[[float], None] | None) -> Any:
    """A stopping criterion that never stops: it counts decoding steps, reports
    progress (an exception from ``progress`` ends generation) and keeps the last
    token ids (``generate`` only returns decoded audio)."""
    import torch
    from transformers import StoppingCriteria

    class StepCounter(StoppingCriteria):
        def __init__(self) -> None:
            self.done = 0
            self.window_steps = 0
            self.window_limit = 0
            self.ids: Any = None

        def begin(self, steps: int) -> None:
            self.window_steps, self.window_limit, self.ids = 0, steps, None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.ids = input_ids
            # On CUDA transformers may run one step past the end and undo it: not counted.
            if self.window_steps < self.window_limit:
                self.window_steps += 1
                self.done += 1
                if progress is not None:
                    progress(min(self.done / total_steps, 1.0))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StepCounter()


def _encode_prompt(loaded: Loaded, audio: np.ndarray) -> Any:
    """(channels, frames * hop) audio -> (num_codebooks, frames) EnCodec codes, laid out as
    the decoder expects them (stereo: left and right codebooks interleaved)."""
    import torch

    codec = loaded.model.audio_encoder
    frames = audio.shape[-1] // loaded.hop_length
    x = torch.from_numpy(np.ascontiguousarray(audio)).to(loaded.device, loaded.dtype)[None]
    with torch.inference_mode():
        per_channel = [
            codec.encode(input_values=x[:, c : c + 1], return_dict=True).audio_codes[0, 0]
            for c in range(loaded.audio_channels)
        ]
    if any(codes.shape[0] * loaded.audio_channels != loaded.num_codebooks for codes in per_channel):
        raise _invalid(
            f"Model '{loaded.name}' cannot continue audio: its codec gives "
            f"{per_channel[0].shape[0]} codebooks per channel, the decoder expects "
            f"{loaded.num_codebooks // loaded.audio_channels}.",
            "continuation",
        )
    codes = torch.stack(per_channel, dim=1).reshape(loaded.num_codebooks, -1)
    return codes[:, :frames].to(torch.long)


def _window_codes(loaded: Loaded, ids: Any, context: Any, length: int) -> Any:
    """The (num_codebooks, frames) codes of one generate call from its raw token ids."""
    import torch

    decoder = loaded.model.decoder
    pad = int(loaded.model.generation_config.decoder_start_token_id)
    ids = ids[:, :length]
    start = torch.full((loaded.num_codebooks, 1), pad, dtype=torch.long, device=ids.device)
    initial = start if context is None else torch.cat([start, context.to(ids.device)], dim=-1)
    _, pattern = decoder.build_delay_pattern_mask(initial, pad_token_id=pad, max_length=length)
    ids = decoder.apply_delay_pattern_mask(ids, pattern)
    return ids[ids != pad].reshape(loaded.num_codebooks, -1)


def _join(out: np.ndarray, window: np.ndarray, start: int, fade: int, at: int) -> np.ndarray:
    """Continue ``out`` with ``window``, which begins at sample ``start`` of the output.

    ``out[:, start:]`` and the head of ``window`` cover the same time: the result
    keeps ``out`` up to ``at - fade``, cross-fades linearly to ``window`` over the
    ``fade`` samples ending at ``at`` (``start + fade <= at <= len(out)``), then
    follows ``window`` to its end.
    """
    end = out.shape[-1]
    if end == 0:
        return window
    at = min(max(at, start), end)
    fade = max(0, min(fade, at - start))
    ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
    mixed = out[:, at - fade : at] * (1.0 - ramp) + window[:, at - fade - start : at - start] * ramp
    return np.concatenate([out[:, : at - fade], mixed, window[:, at - start :]], axis=-1)


def _fade_end(start: int, end: int, fade: int, prompt_end: int) -> int:
    """Where a window's cross-fade ends (see :func:`_join`).

    Both sides decode the same tokens over the overlap, but each is wrong near its
    own edge (EnCodec lacks context there: measured, the first and last ~4 frames
    differ, the middle is identical), so the fade sits in the middle of the
    overlap. The caller's prompt samples are kept: right after the prompt the fade
    takes its last ``fade`` samples, later fades never reach into it.
    """
    if end <= prompt_end:
        return end
    return min(end, max((start + end + fade) // 2, prompt_end + fade))


def _melody_segment(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples of a looping melody from sample ``start`` (audiocraft's way)."""
    if start == 0 and wave.shape[-1] <= length:
        return wave
    return np.take(wave, np.arange(start, start + length) % wave.shape[-1], axis=-1)


def generate(
    loaded: Loaded,
    *,
    prompt: str,
    duration: float,
    seed: int | None,
    guidance_scale: float = 3.0,
    temperature: float = 1.0,
    top_k: int = 250,
    top_p: float = 0.0,
    melody: tuple[np.ndarray, int] | None = None,
    continuation: tuple[np.ndarray, int] | None = None,
    progress: Callable[[float], None] | None = None,
    extend_stride: float | None = None,
    window_seconds: float | None = None,
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Generate ``duration`` seconds of music: ``(audio (channels, samples) float32, rate, used)``.

    ``melody`` and ``continuation`` are ``(samples, sample_rate)`` with samples 1-D
    or ``(channels, samples)``. With ``continuation`` the result starts with those
    samples (at the model rate) and ``duration`` counts them. ``window_seconds``
    (default: the model's window) and ``extend_stride`` (default 0.6 of it: 18 s
    of 30) control long generation. ``progress`` gets the fraction of decoding
    steps done over all windows; whatever it raises stops generation. The same
    seed, parameters, model and device give the same samples. No clipping.
    """
    import torch

    frame_rate, hop, rate = loaded.frame_rate, loaded.hop_length, loaded.sample_rate
    if not isinstance(prompt, str):
        raise _invalid("prompt must be a string.", "prompt")
    duration = _number(duration, "duration")
    guidance_scale = _number(guidance_scale, "guidance_scale")
    temperature = _number(temperature, "temperature")
    top_p = _number(top_p, "top_p")
    if duration <= 0:
        raise _invalid("duration must be a positive number of seconds.", "duration")
    if guidance_scale < 0:
        raise _invalid("guidance_scale must be 0 or more.", "guidance_scale")
    if temperature < 0:
        raise _invalid("temperature must be 0 (greedy) or more.", "temperature")
    if _number(top_k, "top_k") != int(top_k) or top_k < 0:
        raise _invalid("top_k must be a whole number, 0 or more.", "top_k")
    if not 0.0 <= top_p <= 1.0:
        raise _invalid("top_p must be between 0 and 1.", "top_p")
    if seed is not None and (_number(seed, "seed") != int(seed) or not 0 <= seed < 2**63):
        raise _invalid("seed must be a whole number from 0 to 2**63 - 1.", "seed")
    if melody is not None:
        if not loaded.is_melody:
            raise _invalid(f"Model '{loaded.name}' does not take a melody.", "melody")
        melody = _audio_argument(melody, "melody")
    if continuation is not None:
        continuation = _audio_argument(continuation, "continuation")

    window_s = (
        loaded.max_window_seconds
        if window_seconds is None
        else _number(window_seconds, "window_seconds")
    )
    window_frames = math.floor(window_s * frame_rate + 1e-9)
    if window_frames < 2 or window_s > loaded.max_window_seconds + 1e-9:
        raise _invalid(
            f"window_seconds must be between {2 / frame_rate:g} and "
            f"{loaded.max_window_seconds:g} for this model.",
            "window_seconds",
        )
    stride_s = (
        EXTEND_STRIDE_RATIO * window_frames / frame_rate if extend_stride is None else extend_stride
    )
    stride_frames = round(_number(stride_s, "extend_stride") * frame_rate)
    if not 1 <= stride_frames < window_frames:
        raise _invalid(
            f"extend_stride must be more than 0 and less than the window ({window_frames / frame_rate:g} s).",
            "extend_stride",
        )
    context_limit = window_frames - stride_frames

    total_samples = round(duration * rate)
    total_frames = -(-total_samples // hop)
    out = np.zeros((loaded.audio_channels, 0), dtype=np.float32)
    tokens = None  # the codes the next window may be conditioned on ...
    tokens_from = 0  # ... starting at this frame of the output
    have = 0
    prompt_samples = 0
    if continuation is not None:
        out = _to_model_audio(continuation[0], continuation[1], loaded)
        prompt_samples = out.shape[-1]
        if prompt_samples >= total_samples:
            raise _invalid(
                "duration counts the continuation prompt and must be longer than it "
                f"({prompt_samples / rate:.2f} s).",
                "duration",
            )
        have = prompt_samples // hop  # whole frames; a partial last frame is kept, not encoded
        tokens_from = have - min(have, context_limit)
        if have > tokens_from:
            tokens = _encode_prompt(loaded, out[:, tokens_from * hop : have * hop])

    plan = []  # (first frame of the context, context frames, new frames) per generate call
    planned = have
    while planned < total_frames:
        context = min(planned, context_limit)
        new = min(total_frames - planned, window_frames - context)
        plan.append((planned - context, context, new))
        planned += new
    total_steps = sum(new + loaded.delay for _, _, new in plan)

    melody_wave = None
    chroma_rate = rate
    if melody is not None:
        chroma_rate = int((loaded.chroma_params or CHROMA_DEFAULTS)["sampling_rate"])
        melody_wave = melody[0].mean(axis=0, keepdims=True)
        melody_wave = _resample(melody_wave, melody[1], chroma_rate)[0]

    sampling: dict[str, Any] = {"do_sample": temperature > 0, "guidance_scale": guidance_scale}
    if temperature > 0:
        sampling["temperature"] = temperature
        # audiocraft samples with top-p when it is set, else with top-k (0: plain sampling).
        sampling["top_p"] = top_p if top_p > 0 else 1.0
        sampling["top_k"] = 0 if top_p > 0 else int(top_k)
    if seed is None:
        seed = secrets.randbelow(2**31)

    text = loaded.processor(text=[prompt], padding=True, truncation=True, return_tensors="pt")
    text = {k: v.to(loaded.device) for k, v in text.items() if k in ("input_ids", "attention_mask")}
    counter = _step_counter(max(total_steps, 1), progress)
    fade = round(CROSSFADE_SECONDS * rate)
    model = loaded.model
    rng_devices = [torch.device(loaded.device)] if loaded.device.startswith("cuda") else []
    with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
        torch.manual_seed(int(seed))
        for first, context, new in plan:
            kwargs: dict[str, Any] = dict(text)
            if context:
                kwargs["decoder_input_ids"] = tokens[  # type: ignore[index]  # a context means the prompt was encoded
                    :, first - tokens_from : first + context - tokens_from
                ]
            if melody_wave is not None:
                segment = _melody_segment(
                    melody_wave,
                    round(first / frame_rate * chroma_rate),
                    round(window_frames / frame_rate * chroma_rate),
                )
                features = chroma(segment, chroma_rate, loaded)
                kwargs["input_features"] = torch.from_numpy(features)[None].to(
                    loaded.device, loaded.dtype
                )
            steps = new + loaded.delay
            counter.begin(steps)
            audio = model.generate(
                **kwargs,
                max_new_tokens=steps,
                stopping_criteria=[counter],
                **sampling,
            )
            codes = _window_codes(
                loaded, counter.ids, kwargs.get("decoder_input_ids"), 1 + context + steps
            )
            known = codes if tokens is None else torch.cat([tokens, codes[:, context:]], dim=-1)
            tokens_from += max(0, known.shape[-1] - context_limit)
            tokens = known[:, -context_limit:] if context_limit else None
            audio = audio[0].to("cpu", torch.float32).numpy()[:, : (context + new) * hop]
            start = first * hop
            at = _fade_end(start, out.shape[-1], fade, prompt_samples)
            out = _join(out, audio, start, fade, at)
    out = np.ascontiguousarray(out[:, :total_samples], dtype=np.float32)

    used = {
        "model": loaded.name,
        "seed": int(seed),
        "duration": total_samples / rate,
        "guidance_scale": float(guidance_scale),
        "temperature": float(temperature),
        "top_k": int(sampling.get("top_k", top_k)),
        "top_p": float(top_p),
        "window_seconds": window_frames / frame_rate,
        "extend_stride": stride_frames / frame_rate,
        "windows": len(plan),
        "decoding_steps": total_steps,
        "sample_rate": rate,
        "channels": loaded.audio_channels,
        "melody": melody is not None,
        "continuation_seconds": None if continuation is None else prompt_samples / rate,
    }
    return out, rate, used


# Request parameters handed to ``generate`` as they are, when given.
SAMPLING = ("guidance_scale", "temperature", "top_k", "top_p", "extend_stride")


class MusicGenGenerator:
    """A loaded MusicGen model ready for one generation."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.device = loaded.device

    def __call__(
        self,
        params: Mapping[str, Any],
        conditioning: Mapping[str, tuple[np.ndarray, int]],
        progress: Callable[[float], None],
    ) -> tuple[np.ndarray, int, dict[str, Any]]:
        return generate(
            self.loaded,
            prompt=params["prompt"],
            duration=float(params["duration"]),
            seed=params.get("seed"),
            progress=progress,
            **{k: params[k] for k in SAMPLING if k in params},
            **{  # type: ignore[arg-type]  # only melody= and continuation=, which take these pairs
                role: conditioning[role]
                for role in ("melody", "continuation")
                if role in conditioning
            },
        )


class MusicGenEngine(GenerationEngine):
    """MusicGen models through transformers: the released names and local folders."""

    name = "musicgen"
    label = "MusicGen"
    OPTIONS = (
        Option(
            "guidance_scale",
            "number",
            "Classifier-free guidance: higher follows the prompt more closely.",
            default=3.0,
            minimum=0.0,
            maximum=20.0,
        ),
        Option(
            "temperature",
            "number",
            "Sampling temperature; 0 is greedy.",
            default=1.0,
            minimum=0.0,
            maximum=5.0,
        ),
        Option(
            "top_k",
            "integer",
            "Sample among this many likeliest tokens.",
            default=250,
            minimum=0,
            maximum=2048,
        ),
        Option(
            "top_p",
            "number",
            "Above 0, sample from the likeliest tokens covering this probability instead of top_k.",
            default=0.0,
            minimum=0.0,
            maximum=1.0,
        ),
    )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        local = set(local_names(config))
        allow = bool(config.get("ALLOW_MODEL_DOWNLOAD"))
        entries = []
        for name in sorted(set(PRETRAINED) | local, key=lambda n: (n not in PRETRAINED, n)):
            spec = PRETRAINED.get(name)
            channels: int | None
            sample_rate: int | None
            if spec is not None:
                melody, channels, sample_rate = spec.melody, spec.channels, SAMPLE_RATE
                description = spec.description
            else:
                folder = local_dir(name, config)
                cfg = _local_config(folder) if folder else {}
                melody = cfg.get("model_type") == "musicgen_melody"
                channels = (cfg.get("decoder") or {}).get("audio_channels")
                sample_rate = (cfg.get("audio_encoder") or {}).get("sampling_rate")
                description = f"Local MusicGen model ({name}/)."
            entries.append(
                model_entry(
                    self,
                    name,
                    description=description,
                    available=name in local or (spec is not None and _in_hub_cache(name)),
                    downloadable=allow and spec is not None,
                    sample_rate=sample_rate,
                    options=self.OPTIONS,
                    channels=channels,
                    melody=melody,
                    **(
                        catalogue_facts.MUSICGEN
                        if spec is not None
                        else catalogue_facts.MUSICGEN_LOCAL
                    ).fields(),
                )
            )
        return entries

    def names(self, config: dict[str, Any]) -> set[str]:
        return known_names(config)

    def load(self, name: str, config: dict[str, Any], device: str) -> Loaded:
        return load(name, config, device)

    def can_download(self, name: str) -> bool:
        return _canonical(name) in PRETRAINED

    def download(self, name: str, config: dict[str, Any]) -> Path:
        return download(name, config)

    def prepare(self, name: str, config: dict[str, Any]) -> MusicGenGenerator:
        loaded, _device = self.model(name, config)
        return MusicGenGenerator(loaded)
