"""Probe, decode and encode, on audio generated in each test (no binary fixtures)."""

from __future__ import annotations

import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from app import audio
from app.audio import AudioError, probing


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
        seconds = probing.packet_duration(container, container.streams.audio[0], None)
    assert seconds == pytest.approx(2.0, abs=0.05)
    with av.open(str(path)) as container:
        stopped = probing.packet_duration(container, container.streams.audio[0], 0.5)
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
    assert_error(exc, "unsupported_sample_rate", 422)


def test_error_status_follows_code():
    assert AudioError("x", code="unsupported_media_type").status == 415
    assert AudioError("x", code="empty_audio").status == 422
    assert AudioError("x").to_dict()["code"] == "audio_decode_failed"


# --------------------------------------------------------------------------- streaming


def collect(blocks, block_frames: int) -> np.ndarray:
    """Concatenate iter_decode blocks, checking their sizes on the way."""
    blocks = list(blocks)
    assert blocks, "iter_decode yielded nothing"
    for block in blocks[:-1]:
        assert block.dtype == np.float32 and block.ndim == 2
        assert block.shape[1] == block_frames
    assert 0 < blocks[-1].shape[1] <= block_frames
    assert blocks[-1].dtype == np.float32
    assert len({block.shape[0] for block in blocks}) == 1
    return np.concatenate(blocks, axis=1)


def _stereo(seconds: float, sr: int) -> np.ndarray:
    return np.stack([sine(seconds, sr), sine(seconds, sr, 660, 0.3)])


STREAM_CASES = {
    # name: (make file, decode kwargs, block_frames)
    "48k->44.1k": (
        lambda p: write_sf(p / "a.wav", _stereo(2.0, 48000), 48000, "FLOAT"),
        {"sample_rate": 44100},
        4096,
    ),
    "no rate change": (
        lambda p: write_sf(p / "a.wav", _stereo(2.0, 48000), 48000),
        {"sample_rate": 48000},
        10000,
    ),
    "mono->stereo": (
        lambda p: write_sf(p / "a.wav", sine(1.0, 22050), 22050, "FLOAT"),
        {"channels": 2},
        3000,
    ),
    "6ch->stereo": (
        lambda p: write_sf(p / "a.wav", np.tile(sine(1.0, 44100, amp=0.9), (6, 1)), 44100, "FLOAT"),
        {"channels": 2},
        44100,  # divides the length: no short last block
    ),
    "6ch kept": (
        lambda p: write_sf(p / "a.wav", np.tile(sine(0.5, 44100), (6, 1)), 44100, "FLOAT"),
        {},
        1,
    ),
    "mp3": (
        lambda p: write_av(p / "a.mp3", "mp3", "mp3", _stereo(2.0, 44100), 44100),
        {},
        5000,
    ),
    "mp3 48k->44.1k mono": (
        lambda p: write_av(p / "a.mp3", "mp3", "mp3", _stereo(2.0, 48000), 48000),
        {"sample_rate": 44100, "channels": 1},
        7777,
    ),
    "flac": (
        lambda p: write_sf(p / "a.flac", sine(2.0, 48000), 48000),
        {"sample_rate": 16000},
        2048,
    ),
    "ogg": (
        lambda p: write_av(p / "a.ogg", "ogg", "libopus", _stereo(2.0, 48000), 48000),
        {},
        1 << 20,  # longer than the file: a single block
    ),
}


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_iter_decode_equals_decode(tmp_path, case):
    make, kwargs, block_frames = STREAM_CASES[case]
    path = make(tmp_path)
    whole, rate = audio.decode(path, **kwargs)
    streamed = collect(audio.iter_decode(path, block_frames=block_frames, **kwargs), block_frames)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-6)
    assert rate == kwargs.get("sample_rate", rate)


def test_iter_decode_resamples_like_one_shot_soxr(tmp_path):
    x = _stereo(1.3, 48000)
    path = write_sf(tmp_path / "a.wav", x, 48000, "FLOAT")
    expected = soxr.resample(x.T, 48000, 44100, quality="HQ").T
    streamed = collect(audio.iter_decode(path, sample_rate=44100, block_frames=1000), 1000)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-5)
    whole, _ = audio.decode(path, sample_rate=44100)
    assert whole.shape == expected.shape


def test_iter_decode_enforces_max_seconds_mid_stream(tmp_path):
    samples = (sine(10.0, 8000) * 32767).astype("<i2").tobytes()
    path = tmp_path / "lies.wav"
    path.write_bytes(wav_bytes(1, samples, size=0xFFFFFFFF))  # data size "unknown"
    blocks = audio.iter_decode(path, block_frames=8000, max_seconds=3)
    received = []
    with pytest.raises(AudioError) as exc:
        for block in blocks:
            received.append(block)
    assert_error(exc, "audio_too_long", 422)
    assert 2 <= len(received) <= 3  # blocks before the limit came through, then it stopped
    full = collect(audio.iter_decode(path, block_frames=8000, max_seconds=11), 8000)
    assert full.shape == (1, 80000)


