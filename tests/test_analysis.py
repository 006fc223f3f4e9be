"""Music analysis (key, tempo, beats, loudness) on synthetic signals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy import signal

from app import loudness
from app import music_features as analysis
from app.music_features import analyze, analyze_file

SR = 44100
PITCHES = {name: index for index, name in enumerate(analysis.PITCH_CLASSES)}


# ------------------------------------------------------------------ synthesis


def note(midi: int, seconds: float, rate: int = SR) -> np.ndarray:
    """A plucked-string-like note: 6 harmonic partials, decaying faster when higher."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    out = np.zeros_like(t)
    for k in range(1, 7):
        if k * f0 < rate / 2:
            out += np.sin(2 * np.pi * k * f0 * t) * np.exp(-1.5 * np.sqrt(k) * t) / k**1.2
    return out * np.minimum(1.0, t / 0.01)


def triad(root: str, minor: bool = False) -> list[int]:
    """Root-position triad around C4, with the root doubled an octave below."""
    r = 60 + PITCHES[root]
    return [r - 12, r, r + (3 if minor else 4), r + 7]


def progression(chords: list[list[int]], rate: int = SR, chord_seconds: float = 2.0) -> np.ndarray:
    """The chords played in turn, twice, with a little noise."""
    parts = [sum(note(m, chord_seconds, rate) for m in chord) for chord in chords] * 2
    mix = np.concatenate(parts)
    mix = 0.5 * mix / np.abs(mix).max()
    mix += 0.003 * np.random.default_rng(0).standard_normal(len(mix))
    return mix.astype(np.float32)


def transpose(name: str, semitones: int) -> str:
    return analysis.PITCH_CLASSES[(PITCHES[name] + semitones) % 12]


def major_cadence(tonic: str) -> list[list[int]]:  # I-IV-V-I
    return [triad(tonic), triad(transpose(tonic, 5)), triad(transpose(tonic, 7)), triad(tonic)]


def minor_cadence(tonic: str) -> list[list[int]]:  # i-iv-v-i (natural minor)
    return [
        triad(tonic, True),
        triad(transpose(tonic, 5), True),
        triad(transpose(tonic, 7), True),
        triad(tonic, True),
    ]


