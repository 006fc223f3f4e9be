"""The checkpoint format of ZFTurbo's Music-Source-Separation-Training, shared by its families.

The community publishes its separation models (BS-RoFormer, Mel-Band RoFormer,
MDX23C, ...) as a YAML config and a PyTorch state dict, as ZFTurbo's
Music-Source-Separation-Training (``inference.py --model_type ... --config_path
... --start_check_point ...``) and python-audio-separator read them. The config
has ``model:`` (the network's hyper-parameters), ``audio:`` (``chunk_size``,
``sample_rate``, ``num_channels``, the STFT settings), ``training:``
(``instruments`` and ``target_instrument``) and ``inference:`` (``num_overlap``).

A model is a folder ``MODELS_DIR/<family>/<name>/`` holding ``config.yaml`` and
``model.ckpt``. ``MsstEngine`` is everything about such folders that does not
depend on the network: finding and listing them, fetching the published ones
(``flask models download NAME``, or a first job with ``ALLOW_MODEL_DOWNLOAD``),
reading the config and the state dict, loading strictly, the catalogue, and
running a network over a window in overlapping chunks. A family is a subclass
that names its folder, its published models and its architectures, and builds
its network from a config (``roformer_engine``, ``mdx23c_engine``).

Stems are the config's instrument names in lower case. A model trained for one
target (``training.target_instrument``) gives that stem and ``instrumental`` =
mix - target, computed in each window; a model with one output per
``training.instruments`` entry gives those outputs as they are.

Like every engine module this imports no torch at import time.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.request
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from app.errors import ServiceError
from app.models import precision
from app.models.catalogue_facts import Facts
from app.models.engines import (
    Option,
    Progress,
    SeparationEngine,
    SeparationInput,
    Separator,
    model_entry,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.ckpt"
INSTRUMENTAL = "instrumental"
DEFAULT_NUM_OVERLAP = 4
DEFAULT_CHUNK_SIZE = 352800  # 8 s at 44.1 kHz, for a config that gives none
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download fails

# Where UVR publishes community checkpoints and their configs (as
# python-audio-separator fetches them).
UVR_MODELS = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models"
UVR_CONFIGS = (
    "https://raw.githubusercontent.com/TRvlvr/application_data/main/mdx_model_data/mdx_c_configs"
)


@dataclass(frozen=True)
class Published:
    """A model with a name of ours, fetched from where its publisher put it."""

    name: str
    architecture: str  # a key of the family's ARCHITECTURES
    description: str
    stems: tuple[str, ...]
    config_url: str
    weights_url: str


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus ``!!python/tuple``, which ZFTurbo's configs use for band lists."""


_ConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: tuple(loader.construct_sequence(node)),  # type: ignore[arg-type]
)


def read_config(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_ConfigLoader)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path} has no 'model:' section")
    return data


def stems_of(settings: dict[str, Any], outputs: int) -> tuple[list[str], bool]:
    """The stems of a config's model that has ``outputs`` outputs, and whether
    the last stem is the mix minus the model's single output rather than an output.

    Names are the config's in lower case (UVR's configs say ``Vocals``).
    """
    training = settings.get("training") or {}
    instruments = [str(s).lower() for s in training.get("instruments") or []]
    target = training.get("target_instrument")
    if outputs < 1:
        raise ValueError(f"the model has no outputs (training.instruments is {instruments})")
    if target:
        if outputs != 1:
            raise ValueError(
                f"training.target_instrument is {target!r} but the model has {outputs} outputs"
            )
        stems, residual = [str(target).lower()], True
    elif outputs == len(instruments):
        stems, residual = instruments, False
    elif outputs == 1 and instruments:
        stems, residual = [instruments[0]], True
    else:
        raise ValueError(
            f"the model has {outputs} outputs but training.instruments is {instruments}"
        )
    if residual:
        # mix - target; an instrumental model's residual is the other instrument
        rest = INSTRUMENTAL
        if stems[0] == INSTRUMENTAL:
            others = [i for i in instruments if i != INSTRUMENTAL]
            rest = others[0] if len(others) == 1 else "other"
        stems = [*stems, rest]
    if len(set(stems)) != len(stems):
        raise ValueError(f"the stems {stems} repeat a name")
    return stems, residual


def fetch(url: str, target: Path) -> None:
    """Download ``url`` to ``target`` through a temporary file beside it."""
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


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a checkpoint: a bare state dict, or one wrapped in
    ``{"state_dict"|"model_state_dict"|"model": ...}``, ``module.`` prefixes off."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError("the checkpoint is not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


