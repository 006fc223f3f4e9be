"""Ensembles: several separation models on every window, their stems combined.

People who want the cleanest vocals run two or three of the best models and
combine what they give (UVR's "Ensemble mode", python-audio-separator's
``--extra_models``): the models' errors differ, so an average of their stems
is cleaner than either. A request names an ensemble in one of two ways:

* a preset from ``PRESETS`` (``vocals_ensemble``), listed in ``GET
  /api/v1/models`` with its members and algorithm;
* a list of model names, which the request schema turns into the members
  joined with ``+`` (``bs_roformer_viperx_1297+mel_band_roformer_kim``), the
  name jobs store.

Every member runs on the same window before the next window is decoded, so an
ensemble streams like any single model and memory stays flat on long songs.
The stems are those every member gives; a member with ``vocals`` but no
``instrumental`` (Demucs) gives ``instrumental`` as the mix minus its vocals,
so Demucs and the vocal models can be combined. The stems are combined by the
request's ``ensemble_algorithm``, with python-audio-separator's names:
waveform average, median, or the sample of largest or smallest magnitude
(``*_wave``); the same on STFT bins (``*_fft``); and UVR's ``uvr_max_spec`` /
``uvr_min_spec``, which keep for each STFT bin the member whose bin is
loudest or quietest (fuller or cleaner stems).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ServiceError
from app.models import catalogue_facts
from app.models.engines import (
    Engine,
    Option,
    OptionError,
    Progress,
    SeparationEngine,
    SeparationInput,
    Separator,
    model_entry,
    resolve_options,
)

log = logging.getLogger(__name__)

FAMILY = "ensemble"
JOIN = "+"
MIN_MEMBERS = 2
MAX_MEMBERS = 4
INSTRUMENTAL = "instrumental"
VOCALS = "vocals"

ALGORITHMS = (
    "avg_wave",
    "median_wave",
    "min_wave",
    "max_wave",
    "avg_fft",
    "median_fft",
    "min_fft",
    "max_fft",
    "uvr_max_spec",
    "uvr_min_spec",
)
DEFAULT_ALGORITHM = "avg_wave"
# audio-separator's STFT for its spectral algorithms (librosa's defaults there).
N_FFT = 2048
HOP = 1024

ALGORITHM_OPTION = Option(
    "ensemble_algorithm",
    "string",
    "How an ensemble's stems are combined: avg_wave (average), median_wave, min_wave, "
    "max_wave (the sample of smallest/largest magnitude), the same on STFT bins (avg_fft, "
    "median_fft, min_fft, max_fft), or UVR's uvr_max_spec (fuller) and uvr_min_spec "
    "(cleaner). Default: the preset's, else avg_wave.",
    default=None,
    choices=ALGORITHMS,
)


@dataclass(frozen=True)
class Preset:
    name: str
    members: tuple[str, ...]
    algorithm: str
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "vocals_ensemble",
            ("mel_band_roformer_kim", "bs_roformer_viperx_1297"),
            "avg_wave",
            "Mel-Band RoFormer (Kim) and BS-RoFormer (viperx) averaged: the two best vocal "
            "models together, for the cleanest vocals and instrumental; takes as long as "
            "both models.",
        ),
    )
}

# (name, config) -> the family that offers that model, if any (the registry's find)
Finder = Callable[[str, dict[str, Any]], Engine | None]


def split(name: str) -> list[str]:
    """The member names in an ensemble name written with ``+``."""
    return [part for part in name.split(JOIN)] if JOIN in name else [name]


def joined(names: Sequence[str]) -> str:
    return JOIN.join(names)


def common_stems(member_sources: Sequence[Sequence[str]]) -> list[str]:
    """The stems every member gives, in the first member's order; a member
    with vocals gives ``instrumental`` (mix - vocals) if it has none of its own."""

    def offered(sources: Sequence[str]) -> list[str]:
        extra = [INSTRUMENTAL] if VOCALS in sources and INSTRUMENTAL not in sources else []
        return [*sources, *extra]

    first, *rest = [offered(s) for s in member_sources]
    return [stem for stem in first if all(stem in other for other in rest)]


def _tightest(a: Option, b: Option) -> Option:
    """One option for members that take the same one: the value goes to each,
    so it must fit every member's bounds; each member's own default applies
    when the request leaves it out."""
    low = max((x for x in (a.minimum, b.minimum) if x is not None), default=None)
    high = min((x for x in (a.maximum, b.maximum) if x is not None), default=None)
    choices = a.choices
    if a.choices is not None and b.choices is not None:
        choices = tuple(c for c in a.choices if c in b.choices)
    elif b.choices is not None:
        choices = b.choices
    return replace(a, minimum=low, maximum=high, choices=choices, default=None)


def combine(stacked: np.ndarray, algorithm: str) -> np.ndarray:
    """``(members, channels, frames)`` estimates of one stem -> ``(channels, frames)``."""
    if algorithm == "avg_wave":
        return stacked.mean(axis=0)
    if algorithm == "median_wave":
        return np.median(stacked, axis=0)
    if algorithm in ("min_wave", "max_wave"):
        magnitude = np.abs(stacked)
        pick = magnitude.argmin(axis=0) if algorithm == "min_wave" else magnitude.argmax(axis=0)
        return np.take_along_axis(stacked, pick[None], axis=0)[0]
    if algorithm in ("avg_fft", "median_fft", "min_fft", "max_fft", "uvr_max_spec", "uvr_min_spec"):
        return _combine_spectra(stacked, algorithm)
    raise ValueError(f"unknown ensemble algorithm {algorithm!r}")


def _combine_spectra(stacked: np.ndarray, algorithm: str) -> np.ndarray:
    import torch

    members, channels, frames = stacked.shape
    padded = max(frames, N_FFT + 1)  # the centred STFT reflects half an FFT at each end
    signal = torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))
    if padded > frames:
        signal = torch.nn.functional.pad(signal, (0, padded - frames))
    window = torch.hann_window(N_FFT)
    spectra = torch.stft(
        signal.reshape(members * channels, padded),
        N_FFT,
        HOP,
        window=window,
        return_complex=True,
    ).reshape(members, channels, N_FFT // 2 + 1, -1)
    if algorithm == "avg_fft":
        merged = spectra.mean(dim=0)
    elif algorithm == "median_fft":
        # as audio-separator: the median of the real and imaginary parts apart
        merged = torch.complex(spectra.real.median(dim=0).values, spectra.imag.median(dim=0).values)
    else:
        magnitude = spectra.abs()
        smallest = algorithm in ("min_fft", "uvr_min_spec")
        pick = magnitude.argmin(dim=0) if smallest else magnitude.argmax(dim=0)
        merged = torch.gather(spectra, 0, pick[None])[0]
    out = torch.istft(merged, N_FFT, HOP, window=window, length=padded)
    return out[:, :frames].numpy()


class _Slice:
    """A member's share of the ensemble's progress before the windows."""

    def __init__(self, report: Progress, start: float, end: float) -> None:
        self.report, self.start, self.end = report, start, end

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        self.report(self.start + (self.end - self.start) * progress, stage, force=force)

    def stage(self, stage: str, progress: float | None = None) -> None:
        self.report.stage(
            stage, None if progress is None else self.start + (self.end - self.start) * progress
        )


@dataclass
class _Member:
    name: str
    plan: Separator
    rate: int
    channels: int


class EnsembleSeparator:
    """Runs every member on one window and combines their stems."""

    def __init__(
        self, members: list[_Member], stems: list[str], algorithm: str, rate: int, channels: int
    ) -> None:
        self.members = members
        self.stems = stems
        self.algorithm = algorithm
        self.rate = rate
        self.channels = channels

    def _adapt_in(self, window: np.ndarray, member: _Member) -> np.ndarray:
        x = window
        if member.channels != self.channels:
            mono = x.mean(axis=0, keepdims=True)
            x = np.repeat(mono, member.channels, axis=0) if member.channels > 1 else mono
        if member.rate != self.rate:
            import soxr

            x = soxr.resample(x.T, self.rate, member.rate).T
        return np.ascontiguousarray(x, dtype=np.float32)

    def _adapt_out(self, out: np.ndarray, member: _Member, frames: int) -> np.ndarray:
        if member.rate != self.rate:
            import soxr

            out = np.stack([soxr.resample(stem.T, member.rate, self.rate).T for stem in out])
            if out.shape[-1] < frames:
                out = np.pad(out, ((0, 0), (0, 0), (0, frames - out.shape[-1])))
            out = out[..., :frames]
        if member.channels != self.channels:
            mono = out.mean(axis=1, keepdims=True)
            out = np.repeat(mono, self.channels, axis=1) if self.channels > 1 else mono
        return out.astype(np.float32, copy=False)

    def _stems(self, window: np.ndarray, out: np.ndarray, member: _Member) -> np.ndarray:
        sources = member.plan.sources
        picked = []
        for stem in self.stems:
            if stem in sources:
                picked.append(out[sources.index(stem)])
            else:  # instrumental from a member that has vocals only (common_stems)
                picked.append(window - out[sources.index(VOCALS)])
        return np.stack(picked)

    def __call__(self, window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        count = len(self.members)
        frames = window.shape[-1]
        estimates = np.empty((count, len(self.stems), *window.shape), dtype=np.float32)
        raised: list[BaseException] = []  # what progress raised (a cancel), not the model
        for index, member in enumerate(self.members):

            def member_progress(fraction: float, index: int = index) -> None:
                try:
                    progress((index + fraction) / count)
                except BaseException as exc:  # a cancel: it must get out unchanged
                    raised.append(exc)
                    raise

            try:
                out = member.plan.separate(self._adapt_in(window, member), member_progress)
            except (ServiceError, MemoryError, OSError):
                raise
            except Exception as exc:
                if raised and exc is raised[-1]:
                    raise
                log.exception("ensemble member %s failed", member.name)
                raise ServiceError(
                    f"Model '{member.name}' of the ensemble failed "
                    f"({type(exc).__name__}); no stems were kept.",
                    code="model_failed",
                ) from None
            estimates[index] = self._stems(window, self._adapt_out(out, member, frames), member)
            del out
        return np.stack([combine(estimates[:, s], self.algorithm) for s in range(len(self.stems))])


class EnsembleEngine(SeparationEngine):
    """Presets and lists of separation models, run together."""

    name = FAMILY
    label = "Ensemble"
    OPTIONS = (ALGORITHM_OPTION,)

    def __init__(self, find: Finder) -> None:
        self._find = find

    # -------------------------------------------------------------- names

    def members(self, name: str, config: dict[str, Any]) -> list[tuple[str, Engine]] | None:
        """The members of ``name`` with their families; ``None`` if ``name`` is
        no preset and no valid list (unknown, repeated or nested members)."""
        names = list(PRESETS[name].members) if name in PRESETS else split(name)
        if name not in PRESETS and not MIN_MEMBERS <= len(names) <= MAX_MEMBERS:
            return None
        if len(set(names)) != len(names):
            return None
        found = []
        for member in names:
            family = None if member in PRESETS else self._find(member, config)
            if family is None or family is self or family.kind != self.kind:
                return None
            found.append((member, family))
        return found

    def problem(self, name: str, config: dict[str, Any]) -> str | None:
        """Why a list of model names is no ensemble, for the request's error."""
        names = split(name)
        if not MIN_MEMBERS <= len(names) <= MAX_MEMBERS:
            return f"An ensemble takes {MIN_MEMBERS} to {MAX_MEMBERS} models."
        if len(set(names)) != len(names):
            return "Each model may appear once in an ensemble."
        for member in names:
            if member in PRESETS:
                return f"'{member}' is an ensemble itself; list its models instead."
            family = self._find(member, config)
            if family is None or family is self or family.kind != self.kind:
                return f"Unknown model '{member}'; GET /api/v1/models lists them."
        return None

    def names(self, config: dict[str, Any]) -> set[str]:
        return set(PRESETS)

    def offers(self, name: str, config: dict[str, Any]) -> bool:
        return name in PRESETS or (JOIN in name and self.members(name, config) is not None)

    # ---------------------------------------------------------- catalogue

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._entry(name, config) for name in PRESETS]

    def describe(self, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
        return self._entry(name, config) if self.offers(name, config) else None

    def _entry(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        members = self.members(name, config) or []
        entries = [family.describe(member, config) or {} for member, family in members]
        preset = PRESETS.get(name)
        known = [e.get("stems") for e in entries]
        stems = common_stems([s for s in known if s]) if known and all(known) else None
        licences = {str(e.get("name")): e.get("license") for e in entries}
        distinct = set(licences.values())
        return model_entry(
            self,
            name,
            description=preset.description
            if preset
            else f"Ensemble of {', '.join(m for m, _ in members)}.",
            stems=stems,
            available=bool(entries) and all(e.get("available") for e in entries),
            downloadable=bool(entries)
            and all(e.get("available") or e.get("downloadable") for e in entries),
            sample_rate=entries[0].get("sample_rate") if entries else None,
            options=self.options(name, config),
            quality=None,  # no published figure for these exact combinations
            license=next(iter(distinct))
            if len(distinct) == 1
            else "; ".join(f"{m}: {lic}" for m, lic in licences.items()),
            license_source=None,
            speed=catalogue_facts.ENSEMBLE[name].fields()["speed"]
            if name in catalogue_facts.ENSEMBLE
            else None,
            members=[m for m, _ in members],
            algorithm=preset.algorithm if preset else DEFAULT_ALGORITHM,
        )

    def options(self, name: str, config: dict[str, Any]) -> tuple[Option, ...]:
        merged: dict[str, Option] = {}
        for member, family in self.members(name, config) or []:
            for option in family.options(member, config):
                known = merged.get(option.name)
                merged[option.name] = (
                    replace(option, default=None) if known is None else _tightest(known, option)
                )
        return (ALGORITHM_OPTION, *merged.values())

    # ------------------------------------------------- weights and the cache

    def can_download(self, name: str) -> bool:
        return name in PRESETS

    def download(self, name: str, config: dict[str, Any]) -> Path:
        for member, family in self.members(name, config) or []:
            if family.can_download(member):
                family.download(member, config)
        return Path(config["MODELS_DIR"])

    def preload(self, name: str, config: dict[str, Any]) -> None:
        for member, family in self.members(name, config) or []:
            family.preload(member, config)

    def unload(self, name: str, config: dict[str, Any]) -> bool:
        dropped = [
            family.unload(member, config) for member, family in self.members(name, config) or []
        ]
        return any(dropped)

    # ------------------------------------------------------------ running

    def prepare(
        self,
        name: str,
        options: dict[str, Any],
        source: SeparationInput,
        config: dict[str, Any],
        report: Progress,
    ) -> Separator:
        found = self.members(name, config)
        if found is None:
            raise ServiceError(
                f"No ensemble '{name}' on this server: {self.problem(name, config)}",
                code="model_unavailable",
            )
        given = {k: v for k, v in options.items() if v is not None and k != ALGORITHM_OPTION.name}
        members: list[_Member] = []
        for index, (member, family) in enumerate(found):
            share = _Slice(report, 0.05 * index / len(found), 0.05 * (index + 1) / len(found))
            try:
                own = resolve_options(family.options(member, config), given)
            except OptionError as exc:
                raise ServiceError(
                    f"Model '{member}': {exc}", code="invalid_parameter", status=422
                ) from None
            plan = family.prepare(member, own, source, config, share)  # type: ignore[attr-defined]
            members.append(_Member(member, plan, plan.sample_rate, plan.channels))
        stems = common_stems([m.plan.sources for m in members])
        if not stems:
            raise ServiceError(
                f"The models of ensemble '{name}' have no stem in common.",
                code="invalid_parameter",
                status=422,
            )
        preset = PRESETS.get(name)
        algorithm = options.get(ALGORITHM_OPTION.name) or (
            preset.algorithm if preset else DEFAULT_ALGORITHM
        )
        rate, channels = members[0].rate, members[0].channels
        devices = ",".join(dict.fromkeys(m.plan.device for m in members))
        separator = EnsembleSeparator(members, stems, algorithm, rate, channels)

        def facts() -> dict[str, Any]:
            # Each member's own: names joined as ``device`` joins the devices,
            # numbers (batch size, threads) their largest.
            each = [m.plan.facts() for m in members if m.plan.facts is not None]
            joined: dict[str, Any] = {}
            for key in dict.fromkeys(k for f in each for k in f):
                values = list(dict.fromkeys(f[key] for f in each if key in f))
                if all(isinstance(v, int) for v in values):
                    joined[key] = max(values)
                else:
                    joined[key] = ",".join(map(str, values))
            return joined

        return Separator(separator, rate, channels, stems, devices, facts=facts)
