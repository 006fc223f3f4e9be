"""Ensembles of separation models through the API: presets and lists of models,
on tiny random RoFormer checkpoints and the tiny Demucs repo."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from app.models.ensemble_engine import ALGORITHMS
from tests.support.apps import register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.separation import downloaded_stems, post_song, separate_song

BS = "bs_roformer_viperx_1297"
MEL = "mel_band_roformer_kim"
PRESET = "vocals_ensemble"
EXACT = {"bit_depth": "32f", "clip_mode": "none"}  # stems as computed, for comparisons


@pytest.fixture
def app(eager_app: Callable[..., Flask], vocal_models_dir: Path) -> Flask:
    return eager_app(MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def _stems(client: FlaskClient, headers: dict, job: dict) -> dict[str, np.ndarray]:
    assert job["status"] == "succeeded", job
    found = downloaded_stems(client, headers, job)
    assert {entry["sample_rate"] for entry in job["result"]["files"]} == {SR}
    return found


def _exact(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (*pairs, *EXACT.items())


@pytest.fixture(scope="module")
def song() -> bytes:
    return wav_bytes(sine_and_clicks(seconds=1.3), subtype="FLOAT")


def test_the_preset_is_listed_with_its_members(client: FlaskClient) -> None:
    by_name = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    entry = by_name[PRESET]
    assert entry["engine"] == "ensemble" and entry["kind"] == "separation"
    assert entry["members"] == [MEL, BS] and entry["algorithm"] == "avg_wave"
    assert entry["stems"] == ["vocals", "instrumental"] and entry["sample_rate"] == SR
    assert entry["available"] is True and entry["license"] == "not stated"
    assert (
        entry["speed"]["real_time_factor"] > 1
        and "bench/separation.py" in entry["speed"]["measured"]
    )
    algorithm = next(o for o in entry["options"] if o["name"] == "ensemble_algorithm")
    assert "uvr_max_spec" in algorithm["choices"] and "avg_wave" in algorithm["choices"]
    # a member's option, with the member's own default when a request leaves it out
    overlap = next(o for o in entry["options"] if o["name"] == "overlap")
    assert overlap["default"] is None


def test_a_list_of_models_is_the_average_of_each_model(
    client: FlaskClient, headers: dict, song: bytes
) -> None:
    bs = _stems(client, headers, separate_song(client, headers, song, *_exact(("model", BS))))
    mel = _stems(client, headers, separate_song(client, headers, song, *_exact(("model", MEL))))
    job = separate_song(client, headers, song, *_exact(("model", BS), ("model", MEL)))
    assert job["model"] == f"{BS}+{MEL}"
    assert job["result"]["stems"] == ["vocals", "instrumental"]
    both = _stems(client, headers, job)
    for stem in ("vocals", "instrumental"):
        assert both[stem].shape == (2, int(1.3 * SR))
        np.testing.assert_allclose(both[stem], (bs[stem] + mel[stem]) / 2, atol=1e-5)
    assert np.abs(both["vocals"]).max() > 1e-3  # not silence

    # the same ensemble named by the preset, and as one comma-separated field
    preset = _stems(
        client, headers, separate_song(client, headers, song, *_exact(("model", PRESET)))
    )
    commas = _stems(
        client, headers, separate_song(client, headers, song, *_exact(("model", f"{MEL}, {BS}")))
    )
    for stem in ("vocals", "instrumental"):
        np.testing.assert_allclose(preset[stem], both[stem], atol=1e-5)
        np.testing.assert_allclose(commas[stem], both[stem], atol=1e-5)


def test_windows_of_a_long_song_run_every_model(
    eager_app: Callable[..., Flask], vocal_models_dir: Path
) -> None:
    """Many windows with cross-fades: the ensemble of the windowed models is
    the windowed ensemble (both are linear in the members' outputs)."""
    app = eager_app(
        MODELS_DIR=str(vocal_models_dir),
        ALLOW_MODEL_DOWNLOAD=False,
        SEPARATION_WINDOW_SECONDS=1.0,
        SEPARATION_OVERLAP_SECONDS=0.25,
    )
    client = app.test_client()
    headers = register_and_login(client)
    data = wav_bytes(sine_and_clicks(seconds=3.2), subtype="FLOAT")
    bs = _stems(client, headers, separate_song(client, headers, data, *_exact(("model", BS))))
    mel = _stems(client, headers, separate_song(client, headers, data, *_exact(("model", MEL))))
    both = _stems(client, headers, separate_song(client, headers, data, *_exact(("model", PRESET))))
    assert both["vocals"].shape == (2, int(3.2 * SR))
    np.testing.assert_allclose(both["vocals"], (bs["vocals"] + mel["vocals"]) / 2, atol=1e-5)


def test_demucs_and_a_vocal_model_share_vocals_and_instrumental(
    client: FlaskClient, headers: dict, song: bytes
) -> None:
    # Demucs shifts the input by a random offset: the same draw in both runs
    random.seed(0)
    demucs = _stems(
        client, headers, separate_song(client, headers, song, *_exact(("model", "htdemucs")))
    )
    bs = _stems(client, headers, separate_song(client, headers, song, *_exact(("model", BS))))
    random.seed(0)
    job = separate_song(client, headers, song, *_exact(("model", f"htdemucs+{BS}")))
    assert job["result"]["stems"] == ["vocals", "instrumental"]
    both = _stems(client, headers, job)
    mix, _ = sf.read(io.BytesIO(song), always_2d=True, dtype="float32")
    demucs_instrumental = mix.T - demucs["vocals"]
    np.testing.assert_allclose(both["vocals"], (demucs["vocals"] + bs["vocals"]) / 2, atol=1e-5)
    np.testing.assert_allclose(
        both["instrumental"], (demucs_instrumental + bs["instrumental"]) / 2, atol=1e-5
    )


def test_karaoke_mode_and_a_spectral_algorithm(
    client: FlaskClient, headers: dict, song: bytes
) -> None:
    job = separate_song(
        client,
        headers,
        song,
        ("model", PRESET),
        ("two_stems", "vocals"),
        ("ensemble_algorithm", "uvr_max_spec"),
        ("output_format", "flac"),
    )
    assert job["status"] == "succeeded", job
    assert job["params"]["ensemble_algorithm"] == "uvr_max_spec"
    files = {f["stem"]: f for f in job["result"]["files"]}
    assert set(files) == {"vocals", "no_vocals"}
    assert all(f["duration"] == pytest.approx(1.3, abs=0.01) for f in files.values())
    assert all(f["content_type"] == "audio/flac" for f in files.values())


def test_member_options_reach_the_members_that_take_them(
    client: FlaskClient, headers: dict, song: bytes
) -> None:
    job = separate_song(client, headers, song, ("model", f"htdemucs+{BS}"), ("shifts", "2"))
    assert job["status"] == "succeeded", job
    refused = post_song(client, headers, song, ("model", f"{BS}+{MEL}"), ("shifts", "2"))
    assert refused.status_code == 422
    assert "shifts" in str(refused.json["errors"]), refused.json


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([BS, "nope"], "Unknown model 'nope'"),
        ([BS, BS], "once"),
        ([BS, MEL, "htdemucs", "mdx", "hpss"], "2 to 4 models"),
        ([BS, PRESET], "is an ensemble itself"),
        (["hpss", BS], "no stem in common"),
    ],
)
def test_lists_that_are_no_ensemble_are_refused(
    client: FlaskClient, headers: dict, song: bytes, models: list[str], message: str
) -> None:
    before = client.get("/api/v1/jobs", headers=headers).json["total"]
    response = post_song(client, headers, song, *[("model", m) for m in models])
    assert response.status_code == 422, response.json
    assert message in str(response.json["errors"]), response.json
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == before


