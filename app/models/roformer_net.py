"""BS-RoFormer and Mel-Band RoFormer networks, inference only.

The published community checkpoints (viperx's ``model_bs_roformer_ep_317_sdr_12.9755``,
Kimberley Jensen's Mel-Band RoFormer) are state dicts of the classes in ZFTurbo's
Music-Source-Separation-Training (``models/bs_roformer/bs_roformer.py`` and
``mel_band_roformer.py``, MIT licence, Copyright (c) 2023 Phil Wang and
ZFTurbo; themselves lucidrains' BS-RoFormer of early 2024). This module is a
compact re-implementation of those networks' forward pass with the same module
tree, so that every state-dict key (``layers.0.1.layers.0.0.to_qkv.weight``,
``band_split.to_features.3.1.bias``, ``mask_estimators.0.to_freqs.5.0.2.weight``,
``...rotary_embed.freqs``) loads as it is. The constructor takes the ``model:``
section of the checkpoint's YAML config. Training-only parts (losses, dropout,
gradient checkpointing) are left out; ``docs/architecture.md`` says why this is
vendored instead of taken from the ``bs-roformer`` package.

Imported only by ``roformer_engine`` inside the functions that run models: it
imports torch at the top.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The viperx BS-RoFormer's bands (what ZFTurbo's code defaults to): 1025 bins of a 2048 STFT.
DEFAULT_FREQS_PER_BANDS = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)  # fmt: skip


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class RotaryEmbedding(nn.Module):
    """rotary-embedding-torch's ``RotaryEmbedding(dim)`` as the checkpoints use it:
    interleaved pairs, theta 10000, ``freqs`` a (frozen) parameter in the state dict."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.freqs = nn.Parameter(1.0 / (theta**exponents), requires_grad=False)

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys ``(..., seq, dim)`` by their position along ``seq``."""
        positions = torch.arange(t.shape[-2], device=t.device, dtype=self.freqs.dtype)
        angles = torch.repeat_interleave(positions[:, None] * self.freqs[None, :], 2, dim=-1)
        pairs = t.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return t * angles.cos().to(t.dtype) + rotated * angles.sin().to(t.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float = 4) -> None:
        super().__init__()
        inner = int(dim * mult)
        # Indices as in the checkpoints: norm 0, linear 1, gelu 2, dropout 3, linear 4, dropout 5.
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, inner),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(inner, dim),
            nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        batch, length, _ = x.shape
        qkv = self.to_qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, length, dim_head)
        q, k = self.rotary_embed.rotate(q), self.rotary_embed.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v)
        gates = self.to_gates(x).sigmoid().transpose(1, 2)[..., None]  # (batch, heads, length, 1)
        out = (out * gates).transpose(1, 2).reshape(batch, length, -1)
        return self.to_out(out)


class LinearAttention(nn.Module):
    """Cross-covariance attention over the feature axis (``linear_transformer_depth``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, scale: float = 8.0) -> None:
        super().__init__()
        self.heads = heads
        self.scale = scale
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        batch, length, _ = x.shape
        qkv = self.to_qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 4, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, dim_head, length)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out[1](out.permute(0, 3, 1, 2).reshape(batch, length, -1))


class Transformer(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        rotary_embed: RotaryEmbedding | None,
        norm_output: bool,
        linear: bool = False,
    ) -> None:
        super().__init__()
        layers = []
        for _ in range(depth):
            attention: nn.Module
            if linear:
                attention = LinearAttention(dim, heads, dim_head)
            else:
                assert rotary_embed is not None
                attention = Attention(dim, heads, dim_head, rotary_embed)
            layers.append(nn.ModuleList([attention, FeedForward(dim)]))
        self.layers = nn.ModuleList(layers)
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            attention, feed_forward = list(layer)  # type: ignore[call-overload]
            x = attention(x) + x
            x = feed_forward(x) + x
        return self.norm(x)


class BandSplit(nn.Module):
    def __init__(self, dim: int, dim_inputs: Sequence[int]) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(size), nn.Linear(size, dim)) for size in self.dim_inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.split(self.dim_inputs, dim=-1)
        return torch.stack([f(band) for band, f in zip(bands, self.to_features, strict=True)], -2)


