"""The MusicGen engine on tiny random models saved in transformers' real format."""

from __future__ import annotations

import json
import os
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import torch

from app.errors import ServiceError
from app.models import musicgen_engine as mg
from tests.support.musicgen_models import build_tiny_musicgen, build_tiny_musicgen_melody

os.environ["HF_HUB_OFFLINE"] = "1"

SR = 32000
HOP = 640  # samples per EnCodec frame: 50 frames/s


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not fight other busy processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    with one_thread():
        build_tiny_musicgen(root / "musicgen" / "musicgen-small", seed=0)
        build_tiny_musicgen(root / "musicgen" / "musicgen-stereo-small", seed=1, stereo=True)
        build_tiny_musicgen_melody(root / "musicgen" / "musicgen-melody", seed=2)
    return root


@pytest.fixture(scope="session")
def config(models_dir: Path) -> dict[str, Any]:
    return {"MODELS_DIR": str(models_dir), "ALLOW_MODEL_DOWNLOAD": False}


@pytest.fixture(scope="session")
def small(config: dict[str, Any]) -> mg.Loaded:
    return mg.load("facebook/musicgen-small", config, "cpu")


@pytest.fixture(scope="session")
def melody_model(config: dict[str, Any]) -> mg.Loaded:
    return mg.load("facebook/musicgen-melody", config, "cpu")


@pytest.fixture(scope="session")
def stereo(config: dict[str, Any]) -> mg.Loaded:
    return mg.load("facebook/musicgen-stereo-small", config, "cpu")


@pytest.fixture
def no_hub_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mg, "_in_hub_cache", lambda name: False)


