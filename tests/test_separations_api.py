"""Separation jobs through the HTTP API, run inline (Celery eager mode)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from tests.support.audio import SR, sine_and_clicks, wav_bytes


def _upload(client: FlaskClient, headers: dict, data: bytes, name: str = "song.wav", **form):
    form.setdefault("model", "hpss")
    payload = {"file": (io.BytesIO(data), name), **{k: str(v) for k, v in form.items()}}
    return client.post(
        "/api/v1/separations", data=payload, headers=headers, content_type="multipart/form-data"
    )


def test_separation_end_to_end(client: FlaskClient, auth_headers: dict, song_wav: bytes) -> None:
    response = _upload(client, auth_headers, song_wav)
    assert response.status_code == 202, response.json
    job = response.json
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["kind"] == "separation"
    assert job["model"] == "hpss"
    assert job["input"]["sample_rate"] == SR
    assert job["input"]["channels"] == 2
    assert abs(job["input"]["duration"] - 2.0) < 0.01
    assert job["input"]["filename"] == "song.wav"

    job = client.get(response.headers["Location"], headers=auth_headers).json
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["created_at"].endswith("+00:00") and job["finished_at"].endswith("+00:00")
    assert job["error"] is None
    assert job["metrics"]["audio_seconds"] == 2.0
    assert job["metrics"]["run_seconds"] > 0
    assert job["metrics"]["device"] == "cpu"
    names = sorted(f["name"] for f in job["result"]["files"])
    assert names == ["harmonic.wav", "percussive.wav"]

    stems = {}
    for entry in job["result"]["files"]:
        download = client.get(entry["url"], headers=auth_headers)
        assert download.status_code == 200
        assert download.mimetype == "audio/wav"
        assert "attachment" in download.headers["Content-Disposition"]
        data, sr = sf.read(io.BytesIO(download.data), always_2d=True)
        assert sr == SR
        assert data.shape == (2 * SR, 2)
        stems[entry["stem"]] = data.T

    original = sine_and_clicks()
    # The stems add back up to the input (16-bit quantisation aside).
    assert np.max(np.abs(stems["harmonic"] + stems["percussive"] - original)) < 2e-3
    # The sine is harmonic, the clicks are percussive.
    spectrum = np.abs(np.fft.rfft(stems["harmonic"][0]))
    assert abs(np.argmax(spectrum) * SR / (2 * SR) - 440.0) < 2
    click_positions = np.arange(0, 2 * SR, SR // 4)
    perc, harm = stems["percussive"][0], stems["harmonic"][0]
    assert np.mean(np.abs(perc[click_positions])) > 4 * np.mean(np.abs(harm[click_positions]))


def test_range_requests_for_seeking(
    client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    job = _upload(client, auth_headers, song_wav).json
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    url = job["result"]["files"][0]["url"]
    full = client.get(url, headers=auth_headers).data
    part = client.get(url, headers={**auth_headers, "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.data == full[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(full)}"
    assert part.headers["Accept-Ranges"] == "bytes"


def test_archive_holds_every_stem(client: FlaskClient, auth_headers: dict, song_wav: bytes) -> None:
    job = _upload(client, auth_headers, song_wav, output_format="flac").json
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    response = client.get(job["result"]["archive_url"], headers=auth_headers)
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert (
        response.headers["Content-Disposition"].replace('"', "") == "attachment; filename=song.zip"
    )
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    assert sorted(archive.namelist()) == ["harmonic.flac", "percussive.flac"]
    data, sr = sf.read(io.BytesIO(archive.read("harmonic.flac")))
    assert sr == SR and data.shape == (2 * SR, 2)


def test_mp3_output_and_mono_input(client: FlaskClient, auth_headers: dict, tmp_path: Path) -> None:
    from app import audio

    mono = wav_bytes(sine_and_clicks(channels=1))
    job = _upload(client, auth_headers, mono, output_format="mp3", mp3_bitrate=128).json
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    assert job["status"] == "succeeded", job
    entry = job["result"]["files"][0]
    assert entry["content_type"] == "audio/mpeg" and entry["name"].endswith(".mp3")
    path = tmp_path / "out.mp3"
    path.write_bytes(client.get(entry["url"], headers=auth_headers).data)
    info = audio.probe(path)
    assert info.codec == "mp3" and info.sample_rate == SR and info.channels == 1
    assert abs(info.duration - 2.0) < 0.1


def test_wav_bit_depths(client: FlaskClient, auth_headers: dict, song_wav: bytes) -> None:
    for depth, subtype in (("24", "PCM_24"), ("32f", "FLOAT")):
        job = _upload(client, auth_headers, song_wav, bit_depth=depth).json
        job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
        body = client.get(job["result"]["files"][0]["url"], headers=auth_headers).data
        assert sf.info(io.BytesIO(body)).subtype == subtype


def test_bad_requests_change_nothing(
    app: Flask, client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    cases = [
        ({"data": {"output_format": "wav"}}, 422, "validation_error"),
        (
            {"data": {"file": (io.BytesIO(song_wav), "s.wav"), "output_format": "ogg"}},
            422,
            "validation_error",
        ),
        (
            {"data": {"file": (io.BytesIO(song_wav), "s.wav"), "model": "nope"}},
            422,
            "validation_error",
        ),
        (
            {"data": {"file": (io.BytesIO(song_wav), "s.wav"), "shifts": "3", "model": "hpss"}},
            422,
            "validation_error",
        ),
        (
            {"data": {"file": (io.BytesIO(b"hello world, not audio" * 50), "s.mp3")}},
            415,
            "unsupported_media_type",
        ),
        ({"data": {"file": (io.BytesIO(b""), "empty.wav")}}, 422, "empty_audio"),
        ({"data": {"file": "just text, not a file part"}}, 422, "validation_error"),
        (
            {"data": {"file": (io.BytesIO(b"%PDF-1.4\n" + b"0" * 4000), "doc.pdf")}},
            415,
            "unsupported_media_type",
        ),
    ]
    for kwargs, status, code in cases:
        response = client.post(
            "/api/v1/separations",
            headers=auth_headers,
            content_type="multipart/form-data",
            **kwargs,
        )
        assert response.status_code == status, (kwargs, response.json)
        assert response.json["code"] == code
        assert response.json["status"] == status
        assert response.json["message"]
    listing = client.get("/api/v1/jobs", headers=auth_headers).json
    assert listing["total"] == 0
    data_dir = Path(app.config["DATA_DIR"])
    assert not list((data_dir / "jobs").glob("*")) if (data_dir / "jobs").exists() else True
    assert list((data_dir / "tmp").glob("*")) == []


def test_too_long_audio_is_refused(tmp_path: Path) -> None:
    from tests.support.apps import make_app, register_and_login

    app = make_app(tmp_path / "d", MAX_AUDIO_SECONDS=1.0)
    client = app.test_client()
    headers = register_and_login(client)
    response = _upload(client, headers, wav_bytes(sine_and_clicks(seconds=2.0)))
    assert response.status_code == 422
    assert response.json["code"] == "audio_too_long"


def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    from tests.support.apps import make_app, register_and_login

    app = make_app(tmp_path / "d", MAX_UPLOAD_MB=1)
    client = app.test_client()
    headers = register_and_login(client)
    big = wav_bytes(sine_and_clicks(seconds=8.0))  # ~2.8 MB
    response = _upload(client, headers, big)
    assert response.status_code == 413
    assert response.json["code"] == "file_too_large"
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_requires_a_token(client: FlaskClient, song_wav: bytes) -> None:
    response = _upload(client, {}, song_wav)
    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"


def test_client_file_names_are_only_displayed(
    app: Flask, client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    names = {
        "../../etc/evil.wav": "evil.wav",
        # (HTTP quoting eats the backslashes before the app sees them)
        "..\\..\\win\\evil.wav": "....winevil.wav",
        "bad\x00na\x1bme.wav": "badname.wav",
        "x" * 4000 + ".wav": "x" * 255,
        "": "upload",
    }
    for sent, shown in names.items():
        response = _upload(client, auth_headers, song_wav, name=sent)
        assert response.status_code == 202, (sent, response.json)
        assert response.json["input"]["filename"] == shown
        folder = Path(app.config["DATA_DIR"]) / "jobs" / response.json["id"]
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["input.wav"]
    outside = [p for p in Path(app.config["DATA_DIR"]).rglob("*evil*")]
    assert outside == []


def test_non_latin_names_download_safely(
    client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    job = _upload(client, auth_headers, song_wav, name="曲 «live».wav").json
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    archive = client.get(job["result"]["archive_url"], headers=auth_headers)
    assert archive.status_code == 200
    header = archive.headers["Content-Disposition"]
    assert header.isascii()
    assert "filename*=UTF-8''%E6%9B%B2%20%C2%ABlive%C2%BB.zip" in header
    stem = client.get(job["result"]["files"][0]["url"], headers=auth_headers)
    assert stem.status_code == 200 and stem.headers["Content-Disposition"].isascii()


def test_flac_has_no_float_depth(client: FlaskClient, auth_headers: dict, song_wav: bytes) -> None:
    response = _upload(client, auth_headers, song_wav, output_format="flac", bit_depth="32f")
    assert response.status_code == 422
    assert "bit_depth" in response.json["errors"]


def test_unsatisfiable_range_says_the_size(
    client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    job = _upload(client, auth_headers, song_wav).json
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    entry = job["result"]["files"][0]
    response = client.get(entry["url"], headers={**auth_headers, "Range": "bytes=99999999-"})
    assert response.status_code == 416
    assert response.json["code"] == "range_not_satisfiable"
    assert response.headers["Content-Range"] == f"bytes */{entry['size']}"
