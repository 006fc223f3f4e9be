"""Which separation model isolates the vocals when a request names none.

Karaoke jobs and transcriptions with ``isolate_vocals`` need a model with a
``vocals`` stem. When the request leaves ``separation_model`` out, the server
picks the best one it can run:

1. Rank the separation models of the catalogue that give a ``vocals`` stem by
   their published vocals SDR on one benchmark, ``BENCHMARK`` (Multisong), best
   first. Figures on different benchmarks are not comparable, so only that
   one counts; a model with no such figure (hpss, ``mdx``, a local model, an
   ensemble) is never the automatic choice.
2. Take the first whose weights are here (``available``) or will be fetched on
   first use (``downloadable``: ``ALLOW_MODEL_DOWNLOAD``).
3. If none of them can run, use the separation default
   (``registry.DEFAULTS["separation"]``).

The choice is made when the job is submitted and kept in its parameters
(``separation_model``, and ``separation_model_choice``: how and why), so the job
document says which model ran. A model the request names is never replaced.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app

from app.errors import ServiceError
from app.models import catalogue_facts, registry
from app.models.engines import Progress
from app.services import separation
from app.services.runner import SubProgress

log = logging.getLogger(__name__)

BENCHMARK = catalogue_facts.MULTISONG
STEM = "vocals"

# ``Choice.how``: the request named the model; the best ranked model runs here;
# a better ranked model cannot, so a lower one (or the separation default) runs.
REQUESTED = "requested"
CONFIGURED = "configured"  # the server's VOCALS_MODEL
BEST = "best"
FALLBACK = "fallback"


@dataclass(frozen=True)
class Ranked:
    """One model of the ranking, and whether it can run on this server."""

    name: str
    sdr_db: float
    available: bool  # the weights are here
    downloadable: bool  # missing weights are fetched on first use
    requires: str | None  # a Python package it needs and this machine lacks

    @property
    def ready(self) -> bool:
        return not self.requires and (self.available or self.downloadable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "sdr_db": self.sdr_db,
            "available": self.available,
            "downloadable": self.downloadable,
            "ready": self.ready,
        }


@dataclass(frozen=True)
class Choice:
    """The model that isolates the vocals, how it was chosen and why."""

    model: str
    how: str  # REQUESTED, BEST or FALLBACK
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """What a job keeps in ``params["separation_model_choice"]``."""
        return {"how": self.how, "reason": self.reason}


def vocals_sdr(entry: dict[str, Any]) -> float | None:
    """A catalogue entry's published vocals SDR on ``BENCHMARK``, if it has one."""
    for figure in entry.get("quality") or ():
        if figure.get("stem") == STEM and figure.get("benchmark") == BENCHMARK:
            return float(figure["sdr_db"])
    return None


