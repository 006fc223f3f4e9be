"""Reading and writing audio files: probe, decode, encode.

``iter_decode`` and ``AudioWriter`` are the streaming counterparts of
``decode`` and ``encode`` (which are built on them, so the samples and files
are the same): a long song can be processed window by window in memory that
does not grow with its length.

Everything a client uploads goes through PyAV (FFmpeg), so any container or
codec FFmpeg can decode is accepted, and every failure leaves as an
``AudioError`` with a stable code instead of one of PyAV's many exception types.
Sample-rate conversion uses soxr because FFmpeg's default resampler is audibly
worse at the quality the separation models need; channel conversion uses
FFmpeg's downmix because it knows the speaker layouts.

Uploads are hostile input. FFmpeg is therefore only allowed the demuxers in
``_DEMUXERS``: playlist and reference formats (hls, concat, dash, image
sequences...) can make FFmpeg open other files or URLs, and none of them is a
way to upload audio. The demuxer FFmpeg picks must also agree with the file's
first bytes (``_SIGNATURES``): FFmpeg finds MP3 or AAC frames anywhere in a
file, so a web page, image or archive with audio appended would otherwise pass
as audio. Before anything is decoded, ``probe`` checks what the headers declare
(duration, sample rate, channels, decoded size) against the limits; because
headers can lie, decoding counts what it actually produces and stops past the
same limits.

``probe`` runs in the API process, so it also has a time budget
(``_PROBE_SECONDS``): FFmpeg's header parsers walk structures of any count, and
an upload made of millions of empty ID3 frames, WAV chunks or MP4 boxes keeps
them busy for tens of seconds before any audio is found. ID3v2 ``PRIV``
frames are worse: FFmpeg escapes them byte by byte into a metadata string
(150 MB of them: 33 s and 1.9 GB), and it parses ID3 tags at the start of a
file, in WAV chunks and between ADTS frames. ``_check_id3`` refuses such tags
before FFmpeg sees the file. MP4 is the other format whose headers FFmpeg
loads whole: ``_check_boxes`` refuses sample tables and compressed headers
that would cost it hundreds of megabytes, and box chains that are damaged or
made of millions of boxes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.error
import lameenc
import numpy as np
import soundfile as sf
import soxr

from app.errors import ServiceError

log = logging.getLogger(__name__)

__all__ = [
    "BIT_DEPTHS",
    "CONTENT_TYPES",
    "MP3_BITRATES",
    "OUTPUT_FORMATS",
    "AudioError",
    "AudioInfo",
    "AudioWriter",
    "decode",
    "encode",
    "iter_decode",
    "probe",
    "read_tags",
]

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
OUTPUT_FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = ("16", "24", "32f")
MP3_BITRATES = (96, 128, 160, 192, 224, 256, 320)

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# Inputs up to 7.1; every job downmixes to what its model takes.
MAX_CHANNELS = 8
# Decoded samples are float32.
_SAMPLE_BYTES = 4
# Float input can hold NaN, infinities or absurd values (a damaged or hostile
# file); decoding replaces NaN with silence and clamps everything else to this
# magnitude (+40 dBFS, far above the overs of any real recording), so no model,
# meter or encoder ever sees a non-finite sample.
MAX_SAMPLE_MAGNITUDE = 100.0

# Demuxers FFmpeg may pick for an upload: audio formats, plus the common video
# containers so the soundtrack of a video can be separated. FFmpeg still
# probes every format, then refuses with EINVAL when the winner is not listed.
_DEMUXERS = ",".join(
    (
        "wav", "w64", "aiff", "caf", "au", "voc", "mp3", "mp2", "flac", "ogg", "mov",
        "matroska", "aac", "loas", "ac3", "eac3", "dts", "dtshd", "truehd", "mlp", "asf",
        "xwma", "wv", "ape", "tta", "tak", "shn", "mpc", "mpc8", "dsf", "amr", "oma", "rm",
        "avi", "flv", "mpeg", "mpegts", "nut", "iff",
    )
)  # fmt: skip
_OPEN_OPTIONS = {"format_whitelist": _DEMUXERS, "protocol_whitelist": "file"}
# FFmpeg's mov demuxer picks a file for a known box anywhere in its first
# kilobytes, then parses every box from the start, whatever the first one is:
# a file that does not start like MP4 (and so would be refused after the open)
# is not offered to it, so ``_check_boxes`` sees every file it parses.
_OPEN_OPTIONS_NO_MOV = {
    "format_whitelist": ",".join(d for d in _DEMUXERS.split(",") if d != "mov"),
    "protocol_whitelist": "file",
}
# FFmpeg's wav demuxer re-probes 16-bit PCM for a bitstream carried in it (AC-3
# or DTS over S/PDIF, MP3): it runs every demuxer's probe over buffers doubling
# up to 1 MB, 45 ms per WAV upload of any length. Such a bitstream starts with
# the samples, so the first 32 KB find it as well (1.6 ms).
_WAV_PROBESIZE = "32768"

# FFmpeg names some demuxers after a family; clients expect the usual name.
_FORMAT_NAMES = {"mov": "mp4"}

# Packets probe() may feed the decoder before deciding the stream is unusable.
# Decoders emit their first frame after one packet (a few with priming delay),
# so this only matters for broken files and keeps their probe cheap.
_PROBE_PACKETS = 256
# Consecutive undecodable packets decode() tolerates once audio has started, as
# ffmpeg itself does for a damaged stretch; beyond this the file is broken.
_MAX_BAD_PACKETS = 32
# Wall-clock budget of one probe() (open, first frame, duration scan). Real
# files take well under 0.05 s, whatever their size: FFmpeg reads headers and
# seeks past the rest. Crafted ones walk tiny header structures, about 1 us
# each: 150 MB of empty ID3v2 frames took 12 s, of empty WAV chunks 15 s, of
# empty MP4 boxes 24 s. FFmpeg's own limits (probesize, analyzeduration) do
# not apply to header parsing, so PyAV's timeout (FFmpeg's interrupt callback,
# checked between reads) stops it, and the Python loops check the deadline.
_PROBE_SECONDS = 2.0
# ID3v2 data FFmpeg is slow or greedy with, in bytes over all tags: PRIV frames
# (escaped byte by byte into a metadata string: about 0.15 us and 12 bytes of
# memory per byte) and compressed frames (inflated into memory, 1000:1 at
# best). Real PRIV frames are identifiers and small XMP packets, kilobytes at
# most, and compressed frames are all but extinct. And frames and tags in a
# file: real files have tens of frames; millions keep FFmpeg busy for seconds.
_ID3_MAX_COSTLY_BYTES = 1 * 1024 * 1024
_ID3_MAX_FRAMES = 10_000
_ID3_MAX_TAGS = 1000  # ADTS streams cut from HLS carry one per segment
# MP4/MOV (ISO-BMFF) boxes other than media data and padding: FFmpeg parses
# them into memory at open (moov: the sample tables, 2-3x their size: a 31 MB
# sample table took 75-100 MB, a 160 MB one 350 MB) or while reading (moof,
# fragments). Real files are far below: a one-hour 44.1 kHz stereo AAC m4a
# has a 0.6 MB moov; the moof boxes of a 20-minute file fragmented at every
# frame total 5.6 MB; a three-hour 60 fps video track's tables are about
# 10 MB (12-16 bytes a frame); cover art in the moov is a few MB at most. A
# compressed moov (cmov) counts at its inflated size (a 0.5 MB upload
# inflated to 500 MB: 2 s and 1.1 GB in FFmpeg).
_MP4_MAX_HEADER_BYTES = 32 * 1024 * 1024
# Top-level boxes in a file. Unfragmented files have under ten; a 20-minute
# AAC file fragmented at every frame (low-latency streaming, ffmpeg's
# frag_every_frame) 103,000, the most a real file has. 200 MB of empty boxes
# are 26 million, about 1 us each in FFmpeg and 2.5 us in the walk (which
# also stops at the probe's deadline).
_MP4_MAX_BOXES = 250_000
_MP4_MAX_CMOV = 8  # compressed headers, nested ones included; files have one
_ENCODE_BLOCK = 1 << 16  # frames per write: bounds temporary copies when encoding
_MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# What PyAV raises for broken input. FFmpegError covers av.error.*, which also
# subclass OSError/ValueError; the bare ones come from PyAV's Python layer.
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)

_STATUS = {"unsupported_media_type": 415}
_MB = 1024 * 1024


class AudioError(ServiceError):
    """A file the service cannot use as audio, with a code the client can act on.

    Codes: ``unsupported_media_type`` (415, not audio at all), ``audio_decode_failed``
    (422, audio but broken or an undecodable codec), ``audio_too_long`` (422, past
    the duration limit), ``audio_too_large`` (422, decodes to more than the size
    limit), ``unsupported_sample_rate`` and ``unsupported_channels`` (422),
    ``empty_audio`` (422). The status follows from the code unless given.
    """

    code = "audio_decode_failed"
    status = 422

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: dict[str, Any] | None = None,
    ) -> None:
        if status is None and code is not None:
            status = _STATUS.get(code, 422)
        super().__init__(message, code=code, status=status, errors=errors)


def _unsupported(message: str = "The file is not an audio or video file.") -> AudioError:
    return AudioError(message, code="unsupported_media_type")


def _broken(message: str) -> AudioError:
    return AudioError(message, code="audio_decode_failed")


def _empty() -> AudioError:
    return AudioError("The file contains no audio.", code="empty_audio")


def _too_large(decoded_bytes: float, limit_bytes: float, *, at_least: bool = False) -> AudioError:
    qualifier = "at least " if at_least else ""
    return AudioError(
        f"The audio decodes to {qualifier}{decoded_bytes / _MB:.0f} MB of samples; "
        f"the limit is {limit_bytes / _MB:g} MB.",
        code="audio_too_large",
        errors={
            "decoded_mb": round(decoded_bytes / _MB, 1),
            "max_decoded_mb": round(limit_bytes / _MB, 1),
        },
    )


def _too_slow(seconds: float) -> AudioError:
    return AudioError(
        f"The file's structure took more than {seconds:g} s to read before its audio "
        "(it is damaged or built to be slow to read); re-encode it and upload it again.",
        code="audio_decode_failed",
        errors={"max_probe_seconds": seconds},
    )


class _Deadline:
    """The end of probe()'s time budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(self.end - time.monotonic(), 0.001)

    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def check(self) -> None:
        if self.passed():
            raise _too_slow(self.seconds)


