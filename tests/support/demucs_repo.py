"""Tiny, randomly initialised Demucs models saved in demucs's real on-disk format.

The files are what ``demucs.pretrained.get_model(name, repo=folder)`` reads:
``<sig>.th`` packages (``{"klass", "args", "kwargs", "state"}`` saved with
``torch.save``) and bag files ``<name>.yaml`` listing signatures and weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

FOUR = ["drums", "bass", "other", "vocals"]
SIX = ["drums", "bass", "other", "vocals", "guitar", "piano"]


def tiny_htdemucs(sources: list[str] = FOUR, seed: int = 0) -> torch.nn.Module:
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    # depth and nfft stay at their defaults: shallower models are far slower.
    return HTDemucs(sources=list(sources), channels=8, t_layers=1)


def tiny_hdemucs(sources: list[str] = FOUR, seed: int = 1) -> torch.nn.Module:
    from demucs.hdemucs import HDemucs

    torch.manual_seed(seed)
    # Time branch only: about 6x cheaper than the hybrid one, for long inputs.
    return HDemucs(sources=list(sources), channels=4, depth=4, hybrid=False)


def write_bag(folder: Path, name: str, sigs: list[str], **extra: object) -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"models": sigs, **extra}))


def build_repo(folder: Path) -> Path:
    """A local repo with ``htdemucs`` (one tiny HTDemucs), ``htdemucs_6s``,
    ``mdx`` (a tiny HDemucs, fast: for long inputs) and ``mybag`` (a weighted bag
    of both kinds under a name demucs does not know)."""
    from app.models.demucs_engine import save_package

    folder.mkdir(parents=True, exist_ok=True)
    save_package(tiny_htdemucs(), folder / "a1b2c3d4.th")
    save_package(tiny_htdemucs(SIX, seed=2), folder / "c0ffee66.th")
    save_package(tiny_hdemucs(), folder / "d00d0001.th")
    write_bag(folder, "htdemucs", ["a1b2c3d4"])
    write_bag(folder, "htdemucs_6s", ["c0ffee66"])
    write_bag(folder, "mdx", ["d00d0001"])
    write_bag(
        folder,
        "mybag",
        ["a1b2c3d4", "d00d0001"],
        weights=[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
    )
    return folder


class VocalsPassThrough(torch.nn.Module):
    """A one-parameter "separator" that hears every input as vocals: the
    ``vocals`` stem is the mix (times a gain of 1), the other stems are silent.

    A trained Demucs puts a spoken clip in its vocals stem; random tiny models
    do not, so the karaoke pipeline needs this stand-in to produce lyrics from
    the speech clips. It is a real ``nn.Module`` saved in demucs's package
    format and run through ``apply_model`` like any other model.
    """

    def __init__(self, sources: list[str] = FOUR, samplerate: int = 44100) -> None:
        super().__init__()
        self._init_args_kwargs = ((), {"sources": list(sources), "samplerate": samplerate})
        self.sources = list(sources)
        self.samplerate = samplerate
        self.audio_channels = 2
        self.segment = 10.0
        self.gain = torch.nn.Parameter(torch.ones(()))

    def valid_length(self, length: int) -> int:
        return length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(mix.shape[0], len(self.sources), *mix.shape[1:], dtype=mix.dtype)
        out[:, self.sources.index("vocals")] = self.gain * mix
        return out


def add_vocals_passthrough(folder: Path, name: str) -> None:
    """Adds ``name`` to a repo built by ``build_repo``: a ``VocalsPassThrough``.

    Use a pretrained name with a vocals stem (e.g. ``mdx_extra``) so the model
    list offers it for karaoke, where local names have unknown stems.
    """
    from app.models.demucs_engine import save_package

    save_package(VocalsPassThrough(), folder / "5eed0f0c.th")
    write_bag(folder, name, ["5eed0f0c"])
