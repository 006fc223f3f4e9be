"""Harmonic/percussive separation on synthetic signals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from app.models import hpss as hpss_module
from app.models.hpss import hpss

SR = 22050


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


def sine(seconds: float = 2.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clicks(seconds: float = 2.0, every: float = 0.25) -> np.ndarray:
    x = np.zeros(int(seconds * SR), np.float32)
    x[:: int(every * SR)] = 1.0
    return x


def test_sine_is_harmonic():
    stems = hpss(sine()[None], SR)
    h, p = energy(stems["harmonic"]), energy(stems["percussive"])
    assert h / (h + p) > 0.9


def test_clicks_are_percussive():
    stems = hpss(clicks()[None], SR)
    h, p = energy(stems["harmonic"]), energy(stems["percussive"])
    assert p / (h + p) > 0.9


def test_mixture_splits_both_ways():
    s, c = sine(), clicks()
    stems = hpss((s + c)[None], SR)
    harmonic, percussive = stems["harmonic"][0], stems["percussive"][0]
    # Each source is recovered by its own stem and nearly absent from the other.
    assert np.dot(harmonic, s) / energy(s) > 0.9
    assert np.dot(percussive, c) / energy(c) > 0.9
    assert abs(np.dot(percussive, s)) / energy(s) < 0.05
    near_clicks = np.zeros(s.size, bool)
    for k in range(0, s.size, int(0.25 * SR)):
        near_clicks[max(k - 256, 0) : k + 256] = True
    assert energy(percussive[near_clicks]) / energy(percussive) > 0.9


def test_stems_sum_to_input():
    rng = np.random.default_rng(0)
    x = np.stack([sine() + clicks(), rng.uniform(-1, 1, sine().size).astype(np.float32)])
    stems = hpss(x, SR)
    assert np.max(np.abs(stems["harmonic"] + stems["percussive"] - x)) < 1e-4


@pytest.mark.parametrize(
    "shape", [(1, 22050), (2, 22050), (2, 12345), (1, 2047), (2, 100), (1, 1), (1, 0), (2, 5001)]
)
def test_shape_is_kept(shape):
    x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    stems = hpss(x, SR)
    assert set(stems) == {"harmonic", "percussive"}
    for stem in stems.values():
        assert stem.shape == shape and stem.dtype == np.float32
    assert np.max(np.abs(stems["harmonic"] + stems["percussive"] - x), initial=0) < 1e-4


def test_one_dimensional_input_and_float64():
    x = np.random.default_rng(2).uniform(-1, 1, 3000)
    stems = hpss(x, SR)
    assert stems["harmonic"].shape == (3000,) and stems["harmonic"].dtype == np.float32
    assert np.max(np.abs(stems["harmonic"] + stems["percussive"] - x)) < 1e-4


def test_blocks_match_one_big_block(monkeypatch):
    """The halo makes block-wise filtering exactly the whole-spectrogram result."""
    x = np.stack([sine(1.5) + clicks(1.5), clicks(1.5, 0.1)])
    whole = hpss(x, SR)
    monkeypatch.setattr(hpss_module, "BLOCK_FRAMES", 7)
    blocked = hpss(x, SR)
    for name in whole:
        np.testing.assert_allclose(blocked[name], whole[name], atol=1e-6)


def test_progress_is_monotonic_and_ends_at_one(monkeypatch):
    monkeypatch.setattr(hpss_module, "BLOCK_FRAMES", 16)
    seen: list[float] = []
    hpss(np.zeros((2, SR), np.float32), SR, progress=seen.append)
    assert len(seen) > 4
    assert seen[0] > 0 and all(a < b for a, b in itertools.pairwise(seen))
    assert seen[-1] == 1.0
    empty: list[float] = []
    hpss(np.zeros((1, 0), np.float32), SR, progress=empty.append)
    assert empty == [1.0]


def test_exception_from_progress_propagates():
    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        hpss(sine()[None], SR, progress=cancel)


def test_silence_splits_evenly():
    stems = hpss(np.zeros((1, 4096), np.float32), SR)
    assert not np.any(stems["harmonic"]) and not np.any(stems["percussive"])


def test_bad_parameters():
    x = np.zeros((1, 100), np.float32)
    with pytest.raises(ValueError):
        hpss(x, SR, kernel_size=0)
    with pytest.raises(ValueError):
        hpss(x, SR, n_fft=512, hop_length=512)  # Hann at hop n_fft cannot resynthesise
    with pytest.raises(ValueError):
        hpss(np.zeros((1, 2, 3), np.float32), SR)