def _too_long(seconds: float, limit: float, *, at_least: bool = False) -> AudioError:
    qualifier = "at least " if at_least else ""
    return AudioError(
        f"The audio is {qualifier}{seconds:.1f} s long; the limit is {limit:g} s.",
        code="audio_too_long",
        errors={"duration": round(seconds, 3), "max_seconds": limit},
    )


@dataclass(frozen=True)
class AudioInfo:
    """What a client is told about its upload, and what the job records as its input."""

    format: str
    codec: str
    duration: float
    sample_rate: int
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- reading


def _looks_like_media(path: str) -> bool:
    """Whether a file FFmpeg could not open starts like a media file.

    Tells a damaged upload (422: it is audio, but broken) from something that
    was never audio (415), so the client gets the error it can act on.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if len(head) < 4:
        return False
    if head[:4] in (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"caff", b"wvpk", b"MAC "):
        return True
    if head[:3] == b"ID3" or head[:4] == b"\x1a\x45\xdf\xa3":  # ID3 tag, Matroska/WebM
        return True
    if head[4:8] == b"ftyp":  # ISO media (mp4, m4a, mov), unless an image brand
        return head[8:12] not in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")
    # MPEG audio / ADTS frame sync with a valid layer and sample-rate index.
    b0, b1, b2 = head[0], head[1], head[2]
    return b0 == 0xFF and (b1 & 0xE0) == 0xE0 and (b1 & 0x06) != 0 and (b2 & 0x0C) != 0x0C


def _open(path: str, deadline: _Deadline | None = None) -> av.container.InputContainer:
    """Open an upload with the allowed demuxers; with ``deadline``, FFmpeg's
    reads are interrupted when it passes (PyAV's open and read timeouts)."""
    try:
        head, stripped = _leading_bytes(path)
    except OSError as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    options = _OPEN_OPTIONS if _SIGNATURES["mov"](head) else _OPEN_OPTIONS_NO_MOV
    if _SIGNATURES["wav"](head):
        options = {**options, "probesize": _WAV_PROBESIZE}
    timeout = None if deadline is None else deadline.remaining()
    try:
        container = av.open(path, "r", container_options=options, timeout=timeout)
    except (av.error.InvalidDataError, av.error.ArgumentError, EOFError) as exc:
        if deadline is not None:
            deadline.check()  # interrupted: say why, not "damaged"
        # FFmpeg recognised no allowed format, or the header is cut short.
        if _looks_like_media(path):
            raise _broken("The audio file is damaged or truncated.") from exc
        raise _unsupported() from exc
    except _AV_ERRORS as exc:
        if deadline is not None:
            deadline.check()
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    try:
        if deadline is not None:
            deadline.check()  # an interrupted parse may still "succeed" with half a header
        _check_signature(head, stripped, container.format.name.split(",")[0])
    except BaseException:
        container.close()
        raise
    return container


# --------------------------------------------------------------------------- signatures


def _mpeg_audio(h: bytes) -> bool:
    """An MPEG audio frame header: sync, a valid layer, bitrate and rate index."""
    return (
        len(h) >= 3
        and h[0] == 0xFF
        and (h[1] & 0xE0) == 0xE0
        and (h[1] & 0x06) != 0
        and (h[2] & 0xF0) != 0xF0
        and (h[2] & 0x0C) != 0x0C
    )


def _prefix(*magics: bytes) -> Any:
    return lambda h: h.startswith(magics)


def _riff(*kinds: bytes) -> Any:
    return lambda h: h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] in kinds


