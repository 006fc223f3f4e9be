"""The contract every model family implements, one base class per kind.

A model family (Demucs, hpss, Whisper, MusicGen, ...) is one ``Engine``
subclass in one module under ``app/models/``, registered with one line in
``app/models/registry.py``. Everything outside the family's module reaches it
through the registry, so the services, blueprints, CLI and web page never need
to know which families exist:

* ``catalogue`` lists the names a request may use, each with what the API and
  the page show (``GET /api/v1/models``): description, stems, sample rate,
  whether its weights are here or can be fetched, and the options it takes.
* ``options`` says which per-request options a model takes, with their types,
  defaults and bounds. The separation request schema, the ``flask separate``
  command and the page's form are built from them; a request giving an option
  its model does not take is refused with 422 naming it.
* ``load`` builds a model object; ``model`` gets it through the per-process
  cache (``app/models/cache.py``), which owns unloading (LRU, byte budget,
  idle time) so engines never free models themselves.
* ``download`` fetches weights ahead of time (``flask models download``).
* Running is per kind: a separation engine ``prepare``s a ``Separator`` that
  separates one window at a time (``app/models/windowing.py`` joins them), a
  transcription or generation engine ``prepare``s one call.

Engine modules must not import torch or transformers at import time: the API
process imports every engine to list and validate models and never runs one.
"""

from __future__ import annotations

import collections.abc
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

OptionType = Literal["integer", "number", "boolean", "string"]

# Request fields every separation already has: an engine's option may not take
# one of these names (nor a ``flask separate`` option's), or one would shadow
# the other.
RESERVED_OPTION_NAMES = frozenset(
    {
        "file",
        "model",
        "two_stems",
        "stems",
        "clip_mode",
        "analyze",
        "output_format",
        "bit_depth",
        "mp3_bitrate",
        "callback_url",
        "format",
        "out",
        "quiet",
        "files",
    }
)


class OptionError(ValueError):
    """A value an option does not accept; the message says what it does accept."""


