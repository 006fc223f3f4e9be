"""The catalogue of engines a request may name.

A request names a model from this catalogue; it never passes a path. Each entry
knows its kind (separation, transcription, generation), what it produces and
whether its weights are present on this machine, so ``GET /models`` and
request validation read the same list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ProgressFn = Callable[[float], None]
Separator = Callable[[np.ndarray, int, dict[str, Any], ProgressFn], dict[str, np.ndarray]]


@dataclass(frozen=True)
class SeparationEngine:
    name: str
    description: str
    stems: tuple[str, ...]
    run: Separator
    needs_weights: bool = False
    # Native sample rate of the engine, or None to keep the input's rate.
    sample_rate: int | None = None
    kind: str = field(default="separation", init=False)

    def available(self, config: dict[str, Any]) -> bool:
        return not self.needs_weights

    def describe(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "stems": list(self.stems),
            "available": self.available(config),
            "needs_weights": self.needs_weights,
            "sample_rate": self.sample_rate,
        }


def _run_hpss(
    audio: np.ndarray, sample_rate: int, params: dict[str, Any], progress: ProgressFn
) -> dict[str, np.ndarray]:
    from app.models.hpss import hpss

    return hpss(audio, sample_rate, progress=progress)


SEPARATION_ENGINES: dict[str, SeparationEngine] = {
    "hpss": SeparationEngine(
        name="hpss",
        description=(
            "Harmonic/percussive split by median filtering (Fitzgerald 2010). "
            "Needs no weights; stems 'harmonic' (tonal parts) and 'percussive' (drums, attacks)."
        ),
        stems=("harmonic", "percussive"),
        run=_run_hpss,
    ),
}

DEFAULTS: dict[str, str] = {"separation": "hpss"}


def separation_engine(name: str) -> SeparationEngine:
    return SEPARATION_ENGINES[name]


def catalogue(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every engine, with whether it can run here and whether it is its kind's default."""
    entries = []
    for engine in SEPARATION_ENGINES.values():
        entry = engine.describe(config)
        entry["default"] = DEFAULTS.get(engine.kind) == engine.name
        entries.append(entry)
    return entries
