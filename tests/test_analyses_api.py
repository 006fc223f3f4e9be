"""Music analysis through the API, alone and added to separation and karaoke jobs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import SR, wav_bytes

NOTE = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def chord(names: list[str], seconds: float, octave: int = 4) -> np.ndarray:
    """A chord of piano-ish notes: harmonic partials with a decaying envelope."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for name in names:
        midi = 12 * (octave + 1) + NOTE[name]
        freq = 440.0 * 2 ** ((midi - 69) / 12)
        for k in range(1, 5):
            out += np.sin(2 * np.pi * freq * k * t) / k**1.5
    return (out * np.exp(-1.5 * t) / len(names) / 3).astype(np.float32)


def progression_with_beat(chords: list[list[str]], bpm: float, repeats: int = 3) -> np.ndarray:
    beat = 60.0 / bpm
    music = np.concatenate([chord(c, 4 * beat) for c in chords] * repeats)
    clicks = np.zeros_like(music)
    click = np.exp(-np.arange(400) / 40.0) * np.sin(2 * np.pi * 2000 * np.arange(400) / SR)
    for start in np.arange(0, len(music) - 400, beat * SR).astype(int):
        clicks[start : start + 400] += 0.5 * click
    mono = music + clicks.astype(np.float32)
    return np.stack([mono, mono])


def _post(client: FlaskClient, path: str, headers: dict, data: bytes, **form) -> dict:
    payload = {"file": (io.BytesIO(data), "song.wav"), **{k: str(v) for k, v in form.items()}}
    response = client.post(path, data=payload, headers=headers, content_type="multipart/form-data")
    assert response.status_code == 202, response.json
    return client.get(response.headers["Location"], headers=headers).json


def test_analysis_job_answers_key_tempo_and_loudness(
    client: FlaskClient, auth_headers: dict
) -> None:
    song = progression_with_beat(
        [["C", "E", "G"], ["F", "A", "C"], ["G", "B", "D"], ["C", "E", "G"]], 120
    )
    job = _post(client, "/api/v1/analyses", auth_headers, wav_bytes(song))
    assert job["status"] == "succeeded", job
    assert job["kind"] == "analysis"
    result = job["result"]
    assert result["key"]["name"] == "C major"
    assert result["key"]["runner_up"]["name"] != "C major"
    assert 0 <= result["key"]["confidence"] <= 1
    assert result["tempo_bpm"] == pytest.approx(120, abs=2)
    beats = np.array(result["beats"])
    assert np.median(np.diff(beats)) == pytest.approx(0.5, abs=0.02)
    loudness = result["loudness"]
    assert -40 < loudness["integrated_lufs"] < 0
    assert loudness["true_peak_dbtp"] >= loudness["sample_peak_dbfs"] - 0.01
    assert result["sample_rate"] == SR and result["channels"] == 2
    assert result["duration"] == pytest.approx(len(song[0]) / SR, abs=0.01)


def test_analyze_option_on_separation(client: FlaskClient, auth_headers: dict) -> None:
    song = progression_with_beat(
        [["A", "C", "E"], ["D", "F", "A"], ["E", "G", "B"], ["A", "C", "E"]], 100, 2
    )
    job = _post(
        client, "/api/v1/separations", auth_headers, wav_bytes(song), model="hpss", analyze="true"
    )
    assert job["status"] == "succeeded", job
    assert job["result"]["analysis"]["key"]["name"] == "A minor"
    assert job["result"]["stems"] == ["harmonic", "percussive"]
    plain = _post(
        client, "/api/v1/separations", auth_headers, wav_bytes(song[:, :SR]), model="hpss"
    )
    assert "analysis" not in plain["result"]


def test_analyze_option_on_karaoke(demucs_app: Flask) -> None:
    client = demucs_app.test_client()
    headers = register_and_login(client)
    song = progression_with_beat([["C", "E", "G"], ["G", "B", "D"]], 120, 1)
    job = _post(
        client, "/api/v1/karaoke", headers, wav_bytes(song), separation_model="mdx", analyze="true"
    )
    assert job["status"] == "succeeded", job
    assert set(job["result"]["analysis"]) >= {"key", "tempo_bpm", "beats", "loudness"}


def test_bad_uploads_are_refused(client: FlaskClient, auth_headers: dict) -> None:
    response = client.post(
        "/api/v1/analyses",
        data={"file": (io.BytesIO(b"not audio at all" * 100), "x.mp3")},
        headers=auth_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 415
    response = client.post(
        "/api/v1/analyses", data={}, headers=auth_headers, content_type="multipart/form-data"
    )
    assert response.status_code == 422 and "file" in response.json["errors"]
