"""Loudness (BS.1770 integrated loudness and loudness range) and peaks (sample
and 4x-oversampled true peak) of a song, streamed in blocks.

Part of the analysis (``app/music_features.py`` calls ``loudness`` and
``peaks`` on the original samples). The meter reproduces pyloudnorm's
integrated loudness without its full-length float64 copies, and the true peak
oversamples only the stretches that could hold the song's peak.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pyloudnorm.iirfilter import IIRfilter
from scipy import signal

Progress = Callable[[float], None]

# ------------------------------------------------------------ loudness parameters
_LOUDNESS_BLOCK = 1 << 18  # samples K-weighted at a time
TRUE_PEAK_OVERSAMPLING = 4
# The interpolation filter scipy.signal.resample_poly uses for 4x (Kaiser-windowed
# sinc, 81 taps): defined here so its per-phase gain can bound inter-sample peaks.
_TP_FILTER = signal.firwin(81, 1 / TRUE_PEAK_OVERSAMPLING, window=("kaiser", 5.0)) * 4
_TP_DELAY = (len(_TP_FILTER) - 1) // 2
_TP_GAIN = max(
    float(np.abs(_TP_FILTER[p::TRUE_PEAK_OVERSAMPLING]).sum())
    for p in range(TRUE_PEAK_OVERSAMPLING)
)
# Phases 1-3 of the filter as the columns of one (taps, 3) kernel (all 20 taps long).
_TP_PHASES = np.stack(
    [_TP_FILTER[p::TRUE_PEAK_OVERSAMPLING] for p in range(1, TRUE_PEAK_OVERSAMPLING)], axis=1
).astype(np.float32)
_TP_HALO = len(_TP_FILTER) // TRUE_PEAK_OVERSAMPLING + 1  # input samples one output depends on
_PEAK_BLOCK = 4096  # granularity at which quiet stretches are skipped
_PEAK_RUN = 1 << 18  # input samples oversampled per call


def _k_weighting(rate: int) -> np.ndarray:
    """BS.1770 K-weighting as second-order sections, exactly pyloudnorm's filters.

    pyloudnorm's default meter ("K-weighting") designs a +4 dB high shelf at
    1500 Hz (Q 1/sqrt 2) and a 38 Hz high pass (Q 0.5) with the RBJ cookbook
    formulas for any rate; the same two biquads are used here, in that order.
    """
    stages = (
        IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    )
    return np.array([np.concatenate([f.b / f.a[0], f.a / f.a[0]]) for f in stages])


def _energy_at(audio: np.ndarray, rate: int, boundaries: np.ndarray) -> np.ndarray:
    """Running sums of the squared K-weighted signal, (channels, len(boundaries)).

    ``result[c, i]`` is the sum of squares of channel ``c``'s first
    ``boundaries[i]`` K-weighted samples (boundaries sorted, within 0..frames),
    so the energy of any block between two boundaries is a difference. The
    filter runs over ``_LOUDNESS_BLOCK`` samples at a time in float64, carrying
    its state, so memory does not grow with the song.
    """
    sos = _k_weighting(rate)
    frames = audio.shape[1]
    result = np.zeros((audio.shape[0], len(boundaries)))
    for c, channel in enumerate(audio):
        state = np.zeros((len(sos), 2))
        total = 0.0
        for start in range(0, frames, _LOUDNESS_BLOCK):
            stop = min(start + _LOUDNESS_BLOCK, frames)
            filtered, state = signal.sosfilt(sos, channel[start:stop].astype(np.float64), zi=state)
            running = np.cumsum(np.square(filtered))
            running += total
            inside = (boundaries > start) & (boundaries <= stop)
            result[c, inside] = running[boundaries[inside] - start - 1]
            total = float(running[-1])
    return result


def loudness(audio: np.ndarray, rate: int) -> tuple[float | None, float | None]:
    """Integrated loudness (LUFS) and loudness range (LU), from one K-weighted pass.

    Integrated loudness is ITU-R BS.1770-4 / EBU R 128 as pyloudnorm's
    ``Meter(rate).integrated_loudness`` computes it, reproduced step by step
    (same filters, same 400 ms blocks at 100 ms steps with the same sample
    boundaries, -70 LUFS absolute gate, relative gate 10 LU below the
    absolutely gated mean, channel weights 1); it agrees with pyloudnorm to
    float rounding (the tests check). It is not called directly because it
    holds a filtered float64 copy of every channel: three times the input's
    memory (1.2 GB for 20 minutes of stereo) and twice the time. Mono counts
    as one channel, as BS.1770 does.

    Loudness range is EBU Tech 3342: short-term (3 s) loudness every 100 ms,
    gated at -70 LUFS absolute and 20 LU below their power mean, then the
    spread between the 10th and 95th percentiles.

    ``None`` where undefined: integrated below one 400 ms block or when every
    block is gated (silence; pyloudnorm says -inf), the range below one 3 s
    window or with nothing above the gates.
    """
    frames = audio.shape[1]
    block, step = 0.4, 0.25  # pyloudnorm's T_g and 1 - overlap
    if frames < block * rate:
        return None, None
    count = round((frames / rate - block) / (block * step)) + 1
    j = np.arange(count)
    lower = (block * (j * step) * rate).astype(np.int64)
    upper = np.minimum((block * (j * step + 1) * rate).astype(np.int64), frames)
    windows = 0 if frames < 3 * rate else (frames - 3 * rate) * 10 // rate + 1
    short_lower = (np.arange(windows) * rate) // 10
    short_upper = short_lower + 3 * rate
    boundaries = np.unique(np.concatenate([[0], lower, upper, short_lower, short_upper]))
    energy = _energy_at(audio, rate, boundaries)

    def mean_square(lo: np.ndarray, hi: np.ndarray, seconds: float) -> np.ndarray:
        at = np.searchsorted(boundaries, np.stack([lo, hi]))
        return (energy[:, at[1]] - energy[:, at[0]]) / (seconds * rate)

    with np.errstate(divide="ignore"):  # log10(0) = -inf: silent blocks, gated out
        z = mean_square(lower, upper, block)  # (channels, blocks)
        level = -0.691 + 10.0 * np.log10(z.sum(axis=0))
        integrated = None
        gated = level >= -70.0
        if gated.any():
            relative = -0.691 + 10.0 * np.log10(z[:, gated].mean(axis=1).sum()) - 10.0
            kept = (level > relative) & (level > -70.0)
            if kept.any():
                integrated = float(-0.691 + 10.0 * np.log10(z[:, kept].mean(axis=1).sum()))

        loudness_range = None
        if windows > 0:
            short = mean_square(short_lower, short_upper, 3.0).sum(axis=0)
            short = -0.691 + 10.0 * np.log10(short)
            short = short[short >= -70.0]
            if len(short):
                mean = 10.0 * np.log10(np.mean(10.0 ** (short / 10.0)))
                short = short[short >= mean - 20.0]
                low, high = np.percentile(short, [10.0, 95.0])
                loudness_range = float(high - low)
    return integrated, loudness_range


def peaks(audio: np.ndarray, progress: Progress) -> tuple[float, float]:
    """Sample peak and true peak (linear, over all channels).

    True peak per ITU-R BS.1770-4 Annex 2: the maximum of the signal
    oversampled 4x, with the interpolation filter ``scipy.signal.resample_poly``
    uses (81-tap Kaiser-windowed sinc). Only the three new phases are computed
    (phase 0 is the samples themselves), as float32 FFT convolutions over
    blocks of 256k samples, so memory stays bounded; the FFTs release the GIL,
    so the blocks run on a few threads. Blocks whose neighbourhood is too quiet to
    reach the sample peak even after interpolation (its maximum times the
    filter's largest per-phase absolute gain) are skipped: exact, and cheaper
    on music that is not at peak level all the time. The true peak is never
    reported below the sample peak.
    """
    maxima = [_block_maxima(channel) for channel in audio]
    sample_peak = max(float(m.max(initial=0.0)) for m in maxima)
    if sample_peak == 0.0:
        return 0.0, 0.0
    runs = [
        (channel, start, stop)
        for channel, block_peaks in enumerate(maxima)
        for start, stop in _candidate_runs(block_peaks, sample_peak, audio.shape[1])
    ]
    workers = max(1, min(len(runs), os.cpu_count() or 1, 4))
    true_peak = sample_peak
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_oversampled_peak, audio[c], start, stop) for c, start, stop in runs]
        try:
            for done, job in enumerate(jobs, 1):
                true_peak = max(true_peak, job.result())
                if done == len(jobs) // 2:
                    progress(0.5)
        finally:
            for job in jobs:
                job.cancel()
    return sample_peak, true_peak


def _block_maxima(x: np.ndarray) -> np.ndarray:
    """max |x| over consecutive ``_PEAK_BLOCK`` blocks, without a full-size temporary."""
    whole = len(x) // _PEAK_BLOCK * _PEAK_BLOCK
    blocks = x[:whole].reshape(-1, _PEAK_BLOCK)
    maxima = np.maximum(blocks.max(axis=1, initial=0.0), -blocks.min(axis=1, initial=0.0))
    if whole < len(x):
        tail = x[whole:]
        maxima = np.append(maxima, max(float(tail.max()), -float(tail.min())))
    return maxima.astype(np.float64)


def _candidate_runs(block_peaks: np.ndarray, floor: float, frames: int) -> list[tuple[int, int]]:
    """Sample ranges, at most ``_PEAK_RUN`` long, where the true peak may exceed ``floor``."""
    # An output depends on inputs within _TP_HALO samples (< one block) of it:
    # bound each block by the maxima of its neighbours too.
    neighbourhood = block_peaks.copy()
    neighbourhood[1:] = np.maximum(neighbourhood[1:], block_peaks[:-1])
    neighbourhood[:-1] = np.maximum(neighbourhood[:-1], block_peaks[1:])
    candidate = np.concatenate([[False], neighbourhood * _TP_GAIN > floor, [False]])
    edges = np.flatnonzero(np.diff(candidate.astype(np.int8)))
    per_run = _PEAK_RUN // _PEAK_BLOCK
    runs = []
    for first, end in zip(edges[::2], edges[1::2], strict=True):
        for block in range(int(first), int(end), per_run):
            runs.append((block * _PEAK_BLOCK, min(min(block + per_run, end) * _PEAK_BLOCK, frames)))
    return runs


def _oversampled_peak(x: np.ndarray, start: int, stop: int) -> float:
    """Peak of the interpolated points between samples ``start`` and ``stop``.

    With ``h`` the 4x filter (delay 40 = 4 * 10 output samples), the point a
    quarter ``p`` past sample ``n`` is ``sum_k h[p + 4k] * x[n + 10 - k]``: the
    full convolution of ``x`` with the phase ``h[p::4]``, read 10 samples on.
    Only points between two samples count: none before the first sample or
    after the last (zeros are assumed beyond the ends, as a filter would).
    """
    lo, hi = max(0, start - _TP_HALO), min(len(x), stop + _TP_HALO)
    segment = x[lo:hi]
    shift = _TP_DELAY // TRUE_PEAK_OVERSAMPLING
    first = start - lo + shift
    last = min(stop, len(x) - 1) - lo + shift
    if last <= first:
        return 0.0
    phases = signal.oaconvolve(segment[:, np.newaxis], _TP_PHASES, mode="full", axes=0)
    part = phases[first:last]
    return max(float(part.max()), -float(part.min()))
