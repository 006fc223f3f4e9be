"""Upload bombs, lies and disguises, generated in the tests (no binary fixtures).

Every refused upload must answer a clear 4xx JSON error, create no job and
leave nothing in ``DATA_DIR/tmp`` or ``DATA_DIR/jobs``. Files whose headers
lie get past the upload check by design (it reads headers only); their job
must then fail with ``audio_too_long`` because decoding counts the samples.
"""

from __future__ import annotations

import io
import json
import math
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import lameenc
import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from app import audio
from app.audio import probing
from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.uploads import assert_nothing_kept, assert_refused, files_under, upload

# --------------------------------------------------------------------------- files


def sine(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def riff_wav(
    data: bytes,
    *,
    tag: int = 1,
    sr: int = 8000,
    channels: int = 1,
    bits: int = 16,
    size: int | None = None,
    byte_rate: int | None = None,
) -> bytes:
    """A hand-made WAV whose header can claim anything."""
    block = max(channels, 1) * bits // 8
    fmt = struct.pack(
        "<HHIIHH", tag, channels, sr, byte_rate or sr * block, block if tag == 1 else 1, bits
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data) if size is None else size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp3_frames(samples: np.ndarray, sr: int, kbps: int) -> bytes:
    """Raw MPEG audio frames from LAME: no ID3 tag and no Xing/Info header."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(sr)
    encoder.set_channels(1)
    encoder.set_quality(7)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return bytes(encoder.encode(pcm) + encoder.flush())


def flac_bytes(samples: np.ndarray, sr: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def forge_streaminfo(
    flac: bytes, *, sample_rate: int | None = None, channels: int | None = None, total=None
) -> bytes:
    """Rewrite the claims of a FLAC file's STREAMINFO (the frames stay as they are)."""
    data = bytearray(flac)
    start = 8 + 10  # "fLaC", block header, min/max block and frame sizes
    value = int.from_bytes(data[start : start + 8], "big")
    if sample_rate is not None:
        value = (value & ~(((1 << 20) - 1) << 44)) | (sample_rate << 44)
    if channels is not None:
        value = (value & ~(7 << 41)) | ((channels - 1) << 41)
    if total is not None:
        value = (value & ~((1 << 36) - 1)) | total
    data[start : start + 8] = value.to_bytes(8, "big")
    return bytes(data)


def float_wav(samples: np.ndarray, sr: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def two_track_mkv(path: Path) -> bytes:
    """Matroska with a mono 8 kHz track first and a stereo 44.1 kHz track second."""
    with av.open(str(path), "w", format="matroska") as container:
        tracks = [
            (container.add_stream("pcm_s16le", rate=8000, layout="mono"), sine(1.0, 8000)[None]),
            (
                container.add_stream("pcm_s16le", rate=44100, layout="stereo"),
                np.stack([sine(3.0, 44100)] * 2),
            ),
        ]
        for stream, samples in tracks:
            for start in range(0, samples.shape[1], 4000):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + 4000]),
                    format="fltp",
                    layout=stream.layout.name,
                )
                frame.sample_rate = stream.rate
                frame.pts = start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path.read_bytes()


PNG = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(17)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64)
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< >>\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>'
PHP = b"<?php system($_GET['c']); ?>\n"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56) + bytes(range(256)) * 4


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _song_mp3() -> bytes:
    return mp3_frames(sine(2.0, 44100), 44100, 128)


def _song_wav() -> bytes:
    return riff_wav((sine(1.0, 8000) * 32767).astype("<i2").tobytes())


