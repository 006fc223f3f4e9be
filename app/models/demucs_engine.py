"""Demucs: every pretrained name demucs 4.1 knows, plus models in a local repo.

Weights are looked up first in ``MODELS_DIR/demucs`` (the layout of demucs's
``--repo``: ``<sig>.th`` files and bag ``<name>.yaml`` files), then, when
downloads are allowed, fetched by demucs itself (HuggingFace hub, then the
legacy URL). Whatever fails ends as ``model_unavailable`` with a message that
says how to provide the weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from app.errors import ServiceError
from app.models import catalogue_facts, precision
from app.models.engines import (
    Option,
    Progress,
    SeparationEngine,
    SeparationInput,
    Separator,
    model_entry,
)

log = logging.getLogger(__name__)

FOUR = ("drums", "bass", "other", "vocals")
SIX = ("drums", "bass", "other", "vocals", "guitar", "piano")
HT_SEGMENT = 7.8  # seconds: the longest segment the hybrid transformer models accept
STATS_BLOCK = 1 << 18  # frames per block when measuring the track's level


@dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    stems: tuple[str, ...]
    max_segment: float | None
    needs: str | None = None  # an extra Python package the weights need


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            "htdemucs",
            "Hybrid Transformer Demucs v4: the default; good quality at about real time on CPU.",
            FOUR,
            HT_SEGMENT,
        ),
        Pretrained(
            "htdemucs_ft",
            "htdemucs fine-tuned per source (a bag of 4): best quality, about 4x slower.",
            FOUR,
            HT_SEGMENT,
        ),
        Pretrained(
            "htdemucs_6s",
            "htdemucs with six sources: adds guitar and piano (piano is the weakest).",
            SIX,
            HT_SEGMENT,
        ),
        Pretrained(
            "hdemucs_mmi",
            "Hybrid Demucs v3 retrained on MusDB plus 800 extra songs.",
            FOUR,
            None,
        ),
        Pretrained(
            "mdx", "Demucs v3 bag of 4, MDX 2021 challenge track A (MusDB only).", FOUR, None
        ),
        Pretrained(
            "mdx_extra", "Demucs v3 bag of 4, MDX 2021 track B (with extra data).", FOUR, None
        ),
        Pretrained(
            "mdx_q", "Quantized mdx: smaller download, slightly lower quality.", FOUR, None, "diffq"
        ),
        Pretrained(
            "mdx_extra_q",
            "Quantized mdx_extra: smaller download, slightly lower quality.",
            FOUR,
            None,
            "diffq",
        ),
    )
}


def repo_dir(config: dict[str, Any]) -> Path:
    return Path(config["MODELS_DIR"]) / "demucs"


def local_names(config: dict[str, Any]) -> dict[str, list[str]]:
    """Models usable from the local repo: bag names and single signatures.

    Maps each name to the signatures it needs; a bag whose ``.th`` files are
    not all there is left out (it would fail to load).
    """
    folder = repo_dir(config)
    if not folder.is_dir():
        return {}
    sigs = set()
    for path in folder.glob("*.th"):
        sigs.add(path.stem.rsplit("-", 1)[0] if "-" in path.stem else path.stem)
    names: dict[str, list[str]] = {sig: [sig] for sig in sigs}
    for path in folder.glob("*.yaml"):
        try:
            bag = yaml.safe_load(path.read_text()) or {}
            needed = [str(s) for s in bag.get("models", [])]
        except (OSError, yaml.YAMLError, AttributeError):
            log.warning("ignoring unreadable demucs bag file %s", path)
            continue
        if needed and all(sig in sigs for sig in needed):
            names[path.stem] = needed
    return names


def hf_repo_name(name: str) -> str:
    """demucs.hf.hf_repo_name, repeated here because importing demucs.hf imports
    torch, which the API process (listing and validating models) never needs."""
    if name == "htdemucs":
        return "HTDemucs"
    if name.startswith("htdemucs_"):
        return "HTDemucs-" + name[len("htdemucs_") :]
    return "Demucs-" + name


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(f"adefossez/{hf_repo_name(name)}", f"{name}.yaml")
        return isinstance(found, str)
    except Exception:
        return False


def known_names(config: dict[str, Any]) -> set[str]:
    return set(PRETRAINED) | set(local_names(config))


def how_to_provide(name: str, config: dict[str, Any]) -> str:
    return (
        f"put its weights in {repo_dir(config)} (demucs --repo layout: {name}.yaml and the "
        f".th files it lists), or run `flask models download {name}` on a machine with "
        "internet access and copy that folder"
        + ("" if config.get("ALLOW_MODEL_DOWNLOAD") else ", or set ALLOW_MODEL_DOWNLOAD=1")
    )


def load(name: str, config: dict[str, Any], device: str) -> Any:
    """Load a Demucs model or bag by name, local repo first."""
    from demucs.pretrained import get_model

    local = local_names(config)
    spec = PRETRAINED.get(name)
    if spec and spec.needs and name not in local and importlib.util.find_spec(spec.needs) is None:
        raise ServiceError(
            f"Demucs model '{name}' needs the Python package '{spec.needs}' "
            f"(pip install {spec.needs}).",
            code="model_unavailable",
        )
    if name not in local and not (name in PRETRAINED and config.get("ALLOW_MODEL_DOWNLOAD")):
        raise ServiceError(
            f"Demucs model '{name}' is not available on this server: "
            + how_to_provide(name, config)
            + ".",
            code="model_unavailable",
        )
    try:
        model = get_model(name, repo=repo_dir(config)) if name in local else get_model(name)
    except (Exception, SystemExit) as exc:  # demucs calls sys.exit on some errors
        log.warning("could not load demucs model %s: %r", name, exc)
        raise ServiceError(
            f"Demucs model '{name}' could not be loaded ({type(exc).__name__}): "
            + how_to_provide(name, config)
            + ".",
            code="model_unavailable",
        ) from None
    model.eval()
    return model.to(device)


def max_segment(model: Any) -> float | None:
    bound = getattr(model, "max_allowed_segment", None)
    if bound is None:
        from demucs.htdemucs import HTDemucs

        bound = float(model.segment) if isinstance(model, HTDemucs) else None
    if bound is None or bound == float("inf"):
        return None
    return float(bound)


class WindowSeparator:
    """Runs demucs's ``apply_model`` on one window, reporting its chunk loop.

    The reference level (mean and std of the mono mix) is the whole track's, as
    the demucs CLI computes it, so every window is normalised the same way.

    With ``batch_size`` above 1, demucs's segments go through the network
    several at a time (``app/models/batching.py``): the same chunks, shift and
    overlap-add as the CLI, so the same stems, in fewer and larger network
    calls, which keep more of the CPU's cores busy than one segment does.
    """

    def __init__(
        self,
        model: Any,
        device: str,
        *,
        shifts: int,
        overlap: float,
        segment: float | None,
        ref_mean: float,
        ref_std: float,
        batch_size: int = 1,
        precision: str = "float32",
    ) -> None:
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.precision = precision
        self.device = device
        self.shifts = shifts
        self.overlap = overlap
        self.segment = segment
        self.ref_mean = ref_mean
        self.ref_std = ref_std if ref_std > 1e-8 else 1.0
        self.sources = list(model.sources)
        self.sample_rate = int(model.samplerate)
        self.channels = int(model.audio_channels)

    def steps(self, frames: int, segment: float | None = None) -> int:
        """How many chunk evaluations ``apply_model`` makes for a window."""
        segment = (
            segment or self.segment or float(getattr(self.model, "segment", None) or HT_SEGMENT)
        )
        segment_frames = int(self.sample_rate * segment)
        stride = max(1, int((1 - self.overlap) * segment_frames))
        chunks = max(1, -(-frames // stride))
        models = len(getattr(self.model, "models", [self.model]))
        return chunks * max(1, self.shifts) * models

    def __call__(self, window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        """(channels, frames) mix -> (sources, channels, frames) stems.

        A CUDA out-of-memory error runs the window again with a shorter
        segment, then on the CPU where allowed (``app/models/oom.py``).
        """
        import torch

        from app.models.oom import after_out_of_memory, cpu_fallback_allowed, is_cuda_out_of_memory

        mix = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))
        mix = (mix - self.ref_mean) / self.ref_std
        device, segment = self.device, self.segment
        try:
            while True:
                try:
                    out = self._apply(mix, device, segment, progress)
                    break
                except Exception as exc:
                    if not is_cuda_out_of_memory(exc):
                        raise
                    torch.cuda.empty_cache()
                    if self.batch_size > 1:
                        # One segment at a time needs a fraction of the memory
                        # and gives the same stems: try that before a shorter
                        # segment, which changes them.
                        log.warning(
                            "CUDA out of memory on %s with %d segments per batch; "
                            "retrying one at a time",
                            device,
                            self.batch_size,
                        )
                        self.batch_size = 1
                        continue
                    default = float(getattr(self.model, "segment", None) or HT_SEGMENT)
                    retry = after_out_of_memory(
                        device,
                        segment or default,
                        default_segment=self.segment,
                        allow_cpu=cpu_fallback_allowed(),
                    )
                    if retry is None:
                        raise ServiceError(
                            "The GPU ran out of memory separating this track; try a smaller "
                            "segment or a CPU worker.",
                            code="out_of_memory",
                            status=507,
                        ) from exc
                    log.warning(
                        "CUDA out of memory on %s (segment %s s); retrying on %s with segment %s",
                        device,
                        segment,
                        retry.device,
                        retry.segment,
                    )
                    device, segment = retry.device, retry.segment
        finally:
            if device != self.device:
                self.model.to(self.device)  # apply_model moved the cached model
        out = out * self.ref_std + self.ref_mean
        return out.to("cpu", torch.float32).numpy()

    def _apply(
        self, mix: Any, device: str, segment: float | None, progress: Callable[[float], None]
    ) -> Any:
        import torch
        from demucs.apply import apply_model

        from app.models.batching import ChunkBatcher

        total = self.steps(mix.shape[-1], segment)
        done = 0

        def on_chunk(info: dict[str, Any]) -> None:
            nonlocal done
            if info.get("state") == "end":
                done += 1
                progress(min(done / total, 1.0))

        pool = ChunkBatcher(self.batch_size) if self.batch_size > 1 else None
        with torch.inference_mode(), precision.cpu_autocast(self.precision, device):
            return apply_model(
                self.model,
                mix[None],
                shifts=self.shifts,
                split=True,
                overlap=self.overlap,
                segment=segment,
                device=device,
                callback=on_chunk,
                progress=False,
                num_workers=0,
                pool=pool,
            )[0]

    def facts(self) -> dict[str, Any]:
        """How the separation runs, for the job's metrics."""
        import torch

        return {
            "separation_path": "batched" if self.batch_size > 1 else "plain",
            "batch_size": self.batch_size,
            "threads": torch.get_num_threads(),
            "precision": self.precision,
        }


