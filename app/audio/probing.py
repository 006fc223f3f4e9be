"""Probing an upload: is it usable audio, and what is it?

``probe`` runs in the API process (or in a child, ``isolation``), so it has a
time budget (``PROBE_SECONDS``): FFmpeg's header parsers walk structures of
any count, and an upload made of millions of empty ID3 frames, WAV chunks or
MP4 boxes keeps them busy long before any audio is found. The checks in
``guards`` run first and refuse the structures that are costly in memory.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av
import av.error

from app.audio.errors import AV_ERRORS, AudioError, broken, empty, unsupported
from app.audio.guards import check_boxes, check_id3, open_container
from app.audio.limits import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SAMPLE_BYTES,
    Deadline,
    bad_channels,
    bad_rate,
    check_shape,
    too_large,
    too_long,
)

# FFmpeg names some demuxers after a family; clients expect the usual name.
_FORMAT_NAMES = {"mov": "mp4"}

# Packets probe() may feed the decoder before deciding the stream is unusable.
# Decoders emit their first frame after one packet (a few with priming delay),
# so this only matters for broken files and keeps their probe cheap.
PROBE_PACKETS = 256
# Wall-clock budget of one probe() (open, first frame, duration scan). Real
# files take well under 0.05 s, whatever their size: FFmpeg reads headers and
# seeks past the rest. Crafted ones walk tiny header structures, about 1 us
# each: 150 MB of empty ID3v2 frames took 12 s, of empty WAV chunks 15 s, of
# empty MP4 boxes 24 s. FFmpeg's own limits (probesize, analyzeduration) do
# not apply to header parsing, so PyAV's timeout (FFmpeg's interrupt callback,
# checked between reads) stops it, and the Python loops check the deadline.
PROBE_SECONDS = 2.0


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


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """Title, artist and album from the file's metadata (container or stream
    tags, keys lower-cased), so derived files can carry them on."""
    wanted = ("title", "artist", "album")
    try:
        with open_container(os.fspath(path)) as container:
            found: dict[str, str] = {}
            sources = [container.metadata] + [s.metadata for s in container.streams.audio]
            for metadata in sources:
                for key, value in (metadata or {}).items():
                    key = key.lower()
                    if key in wanted and value and key not in found:
                        found[key] = str(value)[:500]
            return found
    except (AudioError, *AV_ERRORS):
        return {}


def first_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The track probe and decode use (only ever the first), refused unless this
    FFmpeg can decode it, so both fail the same way on the same file."""
    if not container.streams.audio:
        raise unsupported("The file has no audio track.")
    stream = container.streams.audio[0]
    context = stream.codec_context
    if context is None or not context.codec.is_decoder:
        raise broken("The audio codec of this file is not supported.")
    return stream


def _format_name(container: av.container.InputContainer) -> str:
    first = container.format.name.split(",")[0]
    return _FORMAT_NAMES.get(first, first)


def _codec_name(stream: av.audio.stream.AudioStream) -> str:
    # canonical_name is the codec ("mp3"), name the decoder ("mp3float").
    return stream.codec_context.codec.canonical_name


def _check_declared(stream: av.audio.stream.AudioStream) -> None:
    """Limits on what the headers declare, checked before anything is decoded.

    Zero means "not stated" in many containers, so only stated values count here;
    decoding checks the real ones.
    """
    context = stream.codec_context
    rate, channels = context.sample_rate or 0, context.channels or 0
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise bad_rate(rate)
    if channels > MAX_CHANNELS:
        raise bad_channels(channels)


def _first_frame(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    deadline: Deadline | None = None,
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
        if packets >= PROBE_PACKETS:
            break
    if packets == 0 and error is None:
        raise empty()
    detail = f" ({error.__class__.__name__})" if error is not None else ""
    raise broken(f"The audio track could not be decoded{detail}.")


def header_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """The duration the headers state, or None where they state none (then
    ``packet_duration`` measures it)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def packet_duration(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    limit: float | None,
    deadline: Deadline | None = None,
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
            and max(total, end - start if end is not None and start is not None else 0)
            > ticks_limit
        ):
            break
    return float(
        max(total, end - start if end is not None and start is not None else 0) * time_base
    )


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
    that takes more than ``budget_seconds`` (``PROBE_SECONDS``) to get
    through is refused (422). ``probe_isolated`` runs this in a child process.
    """
    path = os.fspath(path)
    check_id3(path)
    deadline = Deadline(PROBE_SECONDS if budget_seconds is None else budget_seconds)
    check_boxes(path, deadline)
    try:
        with open_container(path, deadline) as container:
            stream = first_audio_stream(container)
            _check_declared(stream)
            try:
                frame = _first_frame(container, stream, deadline)
            except AudioError:
                if (
                    stream.codec_context.channels == 0 and not deadline.passed()
                ):  # declares none, decodes none
                    raise bad_channels(0) from None
                raise
            sample_rate, channels = frame.sample_rate, frame.layout.nb_channels
            check_shape(sample_rate, channels)
            duration = header_duration(container, stream)
            if duration is None:
                with open_container(
                    path, deadline
                ) as again:  # from the start; seeking is not always possible
                    duration = packet_duration(again, again.streams.audio[0], max_seconds, deadline)
            if duration <= 0:
                raise empty()
            if max_seconds is not None and duration > max_seconds:
                raise too_long(duration, max_seconds)
            decoded_bytes = duration * sample_rate * channels * SAMPLE_BYTES
            if max_bytes is not None and decoded_bytes > max_bytes:
                raise too_large(decoded_bytes, max_bytes)
            return AudioInfo(
                format=_format_name(container),
                codec=_codec_name(stream),
                duration=round(duration, 6),
                sample_rate=sample_rate,
                channels=channels,
            )
    except AV_ERRORS as exc:
        deadline.check()  # a read interrupted by the timeout
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
