"""Test signals and their encoded bytes."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

SR = 44100


def sine_and_clicks(seconds: float = 2.0, sr: int = SR, channels: int = 2) -> np.ndarray:
    """A 440 Hz sine plus a click every 0.25 s: one clearly harmonic, one clearly percussive part."""
    t = np.arange(int(seconds * sr)) / sr
    sine = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    clicks = np.zeros_like(t)
    clicks[:: int(0.25 * sr)] = 0.9
    mono = (sine + clicks).astype(np.float32)
    return np.stack([mono] * channels)


def wav_bytes(audio: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()
