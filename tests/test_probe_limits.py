"""The upload probe on pathological files: a quick, clear answer, never a stall.

``audio.probe`` runs in the API process for every upload. Two things bound it:

- ID3v2 tags are checked first (``guards.check_id3``, one pass over the file):
  FFmpeg escapes PRIV frames byte by byte (20 MB: 3 s and 240 MB of memory),
  inflates compressed frames (a 0.3 MB upload: 4 s and 900 MB) and loops over
  every frame. Refused before FFmpeg opens the file.
- MP4/MOV box structures are checked first too (``guards.check_boxes``,
  top-level box headers plus the header boxes): a 160 MB sample table costs
  FFmpeg 350 MB, a compressed moov inflates 1000:1, millions of boxes cost
  seconds. Refused before FFmpeg opens the file.
- A time budget (``probing.PROBE_SECONDS``) for the rest: FFmpeg's header
  parsers walk structures of any count (an empty WAV chunk or MP4 box is about
  a microsecond; 200 MB holds millions) and ``probesize``/``analyzeduration``
  do not limit header parsing. PyAV's timeout (FFmpeg's interrupt callback,
  between reads) stops them.

The tests shrink the budget and use files that need about ten times longer
to parse, then check the answer, whether FFmpeg was called and how much it
read (``/proc/self/io``), never the clock. Big files are sparse: no disk.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from flask import Flask

from app import audio
from app.audio import guards, limits, probing
from tests.support.apps import register_and_login
from tests.support.ogg import ogg_one_long_packet, ogg_tiny_pages

SPEECH = Path(__file__).parent / "data" / "speech"
MB = 1 << 20
LIMITS = {"max_seconds": 1200.0, "max_bytes": 2048 * MB}  # the defaults of app/config.py


# --------------------------------------------------------------------------- measuring


def bytes_read() -> int:
    """Bytes this process has read so far (all files, page cache included)."""
    try:
        with open("/proc/self/io") as handle:
            fields = dict(line.split(": ") for line in handle.read().splitlines())
    except OSError:
        pytest.skip("/proc/self/io is not available: cannot count the bytes read")
    return int(fields["rchar"])


def probe_counting(path: Path) -> tuple[Any, int]:
    """``(AudioInfo or AudioError, bytes read)`` of one probe with the service's
    limits. The ID3 check reads the whole file once; the count is what was read
    beyond that, i.e. by FFmpeg (negative when the ID3 check stopped early)."""
    before = bytes_read()
    try:
        answer: Any = audio.probe(path, **LIMITS)
    except audio.AudioError as exc:
        answer = exc
    return answer, bytes_read() - before - path.stat().st_size


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``av.open`` the probe makes."""
    calls: list[dict[str, Any]] = []
    real = av.open

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    yield calls


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> float:
    """A probe budget of 0.25 s: the slow files below need over 2 s unbounded."""
    monkeypatch.setattr(probing, "PROBE_SECONDS", 0.25)
    return 0.25


# --------------------------------------------------------------------------- files


def mp3_body() -> bytes:
    """clip1.mp3 without its ID3 tag: MPEG audio frames only."""
    data = (SPEECH / "clip1.mp3").read_bytes()
    assert data[:3] == b"ID3"
    size = int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big")
    return data[10 + size :]


def syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3_many_frames(megabytes: int) -> bytes:
    """An MP3 behind an ID3v2.3 tag made of empty 11-byte TXXX frames."""
    frame = b"TXXX" + struct.pack(">I", 1) + b"\0\0" + b"\0"
    count = megabytes * MB // len(frame)
    return b"ID3\x03\x00\x00" + syncsafe(count * len(frame)) + frame * count + mp3_body()


def pcm(seconds: float = 1.0, rate: int = 16000) -> bytes:
    return (np.sin(np.arange(int(seconds * rate)) / 5) * 8000).astype("<i2").tobytes()


FMT_16K_MONO = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)


