"""BS-RoFormer and Mel-Band RoFormer: the community vocal models, and local ones.

A model is a folder ``MODELS_DIR/roformer/<name>/`` holding ``config.yaml``
(ZFTurbo's Music-Source-Separation-Training config: ``model:`` hyper-parameters,
``audio:`` chunk size and rate, ``training:`` instruments and target,
``inference:`` overlap) and ``model.ckpt`` (the state dict, as published). The
published models are listed by name with the URLs python-audio-separator
fetches them from; ``flask models download NAME`` (or a first job with
``ALLOW_MODEL_DOWNLOAD``) stores them in that layout. Any other folder of that
layout is a local model. The networks are ``app/models/roformer_net.py``.

A model trained for one target (``training.target_instrument``, the vocal
models) gives that stem and ``instrumental`` = mix - target.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from app.errors import ServiceError
from app.models import catalogue_facts
from app.models.engines import (
    Option,
    Progress,
    SeparationEngine,
    SeparationInput,
    Separator,
    model_entry,
)

log = logging.getLogger(__name__)

FAMILY = "roformer"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.ckpt"
INSTRUMENTAL = "instrumental"
DEFAULT_NUM_OVERLAP = 4
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download fails


@dataclass(frozen=True)
class Published:
    name: str
    architecture: str  # a key of roformer_net.ARCHITECTURES
    description: str
    stems: tuple[str, ...]
    config_url: str
    weights_url: str


_UVR_MODELS = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models"
_UVR_CONFIGS = (
    "https://raw.githubusercontent.com/TRvlvr/application_data/main/mdx_model_data/mdx_c_configs"
)
_AUDIO_SEPARATOR_CONFIGS = (
    "https://github.com/nomadkaraoke/python-audio-separator/releases/download/model-configs"
)

PUBLISHED: dict[str, Published] = {
    p.name: p
    for p in (
        Published(
            "bs_roformer_viperx_1297",
            "bs_roformer",
            "BS-RoFormer vocals by viperx (model_bs_roformer_ep_317_sdr_12.9755): about 2.6 dB "
            "cleaner vocals than htdemucs; the instrumental is the mix minus the vocals. "
            "Slower than htdemucs.",
            ("vocals", INSTRUMENTAL),
            f"{_UVR_CONFIGS}/model_bs_roformer_ep_317_sdr_12.9755.yaml",
            f"{_UVR_MODELS}/model_bs_roformer_ep_317_sdr_12.9755.ckpt",
        ),
        Published(
            "mel_band_roformer_kim",
            "mel_band_roformer",
            "Mel-Band RoFormer vocals by Kimberley Jensen: about 2.7 dB cleaner vocals than "
            "htdemucs; the instrumental is the mix minus the vocals. Slower than htdemucs.",
            ("vocals", INSTRUMENTAL),
            f"{_AUDIO_SEPARATOR_CONFIGS}/vocals_mel_band_roformer.yaml",
            "https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main/MelBandRoformer.ckpt",
        ),
    )
}


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus ``!!python/tuple``, which ZFTurbo's configs use for band lists."""


_ConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: tuple(loader.construct_sequence(node)),  # type: ignore[arg-type]
)


def root(config: dict[str, Any]) -> Path:
    return Path(config["MODELS_DIR"]) / FAMILY


def model_dir(name: str, config: dict[str, Any]) -> Path:
    return root(config) / name


def is_present(name: str, config: dict[str, Any]) -> bool:
    folder = model_dir(name, config)
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def local_names(config: dict[str, Any]) -> list[str]:
    """Folders of ``MODELS_DIR/roformer`` with both files, published names included."""
    folder = root(config)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".") and is_present(p.name, config)
    )


def read_config(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_ConfigLoader)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path} has no 'model:' section")
    return data


def architecture(name: str, settings: dict[str, Any]) -> str:
    """``bs_roformer`` or ``mel_band_roformer``: the published model's, else the
    config's ``model_type`` if it has one, else by its band settings."""
    if name in PUBLISHED:
        return PUBLISHED[name].architecture
    declared = settings.get("model_type")
    if declared in ("bs_roformer", "mel_band_roformer"):
        return str(declared)
    return "mel_band_roformer" if "num_bands" in settings["model"] else "bs_roformer"