# name sent, bytes, expected status, expected code
DISGUISES: dict[str, tuple[str, Callable[[], bytes], int, str]] = {
    "pdf": ("report.wav", lambda: PDF * 20, 415, "unsupported_media_type"),
    "zip": ("song.mp3", lambda: _zip({"song.txt": b"la la la" * 100}), 415, "unsupported_media_type"),
    "elf": ("song.wav", lambda: ELF, 415, "unsupported_media_type"),
    "html": ("song.mp3", lambda: HTML * 20, 415, "unsupported_media_type"),
    "svg": ("song.wav", lambda: SVG * 20, 415, "unsupported_media_type"),
    "png": ("song.wav", lambda: PNG + bytes(4000), 415, "unsupported_media_type"),
    "jpeg": ("song.mp3", lambda: JPEG * 50 + b"\xff\xd9", 415, "unsupported_media_type"),
    "php": ("song.mp3", lambda: PHP * 50, 415, "unsupported_media_type"),
    # Polyglots: something else first, real audio after it. FFmpeg's MP3 probe
    # finds the frames anywhere; the leading bytes decide.
    "jpeg+mp3": ("song.mp3", lambda: JPEG + _song_mp3(), 415, "unsupported_media_type"),
    "gif+mp3": ("song.mp3", lambda: GIF + _song_mp3(), 415, "unsupported_media_type"),
    "html+mp3": ("song.mp3", lambda: HTML + _song_mp3(), 415, "unsupported_media_type"),
    "png+mp3": ("song.mp3", lambda: PNG + _song_mp3(), 415, "unsupported_media_type"),
    "pdf+wav": ("song.wav", lambda: PDF + _song_wav(), 415, "unsupported_media_type"),
    "zip of mp3": ("song.mp3", lambda: _zip({"s.mp3": _song_mp3()}), 415, "unsupported_media_type"),
    "0 bytes": ("song.wav", lambda: b"", 422, "empty_audio"),
    "1 byte": ("song.wav", lambda: b"R", 415, "unsupported_media_type"),
    "wav cut in header": ("song.wav", lambda: _song_wav()[:20], 422, "audio_decode_failed"),
    "wav header only": ("song.wav", lambda: _song_wav()[:44], 422, "empty_audio"),
    "flac cut in streaminfo": (
        "song.flac",
        lambda: flac_bytes(sine(1.0, 8000), 8000)[:20],
        422,
        "audio_decode_failed",
    ),
    "mp3 cut in first frame": ("song.mp3", lambda: _song_mp3()[:100], 422, "audio_decode_failed"),
    "unknown wav codec": ("song.wav", lambda: riff_wav(bytes(16000), tag=0x1234), 422, "audio_decode_failed"),
    "zero channels": ("song.wav", lambda: riff_wav(bytes(16000), channels=0), 422, "unsupported_channels"),
    "nine channels": (
        "song.wav",
        lambda: riff_wav(bytes(9 * 2 * 8000), channels=9),
        422,
        "unsupported_channels",
    ),
    "1 Hz": ("song.wav", lambda: riff_wav(bytes(16000), sr=1), 422, "unsupported_sample_rate"),
    "4 kHz": ("song.wav", lambda: riff_wav(bytes(16000), sr=4000), 422, "unsupported_sample_rate"),
    "384 kHz": ("song.wav", lambda: riff_wav(bytes(16000), sr=384000), 422, "unsupported_sample_rate"),
    "10 MHz": (
        "song.wav",
        lambda: riff_wav(bytes(16000), sr=10_000_000),
        422,
        "unsupported_sample_rate",
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- helpers


def assert_failed_cleanly(app: Flask, client: FlaskClient, headers: dict, job: dict, code: str):
    """The job failed with ``code``; its folder holds the input and nothing else."""
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=headers).get_json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job["error"]
    assert job["result"] is None
    folder = Path(app.config["DATA_DIR"]) / "jobs" / job["id"]
    kept = [p for p in files_under(folder) if p != "work"]
    assert len(kept) == 1 and kept[0].startswith("input."), kept
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=headers).status_code == 204
    assert files_under(Path(app.config["DATA_DIR"]) / "jobs") == []
    assert files_under(Path(app.config["DATA_DIR"]) / "tmp") == []


@pytest.fixture
def small_app(eager_app: Callable[..., Flask]) -> Flask:
    """Jobs run inline; limits small enough to reach with generated files."""
    return eager_app(MAX_UPLOAD_MB=1, MAX_AUDIO_SECONDS=20.0)