def tone(freq: float, seconds: float, rate: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ----------------------------------------------------------------------------- names, loading


def test_catalogue_lists_released_and_local_models(
    config: dict[str, Any], no_hub_cache: None
) -> None:
    entries = {e["name"]: e for e in mg.catalogue(config)}
    assert set(mg.PRETRAINED) <= set(entries)
    assert mg.DEFAULT_MODEL == "facebook/musicgen-small"
    small = entries["facebook/musicgen-small"]
    assert small["kind"] == "generation" and small["engine"] == "musicgen"
    assert small["available"] is True and small["downloadable"] is False
    assert small["needs_weights"] is True and small["sample_rate"] == 32000
    assert small["melody"] is False and small["stems"] is None
    assert small["max_segment"] is None and small["requires"] is None
    assert entries["facebook/musicgen-melody"]["melody"] is True
    assert entries["facebook/musicgen-melody"]["available"] is True
    assert entries["facebook/musicgen-medium"]["available"] is False
    assert entries["facebook/musicgen-stereo-melody-large"]["melody"] is True
    assert mg.local_names(config) == [
        "facebook/musicgen-melody",
        "facebook/musicgen-small",
        "facebook/musicgen-stereo-small",
    ]
    assert mg.known_names(config) == set(mg.PRETRAINED)
    downloadable = mg.catalogue({**config, "ALLOW_MODEL_DOWNLOAD": True})
    assert all(e["downloadable"] for e in downloadable)


def test_local_folder_of_other_name_is_listed(tmp_path: Path) -> None:
    build_tiny_musicgen(tmp_path / "musicgen" / "my-tiny")
    (tmp_path / "musicgen" / "empty").mkdir()
    cfg = {"MODELS_DIR": str(tmp_path)}
    assert mg.local_names(cfg) == ["my-tiny"]
    entry = next(e for e in mg.catalogue(cfg) if e["name"] == "my-tiny")
    assert entry["available"] and not entry["downloadable"]
    assert entry["sample_rate"] == 32000 and entry["melody"] is False


def test_local_dir_refuses_paths(config: dict[str, Any], models_dir: Path) -> None:
    folder = models_dir / "musicgen" / "musicgen-small"
    assert mg.local_dir("facebook/musicgen-small", config) == folder
    assert mg.local_dir("musicgen-small", config) == folder
    for bad in (
        "../musicgen/musicgen-small",
        "facebook/../musicgen-small",
        "a/facebook/musicgen-small",
        "/musicgen-small",
        "musicgen-small/",
        ".musicgen-small",
        "musicgen\\musicgen-small",
        "someone/musicgen-small",  # another owner's model is not the local facebook copy
        "",
    ):
        assert mg.local_dir(bad, config) is None, bad


def test_load_reads_the_local_folder(small: mg.Loaded, melody_model: mg.Loaded) -> None:
    assert small.name == "facebook/musicgen-small"
    assert small.sample_rate == small.model.config.audio_encoder.sampling_rate == SR
    assert small.frame_rate == 50.0 and small.hop_length == HOP
    assert small.num_codebooks == 4 and small.audio_channels == 1 and small.delay == 3
    assert small.max_window_seconds == 30.0  # 2048 positions, capped at audiocraft's 30 s
    assert small.is_melody is False and small.chroma_params is None
    assert small.device == "cpu" and small.dtype == torch.float32
    assert melody_model.is_melody is True
    assert melody_model.chroma_params["n_fft"] == 16384
    assert melody_model.chroma_params["hop_length"] == 4096


def test_missing_or_unknown_models_are_unavailable(
    config: dict[str, Any], no_hub_cache: None
) -> None:
    for name in ("facebook/musicgen-medium", "nope", "../../etc", "someone/musicgen-small"):
        with pytest.raises(ServiceError) as caught:
            mg.load(name, config, "cpu")
        assert caught.value.code == "model_unavailable"
    message = caught.value.message
    assert str(Path(config["MODELS_DIR"]) / "musicgen") in message
    assert "flask models download" in message and "ALLOW_MODEL_DOWNLOAD" in message


def test_failed_download_or_broken_folder_is_unavailable(tmp_path: Path) -> None:
    # Downloads allowed but the hub unreachable (HF_HUB_OFFLINE): fails fast, same code.
    cfg = {"MODELS_DIR": str(tmp_path), "ALLOW_MODEL_DOWNLOAD": True}
    with pytest.raises(ServiceError) as caught:
        mg.load("facebook/musicgen-large", cfg, "cpu")
    assert caught.value.code == "model_unavailable"
    broken = tmp_path / "musicgen" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    with pytest.raises(ServiceError) as caught:
        mg.load("broken", cfg, "cpu")
    assert caught.value.code == "model_unavailable"
    assert "could not be loaded" in caught.value.message


def test_download_saves_a_folder_load_reads(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mg._from_pretrained

    def from_hub(source: str, local_files_only: bool) -> Any:  # the "hub" is a tiny folder
        folder = models_dir / "musicgen" / source.rsplit("/", 1)[-1]
        return real(str(folder), True)

    monkeypatch.setattr(mg, "_from_pretrained", from_hub)
    cfg = {"MODELS_DIR": str(tmp_path), "ALLOW_MODEL_DOWNLOAD": False}
    assert mg.download("musicgen-small", cfg) == tmp_path / "musicgen" / "musicgen-small"
    assert mg.download("facebook/musicgen-melody", cfg) == tmp_path / "musicgen" / "musicgen-melody"
    with pytest.raises(ValueError):
        mg.download("someone/else", cfg)
    monkeypatch.setattr(mg, "_from_pretrained", real)
    assert mg.load("facebook/musicgen-small", cfg, "cpu").is_melody is False
    loaded = mg.load("facebook/musicgen-melody", cfg, "cpu")
    assert loaded.is_melody and loaded.chroma_params["num_chroma"] == 12
    assert not list((tmp_path / "musicgen").glob(".*"))  # no temporary folder left


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("duration", [0.5, 1.03, 2.0])
def test_duration_is_exact(small: mg.Loaded, duration: float) -> None:
    audio, rate, used = mg.generate(small, prompt="calm piano", duration=duration, seed=1)
    assert rate == small.sample_rate == SR
    assert audio.dtype == np.float32 and audio.shape == (1, round(duration * SR))
    assert used["windows"] == 1 and used["duration"] == pytest.approx(duration)
    assert np.isfinite(audio).all() and 0.01 < float(audio.std()) < 1.0


def test_five_seconds_take_253_decoding_steps(small: mg.Loaded) -> None:
    steps: list[float] = []
    audio, _, used = mg.generate(
        small, prompt="rock", duration=5.0, seed=3, guidance_scale=1.0, progress=steps.append
    )
    assert audio.shape == (1, 5 * SR)
    assert used["decoding_steps"] == len(steps) == 253  # 250 frames + the 3-frame codebook delay


def test_same_seed_same_audio_other_seed_other_audio(small: mg.Loaded) -> None:
    params = {"prompt": "upbeat funk bass", "duration": 1.0}
    first, _, used = mg.generate(small, seed=42, **params)
    again, _, _ = mg.generate(small, seed=42, **params)
    other, _, _ = mg.generate(small, seed=43, **params)
    assert used["seed"] == 42
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)
    other_text, _, _ = mg.generate(small, seed=42, prompt="dark ambient", duration=1.0)
    assert not np.allclose(first, other_text, atol=1e-3)


def test_no_seed_draws_one_that_reproduces(small: mg.Loaded) -> None:
    state = torch.random.get_rng_state()
    audio, _, used = mg.generate(small, prompt="jazz", duration=0.6, seed=None)
    assert isinstance(used["seed"], int) and 0 <= used["seed"] < 2**31
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    again, _, _ = mg.generate(small, prompt="jazz", duration=0.6, seed=used["seed"])
    assert np.array_equal(audio, again)


def test_greedy_ignores_the_seed_and_top_p_samples(small: mg.Loaded) -> None:
    a, _, used = mg.generate(small, prompt="jazz", duration=0.4, seed=1, temperature=0.0)
    b, _, _ = mg.generate(small, prompt="jazz", duration=0.4, seed=2, temperature=0.0)
    assert np.array_equal(a, b)
    c, _, used = mg.generate(small, prompt="jazz", duration=0.4, seed=1, top_p=0.9)
    assert used["top_p"] == 0.9 and used["top_k"] == 0 and c.shape == (1, round(0.4 * SR))


def test_long_generation_in_windows_is_exact_and_seamless(
    small: mg.Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    joins: list[tuple[np.ndarray, np.ndarray, int, int, int]] = []
    real_join = mg._join

    def spy(out: np.ndarray, window: np.ndarray, start: int, fade: int, at: int) -> np.ndarray:
        joins.append((out, window, start, fade, at))
        return real_join(out, window, start, fade, at)

    monkeypatch.setattr(mg, "_join", spy)
    steps: list[float] = []
    audio, _, used = mg.generate(
        small, prompt="lofi jazz", duration=3.3, seed=5, window_seconds=1.0, progress=steps.append
    )
    assert audio.shape == (1, round(3.3 * SR))
    # 1 s, then 0.6 s per window: 1.0 + 0.6 * 3 + 0.5 -> five generate calls
    assert used["windows"] == 5 and used["window_seconds"] == 1.0
    assert used["extend_stride"] == pytest.approx(0.6)
    assert used["decoding_steps"] == 165 + 5 * 3 == len(steps)
    assert steps == sorted(steps) and steps[-1] == 1.0

    assert len(joins) == 5 and joins[0][0].shape[-1] == 0
    step = np.abs(np.diff(audio[0]))
    typical = np.percentile(step, 99)
    for previous, window, start, fade, at in joins[1:]:
        end = previous.shape[-1]
        assert end - start == round(0.4 * SR)  # each window re-decodes 0.4 s of context
        # The window's context decodes to what the output already holds there (the
        # same tokens, aligned to the sample); one frame off would not correlate.
        ours, theirs = previous[0, start:end], window[0, : end - start]
        assert np.corrcoef(ours, theirs)[0, 1] > 0.8
        assert np.corrcoef(ours[HOP:], theirs[:-HOP])[0, 1] < 0.7
        # The fade sits where both agree, so the join cannot click.
        assert start + fade < at < end and fade == round(mg.CROSSFADE_SECONDS * SR)
        gap = previous[0, at - fade : at] - window[0, at - fade - start : at - start]
        assert np.sqrt(np.mean(gap**2)) < 0.1 * ours.std()
        for edge in (at - fade, at, end):  # fade start and end, the window's new audio
            assert step[edge - 2 : edge + 2].max() <= 2 * typical, (start, edge)
    monkeypatch.setattr(mg, "_join", real_join)
    again, _, _ = mg.generate(small, prompt="lofi jazz", duration=3.3, seed=5, window_seconds=1.0)
    assert np.array_equal(audio, again)


def test_extend_stride_sets_the_window_count(small: mg.Loaded) -> None:
    audio, _, used = mg.generate(
        small, prompt="rock", duration=2.0, seed=1, window_seconds=1.0, extend_stride=0.5
    )
    assert used["windows"] == 3 and audio.shape == (1, 2 * SR)  # 1 s, then 0.5 s twice


def test_join_cross_fades_a_step_away() -> None:
    signal = tone(50, 0.2)[None]
    shifted = signal + 0.5  # the same signal with a jump of 0.5
    joined = mg._join(signal[:, :3200], shifted[:, 1600:], 1600, 1280, 3000)
    assert joined.shape == signal.shape
    assert np.array_equal(joined[:, :1720], signal[:, :1720])  # untouched before the fade
    assert np.abs(np.diff(joined[0])).max() < 0.01  # no 0.5 step anywhere
    assert np.allclose(joined[:, 3000:], shifted[:, 3000:])
    assert np.array_equal(mg._join(np.zeros((1, 0), np.float32), signal, 0, 100, 0), signal)
    # fades end mid-overlap, but never inside the caller's prompt, except right after it
    assert mg._fade_end(1000, 3000, 200, 0) == 2100
    assert mg._fade_end(1000, 3000, 200, 3000) == 3000
    assert mg._fade_end(1000, 3000, 200, 2500) == 2700


def test_progress_is_monotonic_and_cancel_stops_generation(small: mg.Loaded) -> None:
    seen: list[float] = []
    mg.generate(small, prompt="rock", duration=0.5, seed=1, progress=seen.append)
    assert len(seen) == 25 + 3 and seen == sorted(seen) and seen[-1] == 1.0
    assert all(0 < f <= 1 for f in seen)

    class Cancelled(Exception):
        pass

    calls = 0

    def cancel_after_five(fraction: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Cancelled

    with pytest.raises(Cancelled):
        mg.generate(
            small,
            prompt="rock",
            duration=3.0,
            seed=1,
            window_seconds=1.0,
            progress=cancel_after_five,
        )
    assert calls == 5  # nothing ran after the exception, in this window or another


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"duration": 0}, "duration"),
        ({"duration": float("nan")}, "duration"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": -1.0}, "temperature"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"window_seconds": 31.0}, "window_seconds"),
        ({"window_seconds": 0.01}, "window_seconds"),
        ({"window_seconds": 1.0, "extend_stride": 1.0}, "extend_stride"),
        ({"extend_stride": 0.0}, "extend_stride"),
        ({"seed": -1}, "seed"),
        ({"duration": "long"}, "duration"),
        ({"top_k": 2.5}, "top_k"),
        ({"melody": (np.zeros(SR, np.float32), SR)}, "melody"),  # not a melody model
        ({"continuation": (np.zeros(0, np.float32), SR)}, "continuation"),
        ({"continuation": (np.zeros(SR, np.float32), 0)}, "continuation"),
        ({"continuation": (np.zeros((SR, 2), np.float32), SR)}, "continuation"),
        ({"continuation": np.zeros(SR, np.float32)}, "continuation"),
    ],
)
def test_invalid_parameters(small: mg.Loaded, params: dict[str, Any], field: str) -> None:
    kwargs = {"prompt": "rock", "duration": 1.0, "seed": 1, **params}
    with pytest.raises(ServiceError) as caught:
        mg.generate(small, **kwargs)
    assert caught.value.code == "invalid_parameter" and field in caught.value.errors


