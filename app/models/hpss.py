"""Harmonic/percussive separation by median filtering (Fitzgerald 2010).

The engine that needs no weights: in a magnitude spectrogram, sustained tones
are horizontal lines and drum hits vertical ones, so a median along time keeps
the first and a median along frequency the second. Soft masks built from the
two (``H^2 / (H^2 + P^2)``, as ``librosa.decompose.hpss`` with ``power=2``)
split every STFT bin between the stems, so the stems always add back up to the
input.

A 20-minute song's full spectrogram would take gigabytes, so the STFT is
computed in blocks of frames. The time-direction median needs ``kernel_size //
2`` frames on each side of a block; those halo frames are analysed too but only
the block's own frames are resynthesised and overlap-added, which makes the
result identical to processing the whole spectrogram at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from app.models import catalogue_facts
from app.models.engines import (
    Option,
    Progress,
    SeparationEngine,
    SeparationInput,
    Separator,
    model_entry,
)

__all__ = ["HpssEngine", "hpss"]

# Frames per block: ~12 s of audio at the defaults; a block's working set is a
# few tens of MB whatever the song's length.
BLOCK_FRAMES = 1024


def _window(n_fft: int) -> np.ndarray:
    # Periodic Hann: its shifted squares sum to a constant at hop n_fft/4.
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _median_rows(rows: np.ndarray, size: int, pad_left: int, pad_right: int) -> np.ndarray:
    """Median filter along the last axis of a 2-D array.

    SciPy's fast 1-D rank filter is ~10x quicker than its N-D one, so the rows
    are laid end to end, each with its own mirrored edges (SciPy's default
    "reflect" mode) where a real neighbour is missing, and filtered as one
    long 1-D signal. A window centred inside a row never reaches the next row,
    so the result equals filtering each row on its own. Returns the filtered
    values of the original (unpadded) columns.
    """
    padded = np.pad(rows, ((0, 0), (pad_left, pad_right)), mode="symmetric")
    filtered = ndimage.median_filter(padded.ravel(), size=size, mode="reflect")
    filtered = filtered.reshape(padded.shape)
    return filtered[:, pad_left : pad_left + rows.shape[1]]


def _soft_masks(harm: np.ndarray, perc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power-2 Wiener-like masks; bins where both estimates are zero split evenly."""
    harm2 = np.square(harm)
    perc2 = np.square(perc)
    total = harm2 + perc2
    usable = total > np.finfo(np.float32).tiny
    mask_h = np.divide(harm2, total, out=np.full_like(total, 0.5), where=usable)
    mask_p = np.divide(perc2, total, out=np.full_like(total, 0.5), where=usable)
    return mask_h, mask_p


