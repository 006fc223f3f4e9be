"""Long-form transcription: the sequential and the batched decoder, and the choice.

The long input is tests/data/speech/long_lines.ogg: 24 distinct spoken lines
(109 s), so a line the decoder skips or repeats shows in ``line_counts``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.models import whisper_engine
from tests.support.apps import register_and_login
from tests.support.speech import REFERENCES, SPEECH, line_counts, wer

LONG = json.loads((SPEECH / "long_lines.json").read_text())
CLIP = "clip2.flac"


@pytest.fixture(scope="module")
def tiny() -> Any:
    return whisper_engine.load("tiny.en", {"MODELS_DIR": "/nonexistent"}, "cpu", "int8")


def test_batched_keeps_every_line_of_a_long_input_once_with_its_words_in_place(
    tiny: Any,
) -> None:
    from app import audio

    samples, _ = audio.decode(SPEECH / "long_lines.ogg", sample_rate=16000, channels=1)
    duration = samples.shape[-1] / 16000
    options = whisper_engine.decoding_options({"word_timestamps": True})
    progress: list[float] = []
    # Two chunks a batch: several batches, so their order and offsets count.
    result = whisper_engine.transcribe(tiny, samples[0], options, progress.append, batch_size=2)

    assert line_counts(LONG["lines"], result["text"]) == [1] * len(LONG["lines"])
    assert wer(" ".join(LONG["lines"]), result["text"]) < 0.1
    words = result["words"]
    assert words == [w for s in result["segments"] for w in s["words"]]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.05 for w in words)
    # Each line's first word ("The") is timed where the line was spoken.
    firsts = [w["start"] for w in words if w["word"].strip() == "The"]
    assert len(firsts) == len(LONG["onsets"])
    assert all(abs(got - onset) < 0.6 for got, onset in zip(firsts, LONG["onsets"], strict=True)), (
        list(zip(firsts, LONG["onsets"], strict=True))
    )
    # Segments are sentence-sized (chunks are up to 30 s), in order, and hold their words.
    segments = result["segments"]
    assert len(segments) >= len(LONG["lines"]) // 2
    assert all(s["end"] - s["start"] <= whisper_engine.SEGMENT_MAX_SECONDS for s in segments)
    assert all(a["end"] <= b["start"] for a, b in pairwise(segments))
    assert [s["id"] for s in segments] == list(range(len(segments)))
    # Progress follows the batches, up to the end.
    assert len(progress) >= 2 and progress == sorted(progress), progress
    assert 0 < progress[0] < 1 and progress[-1] > 0.95


def test_batched_without_word_timestamps_leaves_words_out(tiny: Any) -> None:
    from app import audio

    samples, _ = audio.decode(SPEECH / CLIP, sample_rate=16000, channels=1)
    options = whisper_engine.decoding_options({})
    result = whisper_engine.transcribe(tiny, samples[0], options, lambda _f: None, batch_size=4)
    assert wer(REFERENCES[CLIP], result["text"]) < 0.25
    assert "words" not in result
    assert result["segments"] and all("words" not in s for s in result["segments"])


def test_the_automatic_choice_follows_the_threshold() -> None:
    choose = whisper_engine.choose_decoding
    assert choose("auto", 119.9, {}, 120.0) == "sequential"
    assert choose("auto", 120.0, {}, 120.0) == "batched"
    assert choose("auto", 600.0, {"log_prob_threshold": -1.5}, 120.0) == "sequential"
    assert choose("sequential", 600.0, {}, 120.0) == "sequential"
    assert choose("batched", 5.0, {}, 120.0) == "batched"


def _transcribe(client: FlaskClient, headers: dict, **form: Any) -> dict:
    payload = {
        "file": (io.BytesIO((SPEECH / CLIP).read_bytes()), CLIP),
        **{k: str(v) for k, v in form.items()},
    }
    response = client.post(
        "/api/v1/transcriptions", data=payload, headers=headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.json
    job = client.get(response.json["url"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert wer(REFERENCES[CLIP], job["result"]["text"]) < 0.25
    return job


def test_each_path_can_be_forced_and_shows_in_the_metrics(
    eager_app: Callable[..., Flask],
) -> None:
    # The 5 s clip is "long" here, so auto batches it and forcing sequential counts.
    app = eager_app(WHISPER_BATCHED_MIN_SECONDS=3.0, WHISPER_CPU_THREADS=1)
    client = app.test_client()
    headers = register_and_login(client)

    auto = _transcribe(client, headers, word_timestamps="true")
    assert auto["params"]["decoding"] == "auto"
    assert auto["metrics"]["decoding"] == "batched"
    assert auto["metrics"]["batch_size"] == 4  # the CPU default
    assert auto["metrics"]["threads"] == 1
    assert auto["result"]["words"] and "metrics" not in auto["result"]

    sequential = _transcribe(client, headers, decoding="sequential")
    assert sequential["metrics"]["decoding"] == "sequential"
    assert sequential["metrics"]["batch_size"] is None

    batched = _transcribe(client, headers, decoding="batched", batch_size=2)
    assert batched["metrics"]["decoding"] == "batched"
    assert batched["metrics"]["batch_size"] == 2


def test_auto_is_sequential_below_the_default_threshold(
    client: FlaskClient, auth_headers: dict
) -> None:
    job = _transcribe(client, auth_headers)
    assert job["metrics"]["decoding"] == "sequential"
    assert job["metrics"]["threads"] >= 1


def test_the_openai_route_takes_decoding(client: FlaskClient, auth_headers: dict) -> None:
    response = client.post(
        "/v1/audio/transcriptions",
        data={
            "file": ((SPEECH / CLIP).open("rb"), CLIP),
            "model": "whisper-1",
            "decoding": "batched",
            "response_format": "verbose_json",
        },
        headers=auth_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    assert wer(REFERENCES[CLIP], response.json["text"]) < 0.25
    jobs = client.get("/api/v1/jobs?kind=transcription", headers=auth_headers).json["items"]
    assert jobs[0]["metrics"]["decoding"] == "batched"

    refused = client.post(
        "/v1/audio/transcriptions",
        data={"file": ((SPEECH / CLIP).open("rb"), CLIP), "model": "whisper-1", "decoding": "x"},
        headers=auth_headers,
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422, refused.json
    assert "decoding" in refused.json["errors"], refused.json


def test_bad_decoding_options_are_refused(client: FlaskClient, auth_headers: dict) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"decoding": "fast"}, "decoding"),
        ({"decoding": ""}, "decoding"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 65}, "batch_size"),
        ({"batch_size": "many"}, "batch_size"),
        ({"decoding": "sequential", "batch_size": 4}, "batch_size"),
        ({"decoding": "batched", "log_prob_threshold": -1.5}, "decoding"),
        (
            {"decoding": "batched", "word_timestamps": True, "hallucination_silence_threshold": 2},
            "decoding",
        ),
    ]
    for form, field in cases:
        payload = {"file": (io.BytesIO(b"RIFF"), "a.wav"), **{k: str(v) for k, v in form.items()}}
        response = client.post(
            "/api/v1/transcriptions",
            data=payload,
            headers=auth_headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 422, (form, response.json)
        assert response.mimetype == "application/json"
        assert field in response.json["errors"], (form, response.json)