# ----------------------------------------------------------------------------- melody


def reference_extractor() -> Any:
    """transformers' own MusicgenMelodyFeatureExtractor, its torchaudio STFT replaced by
    torch.stft with torchaudio's Spectrogram definition (normalized=True, power 2)."""
    import transformers.models.musicgen_melody.feature_extraction_musicgen_melody as module

    class Spectrogram(torch.nn.Module):
        def __init__(self, n_fft: int, win_length: int, hop_length: int, **kwargs: Any) -> None:
            super().__init__()
            self.n_fft, self.hop_length = n_fft, hop_length
            self.window = torch.hann_window(win_length)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            spec = torch.stft(
                wave.reshape(-1, wave.shape[-1]),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            spec = spec.reshape(wave.shape[:-1] + spec.shape[-2:])
            return (spec / self.window.pow(2).sum().sqrt()).abs().pow(2)

    stub = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=Spectrogram))
    had = hasattr(module, "torchaudio")
    previous = getattr(module, "torchaudio", None)
    module.torchaudio = stub
    try:
        return module.MusicgenMelodyFeatureExtractor()
    finally:
        if had:
            module.torchaudio = previous
        else:
            del module.torchaudio


def test_chroma_matches_the_transformers_extractor(melody_model: mg.Loaded) -> None:
    extractor = reference_extractor()
    rng = np.random.default_rng(0)
    for samples in (8000, 50000, 3 * SR + 17, 31 * SR):  # short (padded) to over 30 s (cut)
        t = np.arange(samples) / SR
        wave = 0.3 * np.sin(2 * np.pi * (220 + 60 * t) * t) + 0.05 * rng.standard_normal(samples)
        wave = wave.astype(np.float32)
        expected = extractor(wave, sampling_rate=SR, return_tensors="np")["input_features"][0]
        assert np.array_equal(mg.chroma(wave, SR, melody_model), expected), samples