def save_package(model: Any, path: Path) -> None:
    """Write one model as demucs's ``<sig>.th`` package (what ``LocalRepo`` reads)."""
    import torch
    from demucs.states import get_state

    args, kwargs = model._init_args_kwargs
    package = {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, False),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(package, tmp)
    tmp.replace(path)


def download(name: str, config: dict[str, Any]) -> Path:
    """Fetch a pretrained model the way demucs does (HuggingFace hub, then the
    legacy URL) and store it in ``MODELS_DIR/demucs`` in the ``--repo`` layout,
    so workers load it with no network. Returns the bag file written."""
    from demucs.apply import BagOfModels
    from demucs.pretrained import REMOTE_ROOT, get_model

    if name not in PRETRAINED:
        raise ValueError(f"{name!r} is not a pretrained Demucs model: {', '.join(PRETRAINED)}")
    spec = yaml.safe_load((REMOTE_ROOT / f"{name}.yaml").read_text())
    try:
        model = get_model(name)
    except SystemExit as exc:  # demucs exits on some failures
        raise RuntimeError(f"demucs could not fetch {name}") from exc
    models = model.models if isinstance(model, BagOfModels) else [model]
    sigs = [str(sig) for sig in spec["models"]]
    if len(sigs) != len(models):
        raise RuntimeError(f"{name}: expected {len(sigs)} models, demucs returned {len(models)}")
    folder = repo_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    for sig, sub_model in zip(sigs, models, strict=True):
        save_package(sub_model, folder / f"{sig}.th")
    bag = {"models": sigs}
    for key in ("weights", "segment"):
        if spec.get(key) is not None:
            bag[key] = spec[key]
    target = folder / f"{name}.yaml"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(yaml.safe_dump(bag))
    tmp.replace(target)
    return target


