"""Music analysis of a decoded signal: tuning, key, tempo and beats, chords,
meter and bars, sections, loudness and peaks.

Serves ``POST /api/v1/analyses`` and the ``analyze=true`` option of separation
and karaoke jobs. ``analyze`` takes float ``(channels, frames)`` samples (what
``app.audio.decode`` returns), ``analyze_file`` decodes a file first. The result
is plain JSON (no NaN or infinity: what cannot be measured is ``None``)::

    {
      "duration": 215.32, "sample_rate": 44100, "channels": 2,
      "key": {"name": "A minor", "tonic": "A", "mode": "minor", "confidence": 0.62,
              "runner_up": {"name": "C major", "confidence": 0.21}},
      "tempo": {"bpm": 128.0, "confidence": 0.71}, "tempo_bpm": 128.0,
      "beats": [0.48, 0.949, ...],
      "tuning": {"cents": 11.1, "reference_hz": 442.83},
      "chords": [{"start": 0.0, "end": 2.416, "label": "A:min", "confidence": 0.24}, ...],
      "meter": {"time_signature": "4/4", "beats_per_bar": 4, "confidence": 1.0},
      "downbeats": [...], "beat_positions": [1, 2, 3, 4, ...],
      "bars": [{"number": 1, "start": 0.017, "chords": ["A:min", ...]}, ...],
      "tempo_curve": [{"time": 0.017, "bpm": 99.7}, ...],
      "sections": [{"start": 0.017, "end": 9.614, "label": "A", "likely_chorus": false}, ...],
      "keys": [{"start": 0.0, "end": 34.2, "key": "C major"}, ...], "modulations": [...],
      "loudness": {"integrated_lufs": -9.12, "loudness_range_lu": 6.3,
                   "sample_peak_dbfs": -0.3, "true_peak_dbtp": 0.41}
    }

The musical reading from beats on (chords, meter, sections, key regions) is
``app.harmony``'s, on the small per-frame arrays computed here.

How it stays cheap on long songs: the musical content lies below a few kHz,
so tuning, chroma and onsets work on a mono downmix resampled (soxr) to
22.05 kHz, and every spectrum is computed a few thousand frames at a time in
float32 and reduced at once (to 12 chroma and 12 bass-chroma bins, to 40
bands, to two running sums for the tuning), so no full-song complex
spectrogram is ever held. Loudness and peaks are measured on the original
samples, streamed in blocks: the BS.1770 meter reproduces pyloudnorm's
integrated loudness without its full-length float64 copies, and the true peak
oversamples block by block. Beyond the input itself, the largest things held
are the 22.05 kHz mono copy and the 40-band onset spectrogram
(docs/architecture.md has the measured figures for a 20-minute song).

What is undefined comes back as ``None`` rather than as a guess: the key of a
signal without pitched content between 55 Hz and 2 kHz (a flat chroma: key
``name``/``tonic``/``mode`` ``None``, ``confidence`` 0, ``runner_up`` ``None``);
the tempo of a signal with no periodic onsets or too short to hold two beats at
220 BPM (``bpm`` ``None``, ``confidence`` 0, ``beats`` empty); the integrated
loudness of a signal shorter than one 400 ms gating block or entirely below the
-70 LUFS gate, and its range below one 3 s window; the peaks of digital silence.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.fft
import soxr
from scipy import signal

from app import harmony, loudness

__all__ = ["PITCH_CLASSES", "analyze", "analyze_file"]

Progress = Callable[[float], None]

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# Key and tempo are computed at this rate: the chroma range ends at 2 kHz and
# onsets are well described below 11 kHz, and it halves the work at 44.1 kHz.
ANALYSIS_RATE = 22050
_MONO_BLOCK = 1 << 18  # input frames downmixed and resampled at a time

# ----------------------------------------------------------------- key parameters
KEY_N_FFT = 8192  # 2.7 Hz bins at 22.05 kHz: a semitone is 3.3 Hz wide at 55 Hz
KEY_HOP = 4096  # key is a property of the whole song: 186 ms steps are plenty
KEY_FMIN = 55.0  # A1
KEY_FMAX = 2000.0
KEY_CENTER = 261.63  # C4: centre of the octave weighting
KEY_OCTAVE_WIDTH = 1.5  # standard deviation of the octave weighting, in octaves
KEY_SEMITONE_WIDTH = 0.35  # standard deviation of a bin's pitch-class kernel, semitones
# Chords need the chroma over time: 93 ms frames, a few per beat.
CHROMA_HOP = 2048
# The bass chroma: where chord roots usually sound (G1-E3), weighted around A2.
BASS_FMIN, BASS_FMAX = 48.0, 170.0
BASS_CENTER, BASS_OCTAVE_WIDTH = 100.0, 0.6
# Tuning is read from spectral peaks where partials are resolved to well under
# a cent of a semitone by the 2.7 Hz bins, and within 30 dB of the frame's loudest.
TUNING_FMIN, TUNING_FMAX = 150.0, 2000.0
TUNING_FLOOR_DB = 30.0
# Krumhansl-Kessler probe-tone ratings (Krumhansl 1990), index 0 = the tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Correlation difference that splits confidence 73/27 between two keys (softmax temperature).
KEY_TEMPERATURE = 0.05
# Below this spread of the average chroma (standard deviation over mean) there
# is no pitch content to speak of: white and pink noise, clicks and DC measure
# 0.03-0.07, the test chord progressions 0.87, a drum loop of tuned drums 0.16.
KEY_MIN_CONTRAST = 0.1

# --------------------------------------------------------------- tempo parameters
ONSET_N_FFT = 1024  # 46 ms window
ONSET_HOP = 256  # 11.6 ms: the beat grid's resolution
ONSET_BANDS = 40
ONSET_FMIN, ONSET_FMAX = 30.0, 11000.0
LOW_ONSET_HZ = 200.0  # the bass bands' upper limit
ONSET_TOP_DB = 80.0  # log-spectrum floor below its maximum
TEMPO_MIN, TEMPO_MAX = 40.0, 220.0
TEMPO_PRIOR_BPM = 120.0  # log-normal prior against octave errors (Ellis 2007)
TEMPO_PRIOR_OCTAVES = 1.0
# Below this autocorrelation peak the onsets are not periodic enough to call a
# tempo: white or pink noise scores 0.01-0.04, a click track 0.7, a steady beat
# in a mix 0.3-0.8.
MIN_TEMPO_CONFIDENCE = 0.08
BEAT_TIGHTNESS = 100.0  # Ellis' alpha: how strictly beats keep to the tempo
# The flux of a centred 46 ms frame peaks about 13 ms before the onset it
# sees (the onset enters the window's far half first); measured on clicks and
# drums, and added to the beat times.
ONSET_LATENCY = 0.013


def _no_progress(_: float) -> None:
    pass


def analyze(
    samples: np.ndarray, sample_rate: int, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Key, tempo, beats and loudness of float ``(channels, frames)`` audio.

    ``samples`` may also be 1-D (mono); 1 or 2 channels, 8-192 kHz. Non-finite
    samples are treated as silence. ``progress(fraction)`` is called a few
    times with increasing fractions, the last one 1.0; whatever it raises
    (a cancellation) propagates. See the module docstring for the result.
    """
    audio = _check_samples(samples, sample_rate)
    report = progress or _no_progress
    channels, frames = audio.shape

    mono = _analysis_mono(audio, sample_rate)
    report(0.05)
    tuning = _tuning(mono)
    chroma, bass = _chroma_frames(mono, tuning)
    key = _key(chroma.sum(axis=0, dtype=np.float64))
    report(0.1)
    envelope, low_envelope = _onset_envelope(mono)
    frame_rate = ANALYSIS_RATE / ONSET_HOP
    bpm, tempo_confidence = _tempo(envelope, frame_rate)
    beats = _beats(envelope, frame_rate, bpm) if bpm is not None else []
    if beats and bpm is not None:
        beats = _extend_to_start(beats, 60.0 / bpm, _first_sound(mono))
    duration = frames / sample_rate
    structure = harmony.describe(
        chroma=chroma,
        bass=bass,
        chroma_rate=ANALYSIS_RATE / CHROMA_HOP,
        envelope=envelope,
        low_envelope=low_envelope,
        onset_rate=frame_rate,
        beats=beats,
        duration=duration,
    )
    del chroma, bass, envelope, low_envelope, mono
    report(0.3)
    integrated, loudness_range = loudness.loudness(audio, sample_rate)
    report(0.58)
    sample_peak, true_peak = loudness.peaks(audio, lambda fraction: report(0.58 + 0.42 * fraction))
    report(1.0)

    bpm_out = _rounded(bpm, 2)
    return {
        "duration": round(frames / sample_rate, 3),
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "key": key,
        "tempo": {"bpm": bpm_out, "confidence": round(tempo_confidence, 3)},
        "tempo_bpm": bpm_out,
        "beats": [round(float(t), 3) for t in beats],
        "tuning": {
            "cents": round(tuning, 1),
            "reference_hz": round(440.0 * 2 ** (tuning / 1200.0), 2),
        },
        **structure,
        "loudness": {
            "integrated_lufs": _rounded(integrated, 2),
            "loudness_range_lu": _rounded(loudness_range, 2),
            "sample_peak_dbfs": _rounded(_db(sample_peak), 2),
            "true_peak_dbtp": _rounded(_db(true_peak), 2),
        },
    }