def _mlp(dim_in: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    dims = (dim_in, *((dim_hidden,) * hidden_layers), dim_out)
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if index < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """One MLP per band. ``hidden_layers`` is ``mask_estimator_depth - 1`` in the
    BS-RoFormer and ``mask_estimator_depth`` in the Mel-Band RoFormer: the two
    reference files count differently, and the checkpoints follow them."""

    def __init__(
        self, dim: int, dim_inputs: Sequence[int], hidden_layers: int, expansion: int = 4
    ) -> None:
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, size * 2, dim * expansion, hidden_layers), nn.GLU(dim=-1))
            for size in dim_inputs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.unbind(dim=-2)
        return torch.cat([f(band) for band, f in zip(bands, self.to_freqs, strict=True)], dim=-1)


class _RoFormer(nn.Module):
    """What both networks share: the STFT, the axial transformers, the masks."""

    final_norm: nn.Module
    window: torch.Tensor

    def _setup(
        self,
        *,
        dim: int,
        depth: int,
        stereo: bool,
        num_stems: int,
        time_transformer_depth: int,
        freq_transformer_depth: int,
        linear_transformer_depth: int,
        dim_head: int,
        heads: int,
        stft_n_fft: int,
        stft_hop_length: int,
        stft_win_length: int,
        stft_normalized: bool,
        norm_output: bool,
        skip_connection: bool = False,
    ) -> None:
        self.stereo = stereo
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.skip_connection = skip_connection

        def transformer(
            layers: int, rotary: RotaryEmbedding | None, linear: bool = False
        ) -> Transformer:
            return Transformer(
                dim=dim,
                depth=layers,
                heads=heads,
                dim_head=dim_head,
                rotary_embed=rotary,
                norm_output=norm_output,
                linear=linear,
            )

        time_rotary, freq_rotary = RotaryEmbedding(dim_head), RotaryEmbedding(dim_head)
        blocks = []
        for _ in range(depth):
            block: list[nn.Module] = []
            if linear_transformer_depth > 0:
                block.append(transformer(linear_transformer_depth, None, linear=True))
            block.append(transformer(time_transformer_depth, time_rotary))
            block.append(transformer(freq_transformer_depth, freq_rotary))
            blocks.append(nn.ModuleList(block))
        self.layers = nn.ModuleList(blocks)
        self.n_fft = stft_n_fft
        self.hop_length = stft_hop_length
        self.win_length = stft_win_length
        self.normalized = stft_normalized
        self.register_buffer("window", torch.hann_window(stft_win_length), persistent=False)

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) -> (batch, freqs * channels, frames, 2), channels inner."""
        batch, channels, length = audio.shape
        spec = torch.stft(
            audio.reshape(batch * channels, length),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            return_complex=True,
        )
        spec = torch.view_as_real(spec).reshape(batch, channels, *spec.shape[1:], 2)
        return spec.permute(0, 2, 1, 3, 4).reshape(batch, -1, spec.shape[-2], 2)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(batch, stems, freqs * channels, frames) complex -> (batch, stems, channels, time)."""
        batch, stems, _, frames = spec.shape
        channels = self.audio_channels
        spec = spec.reshape(batch, stems, -1, channels, frames).permute(0, 1, 3, 2, 4)
        audio = torch.istft(
            spec.reshape(batch * stems * channels, -1, frames),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            normalized=self.normalized,
            length=length,
        )
        return audio.reshape(batch, stems, channels, length)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, bands, dim) through the axial transformers."""
        batch, frames, bands, dim = x.shape
        outputs: list[torch.Tensor] = []
        for index, block in enumerate(self.layers):
            *linear, time, freq = list(block)  # type: ignore[call-overload]
            if linear:
                x = linear[0](x.reshape(batch, frames * bands, dim)).reshape(x.shape)
            if self.skip_connection:
                for previous in outputs[:index]:
                    x = x + previous
            x = x.permute(0, 2, 1, 3).reshape(batch * bands, frames, dim)
            x = time(x).reshape(batch, bands, frames, dim).permute(0, 2, 1, 3)
            x = freq(x.reshape(batch * frames, bands, dim)).reshape(batch, frames, bands, dim)
            outputs.append(x)
        return self.final_norm(x)

    def _masks(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, bands, dim) -> complex masks (batch, stems, band freqs, time)."""
        masks = torch.stack([estimator(x) for estimator in self.mask_estimators], dim=1)
        masks = masks.unflatten(-1, (-1, 2)).transpose(2, 3).contiguous()
        return torch.view_as_complex(masks)

    mask_estimators: nn.ModuleList


