"""Probe, decode and encode, on audio generated in each test (no binary fixtures)."""

from __future__ import annotations

import struct
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from app import audio
from app.audio import AudioError


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_sf(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    """Write (channels, samples) with soundfile."""
    sf.write(path, np.atleast_2d(data).T, sr, subtype=subtype)
    return path


def write_av(path: Path, fmt: str, codec: str, data: np.ndarray, sr: int) -> Path:
    """Encode (channels, samples) with PyAV, as a phone or an editor would."""
    data = np.atleast_2d(data).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr, layout="mono" if len(data) == 1 else "stereo")
        for start in range(0, data.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, start : start + 4096]),
                format="fltp",
                layout=stream.layout.name,
            )
            frame.sample_rate = sr
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def wav_bytes(tag: int, data: bytes, *, sr: int = 8000, channels: int = 1, size=None) -> bytes:
    """A hand-made WAV whose header can claim anything."""
    block = channels * 2
    fmt = struct.pack("<HHIIHH", tag, channels, sr, sr * block, block, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data) if size is None else size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def assert_error(exc: pytest.ExceptionInfo[AudioError], code: str, status: int) -> None:
    assert (exc.value.code, exc.value.status) == (code, status)


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize(
    ("name", "make", "fmt", "codec", "sr", "channels"),
    [
        ("a.wav", lambda p, x, sr: write_sf(p, x, sr), "wav", "pcm_s16le", 44100, 2),
        ("a.flac", lambda p, x, sr: write_sf(p, x, sr), "flac", "flac", 48000, 1),
        ("a.mp3", lambda p, x, sr: write_av(p, "mp3", "mp3", x, sr), "mp3", "mp3", 44100, 2),
        ("a.ogg", lambda p, x, sr: write_av(p, "ogg", "libopus", x, sr), "ogg", "opus", 48000, 2),
        ("a.m4a", lambda p, x, sr: write_av(p, "mp4", "aac", x, sr), "mp4", "aac", 44100, 1),
    ],
)
def test_probe_formats(tmp_path, name, make, fmt, codec, sr, channels):
    x = np.tile(sine(1.5, sr), (channels, 1))
    path = make(tmp_path / name, x, sr)
    info = audio.probe(path, max_seconds=10)
    assert (info.format, info.codec, info.sample_rate, info.channels) == (fmt, codec, sr, channels)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    assert info.to_dict() == {
        "format": fmt,
        "codec": codec,
        "duration": info.duration,
        "sample_rate": sr,
        "channels": channels,
    }
    decoded, rate = audio.decode(path)
    assert decoded.shape[0] == channels and rate == sr
    assert decoded.shape[1] / sr == pytest.approx(1.5, abs=0.05)


def test_probe_rejects_long_silence_quickly(tmp_path):
    path = tmp_path / "long.flac"
    minute = np.zeros(8000 * 60, dtype=np.int16)
    with sf.SoundFile(path, "w", 8000, 1, "PCM_16", format="FLAC") as handle:
        for _ in range(120):
            handle.write(minute)
    start = time.perf_counter()
    with pytest.raises(AudioError) as exc:
        audio.probe(path, max_seconds=3600)
    assert time.perf_counter() - start < 0.5
    assert_error(exc, "audio_too_long", 422)
    assert exc.value.errors == {"duration": 7200.0, "max_seconds": 3600}
    assert audio.probe(path).duration == pytest.approx(7200)


def test_packet_duration_fallback(tmp_path):
    """Files whose headers give no duration are measured by demuxing alone."""
    path = write_av(tmp_path / "a.ogg", "ogg", "libopus", sine(2.0, 48000)[None], 48000)
    with av.open(str(path)) as container:
        seconds = audio._packet_duration(container, container.streams.audio[0], None)
    assert seconds == pytest.approx(2.0, abs=0.05)
    with av.open(str(path)) as container:
        stopped = audio._packet_duration(container, container.streams.audio[0], 0.5)
    assert 0.5 < stopped < 1.0


# --------------------------------------------------------------------------- decode


def test_decode_16bit_wav_round_trip(tmp_path):
    x = sine(1.0, 44100)
    path = write_sf(tmp_path / "a.wav", x, 44100)
    decoded, sr = audio.decode(path)
    assert sr == 44100 and decoded.dtype == np.float32 and decoded.shape == (1, 44100)
    assert np.max(np.abs(decoded[0] - x)) < 1e-3