def hpss(
    audio: np.ndarray,
    sample_rate: int,
    *,
    kernel_size: int = 31,
    n_fft: int = 2048,
    hop_length: int = 512,
    progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Split ``(channels, samples)`` audio into ``harmonic`` and ``percussive`` stems.

    Both stems are float32 with the input's shape and sum to the input (up to
    float32 rounding). ``sample_rate`` is unused by the algorithm but part of
    every engine's signature. ``progress`` gets the fraction done (0..1] after
    each block; an exception raised from it stops the work and propagates,
    which is how a cancelled job gets out.
    """
    del sample_rate
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be positive, not {kernel_size}")
    if n_fft < 2 or not 1 <= hop_length <= n_fft:
        raise ValueError(f"need 2 <= n_fft and 1 <= hop_length <= n_fft, got {n_fft}, {hop_length}")

    signal = np.asarray(audio)
    squeeze = signal.ndim == 1
    if squeeze:
        signal = signal[np.newaxis, :]
    if signal.ndim != 2:
        raise ValueError(f"audio must have shape (channels, samples), not {signal.shape}")
    channels, length = signal.shape

    window = _window(n_fft)
    # Overlap-add works on whole hops: frames are zero-extended to `span`.
    overlap = -(-n_fft // hop_length)
    span = overlap * hop_length
    window_pad = np.zeros(span, np.float64)
    window_pad[:n_fft] = window
    # Sum of squared windows at each offset within a hop, valid wherever every
    # overlapping frame exists: everywhere inside the signal thanks to the
    # n_fft of padding at both ends.
    norm = np.square(window_pad).reshape(overlap, hop_length).sum(axis=0)
    if norm.min() < 1e-6:
        raise ValueError(f"hop_length {hop_length} is too large to resynthesise n_fft {n_fft}")
    inv_norm = (1.0 / norm).astype(np.float32)

    harmonic = np.zeros((channels, length), np.float32)
    percussive = np.zeros((channels, length), np.float32)
    # The signal is conceptually padded with n_fft zeros at both ends; frame t
    # starts at padded sample t * hop, i.e. at sample t * hop - n_fft.
    n_frames = 1 + -(-(length + n_fft) // hop_length) if length else 0
    half = kernel_size // 2
    blocks = [(a, min(a + BLOCK_FRAMES, n_frames)) for a in range(0, n_frames, BLOCK_FRAMES)]
    total_steps = channels * len(blocks)
    step = 0

    for channel in range(channels):
        source = signal[channel]
        for start, stop in blocks:
            first, last = max(start - half, 0), min(stop + half, n_frames)
            spectrum = _stft(source, first, last, window, n_fft, hop_length)
            magnitude = np.abs(spectrum)

            # Median along time, over the block plus its halo (mirrored at the
            # true ends of the signal only); kept for the block's own frames.
            along_time = _median_rows(
                np.ascontiguousarray(magnitude.T),
                kernel_size,
                half if first == 0 else 0,
                half if last == n_frames else 0,
            )
            core = slice(start - first, stop - first)
            harm = np.ascontiguousarray(along_time[:, core].T)
            perc = _median_rows(magnitude[core], kernel_size, half, half)
            mask_h, mask_p = _soft_masks(harm, perc)

            core_spectrum = spectrum[core]
            for stem, mask in ((harmonic, mask_h), (percussive, mask_p)):
                frames = scipy.fft.irfft(core_spectrum * mask, n=n_fft, axis=1)
                frames *= window
                _overlap_add(stem[channel], frames, start, n_fft, hop_length, span, inv_norm)

            step += 1
            if progress is not None:
                progress(step / total_steps)

    if progress is not None and total_steps == 0:
        progress(1.0)
    if squeeze:
        return {"harmonic": harmonic[0], "percussive": percussive[0]}
    return {"harmonic": harmonic, "percussive": percussive}


def _stft(
    source: np.ndarray, first: int, last: int, window: np.ndarray, n_fft: int, hop: int
) -> np.ndarray:
    """Spectrum of frames ``first..last-1`` of the zero-padded signal, (frames, bins)."""
    begin = first * hop - n_fft  # first sample of frame `first`
    end = (last - 1) * hop  # one past the last sample of frame `last - 1`
    segment = np.zeros(end - begin, np.float32)
    lo, hi = max(begin, 0), min(end, source.shape[0])
    if hi > lo:
        segment[lo - begin : hi - begin] = source[lo:hi]
    frames = sliding_window_view(segment, n_fft)[::hop] * window
    return scipy.fft.rfft(frames, axis=1)


def _overlap_add(
    out: np.ndarray,
    frames: np.ndarray,
    start: int,
    n_fft: int,
    hop: int,
    span: int,
    inv_norm: np.ndarray,
) -> None:
    """Add windowed frames starting at frame ``start`` into ``out``, normalised."""
    count = frames.shape[0]
    overlap = span // hop
    if span != n_fft:
        frames = np.pad(frames, ((0, 0), (0, span - n_fft)))
    pieces = frames.reshape(count, overlap, hop)
    # Row r of `summed` is the hop-long stretch starting at frame start + r.
    summed = np.zeros((count + overlap - 1, hop), np.float32)
    for r in range(overlap):
        summed[r : r + count] += pieces[:, r, :]
    summed *= inv_norm
    flat = summed.ravel()
    begin = start * hop - n_fft
    lo, hi = max(begin, 0), min(begin + flat.shape[0], out.shape[0])
    if hi > lo:
        out[lo:hi] += flat[lo - begin : hi - begin]


STEMS = ("harmonic", "percussive")


class HpssEngine(SeparationEngine):
    """``hpss`` as a separation model: no weights, runs on the CPU at the
    input's own rate and channels (mono stays mono)."""

    name = "hpss"
    label = "hpss"
    OPTIONS = (
        Option(
            "kernel_size",
            "integer",
            "Median filter length in STFT frames and bins: longer keeps only steadier "
            "tones in the harmonic stem and sharper hits in the percussive one.",
            default=31,
            minimum=3,
            maximum=101,
        ),
    )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            model_entry(
                self,
                "hpss",
                description=(
                    "Harmonic/percussive split by median filtering (Fitzgerald 2010). Needs no "
                    "weights; stems 'harmonic' (tonal parts) and 'percussive' (drums, attacks)."
                ),
                stems=list(STEMS),
                available=True,
                downloadable=False,
                needs_weights=False,
                options=self.OPTIONS,
                sample_rate_note="The input's own rate: hpss does not resample.",
                **catalogue_facts.HPSS.fields(),
            )
        ]

    def names(self, config: dict[str, Any]) -> set[str]:
        return {"hpss"}

    def preload(self, name: str, config: dict[str, Any]) -> None:
        """Nothing to load."""

    def prepare(
        self,
        name: str,
        options: dict[str, Any],
        source: SeparationInput,
        config: dict[str, Any],
        report: Progress,
    ) -> Separator:
        rate = int(source.info.get("sample_rate") or 44100)
        channels = 2 if int(source.info.get("channels") or 2) >= 2 else 1
        kernel_size = int(options["kernel_size"])

        def separate(window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
            # Looked up at each call, so a test can wrap the module's ``hpss``.
            stems = hpss(window, rate, kernel_size=kernel_size, progress=progress)
            return np.stack([stems[stem] for stem in STEMS])

        return Separator(separate, rate, channels, list(STEMS), "cpu")