def test_a_member_without_weights_fails_the_job_naming_it(
    eager_app: Callable[..., Flask], tmp_path: Path, song: bytes
) -> None:
    from tests.support.roformer_models import build_roformer_models

    models = build_roformer_models(tmp_path / "models")
    (models / "roformer" / MEL / "model.ckpt").unlink()
    client = eager_app(MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False).test_client()
    headers = register_and_login(client)
    entry = next(m for m in client.get("/api/v1/models").json["models"] if m["name"] == PRESET)
    assert entry["available"] is False
    job = separate_song(client, headers, song, ("model", PRESET))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    assert MEL in job["error"]["message"] and "flask models download" in job["error"]["message"]


def test_a_member_that_breaks_fails_the_job_naming_it(
    client: FlaskClient, headers: dict, song: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.models import msst

    def broken(self, window, progress):
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(msst.WindowSeparator, "__call__", broken)
    job = separate_song(client, headers, song, ("model", f"htdemucs+{BS}"))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_failed"
    assert BS in job["error"]["message"] and "Traceback" not in job["error"]["message"]


def test_progress_covers_every_model(
    client: FlaskClient, headers: dict, progress_log: list
) -> None:
    data = wav_bytes(sine_and_clicks(seconds=2.0))
    job = separate_song(client, headers, data, ("model", PRESET))
    assert job["status"] == "succeeded", job
    values = [p for p, _ in progress_log]
    assert values == sorted(values) and values[-1] == 1.0
    separating = [p for p, _ in progress_log if 0.05 < p < 0.9]
    # 2 s in 0.5 s chunks at num_overlap 2: several chunks per model
    assert len(separating) >= 6, progress_log
    assert any(0.05 < p < 0.45 for p in separating) and any(0.5 < p < 0.9 for p in separating)


# ------------------------------------------------------------------ the parts


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_gives_back_what_all_members_agree_on(algorithm: str) -> None:
    from app.models.ensemble_engine import combine

    stem = sine_and_clicks(seconds=0.7).astype(np.float32)
    out = combine(np.stack([stem, stem, stem]), algorithm)
    assert out.shape == stem.shape
    np.testing.assert_allclose(out, stem, atol=1e-4)


def test_spectral_max_keeps_the_louder_member_and_min_the_quieter() -> None:
    from app.models.ensemble_engine import combine

    t = np.arange(SR) / SR
    low = np.tile(0.5 * np.sin(2 * np.pi * 220 * t), (2, 1)).astype(np.float32)
    high = np.tile(0.5 * np.sin(2 * np.pi * 3000 * t), (2, 1)).astype(np.float32)
    # member 1 hears only the low tone, member 2 only the high one
    fuller = combine(np.stack([low, high]), "uvr_max_spec")
    cleaner = combine(np.stack([low, high]), "uvr_min_spec")
    inner = slice(4096, SR - 4096)
    np.testing.assert_allclose(fuller[:, inner], (low + high)[:, inner], atol=0.02)
    assert np.abs(cleaner[:, inner]).max() < 0.02
    np.testing.assert_allclose(combine(np.stack([low, high]), "avg_wave"), (low + high) / 2)


def test_members_of_other_rates_and_channels_are_adapted() -> None:
    """A mono member at 22.05 kHz in a stereo 44.1 kHz ensemble: its input is
    downmixed and resampled, its stems brought back, and its progress counted."""
    from app.models.engines import Separator
    from app.models.ensemble_engine import EnsembleSeparator, _Member

    def passthrough(window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        progress(1.0)
        return np.stack([window, np.zeros_like(window)])

    members = [
        _Member("a", Separator(passthrough, SR, 2, ["vocals", "other"], "cpu"), SR, 2),
        _Member("b", Separator(passthrough, 22050, 1, ["vocals", "other"], "cpu"), 22050, 1),
    ]
    seen: list[float] = []
    separate = EnsembleSeparator(members, ["vocals", "instrumental"], "avg_wave", SR, 2)
    t = np.arange(SR) / SR
    window = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)])
    out = separate(window.astype(np.float32), seen.append)
    assert out.shape == (2, 2, SR) and seen == [0.5, 1.0]
    # vocals: the average of the stereo mix and its mono downmix on both channels
    mono = window.mean(axis=0)
    inner = slice(2000, SR - 2000)
    np.testing.assert_allclose(out[0][:, inner], ((window + mono) / 2)[:, inner], atol=0.01)
    np.testing.assert_allclose(out[0] + out[1], np.broadcast_to(window, out[0].shape), atol=1e-5)