def analyze_file(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Decode a file at its own rate and analyse it (see ``analyze``).

    Files with more than two channels are downmixed to stereo by FFmpeg (the
    loudness meter here only knows mono and stereo). Decoding counts as the
    first 20% of ``progress``. Raises ``app.audio.AudioError`` for files that
    cannot be used (including ``audio_too_long`` past ``max_seconds`` and
    ``audio_too_large`` past ``max_bytes`` of decoded samples).
    """
    from app import audio as audio_io  # PyAV is only needed for files

    report = progress or _no_progress
    info = audio_io.probe(path, max_seconds=max_seconds, max_bytes=max_bytes)
    samples, rate = audio_io.decode(
        path,
        channels=2 if info.channels > 2 else None,
        max_seconds=max_seconds,
        max_bytes=max_bytes,
    )
    report(0.2)
    return analyze(samples, rate, progress=lambda fraction: report(0.2 + 0.8 * fraction))


# ------------------------------------------------------------------------ helpers


def _check_samples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(samples)
    if audio.ndim == 1:
        audio = audio[np.newaxis]
    if audio.ndim != 2 or not 1 <= audio.shape[0] <= 2:
        raise ValueError(
            f"samples must be (channels, frames) with 1 or 2 channels, not {audio.shape}"
        )
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"samples must be floating point, not {audio.dtype}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    audio = audio.astype(np.float32, copy=False)
    # One pass, no temporary: a NaN or infinity anywhere makes the sum non-finite.
    if not math.isfinite(float(np.sum(audio, dtype=np.float64))):
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    return audio


def _rounded(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _db(amplitude: float) -> float | None:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else None


def _analysis_mono(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono downmix at ``ANALYSIS_RATE``, float32, resampled by soxr block by block.

    Streaming the downmix into soxr means the only full-length copy is the
    22.05 kHz result (100 MB for 20 minutes), not a mono copy at the input rate.
    """
    channels, frames = audio.shape
    if rate == ANALYSIS_RATE and channels == 1:
        return np.ascontiguousarray(audio[0])
    stream = soxr.ResampleStream(rate, ANALYSIS_RATE, 1, dtype="float32")
    out = np.empty(frames * ANALYSIS_RATE // rate + 16, np.float32)
    filled = 0
    for start in range(0, frames, _MONO_BLOCK):
        stop = min(start + _MONO_BLOCK, frames)
        block = audio[0, start:stop]
        if channels == 2:
            block = (block + audio[1, start:stop]) * np.float32(0.5)
        resampled = stream.resample_chunk(block, last=stop == frames)
        if filled + len(resampled) > len(out):  # not expected: soxr gives round(n * ratio)
            out = np.concatenate([out, np.empty(len(resampled), np.float32)])
        out[filled : filled + len(resampled)] = resampled
        filled += len(resampled)
    return out[:filled]


def _stft_magnitudes(x: np.ndarray, n_fft: int, hop: int) -> Iterator[np.ndarray]:
    """Magnitude spectra of centred Hann frames, a batch of frames at a time.

    Frame ``i`` is centred on sample ``i * hop`` (zeros outside the signal),
    so there are ``1 + len(x) // hop`` frames and none is empty. Each batch is
    float32 ``(frames, n_fft // 2 + 1)`` of about 8 MB.
    """
    window = signal.get_window("hann", n_fft).astype(np.float32)
    total = 1 + len(x) // hop
    batch = max(1, (1 << 21) // n_fft)
    half = n_fft // 2
    for first in range(0, total, batch):
        count = min(batch, total - first)
        start = first * hop - half
        stop = start + (count - 1) * hop + n_fft
        buffer = np.zeros(stop - start, np.float32)
        lo, hi = max(start, 0), min(stop, len(x))
        if hi > lo:
            buffer[lo - start : hi - start] = x[lo:hi]
        frames = np.lib.stride_tricks.sliding_window_view(buffer, n_fft)[::hop] * window
        yield np.abs(scipy.fft.rfft(frames, axis=-1, workers=-1))


# ---------------------------------------------------------------------------- key


def _chroma_weights(
    n_fft: int,
    rate: int,
    tuning: float = 0.0,
    *,
    fmin: float = KEY_FMIN,
    fmax: float = KEY_FMAX,
    centre: float = KEY_CENTER,
    width: float = KEY_OCTAVE_WIDTH,
) -> tuple[slice, np.ndarray]:
    """FFT bins -> 12 pitch classes, as (bin slice, (bins, 12) weights).

    Each bin between ``fmin`` and ``fmax`` goes to the pitch classes near its
    pitch (MIDI number from A4 = 440 Hz shifted by ``tuning`` cents, so a
    band tuned to A4 = 446 Hz still lands on its notes) with a narrow
    Gaussian kernel on the circular semitone distance, so energy between two
    semitones (window leakage, vibrato) is split rather than assigned by
    rounding. The weights of each bin sum to 1 times an octave weighting: a
    Gaussian on log-frequency around ``centre``. For harmony it is centred on
    C4 and 1.5 octaves wide, which keeps bass notes and the middle register
    and fades the region near 2 kHz, where the 3rd and 5th partials of lower
    notes would add pitch classes not played; the bass chroma uses a narrow
    weighting around the bass register instead.
    """
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    lo = int(np.searchsorted(freqs, fmin * 2 ** (-1 / 24)))
    hi = int(np.searchsorted(freqs, fmax, side="right"))
    f = freqs[lo:hi]
    reference = 440.0 * 2 ** (tuning / 1200.0)
    pitch = 69.0 + 12.0 * np.log2(f / reference)
    distance = (pitch[:, None] - np.arange(12)[None, :] + 6.0) % 12.0 - 6.0
    kernel = np.exp(-0.5 * (distance / KEY_SEMITONE_WIDTH) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)
    octave = np.exp(-0.5 * (np.log2(f / centre) / width) ** 2)
    return slice(lo, hi), (kernel * octave[:, None]).astype(np.float32)


def _tuning(mono: np.ndarray) -> float:
    """Deviation of the song's tuning from A4 = 440 Hz, in cents (-50..50).

    Every spectral peak between ``TUNING_FMIN`` and ``TUNING_FMAX`` (a local
    maximum within ``TUNING_FLOOR_DB`` of its frame's loudest bin) gives a
    frequency, refined by a parabola through the log magnitudes of its bin and
    its neighbours; its distance to the nearest equal-tempered semitone is a
    phase on the semitone circle. The magnitude-weighted circular mean of
    those phases is the tuning: circular because a note 49 cents sharp and
    one 49 cents flat of a semitone are nearly in the same place. Vibrato and
    a few out-of-tune notes average out; harmonic partials (2, 4, 8 times the
    fundamental) share their note's deviation, so they count with it.
    Returns 0.0 when there are no peaks (no pitched content).
    """
    n_fft = KEY_N_FFT
    freqs_per_bin = ANALYSIS_RATE / n_fft
    lo = int(TUNING_FMIN / freqs_per_bin)
    hi = int(TUNING_FMAX / freqs_per_bin) + 2
    sin_sum = cos_sum = 0.0
    for spectra in _stft_magnitudes(mono, n_fft, KEY_HOP):
        band = spectra[:, lo - 1 : hi + 1].astype(np.float64)
        centre = band[:, 1:-1]
        loudest = centre.max(axis=1, keepdims=True)
        peak = (
            (centre > band[:, :-2])
            & (centre >= band[:, 2:])
            & (centre > loudest * 10 ** (-TUNING_FLOOR_DB / 20.0))
            & (loudest > 0)
        )
        rows, cols = np.nonzero(peak)
        if len(rows) == 0:
            continue
        a = np.log(band[rows, cols] + 1e-12)
        b = np.log(band[rows, cols + 1] + 1e-12)
        c = np.log(band[rows, cols + 2] + 1e-12)
        denominator = a - 2 * b + c
        offset = np.where(
            denominator < 0, 0.5 * (a - c) / np.where(denominator < 0, denominator, -1), 0
        )
        frequency = (lo + cols + np.clip(offset, -0.5, 0.5)) * freqs_per_bin
        semitones = 12.0 * np.log2(frequency / 440.0)
        phase = 2 * np.pi * (semitones - np.round(semitones))
        weight = band[rows, cols + 1]
        sin_sum += float(np.dot(weight, np.sin(phase)))
        cos_sum += float(np.dot(weight, np.cos(phase)))
    if sin_sum == 0.0 and cos_sum == 0.0:
        return 0.0
    return float(100.0 * math.atan2(sin_sum, cos_sum) / (2 * np.pi))


def _chroma_frames(mono: np.ndarray, tuning: float) -> tuple[np.ndarray, np.ndarray]:
    """Chroma and bass chroma per ``CHROMA_HOP`` frame, float32 (frames, 12) each.

    Magnitudes, not power, are summed into pitch classes: a frame counts by
    its level, so loud passages weigh more than quiet ones when frames are
    added up (the key is found on their sum), without one very loud chord
    drowning the rest as squared magnitudes would. The bass chroma only sees
    ``BASS_FMIN``-``BASS_FMAX``, where the root of a chord usually is.
    """
    bins, weights = _chroma_weights(KEY_N_FFT, ANALYSIS_RATE, tuning)
    bass_bins, bass_weights = _chroma_weights(
        KEY_N_FFT,
        ANALYSIS_RATE,
        tuning,
        fmin=BASS_FMIN,
        fmax=BASS_FMAX,
        centre=BASS_CENTER,
        width=BASS_OCTAVE_WIDTH,
    )
    treble, bass = [], []
    for spectra in _stft_magnitudes(mono, KEY_N_FFT, CHROMA_HOP):
        treble.append(spectra[:, bins] @ weights)
        bass.append(spectra[:, bass_bins] @ bass_weights)
    return np.concatenate(treble), np.concatenate(bass)


def _key_templates() -> tuple[list[tuple[str, str]], np.ndarray]:
    """The 24 keys and their z-scored profiles, (24, 12): majors, then minors."""
    keys, rows = [], []
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            keys.append((PITCH_CLASSES[tonic], mode))
            rows.append(np.roll(profile, tonic))
    templates = np.array(rows)
    templates = (templates - templates.mean(axis=1, keepdims=True)) / templates.std(
        axis=1, keepdims=True
    )
    return keys, templates


_KEYS, _TEMPLATES = _key_templates()


def _key(chroma: np.ndarray) -> dict[str, Any]:
    """Krumhansl-Schmuckler key finding on the song's summed chroma (12,).

    The average chroma is correlated (Pearson) with the Krumhansl-Kessler
    major and minor profiles rotated to all 12 tonics; the best correlation is
    the key, the second best (always another key) the runner-up.

    Confidence: the correlations ``r`` go through a softmax with temperature
    ``KEY_TEMPERATURE`` (0.05) over the 24 keys, i.e. it depends only on the
    margins to the best key. A lead of 0.05 over the only rival gives 0.73, of
    0.1 gives 0.88; relative (C major / A minor) and fifth-related keys share
    pitch classes and are the usual close rivals, which the runner-up shows.
    The softmax share is multiplied by ``max(r_best, 0)`` so a chroma that fits
    no profile well (atonal material) is not reported as certain.

    A nearly flat chroma (standard deviation below ``KEY_MIN_CONTRAST`` times
    its mean: noise, clicks, silence) has no key: Pearson correlation would
    happily match its random ripples to some profile. Then the name, tonic
    and mode are ``None``, the confidence 0 and there is no runner-up.
    """
    spread = chroma.std()
    if not chroma.mean() > 0 or not spread >= KEY_MIN_CONTRAST * chroma.mean():
        return {"name": None, "tonic": None, "mode": None, "confidence": 0.0, "runner_up": None}
    z = (chroma - chroma.mean()) / spread
    correlations = _TEMPLATES @ z / 12.0
    order = np.argsort(-correlations, kind="stable")
    shares = np.exp((correlations - correlations[order[0]]) / KEY_TEMPERATURE)
    shares /= shares.sum()
    fit = max(float(correlations[order[0]]), 0.0)

    def describe(index: int) -> tuple[str, str, str, float]:
        tonic, mode = _KEYS[index]
        return f"{tonic} {mode}", tonic, mode, round(float(shares[index]) * fit, 3)

    name, tonic, mode, confidence = describe(int(order[0]))
    second, _, _, second_confidence = describe(int(order[1]))
    return {
        "name": name,
        "tonic": tonic,
        "mode": mode,
        "confidence": confidence,
        "runner_up": {"name": second, "confidence": second_confidence},
    }


# -------------------------------------------------------------------------- tempo


def _band_centres(rate: int, bands: int) -> np.ndarray:
    """Centre frequencies (Hz) of the ``_band_weights`` bands."""

    def mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    fmax = min(ONSET_FMAX, rate / 2)
    edges = 700.0 * (10 ** (np.linspace(mel(ONSET_FMIN), mel(fmax), bands + 2) / 2595.0) - 1.0)
    return edges[1:-1]


def _band_weights(n_fft: int, rate: int, bands: int) -> np.ndarray:
    """(bins, bands) triangular filters evenly spaced on the mel scale."""

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    fmax = min(ONSET_FMAX, rate / 2)
    edges = 700.0 * (10 ** (np.linspace(mel(ONSET_FMIN), mel(fmax), bands + 2) / 2595.0) - 1.0)
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    lower = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None, :]
    upper = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])[None, :]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Low bands narrower than a bin catch no bin: give each its nearest bin.
    for band in np.flatnonzero(weights.sum(axis=0) == 0):
        weights[np.argmin(np.abs(freqs - edges[band + 1])), band] = 1.0
    return weights.astype(np.float32)


