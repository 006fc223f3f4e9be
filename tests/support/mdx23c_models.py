"""Tiny, randomly initialised MDX23C checkpoints in the published on-disk format.

Each model is a folder ``<MODELS_DIR>/mdx23c/<name>/`` with ``config.yaml`` (the
layout and key names of the published configs: ZFTurbo's
``config_vocals_mdx23c.yaml``, with its ``!!python/tuple`` augmentation
settings, and UVR's ``model_2_stem_full_band_8k.yaml``, which names its stems
``Vocals`` and ``Instrumental``) and ``model.ckpt`` (a bare state dict saved
with ``torch.save``, as both published checkpoints are), what
``app.models.mdx23c_engine`` loads by name. Only the sizes are small: an STFT
of 512 with a hop of 256, 256 bins in 2 sub-bands, 2 scales of 8 + 4 channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

HOP = 256
DIM_T = 64
CHUNK = HOP * (DIM_T - 1)  # 16128 samples (0.37 s): the published configs' hop x (dim_t - 1)

_AUDIO = """\
audio:
  chunk_size: {chunk}
  dim_f: 256
  dim_t: {dim_t}
  hop_length: {hop}
  n_fft: 512
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.001
"""

_MODEL = """\
model:
  act: gelu
  bottleneck_factor: 4
  growth: {growth}
  norm: InstanceNorm
  num_blocks_per_scale: 2
  num_channels: 8
  num_scales: 2
  num_subbands: 2
  scale:
  - 2
  - 2
"""

# ZFTurbo's config_vocals_mdx23c.yaml, sizes aside: two outputs, vocals and other.
ZFTURBO_CONFIG = (
    _AUDIO
    + "\n"
    + _MODEL
    + """
training:
  batch_size: 6
  gradient_accumulation_steps: 1
  grad_clip: 0
  instruments:
  - vocals
  - other
  lr: 9.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
  optimizer: adam
  other_fix: true # it's needed for checking on multisong dataset if other is actually instrumental
  use_amp: true # enable or disable usage of mixed precision (float16) - usually it must be true

augmentations:
  enable: true # enable or disable all augmentations (to fast disable if needed)
  loudness: true # randomly change loudness of each stem on the range (loudness_min; loudness_max)
  loudness_min: 0.5
  loudness_max: 1.5
  mixup: true # mix several stems of same type with some probability (only works for dataset types: 1, 2, 3)
  mixup_probs: !!python/tuple # 2 additional stems of the same type (1st with prob 0.2, 2nd with prob 0.02)
    - 0.2
    - 0.02
  mixup_loudness_min: 0.5
  mixup_loudness_max: 1.5

inference:
  batch_size: 1
  dim_t: {dim_t}
  num_overlap: 2
"""
)

# UVR's model_2_stem_full_band_8k.yaml, sizes aside: two outputs, Vocals and Instrumental.
UVR_CONFIG = (
    _AUDIO
    + _MODEL
    + """\
training:
  batch_size: 6
  grad_clip: 0
  instruments:
  - Vocals
  - Instrumental
  lr: 1.0e-05
  patience: 2
  reduce_factor: 0.95
  target_instrument: null
  num_epochs: 1000
  num_steps: 1000
  augmentation: 1
  augmentation_type: simple1
  augmentation_mix: true
  q: 0.95
  coarse_loss_clip: true
  ema_momentum: 0.999
inference:
  batch_size: 1
  dim_t: {dim_t}
  num_overlap: 2
"""
)


def config_text(template: str, *, growth: int = 4, chunk: int = CHUNK) -> str:
    return template.format(chunk=chunk, dim_t=DIM_T, hop=HOP, growth=growth)


def write_model(models_dir: Path, name: str, config: str, *, seed: int) -> Path:
    """Build the network the config describes with random weights and save both files."""
    from app.models.mdx23c_engine import Mdx23cEngine
    from app.models.msst import read_config

    folder = models_dir / "mdx23c" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config)
    settings = read_config(folder / "config.yaml")
    torch.manual_seed(seed)
    net = Mdx23cEngine().build("mdx23c", settings)
    state: dict[str, Any] = net.state_dict()
    # random affine norms (the only 1-D tensors), so that every tensor matters
    for key, tensor in state.items():
        if tensor.ndim == 1 and key.endswith("weight"):
            tensor.uniform_(0.5, 1.5)
        elif tensor.ndim == 1:
            tensor.normal_(0.0, 0.1)
    torch.save(state, folder / "model.ckpt")
    return folder


def build_mdx23c_models(models_dir: Path) -> Path:
    """``mdx23c_vocals_zfturbo`` (ZFTurbo's config layout) and ``mdx23c_instvoc_hq``
    (UVR's), tiny and random."""
    write_model(models_dir, "mdx23c_vocals_zfturbo", config_text(ZFTURBO_CONFIG), seed=0)
    write_model(models_dir, "mdx23c_instvoc_hq", config_text(UVR_CONFIG), seed=1)
    return models_dir