def test_decode_resamples_with_soxr(tmp_path):
    x = sine(2.0, 48000)
    path = write_sf(tmp_path / "a.wav", np.stack([x, x]), 48000)
    decoded, sr = audio.decode(path, sample_rate=44100)
    assert sr == 44100 and decoded.shape[0] == 2
    assert abs(decoded.shape[1] - 2 * 44100) <= 1
    spectrum = np.abs(np.fft.rfft(decoded[0]))
    peak = np.argmax(spectrum) * 44100 / decoded.shape[1]
    assert peak == pytest.approx(440, abs=1)
    middle = decoded[0, 1000:-1000]  # away from the resampler's edges
    assert np.max(np.abs(middle - sine(2.0, 44100)[1000:-1000])) < 2e-3


def test_decode_mono_to_stereo_duplicates(tmp_path):
    x = sine(0.5, 22050)
    path = write_sf(tmp_path / "mono.wav", x, 22050, "FLOAT")
    decoded, sr = audio.decode(path, channels=2)
    assert decoded.shape == (2, x.size) and sr == 22050
    np.testing.assert_array_equal(decoded[0], x)
    np.testing.assert_array_equal(decoded[1], x)


def test_decode_downmixes_without_clipping(tmp_path):
    x = sine(0.5, 44100, amp=0.9)
    six = np.tile(x, (6, 1))
    path = write_sf(tmp_path / "six.wav", six, 44100, "FLOAT")
    assert audio.probe(path).channels == 6
    stereo, _ = audio.decode(path, channels=2)
    assert stereo.shape == (2, x.size)
    assert np.all(np.isfinite(stereo)) and np.max(np.abs(stereo)) <= 0.9 + 1e-4
    assert np.max(np.abs(stereo)) > 0.3
    kept, _ = audio.decode(path)
    assert kept.shape == (6, x.size)
    mono, _ = audio.decode(
        write_sf(tmp_path / "st.wav", np.stack([x, x]), 44100, "FLOAT"), channels=1
    )
    np.testing.assert_allclose(mono[0], x, atol=1e-5)  # stereo to mono averages


def test_decode_enforces_max_seconds_while_decoding(tmp_path):
    samples = (sine(10.0, 8000) * 32767).astype("<i2").tobytes()
    path = tmp_path / "lies.wav"
    path.write_bytes(wav_bytes(1, samples, size=0xFFFFFFFF))  # data size "unknown"
    with pytest.raises(AudioError) as exc:
        audio.decode(path, max_seconds=3)
    assert_error(exc, "audio_too_long", 422)
    assert audio.decode(path, max_seconds=11)[0].shape == (1, 80000)