def stems_of(settings: dict[str, Any]) -> tuple[list[str], bool]:
    """The stems a config's model gives, and whether the last one (``instrumental``)
    is the mix minus the model's single target rather than a model output."""
    training = settings.get("training") or {}
    instruments = [str(s) for s in training.get("instruments") or []]
    target = training.get("target_instrument")
    num_stems = int(settings["model"].get("num_stems", 1))
    if target:
        return [str(target), INSTRUMENTAL], True
    if num_stems == len(instruments):
        return instruments, False
    if num_stems == 1 and instruments:
        return [instruments[0], INSTRUMENTAL], True
    raise ValueError(f"num_stems is {num_stems} but training.instruments is {instruments}")


def how_to_provide(name: str, config: dict[str, Any]) -> str:
    folder = model_dir(name, config)
    text = f"put its {CONFIG_FILE} and {WEIGHTS_FILE} (the published YAML config and checkpoint) in {folder}"
    if name in PUBLISHED:
        text += (
            f", or run `flask models download {name}` on a machine with internet access and "
            "copy that folder"
            + ("" if config.get("ALLOW_MODEL_DOWNLOAD") else ", or set ALLOW_MODEL_DOWNLOAD=1")
        )
    return text


def _unavailable(name: str, config: dict[str, Any], why: str = "is not available") -> ServiceError:
    return ServiceError(
        f"RoFormer model '{name}' {why} on this server: {how_to_provide(name, config)}.",
        code="model_unavailable",
    )