def test_chroma_is_one_hot_on_the_right_pitch_class(melody_model: mg.Loaded) -> None:
    a4 = mg.chroma(tone(440.0, 2.0), SR, melody_model)
    assert a4.shape == (1 + 2 * SR // 4096, 12) and a4.dtype == np.float32
    assert np.array_equal(a4.sum(axis=1), np.ones(len(a4)))
    assert set(a4.argmax(axis=1)) == {9}  # C, C#, ..., A is the tenth class
    c4 = mg.chroma(tone(261.63, 2.0, rate=44100), 44100, melody_model)  # resampled to 32 kHz
    assert c4.shape == a4.shape and set(c4.argmax(axis=1)) == {0}
    both = np.stack([tone(440.0, 2.0), tone(440.0, 2.0, amp=0.1)])  # (channels, samples)
    assert np.array_equal(mg.chroma(both, SR, melody_model), a4)
    assert len(mg.chroma(tone(440.0, 40.0), SR, melody_model)) == 235  # 30 s at most


def test_melody_conditions_the_output(melody_model: mg.Loaded) -> None:
    params = {"prompt": "rock guitar", "duration": 1.0, "seed": 7}
    a, _, used = mg.generate(melody_model, melody=(tone(440.0, 3.0), SR), **params)
    again, _, _ = mg.generate(melody_model, melody=(tone(440.0, 3.0), SR), **params)
    c, _, _ = mg.generate(melody_model, melody=(tone(261.63, 3.0), SR), **params)
    none, _, _ = mg.generate(melody_model, **params)
    assert used["melody"] is True and a.shape == (1, SR)
    assert np.array_equal(a, again)
    assert not np.allclose(a, c, atol=1e-3)
    assert not np.allclose(a, none, atol=1e-3)


def test_melody_in_windows(melody_model: mg.Loaded) -> None:
    melody = np.concatenate([tone(440.0, 0.7), tone(261.63, 0.7)])  # loops over the windows
    audio, _, used = mg.generate(
        melody_model,
        prompt="folk",
        duration=2.5,
        seed=1,
        window_seconds=1.0,
        melody=(melody, SR),
    )
    assert audio.shape == (1, round(2.5 * SR)) and used["windows"] == 4


# ----------------------------------------------------------------------------- continuation


def test_continuation_starts_with_the_prompt(small: mg.Loaded) -> None:
    rate = 44100
    prompt = np.stack([tone(330.0, 1.23, rate), tone(440.0, 1.23, rate)])  # stereo, 44.1 kHz
    steps: list[float] = []
    audio, _, used = mg.generate(
        small,
        prompt="rock",
        duration=3.0,
        seed=2,
        window_seconds=1.0,
        continuation=(prompt, rate),
        progress=steps.append,
    )
    expected = soxr.resample(prompt.T, rate, SR).T.mean(axis=0)  # mono model
    fade = round(mg.CROSSFADE_SECONDS * SR)
    assert audio.shape == (1, 3 * SR)  # duration counts the prompt
    assert used["continuation_seconds"] == pytest.approx(len(expected) / SR)
    assert np.allclose(audio[0, : len(expected) - fade], expected[:-fade], atol=1e-5)
    assert not np.allclose(audio[0, len(expected) :], 0.0, atol=1e-3)
    # The prompt's 61 whole frames, then windows of 0.4 s context + 0.6 s new: 89 frames to add
    assert used["windows"] == 3 and steps[-1] == 1.0 and len(steps) == 89 + 3 * 3
    again, _, _ = mg.generate(
        small,
        prompt="rock",
        duration=3.0,
        seed=2,
        window_seconds=1.0,
        continuation=(prompt, rate),
    )
    assert np.array_equal(audio, again)


def test_continuation_needs_room(small: mg.Loaded) -> None:
    with pytest.raises(ServiceError) as caught:
        mg.generate(small, prompt="", duration=1.0, seed=1, continuation=(tone(440, 1.0), SR))
    assert caught.value.code == "invalid_parameter"


def test_stereo_model_generates_and_continues_in_stereo(stereo: mg.Loaded) -> None:
    assert stereo.audio_channels == 2 and stereo.num_codebooks == 8 and stereo.delay == 3
    audio, _, used = mg.generate(stereo, prompt="synth pop", duration=1.0, seed=1)
    assert audio.shape == (2, SR) and used["decoding_steps"] == 53
    assert not np.allclose(audio[0], audio[1], atol=1e-3)
    mono = tone(220.0, 0.5)
    audio, _, used = mg.generate(
        stereo, prompt="", duration=1.5, seed=1, window_seconds=1.0, continuation=(mono, SR)
    )
    fade = round(mg.CROSSFADE_SECONDS * SR)
    assert audio.shape == (2, round(1.5 * SR))
    assert np.allclose(audio[:, : len(mono) - fade], mono[None, :-fade], atol=1e-6)


def test_melody_model_continues_with_a_melody(melody_model: mg.Loaded) -> None:
    audio, _, used = mg.generate(
        melody_model,
        prompt="blues",
        duration=2.0,
        seed=1,
        window_seconds=1.0,
        melody=(tone(392.0, 2.0), SR),
        continuation=(tone(196.0, 0.8), SR),
    )
    assert audio.shape == (1, 2 * SR) and used["windows"] == 2  # 40 frames given, 2 x 30 new