def _onset_envelope(mono: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onset strength per frame at ``ANALYSIS_RATE / ONSET_HOP`` (86 Hz).

    Spectral flux: the power spectrum is reduced to 40 mel bands (the whole
    song is then only 40 floats per 11.6 ms frame), put on a dB scale with a
    floor 80 dB below its maximum (so quiet noise cannot produce flux),
    differenced over time and half-wave rectified (only increases in energy
    are onsets), then averaged over bands. A log scale makes a note's onset
    count by its relative rise, so soft instruments are heard next to drums.
    The second envelope is the same flux over the bands below ``LOW_ONSET_HZ``
    only: bass notes and kick drums, which mark downbeats more than the rest.
    """
    weights = _band_weights(ONSET_N_FFT, ANALYSIS_RATE, ONSET_BANDS)
    bands = np.concatenate(
        [np.square(s) @ weights for s in _stft_magnitudes(mono, ONSET_N_FFT, ONSET_HOP)]
    )
    level = 10.0 * np.log10(np.maximum(bands, 1e-10))
    level = np.maximum(level, level.max() - ONSET_TOP_DB)
    rises = np.maximum(0.0, np.diff(level, axis=0))
    flux = np.concatenate([[0.0], rises.mean(axis=1)]).astype(np.float64)
    low_bands = max(
        1, int(np.searchsorted(_band_centres(ANALYSIS_RATE, ONSET_BANDS), LOW_ONSET_HZ))
    )
    low = np.concatenate([[0.0], rises[:, :low_bands].mean(axis=1)]).astype(np.float64)
    return flux, low


def _tempo(envelope: np.ndarray, frame_rate: float) -> tuple[float | None, float]:
    """Global tempo in BPM and its confidence, from the envelope's autocorrelation.

    The autocorrelation (via FFT, of the mean-removed envelope, normalised to
    1 at lag 0) is weighted over lags of 40-220 BPM by a log-normal prior
    centred on 120 BPM with a 1-octave standard deviation (Ellis 2007): a beat
    pattern also repeats at 2 and 3 beats and often at half a beat, and the
    prior picks the metrical level listeners usually tap. The peak lag is
    refined by parabolic interpolation, then by the peaks near 2, 3 and 4 times
    it (a least-squares fit through those multiples) for sub-frame precision.

    Confidence is the normalised autocorrelation at the chosen lag, clipped to
    0..1: 1 for a perfectly periodic onset pattern, near 0 without one. Below
    ``MIN_TEMPO_CONFIDENCE``, or ``3 / sqrt(frames)`` on short signals (noise,
    sustained tones, chords changing slower than 40 BPM) there is no tempo:
    ``(None, 0.0)``.
    """
    n = len(envelope)
    centred = envelope - envelope.mean()
    energy = float(np.dot(centred, centred))
    lag_min = max(2, math.floor(60.0 * frame_rate / TEMPO_MAX))
    lag_max = min(math.ceil(60.0 * frame_rate / TEMPO_MIN), n // 2)
    if energy <= 0.0 or lag_max - lag_min < 2:
        return None, 0.0
    size = scipy.fft.next_fast_len(2 * n)
    spectrum = scipy.fft.rfft(centred, size)
    ac = scipy.fft.irfft(spectrum.real**2 + spectrum.imag**2, size)[:n] / energy
    lags = np.arange(lag_min, lag_max + 1)
    bpm = 60.0 * frame_rate / lags
    prior = np.exp(-0.5 * (np.log2(bpm / TEMPO_PRIOR_BPM) / TEMPO_PRIOR_OCTAVES) ** 2)
    score = ac[lags] * prior
    inner = score[1:-1]
    peaks = np.flatnonzero((inner >= score[:-2]) & (inner >= score[2:]) & (inner > 0)) + 1
    if len(peaks) == 0:
        return None, 0.0
    best = int(peaks[np.argmax(score[peaks])])
    lag = lags[best] + _parabolic(score[best - 1], score[best], score[best + 1])
    confidence = float(np.clip(np.interp(lag, np.arange(n), ac), 0.0, 1.0))
    lag = _refine_lag(ac, lag)
    bpm_value = 60.0 * frame_rate / lag
    # Autocorrelation peaks of noise shrink like 1 / sqrt(frames): on short
    # signals require about three of their standard errors.
    threshold = max(MIN_TEMPO_CONFIDENCE, 3.0 / math.sqrt(n))
    if confidence < threshold or not TEMPO_MIN - 1.0 <= bpm_value <= TEMPO_MAX + 1.0:
        return None, 0.0
    return bpm_value, confidence


def _parabolic(left: float, centre: float, right: float) -> float:
    """Offset (-0.5..0.5) of the vertex of the parabola through three samples."""
    denominator = left - 2.0 * centre + right
    if denominator >= 0.0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))


def _refine_lag(ac: np.ndarray, lag: float) -> float:
    """Least-squares period from the autocorrelation peaks near k * lag, k = 1..4."""
    positions, multiples = [lag], [1.0]
    for k in (2, 3, 4):
        centre = round(k * lag)
        if centre + 3 >= len(ac) // 2:
            break
        window = ac[centre - 2 : centre + 3]
        i = int(np.argmax(window))
        if i in (0, 4) or window[i] <= 0:  # no clear peak: the pattern is not that regular
            continue
        positions.append(centre - 2 + i + _parabolic(window[i - 1], window[i], window[i + 1]))
        multiples.append(float(k))
    p, m = np.array(positions), np.array(multiples)
    return float(np.dot(p, m) / np.dot(m, m))


def _beats(envelope: np.ndarray, frame_rate: float, bpm: float) -> list[float]:
    """Beat times in seconds: Ellis' (2007) dynamic-programming beat tracker.

    Each frame's score is the onset strength (normalised, smoothed with a
    Gaussian of 1/32 beat) plus the best score of a previous beat 0.5-2
    periods earlier, penalised by ``BEAT_TIGHTNESS * log(gap / period)**2``;
    the beats are found by backtracking from the last strong score. Frames
    less than half a period apart cannot be on the same path, so half a
    period of frames is scored at once. Beats in silent lead-ins and tails
    (onset strength far below the typical beat) are trimmed.
    """
    period = 60.0 * frame_rate / bpm
    std = envelope.std()
    if std <= 0:
        return []
    onsets = envelope / std
    half_width = round(period)
    offsets = np.arange(-half_width, half_width + 1)
    kernel = np.exp(-0.5 * (offsets * 32.0 / period) ** 2)
    local = np.convolve(onsets, kernel, mode="same")

    n = len(local)
    gaps = np.arange(max(1, round(period / 2)), max(2, round(2 * period)) + 1)
    penalty = -BEAT_TIGHTNESS * np.log(gaps / period) ** 2
    cumulative = np.empty(n)
    backlink = np.full(n, -1, dtype=np.int64)
    first_strong = local.max() * 0.01
    started = False
    step = int(gaps[0])
    for start in range(0, n, step):
        stop = min(start + step, n)
        frames = np.arange(start, stop)
        previous = frames[:, None] - gaps[None, :]
        valid = previous >= 0
        candidates = np.where(valid, cumulative[np.maximum(previous, 0)] + penalty, -np.inf)
        choice = np.argmax(candidates, axis=1)
        best = candidates[np.arange(len(frames)), choice]
        has_previous = np.isfinite(best)
        if not started:
            # Before the first onset there is no beat to continue from.
            strong = np.flatnonzero(local[start:stop] >= first_strong)
            if len(strong) == 0:
                has_previous[:] = False
            else:
                has_previous[: strong[0]] = False
                started = True
        cumulative[start:stop] = local[start:stop] + np.where(has_previous, best, 0.0)
        backlink[start:stop] = np.where(has_previous, previous[np.arange(len(frames)), choice], -1)

    # Last beat: the latest local maximum of the cumulative score that is not weak.
    inner = cumulative[1:-1]
    maxima = np.flatnonzero((inner > cumulative[:-2]) & (inner >= cumulative[2:])) + 1
    if len(maxima) == 0:
        return []
    threshold = 0.5 * np.median(cumulative[maxima])
    last = int(maxima[cumulative[maxima] >= threshold][-1])
    path = [last]
    while backlink[path[-1]] >= 0:
        path.append(int(backlink[path[-1]]))
    beats = np.array(path[::-1])

    # Trim beats on silence at both ends (librosa's rule).
    strength = np.convolve(local[beats], signal.get_window("hann", 5, fftbins=False), "same")
    floor = 0.5 * math.sqrt(float(np.mean(strength**2)))
    keep = np.flatnonzero(strength > floor)
    if len(keep) == 0:
        return []
    beats = beats[keep[0] : keep[-1] + 1]
    duration = (len(envelope) - 1) / frame_rate
    return [t for t in beats / frame_rate + ONSET_LATENCY if t <= duration]


def _first_sound(mono: np.ndarray) -> float:
    """Seconds to the first sample within 40 dB of the peak (0.0 for silence).

    Scanned in blocks: a full-length ``abs`` and index array would cost more
    memory than the rest of the analysis.
    """
    block = 1 << 16
    peak = max(
        (float(np.abs(mono[i : i + block]).max()) for i in range(0, len(mono), block)),
        default=0.0,
    )
    if peak == 0.0:
        return 0.0
    for i in range(0, len(mono), block):
        loud = np.flatnonzero(np.abs(mono[i : i + block]) >= 0.01 * peak)
        if len(loud):
            return float(i + loud[0]) / ANALYSIS_RATE
    return 0.0


def _extend_to_start(beats: list[float], period: float, first_sound: float) -> list[float]:
    """Beats continued backwards, a period at a time, to where the music starts.

    Music that starts on its first sample has no onset the flux can see (the
    first frame has nothing before it), so the tracker's first beat is a
    beat late and the first bar would be lost to chords and bars.
    """
    earlier = []
    t = beats[0] - period
    while t >= first_sound - 0.1 * period:
        earlier.append(max(t, 0.0))
        t -= period
    return earlier[::-1] + beats


# ----------------------------------------------------------------------- loudness