@dataclass(frozen=True)
class Option:
    """One per-request setting a model takes.

    ``default`` is what a request that leaves the option out runs with;
    ``None`` means the engine decides (Demucs's ``segment``: the model's own).
    Bounds are inclusive. ``description`` is one or two sentences for people
    (the API document, the page's hint, ``--help``).
    """

    name: str
    type: OptionType
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    unit: str | None = None

    def bounded(self, maximum: float | None) -> Option:
        """The same option with a model's own (lower) upper bound."""
        if maximum is None or (self.maximum is not None and maximum >= self.maximum):
            return self
        return replace(self, maximum=maximum)

    def convert(self, value: Any) -> Any:
        """``value`` (as JSON or a form field gives it) as this option's type,
        checked against its bounds and choices; ``OptionError`` if it does not fit."""
        if value is None:
            return None
        if self.type == "boolean":
            converted: Any = _boolean(value)
        elif self.type == "integer":
            converted = _integer(value)
        elif self.type == "number":
            converted = _number(value)
        else:
            if not isinstance(value, str):
                raise OptionError("Not a valid string.")
            converted = value
        if self.choices is not None and converted not in self.choices:
            raise OptionError(f"Must be one of: {', '.join(self.choices)}.")
        if self.minimum is not None and converted < self.minimum:
            raise OptionError(f"Must be at least {self.minimum:g}.")
        if self.maximum is not None and converted > self.maximum:
            raise OptionError(f"Must be at most {self.maximum:g}.")
        return converted

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None,
            "unit": self.unit,
        }


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise OptionError("Not a valid boolean.")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise OptionError("Not a valid integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise OptionError("Not a valid integer.") from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise OptionError("Not a valid number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError("Not a valid number.") from None
    if not math.isfinite(number):
        raise OptionError("Not a valid number.")
    return number


def resolve_options(options: Iterable[Option], params: Mapping[str, Any]) -> dict[str, Any]:
    """Every option a model takes, with the request's value or the default.

    Values are converted again here because job parameters come back from the
    database as JSON (an integer where a number was given, say).
    """
    resolved = {}
    for option in options:
        value = params.get(option.name)
        resolved[option.name] = option.default if value is None else option.convert(value)
    return resolved


def model_entry(
    engine: Engine,
    name: str,
    *,
    description: str,
    available: bool,
    downloadable: bool,
    needs_weights: bool = True,
    stems: list[str] | None = None,
    sample_rate: int | None = None,
    max_segment: float | None = None,
    requires: str | None = None,
    options: Iterable[Option] = (),
    sample_rate_note: str | None = None,
    quality: list[dict[str, Any]] | None = None,
    license: str | None = None,
    license_source: str | None = None,
    speed: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One catalogue entry, with the keys every entry has (``GET /api/v1/models``).

    ``available``: the weights are here (or none are needed), so a job runs
    offline; ``downloadable``: missing weights will be fetched on first use;
    ``requires``: a Python package the model needs and this machine lacks.
    ``extra`` keys are the kind's own (``english_only``, ``melody``, ...).

    What helps a person choose (``app/models/catalogue_facts.py``):
    ``sample_rate_note`` says what a ``None`` rate means (hpss runs at the
    input's); ``quality`` the published SDR per stem, each with benchmark and
    source (``None``: none published); ``license`` the weights' licence and
    ``license_source`` where it is stated; ``speed`` the real-time factor
    measured here and how (``None``: not measured).
    """
    return {
        "kind": engine.kind,
        "name": name,
        "engine": engine.name,
        "description": description,
        "stems": stems,
        "available": available,
        "downloadable": downloadable,
        "needs_weights": needs_weights,
        "sample_rate": sample_rate,
        "max_segment": max_segment,
        "requires": requires,
        "options": list(options),
        "sample_rate_note": sample_rate_note,
        "quality": quality,
        "license": license,
        "license_source": license_source,
        "speed": speed,
        **extra,
    }


class Engine(ABC):
    """A model family: the models it offers, how to load and fetch them."""

    kind: ClassVar[str]  # "separation", "transcription" or "generation"
    name: ClassVar[str]  # the family's id, the catalogue's ``engine``: "demucs", "hpss"
    label: ClassVar[str]  # how people call it: "Demucs", "hpss"
    # Every option any model of the family takes, with the family's widest bounds.
    OPTIONS: ClassVar[tuple[Option, ...]] = ()

    @abstractmethod
    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        """The family's models (``model_entry`` dicts), in the order to list them."""

    def names(self, config: dict[str, Any]) -> set[str]:
        """The names a request may use. Called on every request that names a
        model, so families whose catalogue is slow to build override it."""
        return {entry["name"] for entry in self.catalogue(config)}

    def offers(self, name: str, config: dict[str, Any]) -> bool:
        """Whether a request may name ``name``: one of ``names``, or a name the
        family composes (an ensemble's ``a+b``)."""
        return name in self.names(config)

    def describe(self, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
        """Model ``name``'s catalogue entry, ``None`` if the family has no such model."""
        return next((e for e in self.catalogue(config) if e["name"] == name), None)

    def options(self, name: str, config: dict[str, Any]) -> tuple[Option, ...]:
        """The options model ``name`` takes (its own bounds where they are tighter)."""
        return self.OPTIONS

    def device(self, config: dict[str, Any]) -> str:
        """Where this family's models run (``MODEL_DEVICE``)."""
        from app.models.cache import resolve_device

        return resolve_device(str(config.get("MODEL_DEVICE", "auto")))

    def load(self, name: str, config: dict[str, Any], device: str) -> Any:
        """Build model ``name`` on ``device``; ``ServiceError`` (``model_unavailable``)
        with how to provide the weights when they cannot be had. Families
        without weights keep this default: nothing calls it for them."""
        raise RuntimeError(f"{self.label} models have no weights to load")

    def cache_key(self, name: str, device: str) -> tuple[str, str, str]:
        return (self.kind, name, device)

    def model(self, name: str, config: dict[str, Any]) -> tuple[Any, str]:
        """Model ``name`` from this process's cache (loaded on first use), and its device."""
        from app.models.cache import get_cache

        device = self.device(config)
        model = get_cache(config).get(
            self.cache_key(name, device), lambda: self.load(name, config, device)
        )
        return model, device

    def unload(self, name: str, config: dict[str, Any]) -> bool:
        """Drop model ``name`` from this process's cache; whether it was there."""
        from app.models.cache import get_cache

        return get_cache(config).discard(self.cache_key(name, self.device(config)))

    def preload(self, name: str, config: dict[str, Any]) -> None:
        """Load ahead of the first job (``PRELOAD_MODELS``)."""
        self.model(name, config)

    def can_download(self, name: str) -> bool:
        """Whether ``download`` knows where to fetch ``name`` from."""
        return False

    def download(self, name: str, config: dict[str, Any]) -> Path:
        """Fetch ``name``'s weights into ``MODELS_DIR`` so workers load them with
        no network; returns the folder they are in."""
        raise ValueError(f"{self.label} has nothing to download for {name!r}")


# --------------------------------------------------------------------------- separation

# (channels, frames) window, progress(0..1 within the window) -> (stems, channels, frames)
WindowFn = Callable[[np.ndarray, Callable[[float], None]], np.ndarray]


@dataclass
class Separator:
    """What one separation runs: a window function, the rate and channels its
    input is decoded at, and the stems it returns, in order.

    ``separate`` gets each window as ``(channels, frames)`` float32 and returns
    ``(len(sources), channels, frames)``: every stem has the input's channels
    and length, so ``two_stems`` (``mix - stem``) and the cross-fades at the
    window joins work for every engine. It reports progress within the window
    (0..1); whatever ``progress`` raises (a cancel) must propagate.

    ``facts``, if given, says how the windows ran (``separation_path``,
    ``batch_size``, ``threads``): asked once the last window is done, since an
    out-of-memory retry may change them, and recorded in the job's metrics.
    """

    separate: WindowFn
    sample_rate: int
    channels: int
    sources: list[str]
    device: str
    facts: Callable[[], dict[str, Any]] | None = None


class Progress(Protocol):
    """What work reports progress to: a job's reporter or a slice of one
    (``app/services/runner.py``), a tqdm bar (``app/batch.py``)."""

    def __call__(
        self, progress: float, stage: str | None = None, *, force: bool = False
    ) -> None: ...

    def stage(self, stage: str, progress: float | None = None) -> None: ...


class SeparationInput(Protocol):
    """The file being separated, as an engine may read it before the windows
    (Demucs measures the whole track's level)."""

    path: Path
    info: Mapping[str, Any]  # audio.probe's: sample_rate, channels, duration

    def blocks(
        self, sample_rate: int, channels: int, block_frames: int
    ) -> collections.abc.Generator[np.ndarray, None, None]:  # not the Generator engine class below
        """The whole input decoded at ``sample_rate`` and ``channels`` in blocks
        (with the server's length and size limits); close it when stopping early."""
        ...


class SeparationEngine(Engine):
    """Splits a mix into stems, one bounded window at a time."""

    kind = "separation"

    @abstractmethod
    def prepare(
        self,
        name: str,
        options: dict[str, Any],
        source: SeparationInput,
        config: dict[str, Any],
        report: Progress,
    ) -> Separator:
        """Load model ``name`` (through ``model``) and set up a separation of
        ``source`` with ``options`` (every option of ``options(name)``,
        resolved). May report stages (``loading_model``, ``analysing``) up to
        0.05; the windows report from there."""


# --------------------------------------------------------------------------- one-call kinds


class Transcriber(Protocol):
    """A loaded model ready for one transcription."""

    device: str

    def __call__(self, samples: np.ndarray, progress: Callable[[float], None]) -> dict[str, Any]:
        """Mono float32 ``samples`` at the engine's ``sample_rate`` -> the result
        (``text``, ``language``, ``duration``, ``segments``, maybe ``words``)."""
        ...


class TranscriptionEngine(Engine):
    """Speech or lyrics to timed text in one call."""

    kind = "transcription"
    sample_rate: ClassVar[int]  # the mono rate the input is decoded at

    @abstractmethod
    def prepare(self, name: str, params: Mapping[str, Any], config: dict[str, Any]) -> Transcriber:
        """Load ``name`` for a request's ``params``, refusing (422) what the
        model cannot do with them."""


class Generator(Protocol):
    """A loaded model ready for one generation."""

    device: str

    def __call__(
        self,
        params: Mapping[str, Any],
        conditioning: Mapping[str, tuple[np.ndarray, int]],
        progress: Callable[[float], None],
    ) -> tuple[np.ndarray, int, dict[str, Any]]:
        """Generate from a request's ``params`` and optional audio
        (``{"melody": (samples, rate)}``): ``(audio (channels, samples), rate,
        the values used)``."""
        ...


class GenerationEngine(Engine):
    """New audio from a prompt in one call."""

    kind = "generation"

    @abstractmethod
    def prepare(self, name: str, config: dict[str, Any]) -> Generator:
        """Load ``name`` for one generation."""
