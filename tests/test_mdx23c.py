"""MDX23C through the API, on tiny random checkpoints in the published format
(tests/support/mdx23c_models.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.models import catalogue_facts
from tests.support.apps import register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.separation import downloaded_stems, separate_song

ZF = "mdx23c_vocals_zfturbo"
UVR = "mdx23c_instvoc_hq"


@pytest.fixture(scope="module")
def mdx23c_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.mdx23c_models import build_mdx23c_models

    return build_mdx23c_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def client(eager_app: Callable[..., Flask], mdx23c_dir: Path) -> FlaskClient:
    return eager_app(MODELS_DIR=str(mdx23c_dir), ALLOW_MODEL_DOWNLOAD=False).test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def _app_with(
    tmp_path: Path, eager_app: Callable[..., Flask], models: Path
) -> tuple[FlaskClient, dict[str, str]]:
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    return client, register_and_login(client)


def test_published_models_are_listed_with_their_facts(client: FlaskClient) -> None:
    by_name = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    zf, uvr = by_name[ZF], by_name[UVR]
    for entry in (zf, uvr):
        assert entry["engine"] == "mdx23c" and entry["kind"] == "separation"
        assert entry["sample_rate"] == SR
        assert entry["available"] is True and entry["downloadable"] is False
        assert entry["license"] == "not stated"
        assert [o["name"] for o in entry["options"]] == ["overlap"]
    # both measured here (bench/separation.py, 15 s inputs); UVR's config
    # overlaps its chunks 8 times, ZFTurbo's 4, on the same network
    assert zf["speed"]["real_time_factor"] > 1 and "15 s" in zf["speed"]["measured"]
    assert "15 s" in uvr["speed"]["measured"] and "num_overlap 8" in uvr["speed"]["measured"]
    assert uvr["speed"]["real_time_factor"] > zf["speed"]["real_time_factor"]
    # the configs' own output names, lower-cased: ZFTurbo's 'other', UVR's 'Instrumental'
    assert zf["stems"] == ["vocals", "other"]
    assert uvr["stems"] == ["vocals", "instrumental"]
    assert zf["quality"] == [
        {
            "stem": "vocals",
            "sdr_db": 10.17,
            "benchmark": "Multisong (MVSep)",
            "source": catalogue_facts.ZFTURBO,
        }
    ]
    assert uvr["quality"] is None  # no source states a figure for these weights


@pytest.mark.parametrize(("model", "rest"), [(ZF, "other"), (UVR, "instrumental")])
def test_separates_into_the_models_two_outputs(
    client: FlaskClient, headers: dict, model: str, rest: str
) -> None:
    # 1.3 s: several chunks of the config's 0.37 s, the last one flush with the end
    mix = sine_and_clicks(seconds=1.3)
    job = separate_song(
        client, headers, wav_bytes(mix, subtype="FLOAT"), model=model, bit_depth="32f",
        clip_mode="none",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["model"] == model
    assert job["result"]["stems"] == ["vocals", rest]
    assert {f["sample_rate"] for f in job["result"]["files"]} == {SR}
    stems = downloaded_stems(client, headers, job)
    for data in stems.values():
        assert data.shape == mix.shape
        assert np.all(np.isfinite(data)) and np.max(np.abs(data)) > 0
    # both stems are the network's own estimates, not one of them mix - the other
    assert np.max(np.abs(stems["vocals"] + stems[rest] - mix)) > 1e-2


def test_two_stems_vocals_for_karaoke(client: FlaskClient, headers: dict) -> None:
    mix = sine_and_clicks(seconds=1.0, channels=1)
    job = separate_song(client, headers, wav_bytes(mix), model=UVR, two_stems="vocals", overlap=0.5)
    assert job["status"] == "succeeded", job
    assert [f["name"] for f in job["result"]["files"]] == ["vocals.wav", "no_vocals.wav"]
    for entry in job["result"]["files"]:
        assert entry["sample_rate"] == SR and entry["channels"] == 2
        assert abs(entry["duration"] - 1.0) < 0.01


def test_a_local_single_target_model_gives_the_target_and_the_rest_of_the_mix(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    from tests.support.mdx23c_models import ZFTURBO_CONFIG, config_text, write_model

    models = tmp_path / "models"
    config = config_text(ZFTURBO_CONFIG).replace(
        "target_instrument: null", "target_instrument: vocals"
    )
    write_model(models, "my_vocals", config, seed=2)
    client, headers = _app_with(tmp_path, eager_app, models)
    listed = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    entry = listed["my_vocals"]
    assert entry["engine"] == "mdx23c" and entry["stems"] == ["vocals", "instrumental"]
    assert entry["description"] == "Local MDX23C model from mdx23c/my_vocals/."
    assert entry["license"] == "not stated" and entry["quality"] is None
    mix = sine_and_clicks(seconds=0.8)
    job = separate_song(
        client, headers, wav_bytes(mix, subtype="FLOAT"), model="my_vocals", bit_depth="32f",
        clip_mode="none",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    stems = downloaded_stems(client, headers, job)
    assert np.max(np.abs(stems["vocals"] + stems["instrumental"] - mix)) < 1e-4


def test_missing_checkpoint_fails_with_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask], mdx23c_dir: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(mdx23c_dir / "mdx23c" / ZF, models / "mdx23c" / ZF)
    (models / "mdx23c" / ZF / "model.ckpt").unlink()
    client, headers = _app_with(tmp_path, eager_app, models)
    listed = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    assert listed[ZF]["available"] is False
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), model=ZF)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    message = job["error"]["message"]
    assert message.startswith(f"MDX23C model '{ZF}' is not available")
    assert str(models / "mdx23c" / ZF) in message
    assert f"flask models download {ZF}" in message and "model.ckpt" in message


def test_a_checkpoint_that_does_not_fit_its_config_is_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    from tests.support.mdx23c_models import UVR_CONFIG, config_text, write_model

    models = tmp_path / "models"
    write_model(models, "mine", config_text(UVR_CONFIG, growth=4), seed=0)
    other = write_model(tmp_path / "other", "wider", config_text(UVR_CONFIG, growth=6), seed=0)
    shutil.copy(other / "model.ckpt", models / "mdx23c" / "mine" / "model.ckpt")
    client, headers = _app_with(tmp_path, eager_app, models)
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=0.5)), model="mine")
    assert job["status"] == "failed" and job["error"]["code"] == "model_unavailable"
    message = job["error"]["message"]
    assert "could not be loaded" in message and "does not fit the config" in message
    assert "encoder_blocks.0.downscale.conv.2.weight" in message  # the first mismatch


def test_a_config_the_network_cannot_run_says_which_setting(tmp_path: Path) -> None:
    from app.errors import ServiceError
    from app.models.mdx23c_engine import Mdx23cEngine
    from tests.support.mdx23c_models import UVR_CONFIG, config_text, write_model

    folder = write_model(tmp_path, "odd", config_text(UVR_CONFIG), seed=0)
    (folder / "config.yaml").write_text(config_text(UVR_CONFIG, chunk=16000))
    with pytest.raises(ServiceError) as caught:
        Mdx23cEngine().load("odd", {"MODELS_DIR": str(tmp_path)}, "cpu")
    assert caught.value.code == "model_unavailable"
    assert "audio.chunk_size 16000 gives 63 STFT frames, not a multiple of 4" in str(caught.value)


def test_state_dict_keys_are_the_published_checkpoints() -> None:
    """Key names and shapes of ZFTurbo's TFC_TDF_net. The full-size network of
    UVR's model_2_stem_full_band_8k.yaml is checked against what is known of the
    published MDX23C-8KFFT-InstVoc_HQ.ckpt (448,101,203 bytes): 319 tensors,
    ``first_conv.weight`` [128, 16, 1, 1], ``bottleneck_block.blocks.0.tdf.2.weight``
    [8, 32], ``final_conv.2.weight`` [32, 128, 1, 1], no norm running statistics."""
    import torch
    import yaml

    from app.models.mdx23c_net import build
    from tests.support.mdx23c_models import UVR_CONFIG, config_text

    audio = {"chunk_size": 261120, "dim_f": 4096, "hop_length": 1024, "n_fft": 8192}
    model = {
        "act": "gelu", "bottleneck_factor": 4, "growth": 128, "norm": "InstanceNorm",
        "num_blocks_per_scale": 2, "num_channels": 128, "num_scales": 5, "num_subbands": 4,
        "scale": [2, 2],
    }  # fmt: skip
    with torch.device("meta"):
        full = build({"audio": {**audio, "num_channels": 2}, "model": model}, 2).state_dict()
    assert len(full) == 319
    assert full["first_conv.weight"].shape == (128, 16, 1, 1)
    assert full["bottleneck_block.blocks.0.tdf.2.weight"].shape == (8, 32)
    assert full["final_conv.2.weight"].shape == (32, 128, 1, 1)
    assert not [k for k in full if "running" in k]
    size = sum(t.numel() * 4 for t in full.values())
    assert 447_000_000 < size < 448_101_203  # float32 tensors plus the file's pickling

    keys = build(yaml.safe_load(config_text(UVR_CONFIG)), 2).state_dict()
    # 2 channels x re/im x 2 sub-bands in, 8 channels, growing by 4 per scale
    assert keys["first_conv.weight"].shape == (8, 8, 1, 1)
    assert keys["encoder_blocks.0.tfc_tdf.blocks.0.tfc1.0.weight"].shape == (8,)  # InstanceNorm
    assert keys["encoder_blocks.0.tfc_tdf.blocks.0.tfc1.2.weight"].shape == (8, 8, 3, 3)
    assert keys["encoder_blocks.0.tfc_tdf.blocks.1.tdf.2.weight"].shape == (32, 128)
    assert keys["encoder_blocks.0.tfc_tdf.blocks.1.tdf.5.weight"].shape == (128, 32)
    assert keys["encoder_blocks.1.downscale.conv.2.weight"].shape == (16, 12, 2, 2)
    assert keys["bottleneck_block.blocks.1.shortcut.weight"].shape == (16, 16, 1, 1)
    assert keys["decoder_blocks.0.upscale.conv.2.weight"].shape == (16, 12, 2, 2)
    assert keys["decoder_blocks.1.tfc_tdf.blocks.0.tfc1.2.weight"].shape == (8, 16, 3, 3)
    assert keys["final_conv.0.weight"].shape == (8, 16, 1, 1)
    assert keys["final_conv.2.weight"].shape == (2 * 8, 8, 1, 1)
    assert "window" not in keys


def test_stem_names_follow_the_config() -> None:
    from app.models.msst import stems_of

    def settings(instruments: list[str], target: str | None = None) -> dict:
        return {"model": {}, "training": {"instruments": instruments, "target_instrument": target}}

    assert stems_of(settings(["Vocals", "Instrumental"]), 2) == (["vocals", "instrumental"], False)
    assert stems_of(settings(["vocals", "other"], "vocals"), 1) == (
        ["vocals", "instrumental"],
        True,
    )
    # an instrumental model's residual is the vocals, not a second 'instrumental'
    assert stems_of(settings(["Vocals", "Instrumental"], "Instrumental"), 1) == (
        ["instrumental", "vocals"],
        True,
    )
    with pytest.raises(ValueError, match="2 outputs"):
        stems_of(settings(["vocals", "other"], "vocals"), 2)
    with pytest.raises(ValueError, match="no outputs"):
        stems_of(settings([]), 0)


@pytest.fixture
def published_as_files(monkeypatch: pytest.MonkeyPatch, mdx23c_dir: Path) -> None:
    """The published models' URLs pointed at the tiny models' files (file:// URLs:
    the same urllib download, no network)."""
    from dataclasses import replace

    from app.models import mdx23c_engine

    published = {
        name: replace(
            spec,
            config_url=(mdx23c_dir / "mdx23c" / name / "config.yaml").as_uri(),
            weights_url=(mdx23c_dir / "mdx23c" / name / "model.ckpt").as_uri(),
        )
        for name, spec in mdx23c_engine.PUBLISHED.items()
    }
    monkeypatch.setattr(mdx23c_engine.Mdx23cEngine, "PUBLISHED", published)


@pytest.mark.usefixtures("published_as_files")
def test_flask_models_download_stores_the_published_layout(
    tmp_path: Path, eager_app: Callable[..., Flask], mdx23c_dir: Path
) -> None:
    models = tmp_path / "models"
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    result = app.test_cli_runner().invoke(args=["models", "download", UVR])
    assert result.exit_code == 0, result.output
    folder = models / "mdx23c" / UVR
    assert f"{UVR}: saved to {folder}" in result.output
    for file in ("config.yaml", "model.ckpt"):
        assert (folder / file).read_bytes() == (mdx23c_dir / "mdx23c" / UVR / file).read_bytes()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    listed = {m["name"]: m for m in app.test_client().get("/api/v1/models").json["models"]}
    assert listed[UVR]["available"] is True and listed[ZF]["available"] is False


def test_the_published_urls_are_the_publishers() -> None:
    from app.models.mdx23c_engine import PUBLISHED

    zf, uvr = PUBLISHED[ZF], PUBLISHED[UVR]
    release = "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/v1.0.0"
    assert zf.weights_url == f"{release}/model_vocals_mdx23c_sdr_10.17.ckpt"
    assert zf.config_url == f"{release}/config_vocals_mdx23c.yaml"
    assert uvr.weights_url == (
        "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
        "MDX23C-8KFFT-InstVoc_HQ.ckpt"
    )
    assert uvr.config_url == (
        "https://raw.githubusercontent.com/TRvlvr/application_data/main/mdx_model_data/"
        "mdx_c_configs/model_2_stem_full_band_8k.yaml"
    )


def test_flask_models_download_of_an_unknown_name_fails(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    app = eager_app(tmp_path / "d", MODELS_DIR=str(tmp_path / "models"))
    result = app.test_cli_runner().invoke(args=["models", "download", "mdx23c_nonesuch"])
    assert result.exit_code == 1
    assert "mdx23c_nonesuch: failed:" in result.output
    assert "not a model any engine here can download" in result.output
    assert not (tmp_path / "models" / "mdx23c").exists()


@pytest.mark.usefixtures("published_as_files")
def test_a_first_job_downloads_when_allowed(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    models = tmp_path / "models"
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=True)
    client = app.test_client()
    headers = register_and_login(client)
    assert {m["name"]: m for m in client.get("/api/v1/models").json["models"]}[ZF]["downloadable"]
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=0.5)), model=ZF)
    assert job["status"] == "succeeded", job
    assert (models / "mdx23c" / ZF / "model.ckpt").is_file()