def reference_level(source: SeparationInput, rate: int, channels: int) -> tuple[float, float]:
    """Mean and standard deviation of the mono mix over the whole track.

    Demucs normalises its input with these (as its CLI does); computing them in
    a streaming pass keeps every window on the same scale.
    """
    count, total, squares = 0, 0.0, 0.0
    with contextlib.closing(source.blocks(rate, channels, STATS_BLOCK)) as blocks:
        for block in blocks:
            mono = block.mean(axis=0, dtype=np.float64)
            count += mono.size
            total += float(mono.sum())
            squares += float(np.square(mono).sum())
    mean = total / max(count, 1)
    variance = max(squares / max(count, 1) - mean * mean, 0.0)
    return mean, float(np.sqrt(variance * count / max(count - 1, 1)))


class DemucsEngine(SeparationEngine):
    """Every Demucs model: the pretrained names and the local repo's."""

    name = "demucs"
    label = "Demucs"
    OPTIONS = (
        Option(
            "shifts",
            "integer",
            "Random shifts averaged (better quality, N times slower).",
            default=1,
            minimum=0,
            maximum=10,
        ),
        Option(
            "overlap",
            "number",
            "Overlap between chunks.",
            default=0.25,
            minimum=0.0,
            maximum=0.99,
        ),
        Option(
            "segment",
            "number",
            f"Chunk length in seconds (at most {HT_SEGMENT:g} for htdemucs models); "
            "default: the model's own.",
            default=None,
            minimum=1.0,
            maximum=100.0,
            unit="s",
        ),
    )

    def options(self, name: str, config: dict[str, Any]) -> tuple[Option, ...]:
        spec = PRETRAINED.get(name)
        bound = spec.max_segment if spec is not None else None
        return tuple(o.bounded(bound) if o.name == "segment" else o for o in self.OPTIONS)

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        local = local_names(config)
        entries = []
        for spec in PRETRAINED.values():
            # Weights saved by `flask models download` are plain float tensors, so
            # a quantized model needs diffq only when demucs fetches it itself.
            missing_package = (
                spec.name not in local
                and spec.needs is not None
                and importlib.util.find_spec(spec.needs) is None
            )
            present = spec.name in local or _in_hub_cache(spec.name)
            entries.append(
                model_entry(
                    self,
                    spec.name,
                    description=spec.description,
                    stems=list(spec.stems),
                    available=bool(present and not missing_package),
                    downloadable=bool(config.get("ALLOW_MODEL_DOWNLOAD")),
                    sample_rate=44100,
                    max_segment=spec.max_segment,
                    requires=spec.needs if missing_package else None,
                    options=self.options(spec.name, config),
                    **catalogue_facts.DEMUCS.get(spec.name, catalogue_facts.Facts()).fields(),
                )
            )
        for name in sorted(set(local) - set(PRETRAINED)):
            entries.append(
                model_entry(
                    self,
                    name,
                    description=f"Local Demucs model from {repo_dir(config).name}/.",
                    available=True,
                    downloadable=False,
                    options=self.options(name, config),
                    sample_rate_note="The model's own, known once it is loaded.",
                    **catalogue_facts.DEMUCS_LOCAL.fields(),
                )
            )
        return entries

    def names(self, config: dict[str, Any]) -> set[str]:
        return known_names(config)

    def load(self, name: str, config: dict[str, Any], device: str) -> Any:
        return load(name, config, device)

    def can_download(self, name: str) -> bool:
        return name in PRETRAINED

    def download(self, name: str, config: dict[str, Any]) -> Path:
        return download(name, config).parent

    def prepare(
        self,
        name: str,
        options: dict[str, Any],
        source: SeparationInput,
        config: dict[str, Any],
        report: Progress,
    ) -> Separator:
        report.stage("loading_model", 0.0)
        model, device = self.model(name, config)
        segment = options.get("segment")
        bound = max_segment(model)
        if segment is not None and bound is not None and segment > bound:
            # Only a local model's bound is unknown until it is loaded; the
            # request schema refuses the pretrained ones' already.
            raise ServiceError(
                f"segment must be at most {bound:g} s for model '{name}'.",
                code="invalid_parameter",
                status=422,
            )
        report.stage("analysing", 0.02)
        rate, channels = int(model.samplerate), int(model.audio_channels)
        mean, std = reference_level(source, rate, channels)
        separator = WindowSeparator(
            model,
            device,
            shifts=int(options["shifts"]),
            overlap=float(options["overlap"]),
            segment=segment,
            ref_mean=mean,
            ref_std=std,
            batch_size=int(config.get("SEPARATION_BATCH_SIZE") or 1),
            precision=precision.resolve(config.get("SEPARATION_PRECISION"), device),
        )
        return Separator(
            separator,
            separator.sample_rate,
            separator.channels,
            separator.sources,
            device,
            facts=separator.facts,
        )
