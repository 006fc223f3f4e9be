"""MDX23C (TFC-TDF-Net v3): ZFTurbo's and UVR's vocal models, and local ones.

A model is a folder ``MODELS_DIR/mdx23c/<name>/`` holding ``config.yaml`` and
``model.ckpt`` in the format of ZFTurbo's Music-Source-Separation-Training
(``app/models/msst.py`` reads, fetches, lists and runs them). The published
models are listed by name with the URLs their publishers give (ZFTurbo's
``docs/pretrained_models.md``; UVR's model and config repositories, as
python-audio-separator fetches them); any other folder of that layout is a
local model. The network is ``app/models/mdx23c_net.py``.

Both published models give two outputs, vocals and the rest (ZFTurbo's config
calls it ``other``, UVR's ``Instrumental``): each stem is the network's own
estimate. A model trained for one target (``training.target_instrument``)
gives that stem and ``instrumental`` = mix - target.
"""

from __future__ import annotations

from typing import Any

from app.models import catalogue_facts, msst
from app.models.msst import INSTRUMENTAL, UVR_CONFIGS, UVR_MODELS, Published

FAMILY = "mdx23c"

_ZFTURBO_V1 = "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/v1.0.0"

PUBLISHED: dict[str, Published] = {
    p.name: p
    for p in (
        Published(
            "mdx23c_vocals_zfturbo",
            "mdx23c",
            "MDX23C vocals by ZFTurbo (model_vocals_mdx23c_sdr_10.17): about 1.9 dB cleaner "
            "vocals than htdemucs; 'other' is the model's own estimate of the rest. "
            "Much slower than htdemucs.",
            ("vocals", "other"),
            f"{_ZFTURBO_V1}/config_vocals_mdx23c.yaml",
            f"{_ZFTURBO_V1}/model_vocals_mdx23c_sdr_10.17.ckpt",
        ),
        Published(
            "mdx23c_instvoc_hq",
            "mdx23c",
            "MDX23C InstVoc HQ from UVR (MDX23C-8KFFT-InstVoc_HQ): vocals and the "
            "instrumental, both estimated by the model. No published benchmark figure. "
            "Much slower than htdemucs.",
            ("vocals", INSTRUMENTAL),
            f"{UVR_CONFIGS}/model_2_stem_full_band_8k.yaml",
            f"{UVR_MODELS}/MDX23C-8KFFT-InstVoc_HQ.ckpt",
        ),
    )
}


class Mdx23cEngine(msst.MsstEngine):
    """MDX23C models: the published ones and local folders."""

    name = FAMILY
    label = "MDX23C"
    PUBLISHED = PUBLISHED
    ARCHITECTURES = ("mdx23c",)
    FACTS = catalogue_facts.MDX23C
    LOCAL_FACTS = catalogue_facts.MDX23C_LOCAL

    def outputs(self, architecture: str, settings: dict[str, Any]) -> int:
        """One output for a ``target_instrument``, else one per instrument (as
        ZFTurbo's ``prefer_target_instrument``)."""
        training = settings.get("training") or {}
        if training.get("target_instrument"):
            return 1
        return len(training.get("instruments") or [])

    def build(self, architecture: str, settings: dict[str, Any]) -> Any:
        from app.models.mdx23c_net import build

        return build(settings, self.outputs(architecture, settings))
