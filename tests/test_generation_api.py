"""MusicGen generation through the API, on tiny random models saved with save_pretrained."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes

RATE = 32000


@pytest.fixture(scope="session")
def musicgen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.musicgen_models import build_tiny_musicgen, build_tiny_musicgen_melody

    root = tmp_path_factory.mktemp("musicgen-models")
    build_tiny_musicgen(root / "musicgen" / "musicgen-small")
    build_tiny_musicgen_melody(root / "musicgen" / "musicgen-melody")
    return root


@pytest.fixture
def gen_app(eager_app: Callable[..., Flask], musicgen_dir: Path) -> Flask:
    return eager_app(MODELS_DIR=str(musicgen_dir), ALLOW_MODEL_DOWNLOAD=False)


@pytest.fixture
def client(gen_app: Flask) -> FlaskClient:
    return gen_app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def _generate(client: FlaskClient, headers: dict, **body) -> dict:
    response = client.post("/api/v1/generations", json=body, headers=headers)
    assert response.status_code == 202, response.json
    return client.get(response.headers["Location"], headers=headers).json


def _audio(client: FlaskClient, headers: dict, job: dict) -> tuple[np.ndarray, int]:
    entry = job["result"]["files"][0]
    data, rate = sf.read(
        io.BytesIO(client.get(entry["url"], headers=headers).data), dtype="float32"
    )
    return data, rate


def _audio_prompt() -> tuple[np.ndarray, io.BytesIO]:
    """One second of a 220 Hz tone, and its WAV: audio a model continues."""
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, tone, RATE, format="WAV", subtype="FLOAT")
    return tone, wav


def _continued(client: FlaskClient, headers: dict, prompt_audio: np.ndarray, **audio) -> None:
    """A 2 s continuation of ``prompt_audio`` (given as ``audio``, a file or
    its address): it succeeds, and the result starts with the prompt."""
    response = client.post(
        "/api/v1/generations",
        data={"prompt": "continue", "duration": "2.0", "seed": "5", "bit_depth": "32f", **audio},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    data, _rate = _audio(client, headers, job)
    assert abs(len(data) / RATE - 2.0) <= 1 / 50
    head = data[: RATE // 2]
    assert np.max(np.abs(head - prompt_audio[: RATE // 2])) < 0.05


def test_text_to_music(client: FlaskClient, headers: dict) -> None:
    job = _generate(client, headers, prompt="calm piano", duration=2.0, seed=7)
    assert job["status"] == "succeeded", job
    assert job["kind"] == "generation" and job["model"] == "facebook/musicgen-small"
    assert job["input"] is None
    data, rate = _audio(client, headers, job)
    assert rate == RATE == job["result"]["sample_rate"]
    assert abs(len(data) / rate - 2.0) <= 1 / 50  # within one frame
    used = job["result"]["parameters"]
    assert used["seed"] == 7 and used["prompt"] == "calm piano"
    assert used["guidance_scale"] == 3.0 and used["top_k"] == 250
    assert job["metrics"]["audio_seconds"] == pytest.approx(2.0, abs=0.02)


def test_seeds_reproduce(client: FlaskClient, headers: dict) -> None:
    first = _generate(client, headers, prompt="drums", duration=1.0, seed=1)
    again = _generate(client, headers, prompt="drums", duration=1.0, seed=1)
    other = _generate(client, headers, prompt="drums", duration=1.0, seed=2)
    a, b, c = (_audio(client, headers, j)[0] for j in (first, again, other))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    drawn = _generate(client, headers, prompt="drums", duration=1.0)
    seed = drawn["result"]["parameters"]["seed"]
    assert isinstance(seed, int)
    replay = _generate(client, headers, prompt="drums", duration=1.0, seed=seed)
    assert np.array_equal(_audio(client, headers, drawn)[0], _audio(client, headers, replay)[0])


def test_melody_and_continuation_uploads(client: FlaskClient, headers: dict) -> None:
    tune = wav_bytes(sine_and_clicks(seconds=2.0, channels=1))
    response = client.post(
        "/api/v1/generations",
        data={"prompt": "folk", "duration": "1.5", "model": "facebook/musicgen-melody",
              "seed": "3", "melody": (io.BytesIO(tune), "tune.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["params"]["input_role"] == "melody" and job["input"]["filename"] == "tune.wav"

    prompt_audio, prompt_wav = _audio_prompt()
    _continued(
        client, headers, prompt_audio, continuation=(io.BytesIO(prompt_wav.getvalue()), "start.wav")
    )


def test_progress_stages_and_cancel(
    client: FlaskClient, headers: dict, monkeypatch: pytest.MonkeyPatch, progress_log: list
) -> None:
    from app.services import jobs, runner

    seen = progress_log
    original = runner.ProgressReporter.__call__
    job = _generate(client, headers, prompt="slow", duration=2.0, seed=1)
    assert job["status"] == "succeeded"
    values = [p for p, _ in seen]
    assert values == sorted(values) and values[-1] == 1.0
    stages = [s for _, s in seen if s]
    assert stages.index("loading_model") < stages.index("generating") < stages.index("encoding")
    assert len([p for p, s in seen if 0.02 < p < 0.9]) >= 10  # one report per decoding step

    # Cancel while generating: the next step's progress report stops it.
    steps_after_cancel: list[float] = []

    def cancelling(self, progress, stage=None, *, force=False):
        if 0.3 < progress < 0.9 and not steps_after_cancel:
            jobs.finish(self.attempt.job_id, "canceled")
        if steps_after_cancel or (0.3 < progress < 0.9):
            steps_after_cancel.append(progress)
        original(self, progress, stage, force=True)

    monkeypatch.setattr(runner.ProgressReporter, "__call__", cancelling)
    job = _generate(client, headers, prompt="long", duration=4.0, seed=1)
    assert job["status"] == "canceled"
    assert job["result"] is None
    assert len(steps_after_cancel) == 1  # stopped at the very next step


def test_generation_requests_are_validated(client: FlaskClient, headers: dict) -> None:
    cases = {
        "prompt": {"duration": 2},
        "duration": {"prompt": "x", "duration": 500},
        "model": {"prompt": "x", "model": "../../etc"},
        "top_p": {"prompt": "x", "top_p": 2},
        "seed": {"prompt": "x", "seed": -1},
    }
    for field, body in cases.items():
        response = client.post("/api/v1/generations", json=body, headers=headers)
        assert response.status_code == 422, (field, response.json)
        assert field in response.json["errors"], (field, response.json)
    melody_on_plain = client.post(
        "/api/v1/generations",
        data={"prompt": "x", "melody": (io.BytesIO(wav_bytes(sine_and_clicks())), "m.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert melody_on_plain.status_code == 422 and "melody" in melody_on_plain.json["errors"]
    not_audio = client.post(
        "/api/v1/generations",
        data={"prompt": "x", "continuation": (io.BytesIO(b"text" * 500), "c.mp3")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert not_audio.status_code == 415
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_missing_weights_fail_with_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    app = eager_app(tmp_path / "d", MODELS_DIR=str(tmp_path / "none"), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    job = _generate(client, headers, prompt="x", duration=1.0)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    assert "musicgen-small" in job["error"]["message"]


def test_melody_and_continuation_by_url(
    eager_app: Callable[..., Flask], musicgen_dir: Path
) -> None:
    from tests.support.media_server import MediaServer

    with MediaServer() as media:
        app = eager_app(
            MODELS_DIR=str(musicgen_dir),
            ALLOW_MODEL_DOWNLOAD=False,
            URL_FETCH_ALLOW_HOSTS=media.authority,
        )
        client = app.test_client()
        headers = register_and_login(client)
        media.file("/tunes/folk%20tune.wav", wav_bytes(sine_and_clicks(seconds=2.0, channels=1)))
        job = _generate(
            client,
            headers,
            prompt="folk",
            duration=1.5,
            seed=3,
            model="facebook/musicgen-melody",
            melody_url=media.url("/tunes/folk%20tune.wav"),
        )
        assert job["status"] == "succeeded", job
        assert job["params"]["input_role"] == "melody"
        assert job["input"]["filename"] == "folk tune.wav"
        assert job["input"]["duration"] == 2.0
        data, rate = _audio(client, headers, job)
        assert abs(len(data) / rate - 1.5) <= 1 / 50

        prompt_audio, prompt_wav = _audio_prompt()
        media.file("/start.wav", prompt_wav.getvalue())
        _continued(client, headers, prompt_audio, continuation_url=media.url("/start.wav"))

        # Fetched as a job's url is: not audio fails the job with the upload's code.
        media.file("/notes.txt", b"text" * 500, content_type="text/plain")
        job = _generate(client, headers, prompt="x", continuation_url=media.url("/notes.txt"))
        assert job["status"] == "failed" and job["error"]["code"] == "unsupported_media_type"


def test_audio_by_url_is_validated_at_submission(client: FlaskClient, headers: dict) -> None:
    cases = {
        # a loopback address: refused before any job exists, under the field given
        "melody_url": {"prompt": "x", "model": "facebook/musicgen-melody",
                       "melody_url": "http://127.0.0.1:9/tune.wav"},
        "continuation_url": {"prompt": "x", "continuation_url": "ftp://example.com/a.wav"},
    }  # fmt: skip
    for field, body in cases.items():
        response = client.post("/api/v1/generations", json=body, headers=headers)
        assert response.status_code == 422, (field, response.json)
        assert set(response.json["errors"]) == {field}, (field, response.json)
    both = client.post(
        "/api/v1/generations",
        json={"prompt": "x", "model": "facebook/musicgen-melody",
              "melody_url": "https://example.com/a.wav",
              "continuation_url": "https://example.com/b.wav"},
        headers=headers,
    )  # fmt: skip
    assert both.status_code == 422 and "continuation_url" in both.json["errors"]
    melody_on_plain = client.post(
        "/api/v1/generations",
        json={"prompt": "x", "melody_url": "https://example.com/a.wav"},
        headers=headers,
    )
    assert melody_on_plain.status_code == 422 and "melody_url" in melody_on_plain.json["errors"]
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0