def _fetch(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                shutil.copyfileobj(response, tmp, 1 << 20)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    Path(tmp.name).replace(target)


def download(name: str, config: dict[str, Any]) -> Path:
    """Fetch a published model into ``MODELS_DIR/roformer/<name>/``."""
    spec = PUBLISHED.get(name)
    if spec is None:
        raise ValueError(f"{name!r} is not a published RoFormer model: {', '.join(PUBLISHED)}")
    folder = model_dir(name, config)
    if not (folder / CONFIG_FILE).is_file():
        _fetch(spec.config_url, folder / CONFIG_FILE)
    if not (folder / WEIGHTS_FILE).is_file():
        _fetch(spec.weights_url, folder / WEIGHTS_FILE)
    return folder


@dataclass
class LoadedModel:
    net: Any  # roformer_net._RoFormer
    sources: list[str]
    instrumental: bool  # the last source is mix - the model's one output
    sample_rate: int
    channels: int
    chunk_size: int
    num_overlap: int
    resident_bytes: int  # what the model cache's byte budget counts (cache.model_bytes)


def _state_dict(path: Path) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError("the checkpoint is not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load(name: str, config: dict[str, Any], device: str) -> LoadedModel:
    """Build model ``name`` from its folder (fetching a published one first when allowed)."""
    if not is_present(name, config):
        if name in PUBLISHED and config.get("ALLOW_MODEL_DOWNLOAD"):
            try:
                download(name, config)
            except Exception as exc:
                log.warning("could not download roformer model %s: %r", name, exc)
                raise _unavailable(name, config, f"could not be downloaded ({exc})") from None
        else:
            raise _unavailable(name, config)
    from app.models.cache import model_bytes
    from app.models.roformer_net import ARCHITECTURES

    folder = model_dir(name, config)
    try:
        settings = read_config(folder / CONFIG_FILE)
        sources, instrumental = stems_of(settings)
        net = ARCHITECTURES[architecture(name, settings)](**settings["model"])
        try:
            missing, unexpected = net.load_state_dict(
                _state_dict(folder / WEIGHTS_FILE), strict=False
            )
        except RuntimeError as exc:  # tensor shapes differ from the config's
            first = str(exc).splitlines()[1:2] or [""]
            raise ValueError(
                f"the checkpoint does not fit the config: {first[0].strip()}"
            ) from None
        # rotary frequencies are fixed; some exports leave them out
        missing = [k for k in missing if not k.endswith("rotary_embed.freqs")]
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint does not fit the config: {len(missing)} missing keys "
                f"({', '.join(missing[:3])}), {len(unexpected)} unexpected "
                f"({', '.join(unexpected[:3])})"
            )
    except Exception as exc:
        log.warning("could not load roformer model %s: %s", name, str(exc)[:500])
        raise _unavailable(name, config, f"could not be loaded ({str(exc)[:300]})") from None
    net.eval().to(device)
    audio = settings.get("audio") or {}
    inference = settings.get("inference") or {}
    return LoadedModel(
        net=net,
        sources=sources,
        instrumental=instrumental,
        sample_rate=int(audio.get("sample_rate", 44100)),
        channels=net.audio_channels,
        chunk_size=int(audio.get("chunk_size", 352800)),
        num_overlap=max(1, int(inference.get("num_overlap", DEFAULT_NUM_OVERLAP))),
        resident_bytes=model_bytes(net),
    )


def chunk_starts(frames: int, chunk: int, step: int) -> list[int]:
    """Where the chunks of a window start: every ``step``, the last one flush with the end."""
    if frames <= chunk:
        return [0]
    starts = list(range(0, frames - chunk + 1, step))
    if starts[-1] + chunk < frames:
        starts.append(frames - chunk)
    return starts


def chunk_weights(chunk: int, first: bool, last: bool) -> np.ndarray:
    """Linear fades over a tenth of the chunk at its inner edges, for the overlap-add."""
    weights = np.ones(chunk, dtype=np.float32)
    fade = chunk // 10
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
        if not first:
            weights[:fade] = ramp
        if not last:
            weights[-fade:] = ramp[::-1]
    return weights


class WindowSeparator:
    """Runs a RoFormer over one window in overlapping chunks of the config's size."""

    def __init__(self, model: LoadedModel, device: str, overlap: float) -> None:
        self.model = model
        self.device = device
        self.step = max(1, round(model.chunk_size * (1.0 - overlap)))

    def __call__(self, window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        import torch

        model, chunk = self.model, self.model.chunk_size
        frames = window.shape[-1]
        mix = np.ascontiguousarray(window, dtype=np.float32)
        if frames < chunk:
            mix = np.pad(mix, ((0, 0), (0, chunk - frames)))
        total = mix.shape[-1]
        starts = chunk_starts(total, chunk, self.step)
        outputs = model.net.num_stems
        summed = np.zeros((outputs, mix.shape[0], total), dtype=np.float32)
        weight = np.zeros(total, dtype=np.float32)
        with torch.inference_mode():
            for index, start in enumerate(starts):
                piece = torch.from_numpy(mix[None, :, start : start + chunk]).to(self.device)
                out = model.net(piece)[0].to("cpu", torch.float32).numpy()
                w = chunk_weights(chunk, index == 0, index == len(starts) - 1)
                summed[..., start : start + chunk] += out * w
                weight[start : start + chunk] += w
                progress((index + 1) / len(starts))
        stems = summed[..., :frames] / np.maximum(weight[:frames], 1e-8)
        if model.instrumental:
            stems = np.concatenate([stems, window[None].astype(np.float32) - stems], axis=0)
        return stems


class RoformerEngine(SeparationEngine):
    """BS-RoFormer and Mel-Band RoFormer models: the published ones and local folders."""

    name = FAMILY
    label = "RoFormer"
    OPTIONS = (
        Option(
            "overlap",
            "number",
            "Overlap between chunks; default: the model config's (inference.num_overlap).",
            default=None,
            minimum=0.0,
            maximum=0.99,
        ),
    )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        allow = bool(config.get("ALLOW_MODEL_DOWNLOAD"))
        entries = [
            model_entry(
                self,
                spec.name,
                description=spec.description,
                stems=list(spec.stems),
                available=is_present(spec.name, config),
                downloadable=allow,
                sample_rate=44100,
                options=self.OPTIONS,
                **catalogue_facts.ROFORMER[spec.name].fields(),
            )
            for spec in PUBLISHED.values()
        ]
        for name in local_names(config):
            if name in PUBLISHED:
                continue
            try:
                stems: list[str] | None = stems_of(
                    read_config(model_dir(name, config) / CONFIG_FILE)
                )[0]
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                stems = None
            entries.append(
                model_entry(
                    self,
                    name,
                    description=f"Local RoFormer model from {FAMILY}/{name}/.",
                    stems=stems,
                    available=True,
                    downloadable=False,
                    options=self.OPTIONS,
                    **catalogue_facts.ROFORMER_LOCAL.fields(),
                )
            )
        return entries

    def names(self, config: dict[str, Any]) -> set[str]:
        return set(PUBLISHED) | set(local_names(config))

    def load(self, name: str, config: dict[str, Any], device: str) -> Any:
        return load(name, config, device)

    def can_download(self, name: str) -> bool:
        return name in PUBLISHED

    def download(self, name: str, config: dict[str, Any]) -> Path:
        return download(name, config)

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
        overlap = options.get("overlap")
        if overlap is None:
            overlap = 1.0 - 1.0 / model.num_overlap
        separator = WindowSeparator(model, device, float(overlap))
        return Separator(separator, model.sample_rate, model.channels, list(model.sources), device)