def test_iter_decode_errors(tmp_path):
    good = write_sf(tmp_path / "good.wav", sine(0.1, 8000), 8000)
    for bad in (0, -5, 1.5, True, None):
        with pytest.raises(ValueError):
            audio.iter_decode(good, block_frames=bad)  # at the call, not at next()
    with pytest.raises(ValueError):
        audio.iter_decode(good, channels=3, block_frames=10)
    with pytest.raises(ValueError):
        audio.iter_decode(good, sample_rate=0, block_frames=10)

    silent = tmp_path / "silent.wav"
    silent.write_bytes(wav_bytes(1, b""))
    blocks = audio.iter_decode(silent, block_frames=10)
    with pytest.raises(AudioError) as exc:
        next(blocks)  # empty_audio comes from the first next()
    assert_error(exc, "empty_audio", 422)

    text = tmp_path / "text.mp3"
    text.write_bytes(b"not audio\n" * 50)
    with pytest.raises(AudioError) as exc:
        next(audio.iter_decode(text, block_frames=10))
    assert_error(exc, "unsupported_media_type", 415)
    with pytest.raises(AudioError) as exc:
        next(audio.iter_decode(tmp_path / "missing.wav", block_frames=10))
    assert_error(exc, "audio_decode_failed", 422)


def test_iter_decode_can_stop_early(tmp_path):
    path = write_sf(tmp_path / "a.wav", sine(1.0, 8000), 8000)
    blocks = audio.iter_decode(path, block_frames=100)
    assert next(blocks).shape == (1, 100)
    blocks.close()  # closes the file
    with pytest.raises(StopIteration):
        next(blocks)


def test_iter_decode_memory_does_not_grow_with_length(tmp_path):
    """20 minutes of stereo 44.1 kHz: decode() needs > 400 MB, iter_decode a few blocks."""
    sr = 44100
    minute = (300 * np.sin(2 * np.pi * 440 * np.arange(sr * 60) / sr)).astype(np.int16)
    minute = np.stack([minute, minute], axis=1)
    path = tmp_path / "long.flac"
    # Levels below 0.4 use 1152-frame FLAC blocks: 4x the frames, which tracemalloc's
    # per-allocation cost makes 3x slower to decode here.
    with sf.SoundFile(path, "w", sr, 2, "PCM_16", format="FLAC", compression_level=0.5) as handle:
        for _ in range(20):
            handle.write(minute)
    del minute
    block_frames = sr * 10
    frames = blocks = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for block in audio.iter_decode(path, block_frames=block_frames):
            frames += block.shape[1]
            blocks += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 20 * 60 * sr and blocks == 120
    assert peak < 60e6, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "tolerance"),
    [
        ("wav", "16", 1e-4),
        ("wav", "24", 1e-6),
        ("wav", "32f", 0),
        ("flac", "16", 1e-4),
        ("flac", "24", 1e-6),
    ],
)
def test_audio_writer_lossless(tmp_path, fmt, bit_depth, tolerance):
    x = _stereo(1.0, 44100)
    path = tmp_path / f"out.{fmt}"
    with audio.AudioWriter(path, 44100, 2, format=fmt, bit_depth=bit_depth) as writer:
        for start, stop in ((0, 1), (1, 20000), (20000, 20000), (20000, 44100)):
            writer.write(x[:, start:stop])
        assert writer.frames_written == 44100
        assert not path.exists()  # only once closed
    assert writer.closed and writer.frames_written == 44100
    decoded, rate = audio.decode(path)
    assert rate == 44100 and decoded.shape == x.shape
    assert np.max(np.abs(decoded - x)) <= tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize(
    ("sr", "channels", "bitrate", "out_sr"),
    [
        (44100, 2, 320, 44100),
        (22050, 1, 128, 22050),
        (96000, 1, 192, 48000),
        (50000, 2, 256, 48000),
    ],
)
def test_audio_writer_mp3(tmp_path, sr, channels, bitrate, out_sr):
    x = np.tile(sine(1.0, sr), (channels, 1))
    path = tmp_path / "out.mp3"
    with audio.AudioWriter(path, sr, channels, format="mp3", mp3_bitrate=bitrate) as writer:
        for start in range(0, x.shape[1], 10007):
            writer.write(x[:, start : start + 10007])
    assert writer.frames_written == sr  # input frames, before LAME's rate
    info = audio.probe(path)
    assert (info.sample_rate, info.channels) == (out_sr, channels)
    decoded, rate = audio.decode(path)
    assert rate == out_sr and decoded.shape[0] == channels
    assert 0 <= decoded.shape[1] - out_sr <= 2 * 1152  # encoder delay and frame padding
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "sr", "channels"),
    [
        ("wav", "16", 44100, 2),
        ("wav", "24", 44100, 2),
        ("wav", "32f", 44100, 2),
        ("flac", "24", 48000, 2),
        ("mp3", "16", 44100, 2),
        ("mp3", "16", 96000, 1),  # through the resampler
    ],
)
def test_audio_writer_blocks_equal_encode(tmp_path, fmt, bit_depth, sr, channels):
    rng = np.random.default_rng(3)
    x = (0.4 * rng.standard_normal((channels, sr + 123))).astype(np.float32)
    x[:, ::997] = 1.7  # overs, clipped for PCM
    x[0, 5] = np.nan
    audio.encode(x, sr, tmp_path / "whole", format=fmt, bit_depth=bit_depth)
    with audio.AudioWriter(tmp_path / "blocks", sr, channels, format=fmt, bit_depth=bit_depth) as w:
        for part in np.array_split(x, [1000, 70001], axis=1):
            w.write(part)
    assert (tmp_path / "blocks").read_bytes() == (tmp_path / "whole").read_bytes()