def clicks(bpm: float, seconds: float = 30.0, start: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """5 ms 2 kHz blips on every beat, and the beat times."""
    out = np.zeros(int(seconds * SR), np.float32)
    times = np.arange(start, seconds - 0.1, 60.0 / bpm)
    t = np.arange(int(0.005 * SR)) / SR
    blip = (0.8 * np.sin(2 * np.pi * 2000 * t) * np.exp(-t / 0.001)).astype(np.float32)
    for time in times:
        i = round(time * SR)
        out[i : i + len(blip)] += blip
    return out, times


def drums(bpm: float, seconds: float = 30.0, start: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Kick on 1 and 3, snare on 2 and 4, closed hats on eighths; and the beat times."""
    rng = np.random.default_rng(1)
    out = np.zeros(int(seconds * SR))
    beat = 60.0 / bpm
    tk = np.arange(int(0.25 * SR)) / SR
    kick = np.sin(2 * np.pi * (50 * tk + 4 * (1 - np.exp(-25 * tk)))) * np.exp(-12 * tk)
    ts = np.arange(int(0.2 * SR)) / SR
    snare = (0.5 * rng.standard_normal(len(ts)) + np.sin(2 * np.pi * 190 * ts)) * np.exp(-ts / 0.04)
    th = np.arange(int(0.05 * SR)) / SR
    hat = 0.3 * rng.standard_normal(len(th)) * np.exp(-th / 0.01)
    times = np.arange(start, seconds - 0.3, beat)
    for j, time in enumerate(times):
        i = round(time * SR)
        hit = kick if j % 2 == 0 else 0.6 * snare
        out[i : i + len(hit)] += hit
        for offset in (0.0, beat / 2):
            k = round((time + offset) * SR)
            out[k : k + len(hat)] += hat
    out += 0.002 * rng.standard_normal(len(out))
    return (0.7 * out / np.abs(out).max()).astype(np.float32), times


def sine(freq: float, amplitude: float, seconds: float, phase: float = 0.0) -> np.ndarray:
    """A sine with 10 ms raised-cosine fades, so its ends add no overshoot."""
    n = int(seconds * SR)
    x = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / SR + phase)
    fade = int(0.01 * SR)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x.astype(np.float32)


def json_safe(result: dict) -> dict:
    return json.loads(json.dumps(result, allow_nan=False))


# ------------------------------------------------------------------------ key


@pytest.mark.parametrize(
    ("tonic", "mode"),
    [("C", "major"), ("D", "major"), ("A", "minor"), ("F#", "minor")],
)
def test_key_of_a_cadence(tonic: str, mode: str) -> None:
    chords = major_cadence(tonic) if mode == "major" else minor_cadence(tonic)
    mono = progression(chords)
    result = analyze(np.stack([mono, 0.8 * mono]), SR)
    key = result["key"]
    assert key["name"] == f"{tonic} {mode}"
    assert (key["tonic"], key["mode"]) == (tonic, mode)
    assert 0.5 < key["confidence"] <= 1.0
    runner_up = key["runner_up"]
    assert runner_up["name"] != key["name"]
    assert 0.0 <= runner_up["confidence"] < key["confidence"]


def test_key_at_8_khz() -> None:
    rate = 8000
    result = analyze(progression(major_cadence("G"), rate)[np.newaxis], rate)
    assert result["key"]["name"] == "G major"
    assert result["sample_rate"] == rate


# ---------------------------------------------------------------------- tempo


@pytest.mark.parametrize("bpm", [90, 128])
def test_tempo_and_beats_of_a_click_track(bpm: float) -> None:
    track, times = clicks(bpm)
    result = analyze(track[np.newaxis], SR)
    assert result["tempo"]["bpm"] == pytest.approx(bpm, abs=2.0)
    assert result["tempo_bpm"] == result["tempo"]["bpm"]
    assert result["tempo"]["confidence"] > 0.5
    beats = np.array(result["beats"])
    assert len(beats) >= len(times) - 2
    assert np.mean(np.abs(np.diff(beats) - 60.0 / bpm)) < 0.02
    nearest = np.abs(beats[:, None] - times[None, :]).min(axis=1)
    assert nearest.mean() < 0.02


def test_tempo_of_a_drum_pattern() -> None:
    track, times = drums(128)
    result = analyze(np.stack([track, track]), SR)
    assert result["tempo"]["bpm"] == pytest.approx(128, abs=2.0)
    beats = np.array(result["beats"])
    nearest = np.abs(beats[:, None] - times[None, :]).min(axis=1)
    assert nearest.mean() < 0.02


@pytest.mark.parametrize("seconds", [2.0, 10.0])
def test_noise_has_no_tempo_and_no_key(seconds: float) -> None:
    noise = 0.1 * np.random.default_rng(2).standard_normal((2, int(seconds * SR)))
    result = analyze(noise.astype(np.float32), SR)
    assert result["tempo"] == {"bpm": None, "confidence": 0.0}
    assert result["beats"] == []
    assert result["key"]["name"] is None
    assert result["loudness"]["integrated_lufs"] is not None


# ------------------------------------------------------------------- loudness


def test_loudness_of_a_sine_at_minus_23() -> None:
    # BS.1770 is calibrated so that a 1 kHz sine with peaks at -23 dBFS in both
    # channels of a stereo signal measures -23 LUFS; mono counts one channel.
    amplitude = 10 ** (-23 / 20)
    tone = sine(1000, amplitude, 10.0)
    stereo = analyze(np.stack([tone, tone]), SR)["loudness"]
    assert stereo["integrated_lufs"] == pytest.approx(-23.0, abs=0.5)
    assert stereo["sample_peak_dbfs"] == pytest.approx(-23.0, abs=0.2)
    assert stereo["true_peak_dbtp"] == pytest.approx(-23.0, abs=0.2)
    mono = analyze(tone[np.newaxis] * np.float32(10 ** (3 / 20)), SR)["loudness"]
    assert mono["integrated_lufs"] == pytest.approx(-23.0, abs=0.5)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (11025, 1), (48000, 2)])
def test_integrated_loudness_is_pyloudnorms(rate: int, channels: int) -> None:
    # The streaming meter must give what pyloudnorm.Meter gives on the whole
    # signal, gating included: here a fade from -60 dBFS that the gates cut.
    n = int(7.3 * rate)
    ramp = np.geomspace(0.001, 0.3, n)
    x = (np.random.default_rng(4).standard_normal((channels, n)) * ramp).astype(np.float32)
    expected = pyloudnorm.Meter(rate).integrated_loudness(x.T)
    integrated, _ = loudness.loudness(x, rate)
    assert integrated == pytest.approx(expected, abs=1e-4)


def test_loudness_range() -> None:
    # 10 s at -20 LUFS, 10 s at -30, 10 s at -20: the 10th and 95th
    # percentiles of the 3 s loudness fall on the two plateaus.
    levels = [10 ** (-20 / 20), 10 ** (-30 / 20), 10 ** (-20 / 20)]
    tone = np.concatenate([sine(1000, a, 10.0) for a in levels])
    loudness = analyze(np.stack([tone, tone]), SR)["loudness"]
    assert loudness["loudness_range_lu"] == pytest.approx(10.0, abs=0.5)
    steady = analyze(np.stack([tone[: 10 * SR]] * 2), SR)["loudness"]
    assert steady["loudness_range_lu"] == pytest.approx(0.0, abs=0.2)


def test_true_peak_of_inter_sample_peaks() -> None:
    # A sine at fs/4 sampled 45 degrees off its peaks: every sample is at
    # 0.5 * cos(45) = -9.03 dBFS while the waveform reaches 0.5 = -6.02 dBTP.
    tone = sine(SR / 4, 0.5, 2.0, phase=np.pi / 4)
    loudness = analyze(np.stack([tone, 0.5 * tone]), SR)["loudness"]
    assert loudness["sample_peak_dbfs"] == pytest.approx(-9.03, abs=0.2)
    assert loudness["true_peak_dbtp"] == pytest.approx(-6.02, abs=0.2)


def test_true_peak_matches_resample_poly() -> None:
    x = (0.3 * np.random.default_rng(3).standard_normal((2, 300_001))).astype(np.float32)
    x[:, :5000] *= 0.001  # a quiet stretch, which the block skipping must get right
    reference = max(np.abs(signal.resample_poly(c.astype(np.float64), 4, 1)).max() for c in x)
    _, true_peak = loudness.peaks(x, lambda fraction: None)
    assert true_peak == pytest.approx(reference, rel=1e-5)


# ----------------------------------------------------------------- edge cases


def test_silence_is_undefined_not_an_error() -> None:
    result = json_safe(analyze(np.zeros((2, 3 * SR), np.float32), SR))
    assert result["duration"] == 3.0
    assert result["key"] == {
        "name": None,
        "tonic": None,
        "mode": None,
        "confidence": 0.0,
        "runner_up": None,
    }
    assert result["tempo"] == {"bpm": None, "confidence": 0.0}
    assert result["tempo_bpm"] is None
    assert result["beats"] == []
    assert result["loudness"] == {
        "integrated_lufs": None,
        "loudness_range_lu": None,
        "sample_peak_dbfs": None,
        "true_peak_dbtp": None,
    }


@pytest.mark.parametrize("rate", [8000, 44100, 96000])
def test_a_short_input(rate: int) -> None:
    t = np.arange(int(0.3 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    result = json_safe(analyze(tone[np.newaxis], rate))
    assert result["duration"] == pytest.approx(0.3, abs=1e-3)
    assert result["loudness"]["integrated_lufs"] is None  # shorter than a 400 ms block
    assert result["loudness"]["loudness_range_lu"] is None
    assert result["loudness"]["sample_peak_dbfs"] == pytest.approx(-6.02, abs=0.1)
    assert result["tempo"]["bpm"] is None
    assert result["beats"] == []
    assert result["key"]["tonic"] in (None, *analysis.PITCH_CLASSES)


def test_non_finite_samples_count_as_silence() -> None:
    track, _ = clicks(120, seconds=5.0)
    track[100] = np.nan
    track[200] = np.inf
    result = json_safe(analyze(track[np.newaxis], SR))
    assert result["loudness"]["sample_peak_dbfs"] < 0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        analyze(np.zeros((3, SR), np.float32), SR)
    with pytest.raises(ValueError):
        analyze(np.zeros((1, SR), np.int16), SR)
    with pytest.raises(ValueError):
        analyze(np.zeros((1, SR), np.float32), 4000)


def test_progress_increases_to_one_and_can_cancel() -> None:
    track, _ = clicks(120, seconds=5.0)
    seen: list[float] = []
    analyze(np.stack([track, track]), SR, progress=seen.append)
    assert len(seen) >= 3
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen[0] > 0

    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        if fraction > 0.1:
            raise Cancelled

    with pytest.raises(Cancelled):
        analyze(np.stack([track, track]), SR, progress=cancel)


# ---------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", ["wav", "mp3"])
def test_analyze_file(tmp_path: Path, suffix: str) -> None:
    from app import audio

    track, _ = drums(120, seconds=12.0)
    stereo = np.stack([track, 0.9 * track])
    path = tmp_path / f"song.{suffix}"
    if suffix == "wav":
        sf.write(path, stereo.T, SR, subtype="PCM_16")
    else:
        audio.encode(stereo, SR, path, format="mp3", mp3_bitrate=192)
    expected = analyze(stereo, SR)
    seen: list[float] = []
    result = json_safe(analyze_file(path, progress=seen.append))
    assert (result["sample_rate"], result["channels"]) == (SR, 2)
    assert result["duration"] == pytest.approx(12.0, abs=0.1)
    assert result["tempo"]["bpm"] == pytest.approx(120, abs=2.0)
    assert result["loudness"]["integrated_lufs"] == pytest.approx(
        expected["loudness"]["integrated_lufs"], abs=0.5
    )
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_analyze_file_enforces_max_seconds(tmp_path: Path) -> None:
    from app.audio import AudioError

    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(3 * SR, np.float32), SR)
    with pytest.raises(AudioError) as caught:
        analyze_file(path, max_seconds=1.0)
    assert caught.value.code == "audio_too_long"


def test_a_modulation_is_found_where_it_happens() -> None:
    from tests.support import scores

    home = ["C:maj", "F:maj", "G:7", "C:maj", "A:min", "D:min", "G:7", "C:maj"] * 2
    away = ["Eb:maj", "Ab:maj", "Bb:7", "Eb:maj", "C:min", "F:min", "Bb:7", "Eb:maj"] * 2
    score = scores.arrangement(home + away, bpm=120)
    result = analyze(scores.render_numpy(score, SR), SR)
    assert [k["key"] for k in result["keys"]] == ["C major", "D# major"]
    (change,) = result["modulations"]
    assert change["from"] == "C major" and change["to"] == "D# major"
    assert change["time"] == pytest.approx(32.0, abs=2.0)  # bar 17 at 120 BPM


def test_silence_has_no_chords_bars_or_sections() -> None:
    result = analyze(np.zeros((2, 5 * SR), np.float32), SR)
    assert {c["label"] for c in result["chords"]} == {"N"}
    assert result["meter"]["time_signature"] is None
    assert result["bars"] == [] and result["sections"] == [] and result["keys"] == []
    assert result["tuning"] == {"cents": 0.0, "reference_hz": 440.0}
    json.dumps(result, allow_nan=False)


def test_a_tempo_change_shows_in_the_tempo_curve() -> None:
    from tests.support import scores

    score = scores.arrangement(
        ["D:maj", "B:min", "G:maj", "A:maj"] * 8, bpm=100, tempo_changes=[(64.0, 124.0)]
    )
    result = analyze(scores.render_numpy(score, SR), SR)
    change = float(score.seconds(64.0))  # bar 17
    before = [p["bpm"] for p in result["tempo_curve"] if p["time"] < change - 4]
    after = [p["bpm"] for p in result["tempo_curve"] if p["time"] > change + 4]
    assert before and after
    assert all(bpm == pytest.approx(100, abs=2) for bpm in before)
    assert all(bpm == pytest.approx(124, abs=3) for bpm in after)
    beats = np.array(result["beats"])
    assert np.median(np.diff(beats[beats > change])) == pytest.approx(60 / 124, abs=0.01)


@pytest.mark.parametrize("seconds", [1.2, 2.0, 3.0])
def test_a_clip_shorter_than_a_few_bars_still_answers(seconds: float) -> None:
    from tests.support import scores

    song = scores.render_numpy(scores.arrangement(["C:maj", "G:maj"], bpm=120), SR)
    result = analyze(song[:, : int(seconds * SR)], SR)
    json.dumps(result, allow_nan=False)
    assert result["chords"][0]["start"] == 0.0
    assert result["chords"][-1]["end"] == pytest.approx(seconds, abs=0.01)
    assert len(result["sections"]) <= 1