# What the first bytes of a file (after any ID3v2 tags) must be for the demuxer
# FFmpeg picked. Keyed by FFmpeg's demuxer name; a demuxer missing here is refused.
_SIGNATURES: dict[str, Any] = {
    "wav": _riff(b"WAVE"),
    "xwma": _riff(b"XWMA"),
    "avi": _riff(b"AVI "),
    "w64": _prefix(b"riff"),
    "aiff": lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"),
    "iff": _prefix(b"FORM"),
    "caf": _prefix(b"caff"),
    "au": _prefix(b".snd"),
    "voc": _prefix(b"Creative Voice File"),
    "flac": _prefix(b"fLaC"),
    "ogg": _prefix(b"OggS"),
    "mov": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"),
    "matroska": _prefix(b"\x1a\x45\xdf\xa3"),
    "asf": _prefix(bytes.fromhex("3026b2758e66cf11")),
    "wv": _prefix(b"wvpk"),
    "ape": _prefix(b"MAC "),
    "tta": _prefix(b"TTA1", b"TTA2"),
    "tak": _prefix(b"tBaK"),
    "shn": _prefix(b"ajkg"),
    "mpc": _prefix(b"MP+"),
    "mpc8": _prefix(b"MPCK"),
    "dsf": _prefix(b"DSD "),
    "amr": _prefix(b"#!AMR"),
    "oma": _prefix(b"ea3", b"EA3"),
    "rm": _prefix(b".RMF", b".ra\xfd"),
    "flv": _prefix(b"FLV"),
    "nut": _prefix(b"nut/multimedia container"),
    "mpeg": lambda h: h[:3] == b"\x00\x00\x01" and len(h) > 3 and h[3] >= 0xBA,
    "mpegts": lambda h: (
        (len(h) > 188 and h[0] == h[188] == 0x47) or (len(h) > 196 and h[4] == h[196] == 0x47)
    ),
    "dtshd": _prefix(b"DTSHDHDR"),
}
# Raw streams of frames have no file header, only each frame's sync word; an
# encoder may pad the start with zero bytes, which are skipped for these.
_SYNC_SIGNATURES: dict[str, Any] = {
    "mp3": _mpeg_audio,
    "mp2": _mpeg_audio,
    # ADTS (sync 0xFFF, layer 0) or ADIF.
    "aac": lambda h: (len(h) > 1 and h[0] == 0xFF and (h[1] & 0xF6) == 0xF0) or h[:4] == b"ADIF",
    "loas": lambda h: len(h) > 1 and h[0] == 0x56 and (h[1] & 0xE0) == 0xE0,
    "ac3": _prefix(b"\x0b\x77", b"\x77\x0b"),
    "eac3": _prefix(b"\x0b\x77", b"\x77\x0b"),
    "dts": _prefix(*(bytes.fromhex(h) for h in ("7ffe8001", "fe7f0180", "1fffe800", "ff1f00e8"))),
    "truehd": lambda h: h[4:7] == b"\xf8\x72\x6f",
    "mlp": lambda h: h[4:7] == b"\xf8\x72\x6f",
}
_HEAD_BYTES = 256
_MAX_ZERO_PADDING = 64 * 1024
_MAX_ID3_TAGS = 8  # files carry one, rarely two; a chain of them is not audio


def _after_id3(handle: Any) -> int:
    """Where the media starts: past the ID3v2 tags at the start of the file,
    which FFmpeg skips before any demuxer reads (its ff_id3v2_match and
    id3v2_parse: a footer only in v2.4)."""
    offset = 0
    for _ in range(_MAX_ID3_TAGS):
        handle.seek(offset)
        tag = handle.read(10)
        if (
            len(tag) < 10
            or tag[:3] != b"ID3"
            or tag[3] == 0xFF
            or tag[4] == 0xFF
            or any(b & 0x80 for b in tag[6:10])
        ):
            break
        size = 0
        for byte in tag[6:10]:  # a "syncsafe" integer: 7 bits per byte
            size = (size << 7) | byte
        footer = 10 if tag[3] == 4 and tag[5] & 0x10 else 0
        offset += 10 + size + footer
    return offset


def _leading_bytes(path: str) -> tuple[bytes, bytes]:
    """The file's first bytes after any ID3v2 tags, as is and past zero padding."""
    with open(path, "rb") as handle:
        offset = _after_id3(handle)
        handle.seek(offset)
        head = handle.read(_HEAD_BYTES)
        start = offset + _zero_run(handle.fileno(), offset, _MAX_ZERO_PADDING)
        handle.seek(start)
        return head, handle.read(_HEAD_BYTES)


# An ID3v2 header as FFmpeg's ff_id3v2_match accepts it, version 2-4 (others
# are skipped): a "syncsafe" size, 7 bits per byte.
_ID3_HEADER = re.compile(rb"ID3[\x02-\x04][\x00-\xfe][\x00-\xff][\x00-\x7f]{4}")
_ID3_SCAN_BLOCK = 1 << 20
# ID3v2.4 frame flags (FFmpeg applies them to v2.3 frames too).
_ID3_DATALEN, _ID3_ENCRYPTED, _ID3_COMPRESSED = 0x0001, 0x0004, 0x0008


def _syncsafe(raw: bytes) -> int:
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
    return value


def _syncsafe_of(size: int) -> int:
    """FFmpeg's size_to_syncsafe: a plain 32-bit size read as a syncsafe one."""
    return sum(((size >> (8 * i)) & 0x7F) << (7 * i) for i in range(4))


def _zero_run(fd: int, offset: int, limit: int) -> int:
    """How many zero bytes start at ``offset`` (at most ``limit``)."""
    run = 0
    while run < limit:
        chunk = os.pread(fd, min(1 << 16, limit - run), offset + run)
        if not chunk:
            break
        rest = chunk.lstrip(b"\0")
        run += len(chunk) - len(rest)
        if rest:
            break
    return min(run, limit)


def _id3_frame_id_at(fd: int, offset: int) -> bool:
    """FFmpeg's check_tag: is there a frame id (or padding) at ``offset``?"""
    raw = os.pread(fd, 4, offset)
    return len(raw) == 4 and (raw == b"\0\0\0\0" or re.fullmatch(rb"[A-Z0-9]{4}", raw) is not None)


