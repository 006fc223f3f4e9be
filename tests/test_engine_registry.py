"""The engine contract and its registry: a model family is one module plus one
registry line.

The mid/side engine of tests/support/midside.py is registered here exactly as
the app's own families are, and must then be listed, validated, run through
the API and ``flask separate`` like any of them. (The page offering it is
tests/browser/test_web_page.py::test_a_registered_engine_is_offered_with_its_options.)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, fields, missing, validate

# Imported before the engine is registered, as in a running server that gains
# a family: its options have no field of their own in the request schema (the
# app's own families' options do), and must be accepted all the same.
from app.blueprints import separations
from app.models import registry
from app.models.engines import Option
from tests.conftest import make_app, register_and_login, wav_bytes
from tests.support.midside import MidSideEngine

RATE = 48000


@pytest.fixture
def midside() -> Iterator[MidSideEngine]:
    engine = registry.register(MidSideEngine())  # the family's one registry line
    try:
        yield engine
    finally:
        registry.unregister(engine)


@pytest.fixture
def midside_app(midside: MidSideEngine, tmp_path: Path) -> Flask:
    """Jobs run inline; windows of 1 s with 0.25 s overlap, so a few seconds of
    input crosses several joins."""
    app = make_app(
        tmp_path / "data", SEPARATION_WINDOW_SECONDS=1.0, SEPARATION_OVERLAP_SECONDS=0.25
    )
    app.extensions["celery"].conf.task_always_eager = True
    return app


@pytest.fixture
def client(midside_app: Flask) -> FlaskClient:
    return midside_app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def stereo(seconds: float, rate: int = RATE) -> np.ndarray:
    """Different left and right channels: a chord on the left, another on the
    right, some noise in both, so mid and side are both far from silence."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(1).normal(0.0, 0.05, t.size)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t) + noise
    right = 0.3 * np.sin(2 * np.pi * 220 * t) - 0.25 * np.sin(2 * np.pi * 554 * t) + noise
    return np.stack([left, right]).astype(np.float32)


def _separate(client: FlaskClient, headers: dict, data: bytes, **form: Any) -> Any:
    payload = {"file": (io.BytesIO(data), "song.wav"), **{k: str(v) for k, v in form.items()}}
    return client.post(
        "/api/v1/separations", data=payload, headers=headers, content_type="multipart/form-data"
    )


def _stems(client: FlaskClient, headers: dict, job: dict) -> dict[str, tuple[np.ndarray, int]]:
    stems = {}
    for entry in job["result"]["files"]:
        body = client.get(entry["url"], headers=headers).data
        data, rate = sf.read(io.BytesIO(body), always_2d=True, dtype="float32")
        stems[entry["stem"]] = (data.T, rate)
    return stems


def test_a_registered_engine_is_listed_with_its_options(client: FlaskClient) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models").json["models"]}
    entry = models["midside"]
    assert entry == {
        **entry,
        "kind": "separation",
        "engine": "midside",
        "stems": ["mid", "side"],
        "available": True,
        "needs_weights": False,
        "default": False,
    }
    assert entry["options"] == [
        {
            "name": "side_gain",
            "type": "number",
            "description": "Scale of the side stem (1: the stems add up to the input).",
            "default": 1.0,
            "minimum": 0.0,
            "maximum": 4.0,
            "choices": None,
            "unit": None,
        }
    ]
    # The app's own families say theirs the same way, with each model's own bounds.
    assert [o["name"] for o in models["hpss"]["options"]] == ["kernel_size"]
    htdemucs = {o["name"]: o for o in models["htdemucs"]["options"]}
    assert sorted(htdemucs) == ["overlap", "segment", "shifts"]
    assert htdemucs["shifts"]["default"] == 1 and htdemucs["shifts"]["maximum"] == 10
    assert htdemucs["segment"]["default"] is None and htdemucs["segment"]["maximum"] == 7.8
    mdx_segment = next(o for o in models["mdx"]["options"] if o["name"] == "segment")
    assert mdx_segment["maximum"] == 100
    assert {o["name"] for o in models["tiny.en"]["options"]} >= {"beam_size", "compute_type"}
    assert {o["name"] for o in models["facebook/musicgen-small"]["options"]} == {
        "guidance_scale", "temperature", "top_k", "top_p",
    }  # fmt: skip


