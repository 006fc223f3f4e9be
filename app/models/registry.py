"""The registry of model families, and the catalogue of models a request may name.

A request names a model from the catalogue; it never passes a path. The
catalogue is whatever the registered engines (``app/models/engines.py``) list,
so ``GET /models``, request validation, the job runners, ``flask models`` and
the web page all read the same list, and none of them needs to know which
families exist. Adding a family is one module under ``app/models/`` and one
``register`` line at the end of this file.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.errors import ServiceError
from app.models import (
    demucs_engine,
    ensemble_engine,
    hpss,
    mdx23c_engine,
    musicgen_engine,
    roformer_engine,
    whisper_engine,
)
from app.models.engines import RESERVED_OPTION_NAMES, Engine, Option

KINDS = ("separation", "transcription", "generation")

DEFAULTS: dict[str, str] = {
    "separation": "htdemucs",
    "transcription": whisper_engine.DEFAULT_MODEL,
    "generation": musicgen_engine.DEFAULT_MODEL,
}

_engines: tuple[Engine, ...] = ()
_lock = threading.Lock()


def register(engine: Engine) -> Engine:
    """Add a model family; its models are listed after those already registered.

    Refuses a second engine of the same name, an unknown kind, and options that
    would shadow a request field or disagree in type with another family's
    option of the same name (the request schema has one field per name).
    """
    global _engines
    if engine.kind not in KINDS:
        raise ValueError(f"engine {engine.name!r}: kind must be one of {', '.join(KINDS)}")
    with _lock:
        if any(e.name == engine.name for e in _engines):
            raise ValueError(f"an engine named {engine.name!r} is already registered")
        for option in engine.OPTIONS:
            if engine.kind == "separation" and option.name in RESERVED_OPTION_NAMES:
                raise ValueError(f"{engine.name}: option name {option.name!r} is a request field")
            for other in _engines:
                clash = next((o for o in other.OPTIONS if o.name == option.name), None)
                if other.kind == engine.kind and clash is not None and clash.type != option.type:
                    raise ValueError(
                        f"{engine.name}: option {option.name!r} is a {option.type} here "
                        f"but a {clash.type} in {other.name}"
                    )
        _engines = (*_engines, engine)
    return engine


def unregister(engine: Engine) -> None:
    """Remove a family (tests that register one of their own)."""
    global _engines
    with _lock:
        _engines = tuple(e for e in _engines if e is not engine)


def engines(kind: str | None = None) -> tuple[Engine, ...]:
    """The registered families (of ``kind``), in registration order."""
    return tuple(e for e in _engines if kind is None or e.kind == kind)


def catalogue(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model, with whether it can run here and whether it is its kind's default."""
    entries = [entry for engine in engines() for entry in engine.catalogue(config)]
    for entry in entries:
        entry["default"] = DEFAULTS.get(entry["kind"]) == entry["name"]
    return entries


def names(kind: str, config: dict[str, Any]) -> set[str]:
    """The model names a ``kind`` request may use."""
    return {name for engine in engines(kind) for name in engine.names(config)}


def find(kind: str, name: str, config: dict[str, Any]) -> Engine | None:
    """The family that offers model ``name`` of ``kind``, if any does."""
    return next((e for e in engines(kind) if e.offers(name, config)), None)


def engine(kind: str, name: str, config: dict[str, Any]) -> Any:
    """The family that runs model ``name``; ``model_unavailable`` if none does
    (a local model removed after its job was accepted). Typed ``Any`` because
    the caller uses its kind's own ``prepare``."""
    found = find(kind, name, config)
    if found is None:
        raise ServiceError(
            f"No {kind} model named '{name}' on this server; GET /api/v1/models lists them.",
            code="model_unavailable",
        )
    return found


def describe(kind: str, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Model ``name``'s catalogue entry."""
    found = find(kind, name, config)
    if found is None:
        return None
    entry = found.describe(name, config)
    if entry is not None:
        entry["default"] = DEFAULTS.get(kind) == name
    return entry


def options(kind: str, name: str, config: dict[str, Any]) -> tuple[Option, ...]:
    """The options model ``name`` takes (none for a name no family offers)."""
    found = find(kind, name, config)
    return found.options(name, config) if found is not None else ()


def all_options(kind: str) -> dict[str, tuple[Option, list[Engine]]]:
    """Every option any ``kind`` family takes, by name: the option with the
    widest bounds among the families that take it, and those families.

    What the request schema and ``flask separate`` declare; which model takes
    which option (and within which bounds) is checked per request.
    """
    merged: dict[str, tuple[Option, list[Engine]]] = {}
    for family in engines(kind):
        for option in family.OPTIONS:
            if option.name not in merged:
                merged[option.name] = (option, [family])
                continue
            known, families = merged[option.name]
            merged[option.name] = (_widest(known, option), [*families, family])
    return merged


def _widest(a: Option, b: Option) -> Option:
    def bound(x: float | None, y: float | None, pick: Any) -> float | None:
        return None if x is None or y is None else pick(x, y)

    choices = None
    if a.choices is not None and b.choices is not None:
        choices = tuple(dict.fromkeys((*a.choices, *b.choices)))
    return replace(
        a,
        minimum=bound(a.minimum, b.minimum, min),
        maximum=bound(a.maximum, b.maximum, max),
        choices=choices,
        default=a.default if a.default == b.default else None,
    )


def preload(name: str, config: dict[str, Any]) -> None:
    """Load a model into this process's cache ahead of the first job."""
    for kind in KINDS:
        found = find(kind, name, config)
        if found is not None:
            found.preload(name, config)
            return
    raise ValueError(f"unknown model {name!r} in PRELOAD_MODELS")


def download(name: str, config: dict[str, Any]) -> Path:
    """Fetch a model's weights into ``MODELS_DIR`` (``flask models download``);
    returns the folder they were saved in."""
    for family in engines():
        if family.can_download(name):
            return family.download(name, config)
    raise ValueError(
        f"{name!r} is not a model any engine here can download; `flask models list` "
        "names them (local-only models cannot be downloaded)."
    )


# The model families this server runs, in the order GET /models lists them.
# A new family is one module under app/models/ and one line here.
register(hpss.HpssEngine())
register(demucs_engine.DemucsEngine())
register(roformer_engine.RoformerEngine())
register(mdx23c_engine.Mdx23cEngine())
# After the single-model families: its members are found among them.
register(ensemble_engine.EnsembleEngine(lambda name, config: find("separation", name, config)))
register(whisper_engine.WhisperEngine())
register(musicgen_engine.MusicGenEngine())
