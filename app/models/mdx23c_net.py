"""MDX23C (KUIELab's TFC-TDF-Net v3), inference only.

The published MDX23C checkpoints (ZFTurbo's vocals model, UVR's
``MDX23C-8KFFT-InstVoc_HQ``) are state dicts of ``TFC_TDF_net`` in ZFTurbo's
Music-Source-Separation-Training (``models/mdx23c_tfc_tdf_v3.py``, MIT licence,
after KUIELab's SDX23 code; python-audio-separator vendors the same file as
``uvr_lib_v5/tfc_tdf_v3.py``). This module re-implements that network's
forward pass with the same module tree, so every state-dict key
(``first_conv.weight``, ``encoder_blocks.0.tfc_tdf.blocks.1.tdf.2.weight``,
``encoder_blocks.4.downscale.conv.2.weight``, ``bottleneck_block.blocks.0.shortcut.weight``,
``decoder_blocks.0.upscale.conv.2.weight``, ``final_conv.2.weight``) loads as it
is. It is built from the ``audio:`` and ``model:`` sections of the checkpoint's
YAML config and the number of outputs (one when ``training.target_instrument``
is set, else one per ``training.instruments`` entry).

The network: a complex STFT (Hann window, ``center=True``) keeps the first
``dim_f`` bins, real and imaginary parts as channels; the bins are folded into
``num_subbands`` sub-bands ("cac" to "cws"); a U-Net of TFC-TDF blocks (3x3
convolutions over time and frequency, plus a bottlenecked fully-connected
layer along frequency) runs on (time, frequency) images, ``num_scales`` levels
down and up; its output, multiplied by the first convolution's, is mapped with
the input spectrum to one complex spectrum per output and inverted.

Differences from the original, none of which changes a published model's
output: the inverse STFT is given the input's length (the original returns
``hop * (frames - 1)`` samples, the same for the published chunk sizes, which are
multiples of the hop), it keeps the config's channel count (the original
assumes stereo), and a config whose sizes do not fit the U-Net is refused when
the network is built instead of failing at the first chunk. Training-only
config keys are ignored.

Imported only by ``mdx23c_engine`` inside the functions that run models: it
imports torch at the top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Norm = Callable[[int], nn.Module]


def norm_layer(kind: str | None) -> Norm:
    """``model.norm``: ``BatchNorm``, ``InstanceNorm`` (affine, the published
    models'), ``GroupNorm<groups>``; anything else is no normalisation."""

    def make(channels: int) -> nn.Module:
        if kind == "BatchNorm":
            return nn.BatchNorm2d(channels)
        if kind == "InstanceNorm":
            return nn.InstanceNorm2d(channels, affine=True)
        if kind is not None and "GroupNorm" in kind:
            return nn.GroupNorm(
                num_groups=int(kind.replace("GroupNorm", "")), num_channels=channels
            )
        return nn.Identity()

    return make


def activation(kind: str) -> nn.Module:
    """``model.act``: ``gelu``, ``relu`` or ``elu<alpha>``."""
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    if kind.startswith("elu"):
        return nn.ELU(float(kind[3:]))
    raise ValueError(f"model.act {kind!r} is not gelu, relu or elu<alpha>")


class Rescale(nn.Module):
    """Norm, activation, then a strided (transposed) convolution by ``scale``:
    the encoder's ``Downscale`` and the decoder's ``Upscale``."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        scale: tuple[int, int],
        norm: Norm,
        act: str,
        transposed: bool,
    ) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = nn.Sequential(
            norm(in_c), activation(act), conv(in_c, out_c, scale, stride=scale, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TfcTdfBlock(nn.Module):
    """One residual block on (batch, channels, time, freq): a 3x3 convolution
    (TFC), a fully-connected layer along frequency through a ``bottleneck``
    times narrower one (TDF) added to it, another 3x3 convolution, and a 1x1
    shortcut from the block's input."""

    def __init__(self, in_c: int, c: int, f: int, bottleneck: int, norm: Norm, act: str) -> None:
        super().__init__()
        # Indices as in the checkpoints: norm 0, activation 1, layer 2 (and 3, 4, 5).
        self.tfc1 = nn.Sequential(
            norm(in_c), activation(act), nn.Conv2d(in_c, c, 3, 1, 1, bias=False)
        )
        self.tdf = nn.Sequential(
            norm(c),
            activation(act),
            nn.Linear(f, f // bottleneck, bias=False),
            norm(c),
            activation(act),
            nn.Linear(f // bottleneck, f, bias=False),
        )
        self.tfc2 = nn.Sequential(norm(c), activation(act), nn.Conv2d(c, c, 3, 1, 1, bias=False))
        self.shortcut = nn.Conv2d(in_c, c, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.tfc1(x)
        x = x + self.tdf(x)
        return self.tfc2(x) + shortcut


class TfcTdf(nn.Module):
    """``num_blocks_per_scale`` TFC-TDF blocks, the first from ``in_c`` channels to ``c``."""

    def __init__(
        self, in_c: int, c: int, blocks: int, f: int, bottleneck: int, norm: Norm, act: str
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TfcTdfBlock(in_c if i == 0 else c, c, f, bottleneck, norm, act) for i in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class EncoderLevel(nn.Module):
    def __init__(self, tfc_tdf: TfcTdf, downscale: Rescale) -> None:
        super().__init__()
        self.tfc_tdf = tfc_tdf
        self.downscale = downscale


class DecoderLevel(nn.Module):
    def __init__(self, upscale: Rescale, tfc_tdf: TfcTdf) -> None:
        super().__init__()
        self.upscale = upscale
        self.tfc_tdf = tfc_tdf


def check_sizes(audio: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """``ValueError`` naming the setting when the config's sizes cannot run
    through the U-Net (the original fails on the first chunk instead)."""
    n_fft, hop, dim_f = int(audio["n_fft"]), int(audio["hop_length"]), int(audio["dim_f"])
    subbands, levels = int(model["num_subbands"]), int(model["num_scales"])
    scale_t, scale_f = (int(s) for s in model["scale"])
    if dim_f > n_fft // 2 + 1:
        raise ValueError(f"audio.dim_f {dim_f} is more than the {n_fft // 2 + 1} bins of n_fft")
    if dim_f % (subbands * scale_f**levels):
        raise ValueError(
            f"audio.dim_f {dim_f} is not a multiple of num_subbands x scale^num_scales "
            f"({subbands * scale_f**levels})"
        )
    chunk = audio.get("chunk_size")
    if chunk is not None:
        frames = int(chunk) // hop + 1
        if frames % scale_t**levels:
            raise ValueError(
                f"audio.chunk_size {chunk} gives {frames} STFT frames, not a multiple of "
                f"{scale_t**levels} (hop_length x (dim_t - 1) with dim_t a multiple is)"
            )


class TfcTdfNet(nn.Module):
    """ZFTurbo's ``TFC_TDF_net``: (batch, channels, samples) -> (batch, outputs,
    channels, samples)."""

    window: torch.Tensor

    def __init__(self, audio: Mapping[str, Any], model: Mapping[str, Any], outputs: int) -> None:
        super().__init__()
        check_sizes(audio, model)
        self.audio_channels = int(audio.get("num_channels", 2))
        self.outputs = outputs
        self.n_fft = int(audio["n_fft"])
        self.hop_length = int(audio["hop_length"])
        self.dim_f = int(audio["dim_f"])
        self.num_subbands = int(model["num_subbands"])
        norm = norm_layer(model.get("norm"))
        act = str(model.get("act", "gelu"))
        levels = int(model["num_scales"])
        scale: tuple[int, int] = tuple(int(s) for s in model["scale"])  # type: ignore[assignment]
        blocks = int(model["num_blocks_per_scale"])
        c = int(model["num_channels"])
        growth = int(model["growth"])
        bottleneck = int(model["bottleneck_factor"])
        f = self.dim_f // self.num_subbands
        dim_c = self.num_subbands * self.audio_channels * 2

        self.first_conv = nn.Conv2d(dim_c, c, 1, 1, 0, bias=False)
        encoder = []
        for _ in range(levels):
            encoder.append(
                EncoderLevel(
                    TfcTdf(c, c, blocks, f, bottleneck, norm, act),
                    Rescale(c, c + growth, scale, norm, act, transposed=False),
                )
            )
            f //= scale[1]
            c += growth
        self.encoder_blocks = nn.ModuleList(encoder)
        self.bottleneck_block = TfcTdf(c, c, blocks, f, bottleneck, norm, act)
        decoder = []
        for _ in range(levels):
            upscale = Rescale(c, c - growth, scale, norm, act, transposed=True)
            f *= scale[1]
            c -= growth
            decoder.append(
                DecoderLevel(upscale, TfcTdf(2 * c, c, blocks, f, bottleneck, norm, act))
            )
        self.decoder_blocks = nn.ModuleList(decoder)
        self.final_conv = nn.Sequential(
            nn.Conv2d(c + dim_c, c, 1, 1, 0, bias=False),
            activation(act),
            nn.Conv2d(c, outputs * dim_c, 1, 1, 0, bias=False),
        )
        # not in the checkpoints: the original's STFT is a plain object
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    @property
    def encoder(self) -> list[EncoderLevel]:
        return list(self.encoder_blocks)  # type: ignore[arg-type]

    @property
    def decoder(self) -> list[DecoderLevel]:
        return list(self.decoder_blocks)  # type: ignore[arg-type]

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, channels * 2 [re, im], dim_f, frames)."""
        batch, channels, samples = audio.shape
        spec = torch.stft(
            audio.reshape(-1, samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)  # (batch * channels, 2, bins, frames)
        spec = spec.reshape(batch, channels * 2, spec.shape[-2], spec.shape[-1])
        return spec[..., : self.dim_f, :]

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(batch, outputs, channels * 2, dim_f, frames) -> (batch, outputs, channels, length)."""
        batch, outputs, planes, f, frames = spec.shape
        bins = self.n_fft // 2 + 1
        spec = torch.cat([spec, spec.new_zeros(batch, outputs, planes, bins - f, frames)], dim=-2)
        spec = spec.reshape(-1, 2, bins, frames).permute(0, 2, 3, 1).contiguous()
        audio = torch.istft(
            torch.view_as_complex(spec),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            length=length,
        )
        return audio.reshape(batch, outputs, planes // 2, length)

    def _to_subbands(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, f, t) -> (b, c * k, f / k, t): each channel's bins in k bands."""
        b, c, f, t = x.shape
        return x.reshape(b, c * self.num_subbands, f // self.num_subbands, t)

    def _from_subbands(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        return x.reshape(b, c // self.num_subbands, f * self.num_subbands, t)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mix = self._to_subbands(self._stft(audio))
        first = self.first_conv(mix)
        x = first.transpose(-1, -2)  # (batch, channels, time, freq): the TDF runs along freq
        skips = []
        for down in self.encoder:
            x = down.tfc_tdf(x)
            skips.append(x)
            x = down.downscale(x)
        x = self.bottleneck_block(x)
        for up in self.decoder:
            x = up.tfc_tdf(torch.cat([up.upscale(x), skips.pop()], 1))
        x = x.transpose(-1, -2) * first
        x = self._from_subbands(self.final_conv(torch.cat([mix, x], 1)))
        b, c, f, t = x.shape
        return self._istft(x.reshape(b, self.outputs, c // self.outputs, f, t), audio.shape[-1])


def build(settings: Mapping[str, Any], outputs: int) -> TfcTdfNet:
    """The network of a checkpoint's config (``audio:`` and ``model:``)."""
    return TfcTdfNet(settings["audio"], settings["model"], outputs)