def separation_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The separation models of the catalogue."""
    return [e for engine in registry.engines("separation") for e in engine.catalogue(config)]


def ranking(entries: Iterable[dict[str, Any]]) -> list[Ranked]:
    """The separation models with a ``vocals`` stem and a vocals figure on
    ``BENCHMARK``, best first (catalogue order between equal figures)."""
    ranked = []
    for entry in entries:
        if entry.get("kind") != "separation" or STEM not in (entry.get("stems") or ()):
            continue
        sdr = vocals_sdr(entry)
        if sdr is None:
            continue
        ranked.append(
            Ranked(
                name=entry["name"],
                sdr_db=sdr,
                available=bool(entry.get("available")),
                downloadable=bool(entry.get("downloadable")),
                requires=entry.get("requires"),
            )
        )
    return sorted(ranked, key=lambda r: -r.sdr_db)


def _figure(model: Ranked) -> str:
    return f"vocals {model.sdr_db:g} dB SDR on {BENCHMARK}"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _why_not(skipped: list[Ranked]) -> str:
    """Why better ranked models cannot run: "X's weights are not on this server"."""
    parts = []
    missing = [m.name for m in skipped if not m.requires]
    if len(missing) == 1:
        parts.append(f"{missing[0]}'s weights are not on this server")
    elif missing:
        parts.append(f"the weights of {_names(missing)} are not on this server")
    parts += [f"{m.name} needs the Python package {m.requires}" for m in skipped if m.requires]
    return "; ".join(parts)


def choose(config: dict[str, Any], entries: Iterable[dict[str, Any]] | None = None) -> Choice:
    """The best vocals model that can run here (see the module's docstring).

    ``entries``: the catalogue if the caller has it already (``GET /models``).
    """
    ranked = ranking(separation_entries(config) if entries is None else entries)
    default = registry.DEFAULTS["separation"]
    chosen = next((m for m in ranked if m.ready), None)
    if chosen is None:
        if not ranked:
            why = f"no separation model here has a published vocals SDR on {BENCHMARK}"
        else:
            why = _why_not(ranked)
        return Choice(default, FALLBACK, f"fallback: {why}; using the separation default {default}")
    fetched = "" if chosen.available else "; its weights are downloaded on first use"
    skipped = ranked[: ranked.index(chosen)]
    if not skipped:
        return Choice(
            chosen.name,
            BEST,
            f"default: the best vocals model in the catalogue ({_figure(chosen)}){fetched}",
        )
    hint = ""
    fetchable = [m.name for m in skipped if not m.requires and _can_download(m.name, config)]
    if fetchable:
        hint = f" (`flask models download {fetchable[0]}` fetches them)"
    return Choice(
        chosen.name,
        FALLBACK,
        f"fallback: {_why_not(skipped)}{hint}; {chosen.name} is the best vocals model "
        f"that can run here ({_figure(chosen)}){fetched}",
    )


def _can_download(name: str, config: dict[str, Any]) -> bool:
    found = registry.find("separation", name, config)
    return found is not None and found.can_download(name)


def resolve(requested: str | None, config: dict[str, Any]) -> Choice:
    """The model a job runs: the one the request names, else the server's
    ``VOCALS_MODEL``, else ``choose``'s."""
    if requested:
        return Choice(requested, REQUESTED, "named in the request")
    configured = config.get("VOCALS_MODEL")
    if configured:
        if registry.find("separation", configured, config) is not None:
            return Choice(configured, CONFIGURED, "set by the server (VOCALS_MODEL)")
        log.warning("VOCALS_MODEL=%s is no separation model here; choosing one", configured)
    return choose(config)


def fallbacks(params: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The models to try, in order, when an automatically chosen model's
    weights cannot be had at run time (a download that fails on a server
    without internet access): the ranked models below it whose weights are
    here, then the separation default. None for a model the request or the
    server named."""
    choice = params.get("separation_model_choice") or {}
    if choice.get("how") not in (BEST, FALLBACK):
        return []
    chosen = params["separation_model"]
    ranked = ranking(separation_entries(config))
    names = [m.name for m in ranked]
    below = ranked[names.index(chosen) + 1 :] if chosen in names else ranked
    candidates = [m.name for m in below if m.available and not m.requires]
    default = registry.DEFAULTS["separation"]
    return [n for n in dict.fromkeys([*candidates, default]) if n != chosen]


def separate_vocals(
    source: Path,
    info: dict[str, Any],
    params: dict[str, Any],
    stem_params: dict[str, Any],
    folder: Path,
    report: Progress,
) -> tuple[list[str], list[Path], int, str, dict[str, Any]]:
    """Separate ``vocals`` with the job's model, falling back (``fallbacks``)
    when an automatically chosen model turns out unavailable.

    Returns what ``separate_file`` does, plus what ran: ``{"model", "how",
    "reason"}``, the reason saying why the chosen model did not run if it
    did not."""
    config = current_app.config
    chosen = params["separation_model"]
    choice = params.get("separation_model_choice") or {}
    used = {"model": chosen, **choice}
    first_error: ServiceError | None = None
    for model in [chosen, *fallbacks(params, config)]:
        try:
            names, paths, rate, device = separation.separate_file(
                source, info, model, stem_params, folder, report
            )
        except ServiceError as exc:
            if exc.code != "model_unavailable":
                raise
            log.warning("vocals model %s is unavailable: %s", model, exc.message)
            first_error = first_error or exc
            continue
        if model != chosen:
            assert first_error is not None
            used = {
                "model": model,
                "how": FALLBACK,
                "reason": f"fallback at run time: {first_error.message} {model} ran instead.",
            }
        return names, paths, rate, device, used
    assert first_error is not None
    raise first_error


# Vocals for lyrics: only the source and its complement, as float so nothing clips.
VOCALS_PARAMS = {
    "two_stems": "vocals",
    "output_format": "wav",
    "bit_depth": "32f",
    "clip_mode": "none",
}


def with_choice(params: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``params`` of a request that may ``isolate_vocals``, with the model that
    will (``separation_model``) and how it was chosen (``separation_model_choice``)."""
    if not params.get("isolate_vocals"):
        return params
    choice = resolve(params.get("separation_model"), config)
    return {
        **params,
        "separation_model": choice.model,
        "separation_model_choice": choice.to_dict(),
    }


@contextlib.contextmanager
def vocals_first(
    source: Path, info: dict[str, Any], params: dict[str, Any], workdir: Path, report: Progress
) -> Iterator[tuple[Path, Progress, dict[str, Any] | None]]:
    """With ``isolate_vocals``: the vocals stem of ``source`` (in ``workdir``,
    removed on leaving), the progress left for the step that reads it, and
    what isolated them; without: ``source``, ``report`` and None."""
    if not params.get("isolate_vocals"):
        yield source, report, None
        return
    folder = workdir / "vocals"
    folder.mkdir()
    try:
        names, paths, _rate, _device, used = separate_vocals(
            source, info, params, VOCALS_PARAMS, folder, SubProgress(report, 0.0, 0.6)
        )
        yield paths[names.index("vocals")], SubProgress(report, 0.6, 1.0), used
    finally:
        shutil.rmtree(folder, ignore_errors=True)