@pytest.fixture
def small_client(small_app: Flask) -> FlaskClient:
    return small_app.test_client()


@pytest.fixture
def headers(small_client: FlaskClient) -> dict[str, str]:
    return register_and_login(small_client)


# --------------------------------------------------------------------------- size


def test_upload_over_the_limit_with_content_length(
    small_app: Flask, small_client: FlaskClient, headers: dict
) -> None:
    limit = 1024 * 1024
    # Just over MAX_UPLOAD_MB (caught while copying), and far over it (caught
    # from Content-Length before the body is read).
    for size in (limit + 1, 3 * limit):
        response = upload(small_client, headers, _song_wav()[:44] + bytes(size))
        assert_refused(response, 413, "file_too_large")
        assert "1 MB" in response.get_json()["message"]
        assert_nothing_kept(small_app)


class CountingInput:
    """Counts the request body bytes the application reads."""

    def __init__(self, stream: Any, counter: list[int]) -> None:
        self.stream, self.counter = stream, counter

    def read(self, *args: Any) -> bytes:
        data = self.stream.read(*args)
        self.counter[0] += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self.stream.readline(*args)
        self.counter[0] += len(data)
        return data


@contextmanager
def serve(app: Flask) -> Iterator[tuple[int, list[int]]]:
    """The app behind Werkzeug's HTTP server on a free loopback port, in a thread.

    Yields the port and a one-item list counting the body bytes the app read.
    """
    counter = [0]
    inner = app.wsgi_app

    def counting(environ: dict, start_response: Any) -> Any:
        environ["wsgi.input"] = CountingInput(environ["wsgi.input"], counter)
        return inner(environ, start_response)

    app.wsgi_app = counting  # type: ignore[method-assign]  # wrapped as a middleware would, restored below
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, counter
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        app.wsgi_app = inner  # type: ignore[method-assign]  # the app as it was


