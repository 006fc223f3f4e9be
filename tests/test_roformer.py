"""BS-RoFormer and Mel-Band RoFormer through the API, on tiny random checkpoints in
the published format (tests/support/roformer_models.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.separation import downloaded_stems, separate_song

BS = "bs_roformer_viperx_1297"
MEL = "mel_band_roformer_kim"


@pytest.fixture(scope="module")
def roformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.roformer_models import build_roformer_models

    return build_roformer_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def client(eager_app: Callable[..., Flask], roformer_dir: Path) -> FlaskClient:
    return eager_app(MODELS_DIR=str(roformer_dir), ALLOW_MODEL_DOWNLOAD=False).test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def test_published_models_are_listed(client: FlaskClient) -> None:
    by_name = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    for name in (BS, MEL):
        entry = by_name[name]
        assert entry["engine"] == "roformer" and entry["kind"] == "separation"
        assert entry["stems"] == ["vocals", "instrumental"]
        assert entry["sample_rate"] == SR
        assert entry["available"] is True and entry["downloadable"] is False


@pytest.mark.parametrize("model", [BS, MEL])
def test_separates_into_vocals_and_instrumental(
    client: FlaskClient, headers: dict, model: str
) -> None:
    # 1.3 s: several chunks of the config's 0.5 s, the last one flush with the end
    mix = sine_and_clicks(seconds=1.3)
    job = separate_song(
        client, headers, wav_bytes(mix, subtype="FLOAT"), model=model, bit_depth="32f",
        clip_mode="none",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["model"] == model
    assert job["result"]["stems"] == ["vocals", "instrumental"]
    stems = downloaded_stems(client, headers, job)
    assert {f["sample_rate"] for f in job["result"]["files"]} == {SR}
    for data in stems.values():
        assert data.shape == mix.shape
    assert np.max(np.abs(stems["vocals"] + stems["instrumental"] - mix)) < 1e-4
    assert np.max(np.abs(stems["vocals"])) > 0


def test_two_stems_vocals_for_karaoke(client: FlaskClient, headers: dict) -> None:
    mix = sine_and_clicks(seconds=1.0, channels=1)
    job = separate_song(client, headers, wav_bytes(mix), model=MEL, two_stems="vocals", overlap=0.5)
    assert job["status"] == "succeeded", job
    assert [f["name"] for f in job["result"]["files"]] == ["vocals.wav", "no_vocals.wav"]
    for entry in job["result"]["files"]:
        assert entry["sample_rate"] == SR and entry["channels"] == 2
        assert abs(entry["duration"] - 1.0) < 0.01


def test_missing_checkpoint_fails_with_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask], roformer_dir: Path
) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(roformer_dir / "roformer" / MEL, models / "roformer" / MEL)
    (models / "roformer" / MEL / "model.ckpt").unlink()
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    listed = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    assert listed[MEL]["available"] is False
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), model=MEL)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    message = job["error"]["message"]
    assert MEL in message and f"flask models download {MEL}" in message
    assert "model.ckpt" in message


def test_a_checkpoint_that_does_not_fit_its_config_is_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask], roformer_dir: Path
) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(roformer_dir / "roformer" / BS, models / "roformer" / "mine")
    shutil.copy(
        roformer_dir / "roformer" / MEL / "model.ckpt", models / "roformer" / "mine" / "model.ckpt"
    )
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    listed = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    assert listed["mine"]["stems"] == ["vocals", "instrumental"]
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), model="mine")
    assert job["status"] == "failed" and job["error"]["code"] == "model_unavailable"
    assert "does not fit" in job["error"]["message"]


def test_chunks_cover_the_window_and_the_weights_fade_only_inside() -> None:
    from app.models.msst import chunk_starts, chunk_weights

    assert chunk_starts(100, 200, 50) == [0]
    assert chunk_starts(250, 100, 50) == [0, 50, 100, 150]
    assert chunk_starts(260, 100, 50) == [0, 50, 100, 150, 160]
    first, middle = chunk_weights(100, True, False), chunk_weights(100, False, False)
    assert first[0] == 1.0 and 0 < first[-1] < 1 and 0 < middle[0] < 1


def test_mel_bands_match_librosa_filter_support() -> None:
    """The bands of Kim's config (60 mel bands of a 2048 STFT at 44.1 kHz) cover
    every bin, as librosa.filters.mel(sr=44100, n_fft=2048, n_mels=60) > 0 does."""
    from app.models.roformer_net import mel_filter_support

    support = mel_filter_support(44100, 2048, 60)
    assert support.shape == (60, 1025)
    assert support.any(axis=0).all()
    sizes = support.sum(axis=1)
    # What librosa 0.11's filters.mel gives (checked once: equal supports for
    # several rates, FFT sizes and band counts); 1979 bins in 60 overlapping bands.
    assert list(sizes[:4]) == [7, 6, 6, 6] and list(sizes[-3:]) == [113, 122, 130]
    assert sizes.sum() == 1979


def test_state_dict_keys_are_the_published_checkpoints() -> None:
    """Key names and shapes of ZFTurbo's networks (checked against lucidrains'
    BS-RoFormer 0.3.10, the code ZFTurbo copied): the mask MLPs count depth
    differently in the two architectures, the Mel-Band transformers end in a norm,
    the BS-RoFormer in ``final_norm``."""
    from app.models.roformer_net import BSRoformer, MelBandRoformer

    small = {
        "dim": 8, "depth": 1, "stereo": True, "time_transformer_depth": 1,
        "freq_transformer_depth": 1, "dim_head": 4, "heads": 2, "stft_n_fft": 64,
        "stft_hop_length": 16, "stft_win_length": 64, "mask_estimator_depth": 2,
    }  # fmt: skip
    bs = BSRoformer(freqs_per_bands=(8, 8, 17), **small).state_dict()
    mel = MelBandRoformer(num_bands=4, **small).state_dict()
    for keys in (bs, mel):
        assert keys["layers.0.0.layers.0.0.rotary_embed.freqs"].shape == (2,)
        assert keys["layers.0.1.layers.0.0.to_qkv.weight"].shape == (24, 8)
        assert keys["layers.0.1.layers.0.1.net.4.weight"].shape == (8, 32)
        assert keys["band_split.to_features.0.1.weight"].shape[0] == 8
    assert bs["band_split.to_features.0.0.gamma"].shape == (2 * 8 * 2,)
    assert bs["mask_estimators.0.to_freqs.0.0.2.weight"].shape == (2 * 32, 32)
    assert "mask_estimators.0.to_freqs.0.0.4.weight" not in bs
    assert "final_norm.gamma" in bs and "layers.0.0.norm.gamma" not in bs
    assert mel["mask_estimators.0.to_freqs.0.0.4.weight"].shape[1] == 32
    assert "final_norm.gamma" not in mel and "layers.0.0.norm.gamma" in mel


@pytest.fixture
def published_as_files(monkeypatch: pytest.MonkeyPatch, roformer_dir: Path) -> None:
    """The published models' URLs pointed at the tiny models' files (file:// URLs:
    the same urllib download, no network)."""
    from dataclasses import replace

    from app.models import roformer_engine

    published = {
        name: replace(
            spec,
            config_url=(roformer_dir / "roformer" / name / "config.yaml").as_uri(),
            weights_url=(roformer_dir / "roformer" / name / "model.ckpt").as_uri(),
        )
        for name, spec in roformer_engine.PUBLISHED.items()
    }
    monkeypatch.setattr(roformer_engine.RoformerEngine, "PUBLISHED", published)


@pytest.mark.usefixtures("published_as_files")
def test_flask_models_download_stores_the_published_layout(
    tmp_path: Path, eager_app: Callable[..., Flask], roformer_dir: Path
) -> None:
    models = tmp_path / "models"
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    result = app.test_cli_runner().invoke(args=["models", "download", BS])
    assert result.exit_code == 0, result.output
    folder = models / "roformer" / BS
    assert f"{BS}: saved to {folder}" in result.output
    for file in ("config.yaml", "model.ckpt"):
        assert (folder / file).read_bytes() == (roformer_dir / "roformer" / BS / file).read_bytes()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    client = app.test_client()
    listed = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    assert listed[BS]["available"] is True and listed[MEL]["available"] is False


@pytest.mark.usefixtures("published_as_files")
def test_a_first_job_downloads_when_allowed(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    models = tmp_path / "models"
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=True)
    client = app.test_client()
    headers = register_and_login(client)
    assert {m["name"]: m for m in client.get("/api/v1/models").json["models"]}[MEL]["downloadable"]
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=0.5)), model=MEL)
    assert job["status"] == "succeeded", job
    assert (models / "roformer" / MEL / "model.ckpt").is_file()


def test_progress_steps_through_the_chunks(
    client: FlaskClient, headers: dict, progress_log: list
) -> None:
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=2.0)), model=BS)
    assert job["status"] == "succeeded", job
    values = [p for p, _ in progress_log]
    assert values == sorted(values) and values[-1] == 1.0
    separating = [p for p, s in progress_log if 0.05 < p < 0.9]
    assert len(separating) >= 3, progress_log


def test_the_loaded_model_counts_its_weights_in_the_cache_budget(roformer_dir: Path) -> None:
    from app.models.cache import model_bytes
    from app.models.roformer_engine import RoformerEngine

    config = {"MODELS_DIR": str(roformer_dir), "ALLOW_MODEL_DOWNLOAD": False}
    loaded = RoformerEngine().load(BS, config, "cpu")
    assert model_bytes(loaded) == model_bytes(loaded.net) > 0
    assert (loaded.sample_rate, loaded.channels, loaded.num_overlap) == (SR, 2, 2)
    assert loaded.sources == ["vocals", "instrumental"] and loaded.instrumental
