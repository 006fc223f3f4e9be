"""The catalogue of models a request may name.

A request names a model from this catalogue; it never passes a path. Each entry
knows its kind (separation, transcription, generation), what it produces and
whether its weights are present on this machine, so ``GET /models`` and
request validation read the same list.
"""

from __future__ import annotations

from typing import Any

from app.models import demucs_engine, musicgen_engine, whisper_engine

DEFAULTS: dict[str, str] = {
    "separation": "htdemucs",
    "transcription": whisper_engine.DEFAULT_MODEL,
    "generation": musicgen_engine.DEFAULT_MODEL,
}

HPSS = {
    "kind": "separation",
    "name": "hpss",
    "engine": "hpss",
    "description": (
        "Harmonic/percussive split by median filtering (Fitzgerald 2010). Needs no "
        "weights; stems 'harmonic' (tonal parts) and 'percussive' (drums, attacks)."
    ),
    "stems": ["harmonic", "percussive"],
    "available": True,
    "downloadable": False,
    "needs_weights": False,
    "sample_rate": None,
    "max_segment": None,
    "requires": None,
}


def separation_models(config: dict[str, Any]) -> set[str]:
    return {"hpss"} | demucs_engine.known_names(config)


def catalogue(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model, with whether it can run here and whether it is its kind's default."""
    entries = [
        dict(HPSS),
        *demucs_engine.catalogue(config),
        *whisper_engine.catalogue(config),
        *musicgen_engine.catalogue(config),
    ]
    for entry in entries:
        entry["default"] = DEFAULTS.get(entry["kind"]) == entry["name"]
    return entries


def describe(kind: str, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (e for e in catalogue(config) if e["kind"] == kind and e["name"] == name),
        None,
    )


def separation_model(name: str, config: dict[str, Any]) -> tuple[Any, str]:
    """A Demucs model from this process's cache (loaded on first use), and its device."""
    from app.models.cache import get_cache, resolve_device

    device = resolve_device(config["MODEL_DEVICE"])
    model = get_cache(config).get(
        ("separation", name, device), lambda: demucs_engine.load(name, config, device)
    )
    return model, device


def transcription_models(config: dict[str, Any]) -> set[str]:
    return whisper_engine.known_names(config)


def transcription_model(
    name: str, compute_type: str | None, config: dict[str, Any]
) -> tuple[Any, str, str]:
    """A Whisper model from this process's cache, its device and compute type."""
    from app.errors import ServiceError
    from app.models.cache import get_cache, resolve_device

    device = resolve_device(config["MODEL_DEVICE"], whisper_engine.gpu_count)
    compute_type = compute_type or whisper_engine.default_compute_type(device)
    if compute_type == "float16" and not device.startswith("cuda"):
        raise ServiceError(
            "compute_type float16 needs a GPU worker; use int8 or float32 on CPU.",
            code="invalid_parameter",
            status=422,
        )
    model = get_cache(config).get(
        ("transcription", f"{name}@{compute_type}", device),
        lambda: whisper_engine.load(name, config, device, compute_type),
    )
    return model, device, compute_type


def generation_models(config: dict[str, Any]) -> set[str]:
    return musicgen_engine.known_names(config)


def generation_model(name: str, config: dict[str, Any]) -> Any:
    """A MusicGen model from this process's cache (loaded on first use)."""
    from app.models.cache import get_cache, resolve_device

    device = resolve_device(config["MODEL_DEVICE"])
    return get_cache(config).get(
        ("generation", name, device), lambda: musicgen_engine.load(name, config, device)
    )


def preload(name: str, config: dict[str, Any]) -> None:
    """Load a model into this process's cache ahead of the first job."""
    if name == "hpss":
        return
    if name in demucs_engine.known_names(config):
        separation_model(name, config)
    elif name in whisper_engine.known_names(config):
        transcription_model(name, None, config)
    elif name in musicgen_engine.known_names(config):
        generation_model(name, config)
    else:
        raise ValueError(f"unknown model {name!r} in PRELOAD_MODELS")