class BSRoformer(_RoFormer):
    """Band-split RoFormer: fixed bands of consecutive STFT bins (``freqs_per_bands``)."""

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        dim_head: int = 64,
        heads: int = 8,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        **_training: Any,
    ) -> None:
        super().__init__()
        self._setup(
            dim=dim,
            depth=depth,
            stereo=stereo,
            num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth,
            dim_head=dim_head,
            heads=heads,
            stft_n_fft=stft_n_fft,
            stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length,
            stft_normalized=stft_normalized,
            norm_output=False,
            skip_connection=skip_connection,
        )
        self.final_norm = RMSNorm(dim)
        freqs = stft_n_fft // 2 + 1
        if sum(freqs_per_bands) != freqs:
            raise ValueError(
                f"freqs_per_bands add up to {sum(freqs_per_bands)}, the STFT has {freqs} bins"
            )
        sizes = tuple(2 * f * self.audio_channels for f in freqs_per_bands)
        self.band_split = BandSplit(dim, sizes)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, sizes, mask_estimator_depth - 1, mlp_expansion_factor)
            for _ in range(num_stems)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) -> (batch, stems, channels, time)."""
        spec = self._stft(audio)  # (batch, freqs * channels, frames, 2)
        x = self.band_split(spec.permute(0, 2, 1, 3).flatten(2))
        masks = self._masks(self._transform(x))
        return self._istft(torch.view_as_complex(spec)[:, None] * masks, audio.shape[-1])


def mel_filter_support(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Which STFT bins each of librosa's ``filters.mel(sr, n_fft, n_mels)`` filters
    covers (Slaney mel scale and norm, librosa's defaults), as a (n_mels, bins) bool
    array; the first bin of the first filter and the last of the last forced in, as
    the Mel-Band RoFormer does."""

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        linear = mel * (200.0 / 3)
        log = 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log, linear)

    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2)
    )
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    weights = np.zeros((n_mels, bins.size), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[i + 2] - edges[i]))
    support = weights > 0
    support[0, 0] = True
    support[-1, -1] = True
    return support


class MelBandRoformer(_RoFormer):
    """Mel-band RoFormer: overlapping bands from a mel filter bank (``num_bands``);
    masks of bins in two bands are averaged."""

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        mask_estimator_depth: int = 1,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        **_training: Any,
    ) -> None:
        super().__init__()
        self._setup(
            dim=dim,
            depth=depth,
            stereo=stereo,
            num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth,
            dim_head=dim_head,
            heads=heads,
            stft_n_fft=stft_n_fft,
            stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length,
            stft_normalized=stft_normalized,
            norm_output=True,
            skip_connection=skip_connection,
        )
        self.final_norm = nn.Identity()
        support = torch.from_numpy(mel_filter_support(sample_rate, stft_n_fft, num_bands))
        if not bool(support.any(dim=0).all()):
            raise ValueError("the mel bands leave some STFT bins out; use fewer bands")
        freqs = support.shape[1]
        indices = torch.arange(freqs).expand(num_bands, freqs)[support]
        channels = self.audio_channels
        indices = (indices[:, None] * channels + torch.arange(channels)).flatten()
        self.register_buffer("freq_indices", indices, persistent=False)
        self.register_buffer(
            "num_bands_per_freq", support.sum(dim=0).repeat_interleave(channels), persistent=False
        )
        sizes = tuple(2 * int(n) * channels for n in support.sum(dim=1).tolist())
        self.band_split = BandSplit(dim, sizes)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, sizes, mask_estimator_depth, mlp_expansion_factor)
            for _ in range(num_stems)
        )

    freq_indices: torch.Tensor
    num_bands_per_freq: torch.Tensor

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) -> (batch, stems, channels, time)."""
        spec = self._stft(audio)  # (batch, freqs * channels, frames, 2)
        x = self.band_split(spec[:, self.freq_indices].permute(0, 2, 1, 3).flatten(2))
        masks = self._masks(self._transform(x))  # (batch, stems, band freqs, frames)
        complex_spec = torch.view_as_complex(spec)[:, None]
        index = self.freq_indices[None, None, :, None].expand_as(masks)
        summed = torch.zeros(
            *masks.shape[:2], *complex_spec.shape[2:], dtype=masks.dtype, device=masks.device
        ).scatter_add_(2, index, masks)
        averaged = summed / self.num_bands_per_freq[:, None].clamp(min=1)
        return self._istft(complex_spec * averaged, audio.shape[-1])


ARCHITECTURES: dict[str, type[_RoFormer]] = {
    "bs_roformer": BSRoformer,
    "mel_band_roformer": MelBandRoformer,
}
