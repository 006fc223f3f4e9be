"""Tiny, randomly initialised RoFormer checkpoints in the published on-disk format.

Each model is a folder ``<MODELS_DIR>/roformer/<name>/`` with ``config.yaml``
(ZFTurbo's config layout and key names, band lists as ``!!python/tuple`` as in
the published files) and ``model.ckpt`` (a state dict saved with ``torch.save``),
what ``app.models.roformer_engine`` loads by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHUNK = 22050  # half a second: small windows keep the tests fast

_BS_CONFIG = """\
audio:
  chunk_size: {chunk}
  dim_f: 1024
  dim_t: 801
  hop_length: 441
  n_fft: 2048
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 0
  freqs_per_bands: !!python/tuple
    - 4
    - 4
    - 4
    - 4
    - 8
    - 8
    - 8
    - 8
    - 81
  dim_head: 8
  heads: 2
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  dim_freqs_in: 129
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
  stft_normalized: false
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
    - 4096
    - 2048
    - 1024
  multi_stft_hop_size: 147
  multi_stft_normalized: False
training:
  batch_size: 2
  instruments:
    - vocals
    - other
  lr: 1.0
  target_instrument: vocals
  num_epochs: 1000
  use_amp: true
inference:
  batch_size: 1
  dim_t: 801
  num_overlap: 2
"""

_MEL_CONFIG = """\
audio:
  chunk_size: {chunk}
  dim_f: 1024
  dim_t: 801
  hop_length: 441
  n_fft: 2048
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 0
  num_bands: 8
  dim_head: 8
  heads: 2
  attn_dropout: 0
  ff_dropout: 0
  flash_attn: True
  dim_freqs_in: 129
  sample_rate: 44100
  stft_n_fft: 256
  stft_hop_length: 64
  stft_win_length: 256
  stft_normalized: False
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
  - 4096
  - 2048
  - 1024
  multi_stft_hop_size: 147
  multi_stft_normalized: False
training:
  batch_size: 1
  instruments:
  - vocals
  - other
  lr: 4.0e-05
  target_instrument: vocals
  num_epochs: 1000
inference:
  batch_size: 1
  dim_t: 801
  num_overlap: 2
"""


def write_model(models_dir: Path, name: str, config_text: str, *, wrap: bool, seed: int) -> Path:
    """Build the network the config describes with random weights and save both files."""
    from app.models.msst import read_config
    from app.models.roformer_engine import RoformerEngine
    from app.models.roformer_net import ARCHITECTURES

    folder = models_dir / "roformer" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config_text)
    settings = read_config(folder / "config.yaml")
    torch.manual_seed(seed)
    net = ARCHITECTURES[RoformerEngine().architecture(name, settings)](**settings["model"])
    state: Any = net.state_dict()
    torch.save({"state_dict": state} if wrap else state, folder / "model.ckpt")
    return folder


def build_roformer_models(models_dir: Path) -> Path:
    """``bs_roformer_viperx_1297`` (a tiny BS-RoFormer, plain state dict) and
    ``mel_band_roformer_kim`` (a tiny Mel-Band RoFormer wrapped in ``{"state_dict"}``)."""
    write_model(
        models_dir, "bs_roformer_viperx_1297", _BS_CONFIG.format(chunk=CHUNK), wrap=False, seed=0
    )
    write_model(
        models_dir, "mel_band_roformer_kim", _MEL_CONFIG.format(chunk=CHUNK), wrap=True, seed=1
    )
    return models_dir
