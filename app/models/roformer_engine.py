"""BS-RoFormer and Mel-Band RoFormer: the community vocal models, and local ones.

A model is a folder ``MODELS_DIR/roformer/<name>/`` holding ``config.yaml``
and ``model.ckpt`` in the format of ZFTurbo's Music-Source-Separation-Training
(``app/models/msst.py`` reads, fetches, lists and runs them). The published
models are listed by name with the URLs python-audio-separator fetches them
from; any other folder of that layout is a local model. The networks are
``app/models/roformer_net.py``.

A model trained for one target (``training.target_instrument``, the vocal
models) gives that stem and ``instrumental`` = mix - target.
"""

from __future__ import annotations

from typing import Any

from app.models import catalogue_facts, msst
from app.models.msst import INSTRUMENTAL, UVR_CONFIGS, UVR_MODELS, Published

FAMILY = "roformer"

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
            f"{UVR_CONFIGS}/model_bs_roformer_ep_317_sdr_12.9755.yaml",
            f"{UVR_MODELS}/model_bs_roformer_ep_317_sdr_12.9755.ckpt",
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


class RoformerEngine(msst.MsstEngine):
    """BS-RoFormer and Mel-Band RoFormer models: the published ones and local folders."""

    name = FAMILY
    label = "RoFormer"
    PUBLISHED = PUBLISHED
    ARCHITECTURES = ("bs_roformer", "mel_band_roformer")
    FACTS = catalogue_facts.ROFORMER
    LOCAL_FACTS = catalogue_facts.ROFORMER_LOCAL

    def guess_architecture(self, settings: dict[str, Any]) -> str:
        """Mel-Band when the config has ``num_bands``, else BS-RoFormer."""
        return "mel_band_roformer" if "num_bands" in settings["model"] else "bs_roformer"

    def outputs(self, architecture: str, settings: dict[str, Any]) -> int:
        return int(settings["model"].get("num_stems", 1))

    def build(self, architecture: str, settings: dict[str, Any]) -> Any:
        from app.models.roformer_net import ARCHITECTURES

        return ARCHITECTURES[architecture](**settings["model"])

    def ignored_missing_key(self, key: str) -> bool:
        # rotary frequencies are fixed; some exports leave them out
        return key.endswith("rotary_embed.freqs")