# --------------------------------------------------------------------------- encode


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "codec"),
    [
        ("wav", "16", "pcm_s16le"),
        ("wav", "24", "pcm_s24le"),
        ("wav", "32f", "pcm_f32le"),
        ("flac", "16", "flac"),
        ("flac", "24", "flac"),
    ],
)
def test_encode_lossless(tmp_path, fmt, bit_depth, codec):
    x = np.stack([sine(1.0, 44100), sine(1.0, 44100, 660)])
    path = tmp_path / f"out.{fmt}"
    audio.encode(x, 44100, path, format=fmt, bit_depth=bit_depth)
    info = audio.probe(path)
    assert (info.format, info.codec, info.sample_rate, info.channels) == (fmt, codec, 44100, 2)
    decoded, _ = audio.decode(path)
    assert decoded.shape == x.shape
    assert np.max(np.abs(decoded - x)) < (1e-6 if bit_depth == "32f" else 1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_encode_clips_pcm_but_not_float(tmp_path):
    x = np.array([[0.0, 1.5, -2.0, np.nan, 0.25]], dtype=np.float32)
    audio.encode(x, 8000, tmp_path / "a.wav", bit_depth="16")
    pcm, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(pcm, [0.0, 1.0, -1.0, 0.0, 0.25], atol=1e-4)
    audio.encode(x, 8000, tmp_path / "f.wav", bit_depth="32f")
    flt, _ = sf.read(tmp_path / "f.wav", dtype="float32")
    np.testing.assert_array_equal(flt, [0.0, 1.5, -2.0, 0.0, 0.25])


@pytest.mark.parametrize(
    ("sr", "channels", "bitrate", "out_sr"),
    [(44100, 2, 320, 44100), (48000, 2, 96, 48000), (22050, 1, 128, 22050), (96000, 1, 192, 48000)],
)
def test_encode_mp3(tmp_path, sr, channels, bitrate, out_sr):
    x = np.tile(sine(1.0, sr), (channels, 1))
    path = tmp_path / "out.mp3"
    audio.encode(x, sr, path, format="mp3", mp3_bitrate=bitrate)
    info = audio.probe(path)
    assert (info.format, info.codec) == ("mp3", "mp3")
    assert (info.sample_rate, info.channels) == (out_sr, channels)
    decoded, rate = audio.decode(path)
    assert rate == out_sr and decoded.shape[0] == channels
    assert 0 <= decoded.shape[1] - out_sr <= 2 * 1152  # encoder delay and frame padding


def test_encode_rejects_bad_arguments(tmp_path):
    x = np.zeros((2, 100), np.float32)
    for kwargs in ({"format": "ogg"}, {"bit_depth": "8"}, {"format": "mp3", "mp3_bitrate": 100}):
        with pytest.raises(ValueError):
            audio.encode(x, 44100, tmp_path / "x", **kwargs)
    with pytest.raises(ValueError):
        audio.encode(np.zeros((3, 100), np.float32), 44100, tmp_path / "x.mp3", format="mp3")
    with pytest.raises(ValueError):
        audio.encode(np.zeros((2, 2, 2), np.float32), 44100, tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []


def test_constants():
    assert set(audio.CONTENT_TYPES) == set(audio.OUTPUT_FORMATS)
    assert audio.CONTENT_TYPES["mp3"] == "audio/mpeg"


# --------------------------------------------------------------------------- hostile input


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(range(17))


def _zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("song.mp3", "not really")
    return path.read_bytes()


NOT_MEDIA = {
    "empty.wav": lambda p: b"",
    "text.mp3": lambda p: b"This is not an mp3, just some words.\n" * 20,
    "page.mp3": lambda p: b"<!DOCTYPE html><html><body><p>hello</p></body></html>\n",
    "image.png": lambda p: _png(),
    "doc.pdf": lambda p: b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 10,
    "archive.zip": _zip,
    "prog.elf": lambda p: b"\x7fELF\x02\x01\x01" + bytes(500),
    # Leading zero byte: junk that happens to start with an MPEG sync word counts as
    # damaged audio (422), by design.
    "noise.bin": lambda p: b"\x00" + np.random.default_rng(7).bytes(20000),
    "list.m3u8": lambda p: b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    "list.ffconcat": lambda p: b"ffconcat version 1.0\nfile other.wav\n",
    "notes.txt": lambda p: b"hello\n" * 100,
}


@pytest.mark.parametrize("name", sorted(NOT_MEDIA))
def test_not_media_is_415(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(NOT_MEDIA[name](tmp_path / "scratch"))
    for call in (audio.probe, audio.decode):
        with pytest.raises(AudioError) as exc:
            call(path)
        assert_error(exc, "unsupported_media_type", 415)


def test_video_without_audio_is_415(tmp_path):
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError) as exc:
        audio.probe(path)
    assert_error(exc, "unsupported_media_type", 415)


def test_broken_audio_is_422(tmp_path):
    good = write_sf(tmp_path / "good.wav", sine(1.0, 8000), 8000)
    cases = {
        "truncated.wav": good.read_bytes()[:30],  # cut inside the header
        "unknown_codec.wav": wav_bytes(0x1234, bytes(16000)),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for call in (audio.probe, audio.decode):
            with pytest.raises(AudioError) as exc:
                call(path)
            assert_error(exc, "audio_decode_failed", 422)


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError):
        audio.probe(tmp_path / "missing.wav")
    with pytest.raises(AudioError):
        audio.decode(tmp_path)


def test_no_samples_is_empty_audio(tmp_path):
    path = tmp_path / "silent.wav"
    path.write_bytes(wav_bytes(1, b""))
    for call in (audio.probe, audio.decode):
        with pytest.raises(AudioError) as exc:
            call(path)
        assert_error(exc, "empty_audio", 422)


def test_sample_rate_out_of_range_is_422(tmp_path):
    path = tmp_path / "slow.wav"
    path.write_bytes(wav_bytes(1, bytes(8000), sr=4000))
    with pytest.raises(AudioError) as exc:
        audio.probe(path)
    assert_error(exc, "audio_decode_failed", 422)


def test_error_status_follows_code():
    assert AudioError("x", code="unsupported_media_type").status == 415
    assert AudioError("x", code="empty_audio").status == 422
    assert AudioError("x").to_dict()["code"] == "audio_decode_failed"