def test_audio_writer_clips_pcm_but_not_float(tmp_path):
    x = np.array([[0.0, 1.5, -2.0, np.nan, 0.25, np.inf]], dtype=np.float32)
    for name, depth in (("a.wav", "16"), ("f.wav", "32f")):
        with audio.AudioWriter(tmp_path / name, 8000, 1, bit_depth=depth) as writer:
            writer.write(x[:, :2])
            writer.write(x[0, 2:])  # 1-D is mono
    pcm, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_allclose(pcm, [0.0, 1.0, -1.0, 0.0, 0.25, 1.0], atol=1e-4)
    flt, _ = sf.read(tmp_path / "f.wav", dtype="float32")
    np.testing.assert_array_equal(flt, [0.0, 1.5, -2.0, 0.0, 0.25, 1.0])


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_audio_writer_exception_leaves_nothing(tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    with (
        pytest.raises(RuntimeError, match="model crashed"),
        audio.AudioWriter(path, 44100, 2, format=fmt) as writer,
    ):
        writer.write(_stereo(0.5, 44100))
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file
        raise RuntimeError("model crashed")
    assert writer.closed
    assert list(tmp_path.iterdir()) == []

    writer = audio.AudioWriter(path, 44100, 2, format=fmt)
    writer.write(_stereo(0.1, 44100))
    writer.abort()
    writer.abort()
    writer.close()  # after abort: nothing to finish
    assert list(tmp_path.iterdir()) == []


def test_audio_writer_close_and_misuse(tmp_path):
    path = tmp_path / "out.wav"
    writer = audio.AudioWriter(path, 8000, 2)
    with pytest.raises(ValueError):
        writer.write(np.zeros((1, 10), np.float32))  # wrong channel count
    with pytest.raises(ValueError):
        writer.write(np.zeros((2, 2, 2), np.float32))
    writer.write(np.zeros((2, 10), np.float32))
    writer.close()
    writer.close()  # idempotent
    writer.abort()  # after close: keeps the file
    assert sf.info(path).frames == 10
    with pytest.raises(ValueError):
        writer.write(np.zeros((2, 10), np.float32))
    with audio.AudioWriter(tmp_path / "empty.wav", 8000, 1):
        pass
    assert sf.info(tmp_path / "empty.wav").frames == 0


def test_audio_writer_rejects_bad_arguments(tmp_path):
    for kwargs in (
        {"format": "ogg"},
        {"bit_depth": "8"},
        {"format": "mp3", "mp3_bitrate": 100},
        {"sample_rate": 0},
        {"sample_rate": 44100.5},
        {"channels": 0},
        {"channels": 3, "format": "mp3"},
    ):
        args = {"sample_rate": 44100, "channels": 2, **kwargs}
        with pytest.raises(ValueError):
            audio.AudioWriter(tmp_path / "x", **args)
    assert list(tmp_path.iterdir()) == []


def test_streaming_pipeline_equals_whole_file(tmp_path):
    """Decode window by window, process, encode: the same file as doing it in one go."""
    src = write_sf(tmp_path / "in.flac", _stereo(3.0, 48000), 48000)
    out = tmp_path / "out" / "stem.wav"
    out.parent.mkdir()
    with audio.AudioWriter(out, 44100, 2, bit_depth="24") as writer:
        for block in audio.iter_decode(src, sample_rate=44100, channels=2, block_frames=20000):
            writer.write(block * 0.5)
    whole, rate = audio.decode(src, sample_rate=44100, channels=2)
    audio.encode(whole * 0.5, rate, tmp_path / "whole.wav", bit_depth="24")
    assert out.read_bytes() == (tmp_path / "whole.wav").read_bytes()
    assert writer.frames_written == whole.shape[1]