def wav_many_chunks(megabytes: int) -> bytes:
    """A WAV with millions of empty unknown chunks between ``fmt `` and ``data``."""
    junk = b"junk\0\0\0\0" * (megabytes * MB // 8)
    data = pcm()
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + FMT_16K_MONO
        + junk
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def clip4_boxes() -> list[bytes]:
    """clip4.m4a's top-level boxes: ftyp, free, mdat, moov (moov last, so
    anything may go between them: the sample offsets still point into mdat)."""
    data = (SPEECH / "clip4.m4a").read_bytes()
    offset, boxes = 0, []
    while offset < len(data):
        size = struct.unpack(">I", data[offset : offset + 4])[0]
        boxes.append(data[offset : offset + size])
        offset += size
    assert [box[4:8] for box in boxes] == [b"ftyp", b"free", b"mdat", b"moov"]
    return boxes


def box(kind: bytes, body: bytes = b"", *, size: int | None = None) -> bytes:
    return struct.pack(">I", 8 + len(body) if size is None else size) + kind + body


def mp4_many_boxes(megabytes: int) -> bytes:
    """clip4.m4a with millions of empty top-level ``free`` boxes before ``moov``."""
    ftyp, free, mdat, moov = clip4_boxes()
    return ftyp + free + mdat + box(b"free") * (megabytes * MB // 8) + moov


def mp4_nested_boxes(megabytes: int) -> bytes:
    """clip4.m4a whose moov starts with millions of empty ``free`` children:
    few top-level boxes, a moov under the size bound, slow for FFmpeg."""
    ftyp, free, mdat, moov = clip4_boxes()
    return ftyp + free + mdat + box(b"moov", box(b"free") * (megabytes * MB // 8) + moov[8:])


def sparse(path: Path, parts: list[bytes | int]) -> Path:
    """Write ``parts`` (bytes, or a number of zero bytes left as a hole)."""
    with open(path, "wb") as handle:
        for part in parts:
            if isinstance(part, int):
                handle.seek(part, io.SEEK_CUR)
            else:
                handle.write(part)
        handle.truncate()
    return path


# --------------------------------------------------------------------------- slow to parse


SLOW = {
    "wav-many-chunks.wav": lambda: wav_many_chunks(24),
    "mp4-many-nested-boxes.m4a": lambda: mp4_nested_boxes(16),
}


@pytest.mark.parametrize("name", sorted(SLOW))
def test_files_slow_to_parse_stop_at_the_budget(
    tmp_path: Path, name: str, small_budget: float, opened: list[dict[str, Any]]
) -> None:
    """Millions of empty header structures: refused once the budget is spent,
    after reading a small part of the file (unbounded, FFmpeg reads it all)."""
    path = tmp_path / name
    path.write_bytes(SLOW[name]())
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")
    assert "took more than 0.25 s to read" in answer.message
    assert answer.errors == {"max_probe_seconds": small_budget}
    # The box check reads the moov once (to find compressed headers); FFmpeg
    # then reads part of it.
    scanned = path.stat().st_size - sum(map(len, clip4_boxes()[:3])) if "mp4" in name else 0
    assert read - scanned < path.stat().st_size / 2, (read, scanned, path.stat().st_size)
    # FFmpeg was told: the open carries the budget as its timeout.
    assert opened and all(0 < call["timeout"] <= small_budget for call in opened)


def test_the_same_files_parse_in_full_without_a_budget(tmp_path: Path) -> None:
    """The files above are what they claim: given time, FFmpeg reads them to
    the audio (so the budget, not a parse error, is what stopped them)."""
    for name, make in sorted({**SLOW, "id3-many-frames.mp3": lambda: id3_many_frames(8)}.items()):
        path = tmp_path / name
        path.write_bytes(make())
        before = bytes_read()
        with guards.open_container(str(path)) as container:
            assert container.streams.audio, name
        assert bytes_read() - before > path.stat().st_size / 2, name


def test_an_upload_slow_to_parse_gets_a_clear_422(
    tmp_path: Path, small_budget: float, queued_app: Flask
) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/analyses",
        data={"file": (io.BytesIO(wav_many_chunks(24)), "chunks.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 422, response.json
    assert response.json["code"] == "audio_decode_failed"
    assert "re-encode it" in response.json["message"]
    assert client.get("/api/v1/jobs", headers=headers).json["items"] == []


def test_the_duration_scan_checks_the_budget(tmp_path: Path) -> None:
    """Files whose headers give no duration are measured packet by packet; the
    scan stops at the deadline too (packets that never add up to the limit)."""
    path = tmp_path / "live.webm"
    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        silence = np.zeros((1, 960), np.float32)
        for index in range(200):
            frame = av.AudioFrame.from_ndarray(silence, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, index * 960
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with guards.open_container(str(path)) as container:
        assert probing.header_duration(container, container.streams.audio[0]) is None
    assert audio.probe(path).duration == pytest.approx(4.0, abs=0.05)  # scanned, in budget
    deadline = limits.Deadline(0.0)
    with guards.open_container(str(path)) as container, pytest.raises(audio.AudioError) as raised:
        probing.packet_duration(container, container.streams.audio[0], None, deadline)
    assert "took more than 0 s" in raised.value.message


# --------------------------------------------------------------------------- ID3 tags


def id3_tag(*frames: bytes, version: int = 3) -> bytes:
    body = b"".join(frames)
    return b"ID3" + bytes([version, 0, 0]) + syncsafe(len(body)) + body


def id3_frame(frame_id: bytes, body: bytes, flags: int = 0, *, size: int | None = None) -> bytes:
    length = len(body) if size is None else size
    return frame_id + struct.pack(">IH", length, flags) + body


def test_an_id3_tag_of_a_million_frames_is_refused_before_ffmpeg(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    path = tmp_path / "frames.mp3"
    path.write_bytes(id3_many_frames(12))
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")
    assert "more than 1000 ID3 tags or 10000 ID3 frames" in answer.message
    assert opened == []  # FFmpeg never saw it


def private_frame_of(megabytes: int) -> tuple[bytes, int]:
    """The header of a PRIV frame with ``megabytes`` of (sparse) data, and its size."""
    size = megabytes * MB
    return id3_frame(b"PRIV", b"owner\0", size=6 + size), size


@pytest.mark.parametrize("where", ["start", "wav-chunk", "adts-stream"])
def test_private_id3_data_is_refused_before_ffmpeg(
    tmp_path: Path, where: str, opened: list[dict[str, Any]]
) -> None:
    """20 MB of PRIV data: 3 s and 240 MB of memory in FFmpeg, wherever it
    parses ID3 (at the start, in a WAV ``id3 `` chunk, between ADTS frames)."""
    header, size = private_frame_of(20)
    tag_header = b"ID3\x03\x00\x00" + syncsafe(len(header) + size)
    tag: list[bytes | int] = [tag_header, header, size]
    tag_length = len(tag_header) + len(header) + size
    if where == "start":
        parts = [*tag, mp3_body()]
    elif where == "wav-chunk":
        data = pcm()
        parts = [
            b"RIFF",
            struct.pack("<I", 4 + 24 + 8 + tag_length + 8 + len(data)),
            b"WAVE",
            b"fmt ",
            struct.pack("<I", 16),
            FMT_16K_MONO,
            b"id3 ",
            struct.pack("<I", tag_length),
            *tag,
            b"data",
            struct.pack("<I", len(data)),
            data,
        ]
    else:
        adts = adts_frames()
        cut = adts_boundary(adts, 5)
        parts = [adts[:cut], *tag, adts[cut:]]
    path = sparse(tmp_path / f"private-{where}", parts)
    opened.clear()  # adts_frames() wrote with av.open
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")
    assert "hold 20.0 MB or more of private (PRIV) or compressed data" in answer.message
    assert "the limit is 1 MB" in answer.message
    assert opened == []


def adts_boundary(adts: bytes, frames: int) -> int:
    """Where ADTS frame number ``frames`` starts (FFmpeg looks for ID3 tags there)."""
    at = 0
    for _ in range(frames):
        at += ((adts[at + 3] & 0x03) << 11) | (adts[at + 4] << 3) | (adts[at + 5] >> 5)
    return at


def encode_aac(target: Any, container: str, **options: str) -> None:
    """A second of a mono AAC tone into ``target`` (a path or a buffer), in
    ``container`` with the muxer's ``options``."""
    with av.open(target, "w", format=container, options=options) as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        tone = np.sin(np.arange(44100) / 10).astype(np.float32)[None, :]
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, start : start + 1024]), format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def adts_frames() -> bytes:
    """A second of AAC in ADTS (raw .aac)."""
    buffer = io.BytesIO()
    encode_aac(buffer, "adts")
    return buffer.getvalue()


def test_a_compressed_id3_frame_counts_at_its_inflated_size(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    """zlib-compressed frames are inflated into memory: 300 MB from 0.3 MB here
    (4 s and 900 MB in FFmpeg). The declared size counts, whatever the frame."""
    text = b"\0" + b"A" * (300 * MB)
    body = struct.pack(">I", len(text)) + zlib.compress(text, 9)
    flags = 0x0008 | 0x0001  # compressed, with its data length
    path = tmp_path / "inflates.mp3"
    path.write_bytes(id3_tag(id3_frame(b"TXXX", body, flags)) + mp3_body())
    assert path.stat().st_size < 1 * MB
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert "hold 300.0 MB or more" in answer.message
    assert opened == []


def test_real_tags_pass_the_id3_check(tmp_path: Path) -> None:
    """What taggers write: text, cover art, small PRIV frames, a v2.4 tag with
    a megabyte of padding, an extended header; FFmpeg then reads the file."""
    from mutagen.id3 import APIC, ID3, PRIV, TIT2, TXXX

    path = tmp_path / "tagged.mp3"
    path.write_bytes(mp3_body())
    tags = ID3()
    tags.add(TIT2(encoding=3, text="A song"))
    tags.add(TXXX(encoding=3, desc="comment", text="x" * 5000))
    tags.add(APIC(encoding=3, mime="image/png", type=3, data=b"\x89PNG" + bytes(3 * MB)))
    for owner in ("WM/MediaClassPrimaryID", "WM/Provider", "XMP"):
        tags.add(PRIV(owner=owner, data=bytes(range(256)) * 40))  # 10 KB each
    tags.save(path, v2_version=4, padding=lambda info: 1 * MB)
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioInfo), answer
    assert answer.codec == "mp3" and answer.duration == pytest.approx(5.0, abs=0.1)

    extended = tmp_path / "extended.mp3"
    header = b"ID3\x03\x00\x40"  # v2.3 with an extended header (6 bytes + 4 of size)
    frames = id3_frame(b"TIT2", b"\0title") + id3_frame(b"PRIV", b"o\0" + bytes(100))
    body = struct.pack(">I", 6) + bytes(6) + frames + bytes(2048)
    extended.write_bytes(header + syncsafe(len(body)) + body + mp3_body())
    answer, _ = probe_counting(extended)
    assert isinstance(answer, audio.AudioInfo), answer


def test_private_data_hidden_behind_padding_or_a_fake_header_is_found(tmp_path: Path) -> None:
    """FFmpeg walks on through zero padding and reads overlapping headers; so
    does the check."""
    header, size = private_frame_of(2)
    after_padding = bytes(4090) + header  # FFmpeg steps 10 bytes at a time
    tag_header = b"ID3\x03\x00\x00" + syncsafe(len(after_padding) + size)
    path = sparse(tmp_path / "padded.mp3", [tag_header, after_padding, size, mp3_body()])
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError) and "private (PRIV)" in answer.message, answer

    # The last five bytes of an ADTS frame start a header that overlaps the
    # real tag after the frame (which FFmpeg parses).
    adts = adts_frames()
    cut = adts_boundary(adts, 5)
    tag = b"ID3\x03\x00\x00" + syncsafe(len(header) + size)
    fake = adts[: cut - 5] + b"ID3\x03\x00"
    path = sparse(tmp_path / "overlap.aac", [fake, tag, header, size, adts[cut:]])
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError) and "private (PRIV)" in answer.message, answer


# --------------------------------------------------------------------------- MP4 boxes


CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def children(body: bytes) -> list[tuple[bytes, bytes]]:
    offset, found = 0, []
    while offset < len(body):
        size, kind = struct.unpack(">I4s", body[offset : offset + 8])
        found.append((kind, body[offset + 8 : offset + size]))
        offset += size
    return found


def with_sample_table(body: bytes, entries: int) -> list[bytes | int]:
    """clip4's moov body with an ``stsz`` of ``entries`` sample sizes (a hole),
    as parts for ``sparse``: what FFmpeg loads into memory at open."""
    parts: list[bytes | int] = []
    for kind, inner in children(body):
        if kind == b"stsz":
            table = struct.pack(">III", 0, 0, entries)
            parts += [box(kind, table, size=8 + len(table) + 4 * entries), 4 * entries]
        elif kind in CONTAINERS:
            nested = with_sample_table(inner, entries)
            length = sum(p if isinstance(p, int) else len(p) for p in nested)
            parts += [struct.pack(">I", 8 + length) + kind, *nested]
        else:
            parts.append(box(kind, inner))
    return parts


def big_sample_table(megabytes: float) -> list[bytes | int]:
    """clip4.m4a whose moov holds a ``megabytes`` sample table (a hole)."""
    ftyp, free, mdat, moov = clip4_boxes()
    return [ftyp + free + mdat, *with_sample_table(moov, int(megabytes * MB) // 4)]


def cmov(body: bytes, declared: int | None = None) -> bytes:
    """A compressed movie header (QuickTime's cmov) holding ``body``."""
    size = len(body) if declared is None else declared
    packed = struct.pack(">I", size) + zlib.compress(body, 9)
    return box(b"moov", box(b"cmov", box(b"dcom", b"zlib") + box(b"cmvd", packed)))


def test_a_huge_sample_table_is_refused_before_ffmpeg(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    """33 MB of sample sizes in the moov (FFmpeg: about 80 MB of memory at
    open; 160 MB took 350 MB). Refused from the box headers alone: the walk
    does not even read the table."""
    path = sparse(tmp_path / "table.m4a", big_sample_table(33))
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")
    assert "header boxes (moov and the like) hold 33.0 MB or more" in answer.message
    assert "the limit is 32 MB" in answer.message and "re-encode it" in answer.message
    assert answer.errors == {"header_mb": 33.0, "max_header_mb": 32.0}
    assert opened == []
    assert read < 1 * MB


def test_a_huge_moov_gets_a_clear_422_through_the_api(tmp_path: Path, queued_app: Flask) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    path = sparse(tmp_path / "table.m4a", big_sample_table(33))
    response = client.post(
        "/api/v1/transcriptions",
        data={"file": (io.BytesIO(path.read_bytes()), "song.m4a", "audio/mp4")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 422, response.json
    assert response.json["code"] == "audio_decode_failed"
    assert "hold 33.0 MB or more; the limit is 32 MB" in response.json["message"]
    assert response.json["errors"] == {"header_mb": 33.0, "max_header_mb": 32.0}
    assert client.get("/api/v1/jobs", headers=headers).json["items"] == []
    data_dir = Path(queued_app.config["DATA_DIR"])
    left = [p for folder in ("tmp", "jobs") for p in (data_dir / folder).rglob("*") if p.is_file()]
    assert left == []


def test_compressed_movie_headers_count_inflated(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    """FFmpeg inflates a cmov into memory at its declared size, then parses
    it (which can hold another cmov): a 0.5 MB upload took 1.1 GB."""
    ftyp, free, mdat, moov = clip4_boxes()
    real = tmp_path / "compressed.m4a"
    real.write_bytes(ftyp + free + mdat + cmov(moov[8:]))
    answer, _ = probe_counting(real)
    assert isinstance(answer, audio.AudioInfo), answer  # a real compressed header still works
    assert answer.codec == "aac" and answer.duration == pytest.approx(5.29, abs=0.01)

    padded = moov[8:] + box(b"free", bytes(40 * MB))  # inflates to 40 MB
    bomb = tmp_path / "bomb.m4a"
    bomb.write_bytes(ftyp + free + mdat + cmov(padded))
    nested = tmp_path / "nested.m4a"
    nested.write_bytes(ftyp + free + mdat + cmov(cmov(padded)[8:]))
    for path in (bomb, nested):
        assert path.stat().st_size < 1 * MB
        opened.clear()
        answer, _ = probe_counting(path)
        assert isinstance(answer, audio.AudioError), (path.name, answer)
        assert (answer.status, answer.code) == (422, "audio_decode_failed")
        assert "hold 40." in answer.message and "the limit is 32 MB" in answer.message
        assert opened == []


def test_millions_of_top_level_boxes_are_refused_before_ffmpeg(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    """2 million empty boxes (24 s for FFmpeg unbounded): the walk stops
    after 250,000, having read 2 MB of the 16."""
    path = tmp_path / "boxes.m4a"
    path.write_bytes(mp4_many_boxes(16))
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")
    assert "more than 250000 boxes" in answer.message
    assert opened == []
    assert read < 4 * MB


def broken_chains() -> dict[str, bytes]:
    ftyp, free, mdat, moov = clip4_boxes()
    rest = free + mdat + moov
    end = len(ftyp + rest)
    return {
        "box-smaller-than-its-header": ftyp + box(b"abcd", size=4) + rest,
        "mdat-past-the-end": ftyp + free + struct.pack(">I", end) + mdat[4:] + moov,
        "moov-past-the-end": ftyp + free + mdat + struct.pack(">I", len(moov) + 1) + moov[4:],
        "64-bit-size-too-small": ftyp + struct.pack(">I4sQ", 1, b"abcd", 8) + rest,
        "uuid-shorter-than-its-header": ftyp + box(b"uuid", bytes(8)) + rest,
        "ends-inside-a-header": ftyp + free + mdat + moov[:5],
        "garbage-after-ftyp": ftyp + np.random.default_rng(7).bytes(64 * 1024),
        "zero-size-box-swallows-the-moov": ftyp + free + struct.pack(">I", 0) + mdat[4:] + moov,
        "zero-bytes-after-ftyp": ftyp + bytes(64 * 1024),
    }


@pytest.mark.parametrize("name", sorted(broken_chains()))
def test_broken_box_chains_are_refused_cleanly(
    tmp_path: Path, name: str, opened: list[dict[str, Any]]
) -> None:
    """Boxes that do not tile the file before the moov and mdat are found:
    refused by the walk (a clear 422, FFmpeg never called), or, when the
    chain is valid but holds no usable moov (a size-0 box runs to the end of
    the file), by FFmpeg with the same 422."""
    path = tmp_path / f"{name}.m4a"
    path.write_bytes(broken_chains()[name])
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed"), answer.message
    if name.startswith("zero-"):
        assert "damaged or truncated" in answer.message
    else:
        assert answer.message.startswith("The MP4 file is damaged or truncated: it ")
        assert opened == []


def write_mp4(path: Path, **options: str) -> Path:
    """A second of AAC in MP4, with the muxer's ``options`` (movflags)."""
    encode_aac(str(path), "mp4", **options)
    return path


def test_real_box_layouts_pass_the_box_check(tmp_path: Path) -> None:
    """What muxers and phones write: moov first or last, fragments (a moof
    per frame), 64-bit sizes, uuid boxes, a trailer after the boxes (some
    phones append one). The check reads little."""
    ftyp, free, mdat, moov = clip4_boxes()
    mdat64 = struct.pack(">I4sQ", 1, b"mdat", len(mdat) + 8) + mdat[8:]  # in free + mdat's place
    uuid = box(b"uuid", bytes(16) + b"XMP data")
    files = {
        "clip4.m4a": SPEECH / "clip4.m4a",
        "faststart.m4a": write_mp4(tmp_path / "faststart.m4a", movflags="faststart"),
        "fragmented.mp4": write_mp4(
            tmp_path / "fragmented.mp4", movflags="frag_keyframe+empty_moov+frag_every_frame"
        ),
    }
    for name, data in {
        "mdat-64.m4a": ftyp + mdat64 + moov,
        "uuid.m4a": ftyp + free + mdat + uuid + moov,
        "trailer.m4a": ftyp + free + mdat + moov + b"SEFH" + bytes(200) + b"SEFT",
    }.items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    for name, path in files.items():
        answer, read = probe_counting(path)
        assert isinstance(answer, audio.AudioInfo), (name, answer)
        assert answer.codec == "aac" and answer.duration > 0.9, (name, answer)
        assert read < 1 * MB, name
    # Boxes after an ID3 tag are walked from its end, as FFmpeg reads them
    # (this file's sample offsets are then wrong, so only the walk is tried).
    tagged = tmp_path / "id3.m4a"
    tagged.write_bytes(id3_tag(id3_frame(b"TIT2", b"\0title")) + ftyp + free + mdat + moov)
    guards.check_boxes(str(tagged))
    tagged.write_bytes(id3_tag(id3_frame(b"TIT2", b"\0title")) + ftyp + free + mdat + moov[:-1])
    with pytest.raises(audio.AudioError, match="moov"):
        guards.check_boxes(str(tagged))


def test_a_file_not_starting_like_mp4_is_not_read_as_mp4(
    tmp_path: Path, opened: list[dict[str, Any]]
) -> None:
    """FFmpeg's mov demuxer takes a file for a known box anywhere near its
    start, then parses every box from the first: an unknown first box used to
    get a huge moov parsed before the signature check refused the file. Such
    files are now not offered to that demuxer at all."""
    parts = [box(b"abcd", bytes(8)), *big_sample_table(40)]
    path = sparse(tmp_path / "disguised.m4a", parts)
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert answer.status == 415
    assert opened and all(
        "mov" not in call["container_options"]["format_whitelist"].split(",") for call in opened
    )
    opened.clear()
    assert audio.probe(SPEECH / "clip4.m4a").codec == "aac"
    assert "mov" in opened[0]["container_options"]["format_whitelist"].split(",")


# --------------------------------------------------------------------------- quick already


def test_mp3_with_200_mb_of_junk_after_a_valid_header(tmp_path: Path) -> None:
    """The duration is estimated from the bitrate: no scan of the junk."""
    path = sparse(tmp_path / "junk.mp3", [mp3_body(), 200 * MB])
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioError) and answer.code == "audio_too_long", answer
    assert read < 1 * MB


def test_a_huge_id3_frame_ffmpeg_does_not_keep_is_skipped(tmp_path: Path) -> None:
    """A 150 MB GEOB-like frame FFmpeg does not parse (a hole here) is seeked
    over, not read; a tag claiming 256 MB in a small file is a truncated file."""
    size = 150 * MB
    frame_header = b"XSIZ" + struct.pack(">I", size) + b"\0\0"
    tag = b"ID3\x03\x00\x00" + syncsafe(len(frame_header) + size)
    path = sparse(tmp_path / "big-tag.mp3", [tag, frame_header, size, mp3_body()])
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioInfo), answer
    assert answer.codec == "mp3" and answer.duration == pytest.approx(5.0, abs=0.1)
    assert read < 1 * MB

    liar = tmp_path / "liar.mp3"
    liar.write_bytes(b"ID3\x03\x00\x00" + syncsafe((1 << 28) - 1) + mp3_body())
    answer, read = probe_counting(liar)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")


def test_an_ogg_of_100000_tiny_pages(tmp_path: Path) -> None:
    """The duration comes from the last page: 2000 s, refused; the pages in
    between are not read."""
    path = tmp_path / "tiny-pages.opus"
    path.write_bytes(ogg_tiny_pages(100_000))
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioError) and answer.code == "audio_too_long", answer
    assert answer.errors["duration"] == pytest.approx(2000.0, abs=0.1)
    assert read < path.stat().st_size / 4


def test_an_ogg_packet_that_never_ends(tmp_path: Path) -> None:
    """One packet over 8 MB of continued pages: refused as truncated. FFmpeg
    buffers the packet, so this one reads (and holds) the whole file: memory
    in proportion to the upload, bounded by MAX_UPLOAD_MB (see TODO.md)."""
    path = tmp_path / "endless.opus"
    path.write_bytes(ogg_one_long_packet(8))
    answer, _ = probe_counting(path)
    assert isinstance(answer, audio.AudioError), answer
    assert (answer.status, answer.code) == (422, "audio_decode_failed")


def test_a_wav_with_a_150_mb_fmt_chunk(tmp_path: Path) -> None:
    """The rest of an oversized ``fmt `` chunk is skipped, not read."""
    data = pcm()
    extra = 150 * MB
    parts: list[bytes | int] = [
        b"RIFF",
        struct.pack("<I", 4 + 8 + 16 + extra + 8 + len(data)),
        b"WAVE",
        b"fmt ",
        struct.pack("<I", 16 + extra),
        FMT_16K_MONO,
        extra,
        b"data",
        struct.pack("<I", len(data)),
        data,
    ]
    answer, read = probe_counting(sparse(tmp_path / "big-fmt.wav", parts))
    assert isinstance(answer, audio.AudioInfo), answer
    assert (answer.sample_rate, answer.channels, answer.duration) == (16000, 1, 1.0)
    assert read < 1 * MB


def test_a_pcm_wav_is_not_read_through_for_a_hidden_bitstream(tmp_path: Path) -> None:
    """FFmpeg re-probes 16-bit PCM for AC-3/DTS/MP3 carried in it, over up to
    1 MB by default; the probe limits that to the first 32 KB (what is read,
    not how long it takes: it was about 1 MB and 45 ms per WAV upload)."""
    path = tmp_path / "thirty-seconds.wav"
    samples = (np.sin(np.arange(44100 * 30) / 7) * 0.2).astype(np.float32)
    sf.write(path, np.stack([samples, samples], axis=1), 44100, subtype="PCM_16")
    answer, read = probe_counting(path)
    assert isinstance(answer, audio.AudioInfo), answer
    assert (answer.codec, answer.sample_rate, answer.channels) == ("pcm_s16le", 44100, 2)
    assert answer.duration == pytest.approx(30.0)
    assert read < 256 * 1024


def test_ac3_over_spdif_in_a_wav_is_still_found(tmp_path: Path) -> None:
    """A WAV whose 16-bit samples carry AC-3 (IEC 61937, as on a DVD rip) is
    read as the AC-3 it carries, not as noise-like PCM."""
    spdif = io.BytesIO()
    with av.open(spdif, "w", format="spdif") as out:
        stream = out.add_stream("ac3", rate=48000)
        stream.layout = "stereo"
        tone = (np.sin(np.arange(48000 * 3) / 10) * 0.3).astype(np.float32)
        for start in range(0, tone.size - 1536, 1536):
            block = np.ascontiguousarray(np.stack([tone[start : start + 1536]] * 2))
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    path = tmp_path / "ac3-in.wav"
    words = np.frombuffer(spdif.getvalue(), dtype="<i2").reshape(-1, 2)
    sf.write(path, words, 48000, subtype="PCM_16")
    info = audio.probe(path, **LIMITS)
    assert (info.format, info.codec, info.sample_rate, info.channels) == ("wav", "ac3", 48000, 2)
    samples, rate = audio.decode(path)
    assert rate == 48000 and samples.shape[0] == 2
    assert samples.shape[1] == pytest.approx(48000 * 3, rel=0.02)
    # A tone, not the bitstream played as samples (which would be near full scale).
    assert 0.2 < float(np.abs(samples).max()) < 0.4