@dataclass
class LoadedModel:
    net: Any  # a torch module: (batch, channels, samples) -> (batch, outputs, channels, samples)
    sources: list[str]
    instrumental: bool  # the last source is mix - the model's one output
    sample_rate: int
    channels: int
    chunk_size: int
    num_overlap: int
    resident_bytes: int  # what the model cache's byte budget counts (cache.model_bytes)
    # Half precision on a GPU (training.use_amp, as ZFTurbo's inference runs it).
    use_amp: bool = True

    @property
    def outputs(self) -> int:
        """How many stems the network itself gives."""
        return len(self.sources) - (1 if self.instrumental else 0)


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
    """Runs a network over one window in overlapping chunks of the config's size.

    On a GPU the network runs in half precision where its config trains so
    (``use_amp``), as ZFTurbo's inference does: half the activation memory. A
    CUDA out-of-memory error empties the allocator's cache and runs the chunk
    again once (memory is shared with other processes and fragments); then,
    where ``MODEL_DEVICE`` is ``auto``, the rest of the window runs on the CPU
    and the cached model goes back to its GPU afterwards; else the job fails
    with ``out_of_memory``. The chunk size is the model's own (its network
    was trained on it, and MDX23C needs it), so unlike Demucs's segment it is
    not shortened.

    Chunks go through the network ``batch_size`` at a time (as ZFTurbo's
    ``inference.batch_size``): the same chunks and weights, fewer, larger
    calls. Out of GPU memory with more than one, the batch is split and the
    rest of the window runs one chunk at a time before anything else is tried.
    """

    def __init__(
        self,
        model: LoadedModel,
        device: str,
        overlap: float,
        allow_cpu: Callable[[], bool] | None = None,
        batch_size: int = 1,
        precision: str = "float32",
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.precision = precision
        self.step = max(1, round(model.chunk_size * (1.0 - overlap)))
        if allow_cpu is None:
            from app.models.oom import cpu_fallback_allowed

            allow_cpu = cpu_fallback_allowed
        self.allow_cpu = allow_cpu

    def _forward(self, piece: Any, device: str) -> Any:
        import torch

        if device.startswith("cuda") and self.model.use_amp:
            with torch.autocast("cuda", dtype=torch.float16):
                return self.model.net(piece.to(device))
        with precision.cpu_autocast(self.precision, device):
            return self.model.net(piece.to(device))

    def _chunk(self, piece: Any, device: str) -> tuple[np.ndarray, str]:
        """A batch of chunks' outputs, and the device the next batch runs on."""
        import torch

        from app.models.oom import is_cuda_out_of_memory

        tries = 0
        while True:
            try:
                out = self._forward(piece, device)
                return out.to("cpu", torch.float32).numpy(), device
            except Exception as exc:
                if not (device.startswith("cuda") and is_cuda_out_of_memory(exc)):
                    raise
                torch.cuda.empty_cache()
                if piece.shape[0] > 1:
                    log.warning(
                        "CUDA out of memory on %s with %d chunks per batch; one at a time now",
                        device,
                        piece.shape[0],
                    )
                    self.batch_size = 1
                    outs = []
                    for index in range(piece.shape[0]):
                        single, device = self._chunk(piece[index : index + 1], device)
                        outs.append(single)
                    return np.concatenate(outs), device
                tries += 1
                if tries == 1:
                    log.warning("CUDA out of memory on %s; running the chunk again", device)
                    continue
                if not self.allow_cpu():
                    raise ServiceError(
                        "The GPU ran out of memory separating this track; try a CPU worker.",
                        code="out_of_memory",
                        status=507,
                    ) from exc
                log.warning("CUDA out of memory on %s again; the window goes on on the CPU", device)
                device = "cpu"
                self.model.net.to(device)

    def facts(self) -> dict[str, Any]:
        """How the separation runs, for the job's metrics."""
        import torch

        return {
            "separation_path": "batched" if self.batch_size > 1 else "plain",
            "batch_size": self.batch_size,
            "threads": torch.get_num_threads(),
            "precision": (
                "float16"
                if self.device.startswith("cuda") and self.model.use_amp
                else self.precision
            ),
        }

    def __call__(self, window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        import torch

        model, chunk = self.model, self.model.chunk_size
        frames = window.shape[-1]
        mix = np.ascontiguousarray(window, dtype=np.float32)
        if frames < chunk:
            mix = np.pad(mix, ((0, 0), (0, chunk - frames)))
        total = mix.shape[-1]
        starts = chunk_starts(total, chunk, self.step)
        summed = np.zeros((model.outputs, mix.shape[0], total), dtype=np.float32)
        weight = np.zeros(total, dtype=np.float32)
        device = self.device
        try:
            with torch.inference_mode():
                index = 0
                while index < len(starts):
                    group = starts[index : index + self.batch_size]
                    piece = torch.from_numpy(
                        np.stack([mix[:, start : start + chunk] for start in group])
                    )
                    out, device = self._chunk(piece, device)
                    for offset, start in enumerate(group, start=index):
                        w = chunk_weights(chunk, offset == 0, offset == len(starts) - 1)
                        summed[..., start : start + chunk] += out[offset - index] * w
                        weight[start : start + chunk] += w
                    index += len(group)
                    progress(index / len(starts))
        finally:
            if device != self.device:
                model.net.to(self.device)  # the cached model goes back to its GPU
        stems = summed[..., :frames] / np.maximum(weight[:frames], 1e-8)
        if model.instrumental:
            stems = np.concatenate([stems, window[None].astype(np.float32) - stems], axis=0)
        return stems


class MsstEngine(SeparationEngine):
    """A family of Music-Source-Separation-Training checkpoints: its published
    models and the local folders of ``MODELS_DIR/<name>/``.

    A subclass sets ``name`` (also the folder under ``MODELS_DIR``), ``label``,
    ``PUBLISHED``, ``ARCHITECTURES`` (the names of its networks), ``FACTS`` and
    ``LOCAL_FACTS`` (``catalogue_facts``), and implements ``outputs`` and ``build``.
    """

    PUBLISHED: ClassVar[dict[str, Published]] = {}
    ARCHITECTURES: ClassVar[tuple[str, ...]] = ()
    FACTS: ClassVar[dict[str, Facts]] = {}
    LOCAL_FACTS: ClassVar[Facts] = Facts()
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

    # ------------------------------------------------------------ what a family says

    @abstractmethod
    def outputs(self, architecture: str, settings: dict[str, Any]) -> int:
        """How many stems the network a config describes gives."""

    @abstractmethod
    def build(self, architecture: str, settings: dict[str, Any]) -> Any:
        """The network a config describes, with its parameters uninitialised or
        random (the checkpoint is loaded into it); ``ValueError`` if the config
        cannot describe one. Imports the network module (and torch) here."""

    def guess_architecture(self, settings: dict[str, Any]) -> str:
        """A local model's architecture when its config declares none."""
        return self.ARCHITECTURES[0]

    def ignored_missing_key(self, key: str) -> bool:
        """A key a checkpoint may leave out (fixed values the network computes)."""
        return False

    # ------------------------------------------------------------ folders

    def root(self, config: dict[str, Any]) -> Path:
        return Path(config["MODELS_DIR"]) / self.name

    def model_dir(self, name: str, config: dict[str, Any]) -> Path:
        return self.root(config) / name

    def is_present(self, name: str, config: dict[str, Any]) -> bool:
        folder = self.model_dir(name, config)
        return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()

    def local_names(self, config: dict[str, Any]) -> list[str]:
        """Folders of ``MODELS_DIR/<family>`` with both files, published names included."""
        folder = self.root(config)
        if not folder.is_dir():
            return []
        return sorted(
            p.name
            for p in folder.iterdir()
            if not p.name.startswith(".") and self.is_present(p.name, config)
        )

    def architecture(self, name: str, settings: dict[str, Any]) -> str:
        """The published model's architecture, else the config's ``model_type``
        if the family has it, else the family's guess from the config."""
        if name in self.PUBLISHED:
            return self.PUBLISHED[name].architecture
        declared = settings.get("model_type")
        if declared in self.ARCHITECTURES:
            return str(declared)
        return self.guess_architecture(settings)

    def stems(self, name: str, settings: dict[str, Any]) -> tuple[list[str], bool]:
        """``stems_of`` for this family's network of the config."""
        return stems_of(settings, self.outputs(self.architecture(name, settings), settings))

    def how_to_provide(self, name: str, config: dict[str, Any]) -> str:
        folder = self.model_dir(name, config)
        text = f"put its {CONFIG_FILE} and {WEIGHTS_FILE} (the published YAML config and checkpoint) in {folder}"
        if name in self.PUBLISHED:
            text += (
                f", or run `flask models download {name}` on a machine with internet access and "
                "copy that folder"
                + ("" if config.get("ALLOW_MODEL_DOWNLOAD") else ", or set ALLOW_MODEL_DOWNLOAD=1")
            )
        return text

    def _unavailable(
        self, name: str, config: dict[str, Any], why: str = "is not available"
    ) -> ServiceError:
        return ServiceError(
            f"{self.label} model '{name}' {why} on this server: {self.how_to_provide(name, config)}.",
            code="model_unavailable",
        )

    # ------------------------------------------------------------ the Engine contract

    def names(self, config: dict[str, Any]) -> set[str]:
        return set(self.PUBLISHED) | set(self.local_names(config))

    def can_download(self, name: str) -> bool:
        return name in self.PUBLISHED

    def download(self, name: str, config: dict[str, Any]) -> Path:
        """Fetch a published model into ``MODELS_DIR/<family>/<name>/``."""
        spec = self.PUBLISHED.get(name)
        if spec is None:
            raise ValueError(
                f"{name!r} is not a published {self.label} model: {', '.join(self.PUBLISHED)}"
            )
        folder = self.model_dir(name, config)
        if not (folder / CONFIG_FILE).is_file():
            fetch(spec.config_url, folder / CONFIG_FILE)
        if not (folder / WEIGHTS_FILE).is_file():
            fetch(spec.weights_url, folder / WEIGHTS_FILE)
        return folder

    def load(self, name: str, config: dict[str, Any], device: str) -> LoadedModel:
        """Build model ``name`` from its folder (fetching a published one first when allowed)."""
        if not self.is_present(name, config):
            if name in self.PUBLISHED and config.get("ALLOW_MODEL_DOWNLOAD"):
                try:
                    self.download(name, config)
                except Exception as exc:
                    log.warning("could not download %s model %s: %r", self.name, name, exc)
                    raise self._unavailable(
                        name, config, f"could not be downloaded ({exc})"
                    ) from None
            else:
                raise self._unavailable(name, config)
        from app.models.cache import model_bytes

        folder = self.model_dir(name, config)
        try:
            settings = read_config(folder / CONFIG_FILE)
            sources, instrumental = self.stems(name, settings)
            net = self.build(self.architecture(name, settings), settings)
            self._load_weights(net, read_state_dict(folder / WEIGHTS_FILE))
        except Exception as exc:
            log.warning("could not load %s model %s: %s", self.name, name, str(exc)[:500])
            raise self._unavailable(
                name, config, f"could not be loaded ({str(exc)[:300]})"
            ) from None
        net.eval().to(device)
        audio = settings.get("audio") or {}
        inference = settings.get("inference") or {}
        return LoadedModel(
            net=net,
            sources=sources,
            instrumental=instrumental,
            sample_rate=int(audio.get("sample_rate", 44100)),
            channels=net.audio_channels,
            chunk_size=int(audio.get("chunk_size", DEFAULT_CHUNK_SIZE)),
            num_overlap=max(1, int(inference.get("num_overlap", DEFAULT_NUM_OVERLAP))),
            resident_bytes=model_bytes(net),
            use_amp=bool((settings.get("training") or {}).get("use_amp", True)),
        )

    def _load_weights(self, net: Any, state: dict[str, Any]) -> None:
        """Load strictly, but for the keys the family lets a checkpoint leave out."""
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensor shapes differ from the config's
            first = str(exc).splitlines()[1:2] or [""]
            raise ValueError(
                f"the checkpoint does not fit the config: {first[0].strip()}"
            ) from None
        missing = [k for k in missing if not self.ignored_missing_key(k)]
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint does not fit the config: {len(missing)} missing keys "
                f"({', '.join(missing[:3])}), {len(unexpected)} unexpected "
                f"({', '.join(unexpected[:3])})"
            )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        allow = bool(config.get("ALLOW_MODEL_DOWNLOAD"))
        entries = [
            model_entry(
                self,
                spec.name,
                description=spec.description,
                stems=list(spec.stems),
                available=self.is_present(spec.name, config),
                downloadable=allow,
                sample_rate=44100,
                options=self.OPTIONS,
                **self.FACTS[spec.name].fields(),
            )
            for spec in self.PUBLISHED.values()
        ]
        for name in self.local_names(config):
            if name in self.PUBLISHED:
                continue
            try:
                settings = read_config(self.model_dir(name, config) / CONFIG_FILE)
                stems: list[str] | None = self.stems(name, settings)[0]
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                stems = None
            entries.append(
                model_entry(
                    self,
                    name,
                    description=f"Local {self.label} model from {self.name}/{name}/.",
                    stems=stems,
                    available=True,
                    downloadable=False,
                    options=self.OPTIONS,
                    **self.LOCAL_FACTS.fields(),
                )
            )
        return entries

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
        separator = WindowSeparator(
            model,
            device,
            float(overlap),
            batch_size=int(config.get("SEPARATION_BATCH_SIZE") or 1),
            precision=precision.resolve(config.get("SEPARATION_PRECISION"), device),
        )
        return Separator(
            separator,
            model.sample_rate,
            model.channels,
            list(model.sources),
            device,
            facts=separator.facts,
        )
