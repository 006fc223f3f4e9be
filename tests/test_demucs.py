"""Demucs separation through the API, on tiny random models in the real repo format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.separation import downloaded_stems, post_song, separate_song


@pytest.fixture
def client(demucs_app: Flask) -> FlaskClient:
    return demucs_app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def test_local_repo_models_are_listed_and_available(client: FlaskClient) -> None:
    body = client.get("/api/v1/models").json
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["htdemucs"]["available"] is True
    assert by_name["htdemucs"]["default"] is True
    assert by_name["htdemucs_6s"]["stems"] == [
        "drums",
        "bass",
        "other",
        "vocals",
        "guitar",
        "piano",
    ]
    assert by_name["htdemucs_ft"]["available"] is False
    assert by_name["htdemucs_ft"]["downloadable"] is False
    # Names demucs does not know are listed too, and so are single signatures.
    assert by_name["mybag"]["available"] is True and by_name["mybag"]["engine"] == "demucs"
    assert "a1b2c3d4" in by_name


def test_default_model_gives_four_stems_at_the_input_length(
    client: FlaskClient, headers: dict
) -> None:
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=2.0)))
    assert job["status"] == "succeeded", job
    assert job["model"] == "htdemucs"
    assert job["params"]["shifts"] == 1 and job["params"]["overlap"] == 0.25
    assert job["result"]["stems"] == ["drums", "bass", "other", "vocals"]
    stems = downloaded_stems(client, headers, job)
    for data in stems.values():
        assert data.shape == (2, 2 * SR)
    assert {f["sample_rate"] for f in job["result"]["files"]} == {SR}
    assert job["metrics"]["device"] == "cpu"


def test_other_rates_and_channel_counts_come_out_at_the_model_rate(
    client: FlaskClient, headers: dict
) -> None:
    mono_48k = wav_bytes(sine_and_clicks(seconds=1.5, sr=48000, channels=1), sr=48000)
    job = separate_song(client, headers, mono_48k, model="mdx", output_format="flac")
    assert job["status"] == "succeeded", job
    for entry in job["result"]["files"]:
        assert entry["sample_rate"] == SR and entry["channels"] == 2
        assert abs(entry["duration"] - 1.5) < 0.01


def test_two_stems_sum_back_to_the_mix(client: FlaskClient, headers: dict) -> None:
    mix = sine_and_clicks(seconds=2.0)
    job = separate_song(
        client, headers, wav_bytes(mix, subtype="FLOAT"), two_stems="vocals", bit_depth="32f",
        clip_mode="none",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    assert [f["name"] for f in job["result"]["files"]] == ["vocals.wav", "no_vocals.wav"]
    stems = downloaded_stems(client, headers, job)
    assert np.max(np.abs(stems["vocals"] + stems["no_vocals"] - mix)) < 1e-4


def test_stem_subset_six_sources_and_bags(client: FlaskClient, headers: dict) -> None:
    song = wav_bytes(sine_and_clicks(seconds=1.0))
    six = separate_song(client, headers, song, model="htdemucs_6s", stems="guitar,piano")
    assert six["status"] == "succeeded", six
    assert [f["stem"] for f in six["result"]["files"]] == ["guitar", "piano"]
    bag = separate_song(client, headers, song, model="mybag", output_format="mp3", mp3_bitrate=192)
    assert bag["status"] == "succeeded", bag
    assert [f["name"] for f in bag["result"]["files"]] == [
        "drums.mp3", "bass.mp3", "other.mp3", "vocals.mp3",
    ]  # fmt: skip


def test_options_are_validated(client: FlaskClient, headers: dict) -> None:
    song = wav_bytes(sine_and_clicks(seconds=1.0))
    cases = {
        "shifts": {"shifts": 11},
        "overlap": {"overlap": 1.0},
        "segment": {"segment": 9, "model": "htdemucs"},
        "two_stems": {"two_stems": "guitar"},
        "stems": {"stems": "vocals,kazoo"},
        "clip_mode": {"clip_mode": "loud"},
        "model": {"model": "../../etc/passwd"},
    }
    for field, form in cases.items():
        response = post_song(client, headers, song, **form)
        assert response.status_code == 422, (field, response.json)
        assert field in response.json["errors"], (field, response.json)
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_missing_weights_fail_the_job_with_model_unavailable(
    client: FlaskClient, headers: dict
) -> None:
    job = separate_song(
        client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), model="htdemucs_ft"
    )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    assert "htdemucs_ft" in job["error"]["message"]
    assert "flask models download htdemucs_ft" in job["error"]["message"]


def test_missing_weights_with_downloads_allowed_but_no_network(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    app = eager_app(tmp_path / "d", MODELS_DIR=str(tmp_path / "empty"), ALLOW_MODEL_DOWNLOAD=True)
    client = app.test_client()
    headers = register_and_login(client)
    job = separate_song(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    assert "htdemucs" in job["error"]["message"]


def test_progress_is_monotonic_through_the_stages(
    client: FlaskClient, headers: dict, progress_log: list
) -> None:
    seen = progress_log
    song = wav_bytes(sine_and_clicks(seconds=6.0))
    job = separate_song(client, headers, song, model="mdx", segment=2, overlap=0.25)
    assert job["status"] == "succeeded", job
    values = [p for p, _ in seen]
    assert values == sorted(values)
    assert values[-1] == 1.0
    stages = [s for _, s in seen if s]
    assert stages.index("loading_model") < stages.index("separating") < stages.index("encoding")
    # Progress inside separation comes from demucs's chunk loop: several steps.
    separating = [p for p, s in seen if 0.05 < p < 0.9]
    assert len(separating) >= 3, seen


def test_a_second_job_reuses_the_loaded_model(client: FlaskClient, headers: dict) -> None:
    from app.models.cache import get_cache

    song = wav_bytes(sine_and_clicks(seconds=1.0))
    for _ in range(2):
        assert separate_song(client, headers, song)["status"] == "succeeded"
    cache = get_cache()
    assert cache.loads == {("separation", "htdemucs", "cpu"): 1}
    loaded = client.get("/api/v1/models").json["loaded"]
    assert loaded[0]["name"] == "htdemucs" and loaded[0]["uses"] == 2


def test_clip_modes(client: FlaskClient, headers: dict) -> None:
    loud = wav_bytes(1.6 * sine_and_clicks(seconds=1.0), subtype="FLOAT")
    peaks = {}
    for mode in ("rescale", "clamp", "none"):
        job = separate_song(client, headers, loud, model="hpss", clip_mode=mode, bit_depth="32f")
        assert job["status"] == "succeeded", job
        peaks[mode] = max(
            float(np.max(np.abs(s))) for s in downloaded_stems(client, headers, job).values()
        )
    assert peaks["none"] > 1.2
    assert peaks["clamp"] == pytest.approx(1.0)
    assert peaks["rescale"] < 1.0 and peaks["rescale"] > 0.9


def test_long_input_is_separated_in_windows_without_seams(
    demucs_app: Flask, client: FlaskClient, headers: dict, tmp_path: Path
) -> None:
    """Five minutes at the default 60 s windows: five joins, none audible."""
    seconds = 300
    t = np.arange(seconds * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.05 * t))
    mix = np.stack([tone, tone]).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, mix.T, SR, subtype="PCM_16")
    job = separate_song(
        client, headers, path.read_bytes(), model="mdx", two_stems="vocals",
        bit_depth="32f", clip_mode="none", shifts=0,
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    stems = downloaded_stems(client, headers, job)
    vocals = stems["vocals"]
    assert vocals.shape == (2, seconds * SR)
    mix16 = sf.read(path, always_2d=True, dtype="float32")[0].T
    assert np.max(np.abs(vocals + stems["no_vocals"] - mix16)) < 1e-4
    # Continuity: the sample-to-sample step at each window join is no larger
    # than the largest step elsewhere in the stem.
    window = int(demucs_app.config["SEPARATION_WINDOW_SECONDS"] * SR)
    overlap = int(demucs_app.config["SEPARATION_OVERLAP_SECONDS"] * SR)
    step = np.abs(np.diff(vocals, axis=-1))
    typical = np.percentile(step, 99.99)
    hop = window - overlap
    for join in range(hop - overlap, seconds * SR - overlap, hop):
        region = step[:, join - 10 : join + overlap + 10]
        assert region.max() <= 2 * typical + 1e-6, join


def test_models_download_writes_a_local_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flask models download` stores what demucs fetched in the --repo layout.

    The fetch itself is demucs's (no network here): it is replaced by a bag of
    tiny models, shaped like htdemucs_ft (four models, one per source).
    """
    import demucs.pretrained
    from demucs.apply import BagOfModels

    from tests.support.apps import make_app
    from tests.support.demucs_repo import tiny_htdemucs

    weights = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    fetched = BagOfModels([tiny_htdemucs(seed=s) for s in range(4)], weights)
    monkeypatch.setattr(demucs.pretrained, "get_model", lambda name, repo=None: fetched)
    app = make_app(tmp_path / "d", MODELS_DIR=str(tmp_path / "models"), ALLOW_MODEL_DOWNLOAD=False)
    result = app.test_cli_runner().invoke(args=["models", "download", "htdemucs_ft"])
    assert result.exit_code == 0, result.output
    repo = tmp_path / "models" / "demucs"
    assert sorted(p.suffix for p in repo.iterdir()) == [".th"] * 4 + [".yaml"]
    monkeypatch.undo()  # from here on, loading goes through the real LocalRepo

    listing = app.test_cli_runner().invoke(args=["models", "list"])
    assert "htdemucs_ft" in listing.output and "htdemucs_ft      available" in listing.output
    app.extensions["celery"].conf.task_always_eager = True
    client = app.test_client()
    headers = register_and_login(client)
    job = separate_song(
        client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), model="htdemucs_ft"
    )
    assert job["status"] == "succeeded", job
    assert job["result"]["stems"] == ["drums", "bass", "other", "vocals"]


def test_models_download_refuses_unknown_names(runner) -> None:
    result = runner.invoke(args=["models", "download", "not_a_model"])
    assert result.exit_code == 1
    assert "not a model any engine here can download" in result.output