def post_chunked(port: int, path: str, headers: dict, parts: Iterator[bytes]) -> tuple[int, dict]:
    """POST a multipart body with ``Transfer-Encoding: chunked`` (no Content-Length).

    Stops sending as soon as the server answers, as a real client does when it
    is cut off. Returns the status and the JSON body.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=attack\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    received = b""
    answered = select.poll()  # not select(): this process may hold fds past 1024
    answered.register(sock, select.POLLIN)
    try:
        sock.sendall(head.encode())
        for part in parts:
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            if answered.poll(0):
                break  # the server answered before the body ended
        else:
            sock.sendall(b"0\r\n\r\n")
        # Done sending either way (Werkzeug's server drains an unread body
        # until the client stops, so the client must say it has).
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(body)


def _multipart(data_chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        b'--attack\r\nContent-Disposition: form-data; name="model"\r\n\r\nhpss\r\n'
        b'--attack\r\nContent-Disposition: form-data; name="file"; filename="song.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    yield from data_chunks
    yield b"\r\n--attack--\r\n"


def test_upload_over_the_limit_chunked(tmp_path: Path) -> None:
    """No Content-Length to check up front: the body is cut off while streaming."""
    app = make_app(tmp_path / "data", MAX_UPLOAD_MB=1)  # jobs would stay queued
    headers = register_and_login(app.test_client())
    limit = 1024 * 1024
    endless = (bytes(64 * 1024) for _ in range(10_000))  # 640 MB if nobody stops it
    with serve(app) as (port, read):
        status, body = post_chunked(port, "/api/v1/separations", headers, _multipart(endless))
    assert status == 413
    assert (body["code"], body["status"]) == ("file_too_large", 413)
    assert read[0] <= limit + 1024 * 1024  # the server stopped reading near the limit
    assert_nothing_kept(app)

    # Over MAX_UPLOAD_MB but under the body limit (which leaves room for the
    # form): refused while the file is copied.
    with serve(app) as (port, read):
        just_over = iter([bytes(limit + 1)])
        status, body = post_chunked(port, "/api/v1/separations", headers, _multipart(just_over))
    assert (status, body["code"]) == (413, "file_too_large")
    assert_nothing_kept(app)

    # The same way of sending works for an upload within the limit.
    song = wav_bytes(sine_and_clicks(seconds=1.0))
    with serve(app) as (port, read):
        pieces = iter([song[i : i + 10_000] for i in range(0, len(song), 10_000)])
        status, body = post_chunked(port, "/api/v1/separations", headers, _multipart(pieces))
    assert status == 202, body
    assert body["input"]["duration"] == pytest.approx(1.0, abs=0.01)


def test_client_that_disconnects_mid_upload_leaves_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data")
    headers = register_and_login(app.test_client())
    with serve(app) as (port, read):
        for length in (f"Content-Length: {10 * 1024 * 1024}\r\n", "Transfer-Encoding: chunked\r\n"):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(
                (
                    "POST /api/v1/separations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: {headers['Authorization']}\r\n"
                    f"Content-Type: multipart/form-data; boundary=attack\r\n{length}\r\n"
                ).encode()
            )
            body = b"".join(_multipart(iter([_song_wav() + bytes(500_000)])))[:-100]
            if "chunked" in length:
                body = f"{len(body):x}\r\n".encode() + body + b"\r\n"
            sock.sendall(body)
            sock.close()  # gone, half-way through the file
        # Wait until the server has read all that was sent and given up on it.
        deadline, seen = time.monotonic() + 20, -1
        while (read[0] != seen or read[0] < 500_000) and time.monotonic() < deadline:
            seen = read[0]
            time.sleep(0.5)
        assert_nothing_kept(app)
    assert app.test_client().get("/healthz").status_code == 200


def test_form_limits(small_app: Flask, small_client: FlaskClient, headers: dict) -> None:
    # 1,001 parts (Werkzeug's default limit is 1,000; ours is far lower).
    form = {f"field{i}": "x" for i in range(1000)}
    response = upload(small_client, headers, _song_wav(), **form)
    assert_refused(response, 413, "form_too_large")
    assert str(small_app.config["MAX_FORM_PARTS"]) in response.get_json()["message"]
    assert_nothing_kept(small_app)
    # A text field larger than MAX_FORM_MEMORY_SIZE.
    response = upload(small_client, headers, _song_wav(), model="x" * (200 * 1024))
    assert_refused(response, 413, "form_too_large")
    assert_nothing_kept(small_app)
    # Non-upload bodies are read into memory whole: they get far less room.
    response = small_client.post(
        "/api/v1/auth/login", json={"email": "a@example.com", "password": "x" * (2 * 1024**2)}
    )
    assert_refused(response, 413, "body_too_large")
    # Within the limits, the same form works.
    assert upload(small_client, headers, _song_wav()).status_code == 202


# --------------------------------------------------------------------------- type


@pytest.mark.parametrize("case", sorted(DISGUISES))
def test_disguised_and_broken_files_are_refused(
    small_app: Flask, small_client: FlaskClient, headers: dict, case: str
) -> None:
    name, make, status, code = DISGUISES[case]
    content_type = "audio/mpeg" if name.endswith(".mp3") else "audio/wav"
    response = upload(small_client, headers, make(), name=name, content_type=content_type)
    assert_refused(response, status, code)
    assert_nothing_kept(small_app)


# FFmpeg muxer, encoder: every format FFmpeg can write here, so the content
# check refuses disguises without refusing real files.
REAL_FORMATS = [
    ("wav", "pcm_s16le"), ("w64", "pcm_s16le"), ("aiff", "pcm_s16be"), ("caf", "pcm_s16le"),
    ("au", "pcm_s16be"), ("voc", "pcm_u8"), ("flac", "flac"), ("mp3", "libmp3lame"),
    ("mp2", "mp2"), ("adts", "aac"), ("latm", "aac"), ("ac3", "ac3"), ("eac3", "eac3"),
    ("ipod", "aac"), ("mov", "aac"), ("3gp", "aac"), ("matroska", "flac"), ("webm", "libopus"),
    ("opus", "libopus"), ("wv", "wavpack"), ("tta", "tta"), ("avi", "pcm_s16le"),
    ("flv", "aac"), ("mpegts", "mp2"), ("mpeg", "mp2"), ("nut", "pcm_s16le"), ("rm", "ac3"),
]  # fmt: skip


def write_with_ffmpeg(path: Path, muxer: str, codec: str, seconds: float = 1.0) -> Path:
    rate = 48000 if codec == "libopus" else 44100
    samples = np.stack([sine(seconds, rate)] * 2)
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        size = stream.codec_context.frame_size or 1024
        samples = np.pad(samples, ((0, 0), (0, -samples.shape[1] % size)))
        for start in range(0, samples.shape[1], size):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + size]),
                format="fltp",
                layout="stereo",
            )
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize(("muxer", "codec"), REAL_FORMATS)
def test_real_audio_of_every_format_is_accepted(tmp_path: Path, muxer: str, codec: str) -> None:
    info = audio.probe(write_with_ffmpeg(tmp_path / "song", muxer, codec))
    assert info.channels == 2 and info.duration == pytest.approx(1.0, abs=0.1)


def test_tags_and_padding_before_the_audio_are_allowed(tmp_path: Path) -> None:
    from mutagen.id3 import APIC, ID3, TIT2

    frames = _song_mp3()
    cases = {"padded.mp3": bytes(3000) + frames}
    for name, data in (("tagged.mp3", frames), ("tagged.flac", flac_bytes(sine(1, 8000), 8000))):
        path = tmp_path / name
        path.write_bytes(data)
        tags = ID3()
        tags.add(TIT2(encoding=3, text="Song"))
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="", data=PNG + bytes(300_000)))
        tags.save(path, v2_version=3)  # an ID3v2 tag with a 300 KB cover in front
        cases[name] = path.read_bytes()
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert audio.probe(path).duration > 0.9, name


def test_audio_with_trailing_data_is_audio(
    small_app: Flask, small_client: FlaskClient, headers: dict
) -> None:
    """A WAV with a zip appended (a GIFAR-style polyglot) is a WAV: only its
    decoded samples are used, and the stored input is never served back."""
    response = upload(small_client, headers, _song_wav() + _zip({"x.txt": b"hi"}))
    assert response.status_code == 202, response.get_json()
    job = small_client.get(response.headers["Location"], headers=headers).get_json()
    assert job["status"] == "succeeded"
    names = [f["name"] for f in job["result"]["files"]]
    assert all(n in ("harmonic.wav", "percussive.wav") for n in names)
    for name in ("input.wav", "../input.wav", "input.bin"):
        got = small_client.get(f"/api/v1/jobs/{job['id']}/files/{name}", headers=headers)
        assert got.status_code == 404


def test_only_the_first_audio_track_is_used(
    small_app: Flask, small_client: FlaskClient, headers: dict, tmp_path: Path
) -> None:
    response = upload(small_client, headers, two_track_mkv(tmp_path / "two.mkv"), name="two.mkv")
    assert response.status_code == 202, response.get_json()
    meta = response.get_json()["input"]
    assert (meta["format"], meta["sample_rate"], meta["channels"]) == ("matroska", 8000, 1)
    # Matroska states only the whole file's duration, which covers the longer
    # track: an over-estimate, so never a way around the limit.
    assert meta["duration"] == pytest.approx(3.0, abs=0.05)
    job = small_client.get(response.headers["Location"], headers=headers).get_json()
    assert job["status"] == "succeeded", job
    assert job["result"]["sample_rate"] == 8000
    assert [f["duration"] for f in job["result"]["files"]] == [pytest.approx(1.0, abs=0.01)] * 2


# --------------------------------------------------------------------------- budget


@pytest.fixture(scope="module")
def ten_hours_of_silence(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 10-hour FLAC (8 kHz mono silence): under a megabyte."""
    path = tmp_path_factory.mktemp("long") / "ten-hours.flac"
    block = np.zeros(8000 * 600, dtype=np.int16)
    with sf.SoundFile(path, "w", 8000, 1, "PCM_16", format="FLAC") as handle:
        for _ in range(60):
            handle.write(block)
    return path.read_bytes()