def test_a_cancel_from_progress_is_not_reported_as_a_broken_model() -> None:
    from app.models.engines import Separator
    from app.models.ensemble_engine import EnsembleSeparator, _Member

    class Stop(Exception):
        pass

    def model(window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
        progress(0.5)
        return window[None]

    def cancel(fraction: float) -> None:
        raise Stop

    members = [
        _Member(name, Separator(model, SR, 2, ["vocals"], "cpu"), SR, 2) for name in ("a", "b")
    ]
    separate = EnsembleSeparator(members, ["vocals"], "avg_wave", SR, 2)
    with pytest.raises(Stop):
        separate(np.zeros((2, 1000), dtype=np.float32), cancel)


def test_downloading_a_preset_downloads_its_members(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.models import roformer_engine

    fetched: list[str] = []
    monkeypatch.setattr(
        roformer_engine.RoformerEngine,
        "download",
        lambda self, name, config: fetched.append(name),
    )
    result = app.test_cli_runner().invoke(args=["models", "download", PRESET])
    assert result.exit_code == 0, result.output
    assert fetched == [MEL, BS]


def test_flask_separate_takes_a_list_of_models(app: Flask, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, sine_and_clicks(seconds=1.0).T, SR)
    result = app.test_cli_runner().invoke(
        args=["separate", str(song), "--model", f"{BS},{MEL}", "--ensemble-algorithm", "max_fft"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["instrumental.wav", "vocals.wav"]
    assert sf.info(folder / "vocals.wav").frames == SR