def test_an_upload_is_separated_into_mid_and_side(client: FlaskClient, headers: dict) -> None:
    mix = stereo(3.3)  # several 1 s windows, and a last one that is not full
    response = _separate(
        client, headers, wav_bytes(mix, sr=RATE, subtype="FLOAT"), model="midside",
        bit_depth="32f", clip_mode="none",
    )  # fmt: skip
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["model"] == "midside" and job["params"]["side_gain"] == 1.0
    assert job["result"]["stems"] == ["mid", "side"]
    assert job["result"]["sample_rate"] == RATE
    stems = _stems(client, headers, job)
    left, right = mix
    mid, mid_rate = stems["mid"]
    side, side_rate = stems["side"]
    assert mid_rate == side_rate == RATE
    assert mid.shape == side.shape == mix.shape
    np.testing.assert_allclose(mid[0], (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(mid[1], (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(side[0], (left - right) / 2, atol=1e-6)
    np.testing.assert_allclose(side[1], -(left - right) / 2, atol=1e-6)
    np.testing.assert_allclose(mid + side, mix, atol=1e-6)

    # The option reaches the engine; two_stems works as for any engine.
    response = _separate(
        client, headers, wav_bytes(mix, sr=RATE, subtype="FLOAT"), model="midside",
        side_gain="0.5", two_stems="side", bit_depth="32f", clip_mode="none",
    )  # fmt: skip
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["params"]["side_gain"] == 0.5
    stems = _stems(client, headers, job)
    np.testing.assert_allclose(stems["side"][0][0], (left - right) / 4, atol=1e-6)
    np.testing.assert_allclose(stems["no_side"][0], mix - stems["side"][0], atol=1e-6)


def test_options_are_checked_against_the_chosen_model(client: FlaskClient, headers: dict) -> None:
    song = wav_bytes(stereo(0.5), sr=RATE)
    assert "side_gain" not in separations.SeparationFormSchema().fields
    cases = [
        ({"model": "midside", "side_gain": "5"}, "side_gain", "at most 4"),
        ({"model": "midside", "side_gain": "loud"}, "side_gain", "Not a valid number"),
        ({"model": "midside", "shifts": "2"}, "shifts", "does not take this option"),
        ({"model": "hpss", "side_gain": "1"}, "side_gain", "does not take this option"),
        ({"model": "hpss", "kernel_size": "2"}, "kernel_size", ""),
        ({"model": "htdemucs", "segment": "9"}, "segment", "at most 7.8"),
        ({"model": "midside", "volume": "1"}, "volume", "Unknown field"),
    ]
    for form, field, message in cases:
        response = _separate(client, headers, song, **form)
        assert response.status_code == 422, (form, response.json)
        assert field in response.json["errors"], (form, response.json)
        assert message in " ".join(response.json["errors"][field]), (form, response.json)
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_flask_separate_takes_the_engine_options(midside_app: Flask, tmp_path: Path) -> None:
    mix = stereo(1.0)
    song = tmp_path / "in" / "song.wav"
    song.parent.mkdir()
    song.write_bytes(wav_bytes(mix, sr=RATE, subtype="FLOAT"))
    runner = midside_app.test_cli_runner()
    assert "--side-gain" in runner.invoke(args=["separate", "--help"]).output
    args = ["separate", str(song), "-m", "midside", "--side-gain", "2", "--bit-depth", "32f"]
    result = runner.invoke(args=[*args, "--clip-mode", "none", "-q"])
    assert result.exit_code == 0, result.output
    side, rate = sf.read(song.parent / "song" / "side.wav", always_2d=True, dtype="float32")
    assert rate == RATE
    np.testing.assert_allclose(side.T[0], mix[0] - mix[1], atol=1e-6)
    refused = runner.invoke(args=["separate", str(song), "-m", "hpss", "--side-gain", "2"])
    assert refused.exit_code == 2 and "--side-gain: Model 'hpss' does not take" in refused.output


def test_preload_and_download_ask_the_registry(midside_app: Flask) -> None:
    config = midside_app.config
    registry.preload("midside", config)  # no weights: nothing happens
    registry.preload("hpss", config)
    with pytest.raises(ValueError, match="PRELOAD_MODELS"):
        registry.preload("no-such-model", config)
    with pytest.raises(ValueError, match="not a model any engine here can download"):
        registry.download("midside", config)


def test_registration_refuses_what_would_clash(midside: MidSideEngine) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(MidSideEngine())

    class Shadowing(MidSideEngine):
        name = "shadowing"
        OPTIONS = (Option("stems", "string", "Would shadow the request's stems."),)

    class Retyped(MidSideEngine):
        name = "retyped"
        OPTIONS = (Option("shifts", "number", "Demucs's shifts is an integer."),)

    for engine in (Shadowing(), Retyped()):
        with pytest.raises(ValueError):
            registry.register(engine)
        assert engine not in registry.engines()
    assert registry.engines("separation")[-1] is midside


def test_whisper_and_musicgen_options_match_their_request_fields() -> None:
    """The options their catalogue entries list are their requests' fields, with
    the same types, bounds and defaults (those schemas are not generated)."""
    from app.blueprints.generations import GenerationSchema
    from app.blueprints.transcriptions import TranscriptionFormSchema

    types: dict[str, type[fields.Field]] = {
        "integer": fields.Integer,
        "number": fields.Float,
        "boolean": fields.Boolean,
        "string": fields.String,
    }
    schemas: dict[str, Schema] = {
        "transcription": TranscriptionFormSchema(),
        "generation": GenerationSchema(),
    }
    for kind, schema in schemas.items():
        for engine in registry.engines(kind):
            for option in engine.OPTIONS:
                field = schema.fields[option.name]
                assert isinstance(field, types[option.type]), option.name
                ranges = [v for v in field.validators if isinstance(v, validate.Range)]
                bounds = (ranges[0].min, ranges[0].max) if ranges else (None, None)
                assert bounds == (option.minimum, option.maximum), option.name
                choices = [v for v in field.validators if isinstance(v, validate.OneOf)]
                assert (tuple(choices[0].choices) if choices else None) == option.choices
                if field.load_default is not missing:
                    assert field.load_default == option.default, option.name