def test_ten_hours_of_silence_is_refused_without_decoding(
    small_app: Flask,
    small_client: FlaskClient,
    headers: dict,
    ten_hours_of_silence: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(ten_hours_of_silence) < 1024 * 1024
    decoded = []

    def spying(real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            decoded.append(args)
            return real(*args, **kwargs)

        return spy

    # Every decode in the service goes through these two (app/audio/decoding.py).
    for name in ("decode", "iter_decode"):
        monkeypatch.setattr(audio, name, spying(getattr(audio, name)))
    monkeypatch.setattr(probing, "packet_duration", lambda *a: pytest.fail("demuxed it all"))
    start = time.perf_counter()
    response = upload(small_client, headers, ten_hours_of_silence, name="long.flac")
    elapsed = time.perf_counter() - start
    assert_refused(response, 422, "audio_too_long")
    assert response.get_json()["errors"] == {"duration": 36000.0, "max_seconds": 20.0}
    assert decoded == []  # the duration came from the header; nothing was decoded
    assert elapsed < 1.0  # the bound: a header read, not a decode
    assert_nothing_kept(small_app)


def test_decoded_size_budget(tmp_path: Path) -> None:
    """3 s of 8-channel 48 kHz is a small file but 4.6 MB of float samples."""
    app = make_app(tmp_path / "data", MAX_DECODED_MB=4)
    client = app.test_client()
    headers = register_and_login(client)
    samples = np.zeros((48000 * 3, 8), dtype=np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 48000, format="FLAC", subtype="PCM_16")
    response = upload(client, headers, buffer.getvalue(), name="big.flac")
    assert_refused(response, 422, "audio_too_large")
    assert response.get_json()["errors"]["max_decoded_mb"] == 4
    assert_nothing_kept(app)
    # Two seconds fit.
    buffer = io.BytesIO()
    sf.write(buffer, samples[: 48000 * 2], 48000, format="FLAC", subtype="PCM_16")
    assert upload(client, headers, buffer.getvalue(), name="ok.flac").status_code == 202


def test_eight_channels_are_accepted_and_downmixed(
    small_client: FlaskClient, headers: dict
) -> None:
    samples = np.stack([sine(1.0, 8000, 220.0 * (i + 1)) for i in range(8)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="WAV", subtype="PCM_16")
    response = upload(small_client, headers, buffer.getvalue())
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["input"]["channels"] == 8
    job = small_client.get(response.headers["Location"], headers=headers).get_json()
    assert job["status"] == "succeeded", job
    assert {f["channels"] for f in job["result"]["files"]} == {2}


@pytest.mark.parametrize("channels", [3, 6, 8])
def test_decoding_many_channels_never_crashes_the_process(tmp_path: Path, channels: int) -> None:
    """PyAV crashes the whole process (SIGSEGV) when handed planar frames of 8 or
    more channels; a worker must survive any allowed input, so this runs in a
    child process and checks how it ended."""
    path = tmp_path / "many.wav"
    path.write_bytes(riff_wav(bytes(channels * 2 * 8000), channels=channels))
    code = (
        "import sys; from app import audio\n"
        f"x, sr = audio.decode(sys.argv[1])\nassert x.shape == ({channels}, 8000), x.shape\n"
        "blocks = list(audio.iter_decode(sys.argv[1], block_frames=1000))\n"
        f"assert len(blocks) == 8 and blocks[0].shape == ({channels}, 1000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


# --------------------------------------------------------------------------- lies


def _lying_wav() -> bytes:
    """MP3 in WAV whose data size says "unknown" and whose byte rate is forged:
    the header says 0.6 s, the file holds 60 s."""
    frames = mp3_frames(np.zeros(22050 * 60, np.float32), 22050, 32)
    return riff_wav(frames, tag=0x55, sr=22050, bits=0, size=0xFFFFFFFF, byte_rate=400_000)


def _mp3_without_xing() -> bytes:
    """Two seconds at 320 kbit/s, then a minute at 32: with no Xing header the
    duration is estimated from the bitrate at the start (about 8 s)."""
    loud = np.random.default_rng(0).standard_normal(44100 * 2).astype(np.float32) * 0.3
    return mp3_frames(loud, 44100, 320) + mp3_frames(np.zeros(44100 * 60, np.float32), 44100, 32)


def _flac_short_total() -> bytes:
    """STREAMINFO says 1 s; the frames hold 60 s."""
    return forge_streaminfo(flac_bytes(np.zeros(8000 * 60, np.int16), 8000), total=8000)


def _flac_forged_rate() -> bytes:
    """STREAMINFO claims 655,350 Hz and 8 channels (so 60 s look like 0.7 s);
    the frames are 8 kHz mono."""
    flac = flac_bytes(np.zeros(8000 * 60, np.int16), 8000)
    return forge_streaminfo(flac, sample_rate=655_350, channels=8)


LIES = {
    "wav data size": ("lie.wav", _lying_wav),
    "mp3 without xing": ("lie.mp3", _mp3_without_xing),
    "flac total samples": ("lie.flac", _flac_short_total),
    "flac rate and channels": ("lie.flac", _flac_forged_rate),
}


@pytest.mark.parametrize("case", sorted(LIES))
def test_headers_that_lie_fail_the_job_not_the_worker(
    small_app: Flask, small_client: FlaskClient, headers: dict, case: str
) -> None:
    name, make = LIES[case]
    response = upload(small_client, headers, make(), name=name)
    assert response.status_code == 202, response.get_json()  # the headers look fine
    assert response.get_json()["input"]["duration"] < 20.0
    assert_failed_cleanly(small_app, small_client, headers, response.get_json(), "audio_too_long")


def test_lying_headers_stop_whole_file_decoding_too(
    small_app: Flask, small_client: FlaskClient, headers: dict
) -> None:
    """Analysis decodes the whole file into memory: the count stops it as well."""
    response = upload(
        small_client, headers, _flac_short_total(), name="lie.flac", endpoint="/api/v1/analyses"
    )
    assert response.status_code == 202, response.get_json()
    assert_failed_cleanly(small_app, small_client, headers, response.get_json(), "audio_too_long")


# --------------------------------------------------------------------------- samples


def _all_numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _all_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _all_numbers(item)


def _poisoned(seconds: float = 2.0, sr: int = 8000) -> np.ndarray:
    samples = np.stack([sine(seconds, sr), sine(seconds, sr, 660.0)], axis=1)
    samples[1000:1500, 0] = np.nan
    samples[3000, 1] = np.inf
    samples[3001, 1] = -np.inf
    samples[5000:5010, :] = 3e38
    return samples


def test_nan_and_inf_samples_become_finite_output(small_client: FlaskClient, headers: dict) -> None:
    """Documented: NaN decodes as silence, infinities and absurd values are clamped."""
    response = upload(small_client, headers, float_wav(_poisoned(), 8000), output_format="wav")
    assert response.status_code == 202, response.get_json()
    job = small_client.get(response.headers["Location"], headers=headers).get_json()
    assert job["status"] == "succeeded", job
    for entry in job["result"]["files"]:
        stem = small_client.get(entry["url"], headers=headers)
        samples, _ = sf.read(io.BytesIO(stem.data), dtype="float32")
        assert np.isfinite(samples).all(), entry["name"]
        assert np.abs(samples).max() <= 1.0


def test_nan_samples_give_a_finite_analysis(small_client: FlaskClient, headers: dict) -> None:
    response = upload(
        small_client, headers, float_wav(_poisoned(4.0), 8000), endpoint="/api/v1/analyses"
    )
    assert response.status_code == 202, response.get_json()
    raw = small_client.get(response.headers["Location"], headers=headers).get_data(as_text=True)
    assert "NaN" not in raw and "Infinity" not in raw
    job = json.loads(raw)
    assert job["status"] == "succeeded", job
    assert all(math.isfinite(x) for x in _all_numbers(job["result"]))