def _id3_tag(fd: int, start: int, header: bytes, budget: int) -> tuple[int, int]:
    """``(frames, costly bytes)`` of the ID3v2 tag at ``start``, walked as
    FFmpeg's id3v2_parse walks it (at most ``budget`` frames).

    Costly bytes are PRIV frame data and the declared size of compressed
    frames, which FFmpeg inflates into memory.
    """
    version, flags = header[3], header[5]
    if version not in (3, 4):  # v2.2 has neither PRIV nor frame compression
        return 0, 0
    remaining = _syncsafe(header[6:10])
    at = start + 10
    if flags & 0x40:  # extended header
        extended = _syncsafe(os.pread(fd, 4, at)) - (4 if version == 4 else 0)
        if extended < 0:
            return 0, 0
        at += 4 + extended
        remaining -= 4 + extended
    frames = costly = 0
    while remaining >= 10 and frames <= budget:
        raw = os.pread(fd, 10, at)
        if len(raw) < 10:
            break
        if not any(raw[:8]):  # padding: FFmpeg steps through it 10 bytes at a time
            steps = min((_zero_run(fd, at, remaining) - 8) // 10 + 1, remaining // 10)
            at += 10 * steps
            remaining -= 10 * steps
            continue
        frame_id, size, frame_flags = raw[:4], int.from_bytes(raw[4:8], "big"), raw[8] << 8 | raw[9]
        if version == 4 and size > 0x7F:  # syncsafe, unless the writer got it wrong
            if size >= remaining or _id3_frame_id_at(fd, at + 10 + _syncsafe_of(size)):
                size = _syncsafe_of(size)
            elif not _id3_frame_id_at(fd, at + 10 + size):
                break
        if size > 1 << 28:
            break
        remaining -= 10 + size
        if remaining < 0:
            break
        frames += 1
        body, at = at + 10, at + 10 + size
        if size == 0:
            continue
        declared = size
        if frame_flags & _ID3_DATALEN:
            if size < 4:
                break
            declared = int.from_bytes(os.pread(fd, 4, body), "big")
            size -= 4
        if frame_flags & _ID3_ENCRYPTED:
            continue
        if frame_flags & _ID3_COMPRESSED:
            costly += declared
        elif frame_id == b"PRIV":
            costly += size
        elif frame_id[0] == 0:  # padding
            break
    return frames, costly


def _check_id3(path: str) -> None:
    """Refuse ID3v2 tags that would cost FFmpeg seconds and gigabytes.

    FFmpeg reads ID3v2 tags at the start of a file, in WAV ``id3 `` chunks and
    between ADTS AAC frames, so the whole file is searched, about 1 ms per MB
    (a chance match in audio data fails the header or frame checks). Tags are
    searched inside tags too, so a fake tag cannot hide a real one.
    """
    advice = "remove its tags (or re-encode it) and upload it again."
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    try:
        tags = frames = costly = 0
        offset = 0
        while block := os.pread(fd, _ID3_SCAN_BLOCK, offset):
            position = 0
            while match := _ID3_HEADER.search(block, position):
                position = match.start() + 1  # overlapping headers: a fake one cannot hide another
                tags += 1
                found, cost = _id3_tag(
                    fd, offset + match.start(), match.group(), _ID3_MAX_FRAMES - frames
                )
                frames += found
                costly += cost
                if tags > _ID3_MAX_TAGS or frames > _ID3_MAX_FRAMES:
                    raise _broken(
                        f"The file has more than {_ID3_MAX_TAGS} ID3 tags or "
                        f"{_ID3_MAX_FRAMES} ID3 frames; {advice}"
                    )
                if costly > _ID3_MAX_COSTLY_BYTES:
                    raise _broken(
                        f"The file's ID3 tags hold {costly / _MB:.1f} MB or more of private "
                        f"(PRIV) or compressed data; the limit is "
                        f"{_ID3_MAX_COSTLY_BYTES / _MB:g} MB: {advice}"
                    )
            if len(block) < _ID3_SCAN_BLOCK:
                break
            offset += len(block) - 9  # a header across the block boundary is found next time
    except OSError as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    finally:
        os.close(fd)


# Top-level boxes FFmpeg seeks over: media data and padding. Everything else
# counts as header (moov, moof, trak, meta, uuid, unknown boxes...): FFmpeg's
# parsers are chosen by box type at any depth, even at the top level.
_MP4_MEDIA = (b"mdat", b"free", b"skip", b"wide")
# What FFmpeg's mov_read_cmov inflates, wherever a cmov box is: "dcom" (zlib),
# then "cmvd" with the declared inflated size (allocated at once) and the data.
_CMOV = re.compile(rb"cmov.{4}dcomzlib.{4}cmvd(.{4})", re.DOTALL)
_BOX_WINDOW = 1 << 16


def _box_name(kind: bytes) -> str:
    return kind.decode("ascii", "backslashreplace")


def _cmov_bytes(data: bytes | memoryview, budget: int, found: int = 0) -> tuple[int, int]:
    """``(bytes, count)`` FFmpeg would inflate for the compressed movie headers
    in ``data``, nested ones included (an inflated header is parsed again).
    Stops once past ``budget`` bytes or ``_MP4_MAX_CMOV`` headers."""
    used = 0
    view = memoryview(data)
    for match in _CMOV.finditer(view):
        found += 1
        declared = int.from_bytes(match.group(1), "big")
        used += declared
        if used > budget or found > _MP4_MAX_CMOV:
            break
        if declared == 0:
            continue
        try:
            inflated = zlib.decompressobj().decompress(view[match.end() :], declared)
        except zlib.error:  # FFmpeg fails on it too, after allocating the declared size
            continue
        nested, found = _cmov_bytes(inflated, budget - used, found)
        used += nested
        if used > budget or found > _MP4_MAX_CMOV:
            break
    return used, found


def _header_box(window: bytes, at: int, fd: int, offset: int, size: int) -> bytes | memoryview:
    """The bytes of a header box if it may hold a compressed header, else b""."""
    if at + size <= len(window):
        found = window.find(b"cmov", at, at + size) >= 0
        return memoryview(window)[at : at + size] if found else b""
    body = os.pread(fd, size, offset)
    return body if b"cmov" in body else b""


def _box_error(message: str) -> AudioError:
    return _broken(f"The MP4 file {message}; re-encode it and upload it again.")


def _too_much_header(header_bytes: int) -> AudioError:
    return AudioError(
        f"The MP4 file's header boxes (moov and the like) hold {header_bytes / _MB:.1f} MB "
        f"or more; the limit is {_MP4_MAX_HEADER_BYTES / _MB:g} MB (an hour of AAC needs "
        "under 1 MB): re-encode it and upload it again.",
        code="audio_decode_failed",
        errors={
            "header_mb": round(header_bytes / _MB, 1),
            "max_header_mb": round(_MP4_MAX_HEADER_BYTES / _MB, 1),
        },
    )


def _check_boxes(path: str, deadline: _Deadline | None = None) -> None:
    """Refuse an MP4/MOV whose boxes would cost FFmpeg too much memory or time.

    FFmpeg parses the header boxes (``moov``: the sample tables) into memory
    at open, about twice their size, and walks every top-level box. Only
    files that start like MP4 are walked: FFmpeg's mov demuxer is not offered
    the others (``_OPEN_OPTIONS_NO_MOV``). The walk reads the top-level box
    headers (a real file: a few reads) and scans the header boxes for
    compressed ones (at most ``_MP4_MAX_HEADER_BYTES``; a real file: under a
    megabyte). Until a ``moov`` and an ``mdat`` are found (what FFmpeg reads
    at open), the boxes must tile the file: a box smaller than its header or
    past the end of the file is damage or a trap. After them, FFmpeg stops at
    the first box that is not one, and so does the walk: some phones append
    trailers that are not boxes.
    """
    try:
        with open(path, "rb") as handle:
            offset = _after_id3(handle)
            handle.seek(offset)
            if not _SIGNATURES["mov"](handle.read(8)):
                return
            fd = handle.fileno()
            end = os.fstat(fd).st_size
            window, window_at = b"", 0  # a box walk reads small, nearby pieces
            boxes = header_bytes = cmovs = 0
            found: set[bytes] = set()
            while offset < end:
                at = offset - window_at
                if at < 0 or (at + 32 > len(window) and window_at + len(window) < end):
                    window, window_at, at = os.pread(fd, _BOX_WINDOW, offset), offset, 0
                raw = window[at : at + 32]
                size, kind, head_size = int.from_bytes(raw[:4], "big"), raw[4:8], 8
                if size == 1:  # 64-bit size
                    size, head_size = int.from_bytes(raw[8:16], "big"), 16
                elif size == 0:  # to the end of the file
                    size = end - offset
                if kind == b"uuid":
                    head_size += 16
                if len(raw) < head_size or not head_size <= size <= end - offset:
                    if b"moov" in found and b"mdat" in found:
                        return
                    if len(raw) < head_size:
                        raise _box_error("is damaged or truncated: it ends inside a box header")
                    raise _box_error(
                        f"is damaged or truncated: it has a box {_box_name(kind)!r} of "
                        f"{size} bytes at byte {offset}, where {end - offset} are left"
                    )
                boxes += 1
                if boxes > _MP4_MAX_BOXES:
                    raise _box_error(f"has more than {_MP4_MAX_BOXES} boxes")
                if deadline is not None and not boxes % 4096:
                    deadline.check()
                offset += size
                if kind == b"mdat":
                    found.add(kind)
                    continue
                if kind in _MP4_MEDIA:  # FFmpeg reads a free box holding a moov as one
                    child = window[at + head_size + 4 : at + head_size + 8]
                    if len(child) < 4:
                        child = os.pread(fd, 4, offset - size + head_size + 4)
                    if child not in (b"mvhd", b"cmov"):
                        found.add(b"mdat" if kind == b"wide" else kind)
                        continue
                    kind = b"moov"
                found.add(kind)
                header_bytes += size
                if header_bytes <= _MP4_MAX_HEADER_BYTES:
                    body = _header_box(window, at, fd, offset - size, size)
                    if body:
                        inflated, cmovs = _cmov_bytes(
                            body, _MP4_MAX_HEADER_BYTES - header_bytes, cmovs
                        )
                        header_bytes += inflated
                if cmovs > _MP4_MAX_CMOV:
                    raise _box_error(f"has more than {_MP4_MAX_CMOV} compressed headers (cmov)")
                if header_bytes > _MP4_MAX_HEADER_BYTES:
                    raise _too_much_header(header_bytes)
    except OSError as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc


def _check_signature(head: bytes, stripped: bytes, demuxer: str) -> None:
    """Refuse a file whose first bytes (``_leading_bytes``) are not those of
    the format FFmpeg found in it.

    FFmpeg's MP3, AAC, AC-3 and MPEG-TS probes look for frames anywhere in the
    first megabyte, so a PDF, web page, image or zip with a song appended (a
    polyglot) is found to be "mp3". Requiring the format's own signature at the
    start means content, not a stray sync word, decides the type.
    """
    check = _SIGNATURES.get(demuxer)
    if check is not None:
        ok = check(head)
    else:
        sync = _SYNC_SIGNATURES.get(demuxer)
        ok = sync is not None and sync(stripped)
    if not ok:
        raise _unsupported("The file does not start like an audio or video file.")


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """Title, artist and album from the file's metadata (container or stream
    tags, keys lower-cased), so derived files can carry them on."""
    wanted = ("title", "artist", "album")
    try:
        with _open(os.fspath(path)) as container:
            found: dict[str, str] = {}
            sources = [container.metadata] + [s.metadata for s in container.streams.audio]
            for metadata in sources:
                for key, value in (metadata or {}).items():
                    key = key.lower()
                    if key in wanted and value and key not in found:
                        found[key] = str(value)[:500]
            return found
    except (AudioError, *_AV_ERRORS):
        return {}


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise _unsupported("The file has no audio track.")
    stream = container.streams.audio[0]
    context = stream.codec_context
    if context is None or not context.codec.is_decoder:
        raise _broken("The audio codec of this file is not supported.")
    return stream


def _format_name(container: av.container.InputContainer) -> str:
    first = container.format.name.split(",")[0]
    return _FORMAT_NAMES.get(first, first)


def _codec_name(stream: av.audio.stream.AudioStream) -> str:
    # canonical_name is the codec ("mp3"), name the decoder ("mp3float").
    return stream.codec_context.codec.canonical_name


def _bad_rate(sample_rate: int) -> AudioError:
    return AudioError(
        f"Unsupported sample rate {sample_rate} Hz "
        f"(must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz).",
        code="unsupported_sample_rate",
        errors={"sample_rate": sample_rate, "min": MIN_SAMPLE_RATE, "max": MAX_SAMPLE_RATE},
    )


def _bad_channels(channels: int) -> AudioError:
    detail = "has no channels" if channels < 1 else f"has {channels} channels"
    return AudioError(
        f"The audio track {detail} (must be 1-{MAX_CHANNELS}).",
        code="unsupported_channels",
        errors={"channels": channels, "max_channels": MAX_CHANNELS},
    )


def _check_shape(sample_rate: int, channels: int) -> None:
    """Limits on what is actually decoded (every frame format, not just the first)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise _bad_rate(sample_rate)
    if not 1 <= channels <= MAX_CHANNELS:
        raise _bad_channels(channels)


def _check_declared(stream: av.audio.stream.AudioStream) -> None:
    """Limits on what the headers declare, checked before anything is decoded.

    Zero means "not stated" in many containers, so only stated values count here;
    decoding checks the real ones.
    """
    context = stream.codec_context
    rate, channels = context.sample_rate or 0, context.channels or 0
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise _bad_rate(rate)
    if channels > MAX_CHANNELS:
        raise _bad_channels(channels)


def _first_frame(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    deadline: _Deadline | None = None,
) -> av.AudioFrame:
    """Decode just enough to prove the codec works on this file."""
    packets = 0
    error: Exception | None = None
    for packet in container.demux(stream):
        if deadline is not None:
            deadline.check()
        if packet.size:
            packets += 1
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.FFmpegError as exc:  # a bad packet; a later one may decode
            error = exc
            frames = []
        if frames:
            return frames[0]
        if packets >= _PROBE_PACKETS:
            break
    if packets == 0 and error is None:
        raise _empty()
    detail = f" ({error.__class__.__name__})" if error is not None else ""
    raise _broken(f"The audio track could not be decoded{detail}.")


def _header_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _packet_duration(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    limit: float | None,
    deadline: _Deadline | None = None,
) -> float:
    """Duration from packet timestamps, for files whose headers say nothing.

    Demuxing without decoding is cheap; it stops as soon as ``limit`` is passed
    (or ``deadline``: millions of packets with no duration would not pass it).
    """
    # Integer ticks of the stream's time base: exact, and far cheaper per
    # packet than Fractions (a 20-minute Opus file is 60,000 packets).
    total = 0
    start: int | None = None
    end: int | None = None
    time_base = stream.time_base or Fraction(1, stream.codec_context.sample_rate or 1)
    ticks_limit = None if limit is None else limit / time_base
    for packet in container.demux(stream):
        if deadline is not None:
            deadline.check()
        if not packet.size:
            continue
        duration = packet.duration or 0
        total += duration
        pts = packet.pts
        if pts is not None:
            start = pts if start is None else min(start, pts)
            end = pts + duration if end is None else max(end, pts + duration)
        if (
            ticks_limit is not None
            and max(total, end - start if end is not None else 0) > ticks_limit
        ):
            break
    return float(max(total, end - start if end is not None else 0) * time_base)


def probe(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
    budget_seconds: float | None = None,
) -> AudioInfo:
    """Check an upload is usable audio before a job is accepted for it.

    Reads headers and decodes one frame, so a client learns at upload time (not
    minutes later from a failed job) that its file is not audio, is broken, is
    too long, or decodes to more than ``max_bytes`` of float32 samples at its
    own rate and channel count (a highly compressed hour of silence is a small
    file). Only the first audio track is used, here and when decoding.
    Durations come from headers and may be estimates or lies; ``decode``
    enforces the same limits again on the samples actually decoded. A file
    that takes more than ``budget_seconds`` (``_PROBE_SECONDS``) to get
    through is refused (422). ``probe_isolated`` runs this in a child process.
    """
    path = os.fspath(path)
    _check_id3(path)
    deadline = _Deadline(_PROBE_SECONDS if budget_seconds is None else budget_seconds)
    _check_boxes(path, deadline)
    try:
        with _open(path, deadline) as container:
            stream = _audio_stream(container)
            _check_declared(stream)
            try:
                frame = _first_frame(container, stream, deadline)
            except AudioError:
                if (
                    stream.codec_context.channels == 0 and not deadline.passed()
                ):  # declares none, decodes none
                    raise _bad_channels(0) from None
                raise
            sample_rate, channels = frame.sample_rate, frame.layout.nb_channels
            _check_shape(sample_rate, channels)
            duration = _header_duration(container, stream)
            if duration is None:
                with _open(
                    path, deadline
                ) as again:  # from the start; seeking is not always possible
                    duration = _packet_duration(
                        again, again.streams.audio[0], max_seconds, deadline
                    )
            if duration <= 0:
                raise _empty()
            if max_seconds is not None and duration > max_seconds:
                raise _too_long(duration, max_seconds)
            decoded_bytes = duration * sample_rate * channels * _SAMPLE_BYTES
            if max_bytes is not None and decoded_bytes > max_bytes:
                raise _too_large(decoded_bytes, max_bytes)
            return AudioInfo(
                format=_format_name(container),
                codec=_codec_name(stream),
                duration=round(duration, 6),
                sample_rate=sample_rate,
                channels=channels,
            )
    except _AV_ERRORS as exc:
        deadline.check()  # a read interrupted by the timeout
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc


# Beyond the probe's own budget, how long the parent waits for the child (its
# start, and a loaded machine) before killing it; and the child's CPU limit.
_CHILD_GRACE_SECONDS = 8.0
_CHILD_CPU_SECONDS = 10


def _probe_in_child(
    path: str, max_seconds: float | None, max_bytes: float | None, budget_seconds: float
) -> AudioInfo:
    try:
        return probe(
            path, max_seconds=max_seconds, max_bytes=max_bytes, budget_seconds=budget_seconds
        )
    except AudioError as exc:
        if isinstance(exc.__cause__, MemoryError):  # FFmpeg's ENOMEM, at the limit
            raise MemoryError from None
        raise


def probe_isolated(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
    memory_mb: int,
) -> AudioInfo:
    """``probe`` in a child process with at most ``memory_mb`` of memory.

    Uploads come from anyone, and FFmpeg's parsers are C: a file that crashes
    one, or makes it buffer hundreds of MB, costs the child, not the API
    process and its other requests. Either way the client gets a 422.
    """
    from app import isolated

    budget = _PROBE_SECONDS
    try:
        return isolated.call(
            _probe_in_child,
            os.fspath(path),
            max_seconds,
            max_bytes,
            budget,
            timeout=budget + _CHILD_GRACE_SECONDS,
            memory_bytes=memory_mb * _MB,
            cpu_seconds=_CHILD_CPU_SECONDS,
        )
    except isolated.ChildOutOfMemory:
        raise AudioError(
            f"Reading the file's structure needs more than {memory_mb} MB of memory "
            "(it is damaged or built to be costly to read); re-encode it and upload it again.",
            code="audio_decode_failed",
            errors={"max_probe_memory_mb": memory_mb},
        ) from None
    except isolated.ChildTimedOut:
        raise _too_slow(budget) from None
    except isolated.Unavailable as exc:
        # This host's fault, not the file's: the upload is probed here instead.
        log.error("upload probing cannot use a child process (%s): probing in-process", exc)
        return probe(path, max_seconds=max_seconds, max_bytes=max_bytes, budget_seconds=budget)
    except isolated.ChildFailed as exc:
        log.warning("probing an upload failed in its child process: %s", exc)
        raise _broken(
            "The audio file could not be read: the decoder stopped on it (it is damaged "
            "or malformed); re-encode it and upload it again."
        ) from None


def _frame_key(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


def _decoded_frames(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> Iterator[av.AudioFrame]:
    """Every frame of the stream, skipping isolated damaged packets like ffmpeg does."""
    decoded = False
    bad = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            if decoded:  # demuxer gave up mid-file: keep what was read, as ffmpeg does
                return
            raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.FFmpegError as exc:
            bad += 1
            limit = _MAX_BAD_PACKETS if decoded else _PROBE_PACKETS
            if bad > limit:
                raise _broken(
                    f"The audio track could not be decoded ({exc.__class__.__name__})."
                ) from exc
            continue
        if frames:
            decoded = True
            bad = 0
        yield from frames


def _check_decode_args(sample_rate: int | None, channels: int | None) -> None:
    if channels is not None and channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels!r}")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate!r}")


def decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode the first audio track to float32 ``(channels, samples)``.

    ``channels`` (1 or 2) converts with FFmpeg's downmix, normalised so a
    downmix cannot clip; mono is duplicated to stereo as is, not attenuated.
    ``sample_rate`` converts with soxr. ``max_seconds`` and ``max_bytes`` (float32
    samples at the file's own rate and channel count) are checked against the
    samples decoded so far, so a file whose header understates its length is
    stopped early (``audio_too_long``, ``audio_too_large``) instead of filling
    memory. NaN samples become silence and the rest is clamped to
    ``MAX_SAMPLE_MAGNITUDE``, so the result is always finite.

    Returns ``(audio, sample_rate_of_audio)``. ``iter_decode`` gives the same
    samples block by block, in memory that does not grow with the file.
    """
    _check_decode_args(sample_rate, channels)
    path = os.fspath(path)
    try:
        with _open(path) as container:
            chunks = _DecodedChunks(container, sample_rate, channels, max_seconds, max_bytes)
            return _concatenate(chunks), chunks.sample_rate
    except _AV_ERRORS as exc:
        raise _broken(f"The audio file could not be decoded ({exc.__class__.__name__}).") from exc


def iter_decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_frames: int,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode like ``decode``, as float32 ``(channels, block_frames)`` blocks.

    Concatenated, the blocks are exactly what ``decode`` returns for the same
    arguments (same samples, same length); every block has ``block_frames``
    frames except the last, which may be shorter but is never empty. The rate
    of the blocks is ``sample_rate`` if given, else the file's own (``probe``
    tells it). Memory stays around a few blocks, whatever the file's length.

    Bad arguments raise ValueError at the call. Everything about the file
    raises ``AudioError`` from ``next()``, with the same codes as ``decode``:
    ``unsupported_media_type``/``audio_decode_failed``/``empty_audio`` from the
    first ``next()`` (a file with no samples never yields), ``audio_too_long``
    (``audio_too_large``) as soon as the decoded samples pass ``max_seconds``
    (``max_bytes``), i.e. possibly after
    some blocks were yielded, so a consumer must treat what it made from them
    as incomplete. The file stays open until the iterator is exhausted or
    closed: wrap it in ``contextlib.closing`` when stopping early.
    """
    _check_decode_args(sample_rate, channels)
    if isinstance(block_frames, bool) or not isinstance(block_frames, int | np.integer):
        raise ValueError(f"block_frames must be a positive integer, not {block_frames!r}")
    if block_frames <= 0:
        raise ValueError(f"block_frames must be a positive integer, not {block_frames!r}")
    return _iter_blocks(
        os.fspath(path), sample_rate, channels, int(block_frames), max_seconds, max_bytes
    )


def _iter_blocks(
    path: str,
    sample_rate: int | None,
    channels: int | None,
    block_frames: int,
    max_seconds: float | None,
    max_bytes: float | None,
) -> Iterator[np.ndarray]:
    try:
        with _open(path) as container:
            chunks = _DecodedChunks(container, sample_rate, channels, max_seconds, max_bytes)
            yield from _reblock(chunks, block_frames)
    except _AV_ERRORS as exc:
        raise _broken(f"The audio file could not be decoded ({exc.__class__.__name__}).") from exc


class _DecodedChunks:
    """The decoded, converted audio of a container, as it arrives: the one code
    path behind ``decode`` and ``iter_decode``.

    Iterating yields float32 ``(work channels, n)`` chunks of any length, in
    order; ``work channels`` is 1 when mono is to become stereo (the caller
    duplicates it by broadcasting), else ``channels``. ``channels`` and
    ``sample_rate`` describe the output and are set before the first chunk.
    Raises ``empty_audio`` at the end if nothing came out.

    (Kept in small methods: tracemalloc, which the memory tests use, costs time
    proportional to the size of the function an allocation happens in.)
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        sample_rate: int | None,
        channels: int | None,
        max_seconds: float | None,
        max_bytes: float | None = None,
    ) -> None:
        self._container = container
        self._sample_rate = sample_rate
        self._channels = channels
        self._max_seconds = max_seconds
        self._max_bytes = max_bytes
        self.channels = 0  # of the output
        self.sample_rate = 0  # of the output
        self._native_rate = 0
        self._work_channels = 0
        self._layout: av.AudioLayout | str = "mono"
        # What the decoder produced, before any conversion: the units of the limits.
        self._decoded_seconds = 0.0
        self._decoded_bytes = 0
        self._produced = 0  # frames yielded
        self._key: tuple[str, str, int] | None = None
        self._resampler: av.AudioResampler | None = None
        self._rate_converter: soxr.ResampleStream | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        stream = _audio_stream(self._container)
        for frame in _decoded_frames(self._container, stream):
            if frame.samples:
                yield from self._feed(frame)
        yield from self._finish()
        if self._produced == 0:
            raise _empty()

    def _start(self, frame: av.AudioFrame) -> None:
        # The first frame fixes the output: its rate, and the layout FFmpeg
        # converts every frame to. Mono becomes stereo by duplication
        # (broadcasting), not by FFmpeg's upmix, which would attenuate it by 3 dB.
        channels = self._channels
        native_rate = frame.sample_rate
        source_channels = frame.layout.nb_channels
        _check_shape(native_rate, source_channels)
        self._native_rate = native_rate
        self.channels = channels or source_channels
        self.sample_rate = self._sample_rate or native_rate
        if channels is None:
            self._layout = frame.layout
        elif channels == 2 and source_channels > 1:
            self._layout = "stereo"
        self._work_channels = (
            source_channels if channels is None else min(channels, source_channels)
        )
        if self.sample_rate != native_rate:
            # Streaming soxr: the same samples and length as one-shot soxr.resample.
            self._rate_converter = soxr.ResampleStream(
                native_rate, self.sample_rate, self._work_channels, dtype="float32", quality="HQ"
            )

    def _feed(self, frame: av.AudioFrame) -> Iterator[np.ndarray]:
        if self._resampler is None:
            self._start(frame)
        if _frame_key(frame) != self._key:
            # First frame, or the stream changed format mid-file (concatenated
            # files do this, and so can a forged one): the new format must be
            # within limits too, and gets a converter to the same output.
            _check_shape(frame.sample_rate, frame.layout.nb_channels)
            if self._resampler is not None:
                yield from self._convert(self._resampler.resample(None))
            self._key = _frame_key(frame)
            self._resampler = av.AudioResampler(
                # Interleaved: PyAV cannot hand over planar frames of 8 or more
                # channels (it crashes the process), interleaved ones it can.
                format="flt",
                layout=self._layout,
                rate=self._native_rate,
                # Scale FFmpeg's downmix matrix so a downmix cannot clip.
                options={"rematrix_maxval": "1.0"},
            )
        self._count(frame)
        yield from self._convert(self._resampler.resample(frame))

    def _count(self, frame: av.AudioFrame) -> None:
        """Enforce the limits on what the file really holds, whatever its headers said."""
        self._decoded_seconds += frame.samples / frame.sample_rate
        self._decoded_bytes += frame.samples * frame.layout.nb_channels * _SAMPLE_BYTES
        if self._max_seconds is not None and self._decoded_seconds > self._max_seconds:
            raise _too_long(self._decoded_seconds, self._max_seconds, at_least=True)
        if self._max_bytes is not None and self._decoded_bytes > self._max_bytes:
            raise _too_large(self._decoded_bytes, self._max_bytes, at_least=True)

    def _convert(self, frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        for converted in frames:
            # (1, frames * channels) interleaved -> (channels, frames)
            chunk = _finite(converted.to_ndarray().reshape(-1, self._work_channels).T)
            if self._rate_converter is not None:
                chunk = self._rate_converter.resample_chunk(np.ascontiguousarray(chunk.T)).T
            if chunk.shape[1]:
                self._produced += chunk.shape[1]
                yield chunk

    def _finish(self) -> Iterator[np.ndarray]:
        if self._resampler is not None:
            yield from self._convert(self._resampler.resample(None))
        if self._rate_converter is not None:
            tail = self._rate_converter.resample_chunk(
                np.zeros((0, self._work_channels), np.float32), last=True
            )
            if len(tail):
                self._produced += len(tail)
                yield tail.T


def _finite(chunk: np.ndarray) -> np.ndarray:
    """NaN to silence, everything else clamped to ``MAX_SAMPLE_MAGNITUDE`` (in place)."""
    if not np.isfinite(chunk).all():
        np.nan_to_num(
            chunk, copy=False, nan=0.0, posinf=MAX_SAMPLE_MAGNITUDE, neginf=-MAX_SAMPLE_MAGNITUDE
        )
    if chunk.size and (chunk.max() > MAX_SAMPLE_MAGNITUDE or chunk.min() < -MAX_SAMPLE_MAGNITUDE):
        np.clip(chunk, -MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE, out=chunk)
    return chunk


def _concatenate(chunks: _DecodedChunks) -> np.ndarray:
    collected = list(chunks)
    total = sum(chunk.shape[1] for chunk in collected)
    # One allocation for the result; chunks are dropped as they are copied, so
    # peak memory stays near two copies of the audio.
    result = np.empty((chunks.channels, total), dtype=np.float32)
    offset = 0
    collected.reverse()
    while collected:
        chunk = collected.pop()
        result[:, offset : offset + chunk.shape[1]] = chunk  # (1, n) broadcasts to stereo
        offset += chunk.shape[1]
    return result


def _reblock(chunks: _DecodedChunks, block_frames: int) -> Iterator[np.ndarray]:
    """Regroup chunks into ``(channels, block_frames)`` blocks, the last one shorter."""
    pending: deque[np.ndarray] = deque()
    pending_frames = 0

    def take(frames: int) -> np.ndarray:
        nonlocal pending_frames
        block = np.empty((chunks.channels, frames), dtype=np.float32)
        offset = 0
        while offset < frames:
            chunk = pending.popleft()
            used = min(chunk.shape[1], frames - offset)
            block[:, offset : offset + used] = chunk[:, :used]  # (1, n) broadcasts to stereo
            if used < chunk.shape[1]:
                pending.appendleft(chunk[:, used:])
            offset += used
        pending_frames -= frames
        return block

    for chunk in chunks:
        pending.append(chunk)
        pending_frames += chunk.shape[1]
        while pending_frames >= block_frames:
            yield take(block_frames)
    if pending_frames:
        yield take(pending_frames)


# --------------------------------------------------------------------------- writing


def _as_channels_first(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[np.newaxis, :]
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"audio must have shape (channels, samples), not {audio.shape}")
    return audio


def _blocks(audio: np.ndarray, *, clip: bool) -> Iterator[np.ndarray]:
    """(frames, channels) float32 blocks, cleaned of NaN/inf (and clipped for PCM)."""
    for start in range(0, audio.shape[1], _ENCODE_BLOCK):
        block = np.array(audio[:, start : start + _ENCODE_BLOCK].T, dtype=np.float32, order="C")
        np.nan_to_num(block, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        if clip:
            np.clip(block, -1.0, 1.0, out=block)
        yield block


def _mp3_rate(sample_rate: int) -> int:
    if sample_rate in _MP3_SAMPLE_RATES:
        return sample_rate
    if sample_rate > _MP3_SAMPLE_RATES[-1]:
        return 44100 if sample_rate % 44100 == 0 else 48000
    return next(rate for rate in _MP3_SAMPLE_RATES if rate >= sample_rate)


def _check_output(
    format: str, bit_depth: str, mp3_bitrate: int, sample_rate: int
) -> tuple[str, int]:
    """Validate encoding arguments; returns the normalised ``(bit_depth, sample_rate)``."""
    bit_depth = str(bit_depth)
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, not {format!r}")
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {BIT_DEPTHS}, not {bit_depth!r}")
    if mp3_bitrate not in MP3_BITRATES:
        raise ValueError(f"mp3_bitrate must be one of {MP3_BITRATES}, not {mp3_bitrate!r}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, not {sample_rate!r}")
    return bit_depth, int(sample_rate)


def _pcm16(block: np.ndarray) -> bytes:
    return np.rint(np.clip(block, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class _Mp3Sink:
    """LAME fed block by block, through soxr when LAME cannot take the rate."""

    def __init__(self, path: str, sample_rate: int, channels: int, bitrate: int) -> None:
        # LAME only encodes MPEG sample rates and otherwise resamples on its own
        # (badly); it also drops the rate at low bitrates unless told not to.
        rate = _mp3_rate(sample_rate)
        self._channels = channels
        self._converter = (
            soxr.ResampleStream(sample_rate, rate, channels, dtype="float32", quality="HQ")
            if rate != sample_rate
            else None
        )
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(bitrate)
        encoder.set_in_sample_rate(rate)
        encoder.set_out_sample_rate(rate)
        encoder.set_channels(channels)
        encoder.set_quality(2)
        self._encoder = encoder
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by finish()/abort()

    def write(self, block: np.ndarray) -> None:
        if self._converter is not None:
            block = self._converter.resample_chunk(block)
        self._handle.write(self._encoder.encode(_pcm16(block)))

    def finish(self) -> None:
        try:
            if self._converter is not None:
                tail = self._converter.resample_chunk(
                    np.zeros((0, self._channels), np.float32), last=True
                )
                self._handle.write(self._encoder.encode(_pcm16(tail)))
            self._handle.write(self._encoder.flush())
        finally:
            self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class _SoundFileSink:
    """WAV or FLAC through libsndfile."""

    def __init__(
        self, path: str, sample_rate: int, channels: int, container: str, subtype: str
    ) -> None:
        self._handle = sf.SoundFile(
            path, "w", samplerate=sample_rate, channels=channels, format=container, subtype=subtype
        )

    def write(self, block: np.ndarray) -> None:
        self._handle.write(block)

    def finish(self) -> None:
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class AudioWriter:
    """Write an audio file block by block; the file appears at ``path`` only when complete.

    ``write`` takes float ``(channels, n)`` blocks of any length. Formats, bit
    depths, clipping, NaN handling, validation and the mp3 rate fallback are
    those of ``encode`` (which is built on this class): the output is the same
    whatever the blocks' sizes. Samples go to a temporary file beside ``path``
    that ``close`` renames into place; ``abort`` (or leaving the ``with`` block
    by an exception) deletes it, so ``path`` never holds a partial file. Used
    without ``with``, call ``close`` or ``abort`` in a ``finally``.

    Bad arguments raise ValueError, before anything is created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        channels: int,
        *,
        format: str = "wav",
        bit_depth: str = "16",
        mp3_bitrate: int = 320,
    ) -> None:
        bit_depth, sample_rate = _check_output(format, bit_depth, mp3_bitrate, sample_rate)
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        channels = int(channels)
        if format == "mp3" and channels > 2:
            raise ValueError(f"mp3 holds mono or stereo, not {channels} channels")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format
        self._frames = 0
        self._sink: _Mp3Sink | _SoundFileSink | None = None
        fd, self._tmp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        try:
            if format == "mp3":
                self._clip = True
                self._sink = _Mp3Sink(self._tmp_name, sample_rate, channels, mp3_bitrate)
            else:
                if format == "flac":
                    container, subtype = "FLAC", "PCM_24" if bit_depth == "24" else "PCM_16"
                else:
                    container = "WAV"
                    subtype = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}[bit_depth]
                # libsndfile wraps loud PCM samples around; float keeps overs.
                self._clip = subtype != "FLOAT"
                self._sink = _SoundFileSink(
                    self._tmp_name, sample_rate, channels, container, subtype
                )
        except BaseException:
            Path(self._tmp_name).unlink(missing_ok=True)
            raise

    @property
    def frames_written(self) -> int:
        """Frames given to ``write`` so far, at the input rate (before any mp3 resampling)."""
        return self._frames

    @property
    def closed(self) -> bool:
        return self._sink is None

    def write(self, block: np.ndarray) -> None:
        if self._sink is None:
            raise ValueError("write to a closed AudioWriter")
        block = _as_channels_first(block)
        if block.shape[0] != self.channels:
            raise ValueError(
                f"block has {block.shape[0]} channels, the writer {self.channels}: "
                "blocks must have shape (channels, frames)"
            )
        for piece in _blocks(block, clip=self._clip):
            self._sink.write(piece)
        self._frames += block.shape[1]

    def close(self) -> None:
        """Finish the file and move it to ``path``. Does nothing once closed or aborted."""
        if self._sink is None:
            return
        sink, self._sink = self._sink, None
        try:
            sink.finish()
            os.replace(self._tmp_name, self.path)
        except BaseException:
            Path(self._tmp_name).unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drop what was written: no file at ``path``, no temporary file left."""
        if self._sink is None:
            return
        sink, self._sink = self._sink, None
        try:
            with contextlib.suppress(Exception):
                sink.abort()
        finally:
            Path(self._tmp_name).unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def encode(
    audio: np.ndarray,
    sample_rate: int,
    path: str | os.PathLike[str],
    *,
    format: str = "wav",
    bit_depth: str = "16",
    mp3_bitrate: int = 320,
) -> None:
    """Write float ``(channels, samples)`` audio as a deliverable stem file.

    PCM output is clipped to [-1, 1] (libsndfile would otherwise wrap loud
    samples around); 32-bit float WAV keeps overs. The file appears at ``path``
    only once complete, so a crash never leaves a truncated stem to download.
    Bad arguments raise ValueError: they are programming errors, not client ones.
    ``AudioWriter`` writes the same file block by block.
    """
    bit_depth, sample_rate = _check_output(format, bit_depth, mp3_bitrate, sample_rate)
    audio = _as_channels_first(audio)
    with AudioWriter(
        path,
        sample_rate,
        audio.shape[0],
        format=format,
        bit_depth=bit_depth,
        mp3_bitrate=mp3_bitrate,
    ) as writer:
        writer.write(audio)
