"""Reading and writing audio files: probe, decode, encode.

Everything a client uploads goes through PyAV (FFmpeg), so any container or
codec FFmpeg can decode is accepted, and every failure leaves as an
``AudioError`` with a stable code instead of one of PyAV's many exception types.
Sample-rate conversion uses soxr because FFmpeg's default resampler is audibly
worse at the quality the separation models need; channel conversion uses
FFmpeg's downmix because it knows the speaker layouts.

Uploads are hostile input. FFmpeg is therefore only allowed the demuxers in
``_DEMUXERS``: playlist and reference formats (hls, concat, dash, image
sequences...) can make FFmpeg open other files or URLs, and none of them is a
way to upload audio.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import lameenc
import numpy as np
import soundfile as sf
import soxr

from app.errors import ServiceError

__all__ = [
    "BIT_DEPTHS",
    "CONTENT_TYPES",
    "MP3_BITRATES",
    "OUTPUT_FORMATS",
    "AudioError",
    "AudioInfo",
    "decode",
    "encode",
    "probe",
]

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
OUTPUT_FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = ("16", "24", "32f")
MP3_BITRATES = (96, 128, 160, 192, 224, 256, 320)

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000

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

# FFmpeg names some demuxers after a family; clients expect the usual name.
_FORMAT_NAMES = {"mov": "mp4"}

# Packets probe() may feed the decoder before deciding the stream is unusable.
# Decoders emit their first frame after one packet (a few with priming delay),
# so this only matters for broken files and keeps their probe cheap.
_PROBE_PACKETS = 256
# Consecutive undecodable packets decode() tolerates once audio has started, as
# ffmpeg itself does for a damaged stretch; beyond this the file is broken.
_MAX_BAD_PACKETS = 32
_ENCODE_BLOCK = 1 << 16  # frames per write: bounds temporary copies when encoding
_MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# What PyAV raises for broken input. FFmpegError covers av.error.*, which also
# subclass OSError/ValueError; the bare ones come from PyAV's Python layer.
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)

_STATUS = {"unsupported_media_type": 415}


class AudioError(ServiceError):
    """A file the service cannot use as audio, with a code the client can act on.

    Codes: ``unsupported_media_type`` (415, not audio at all), ``audio_decode_failed``
    (422, audio but broken or an undecodable codec), ``audio_too_long`` (422),
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


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, "r", container_options=_OPEN_OPTIONS)
    except (av.error.InvalidDataError, av.error.ArgumentError, EOFError) as exc:
        # FFmpeg recognised no allowed format, or the header is cut short.
        if _looks_like_media(path):
            raise _broken("The audio file is damaged or truncated.") from exc
        raise _unsupported() from exc
    except _AV_ERRORS as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc


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


def _check_shape(sample_rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise _broken(
            f"Unsupported sample rate {sample_rate} Hz "
            f"(must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)."
        )
    if channels < 1:
        raise _broken("The audio track has no channels.")


def _first_frame(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> av.AudioFrame:
    """Decode just enough to prove the codec works on this file."""
    packets = 0
    error: Exception | None = None
    for packet in container.demux(stream):
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
) -> float:
    """Duration from packet timestamps, for files whose headers say nothing.

    Demuxing without decoding is cheap; it stops as soon as ``limit`` is passed.
    """
    total = Fraction(0)
    start: int | None = None
    end: int | None = None
    time_base = stream.time_base or Fraction(1, stream.codec_context.sample_rate or 1)
    for packet in container.demux(stream):
        if not packet.size:
            continue
        duration = packet.duration or 0
        total += duration * time_base
        if packet.pts is not None:
            start = packet.pts if start is None else min(start, packet.pts)
            end = packet.pts + duration if end is None else max(end, packet.pts + duration)
        seconds = float(max(total, (end - start) * time_base if start is not None else 0))
        if limit is not None and seconds > limit:
            return seconds
    return float(max(total, (end - start) * time_base if start is not None else 0))


def probe(path: str | os.PathLike[str], *, max_seconds: float | None = None) -> AudioInfo:
    """Check an upload is usable audio before a job is accepted for it.

    Reads headers and decodes one frame, so a client learns at upload time (not
    minutes later from a failed job) that its file is not audio, is broken or is
    too long. Durations come from headers and may be estimates; ``decode``
    enforces ``max_seconds`` again on the samples actually decoded.
    """
    path = os.fspath(path)
    try:
        with _open(path) as container:
            stream = _audio_stream(container)
            frame = _first_frame(container, stream)
            sample_rate, channels = frame.sample_rate, frame.layout.nb_channels
            _check_shape(sample_rate, channels)
            duration = _header_duration(container, stream)
            if duration is None:
                with _open(path) as again:  # from the start; seeking is not always possible
                    duration = _packet_duration(again, again.streams.audio[0], max_seconds)
            if duration <= 0:
                raise _empty()
            if max_seconds is not None and duration > max_seconds:
                raise _too_long(duration, max_seconds)
            return AudioInfo(
                format=_format_name(container),
                codec=_codec_name(stream),
                duration=round(duration, 6),
                sample_rate=sample_rate,
                channels=channels,
            )
    except _AV_ERRORS as exc:
        raise _broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc


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


def decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode the first audio track to float32 ``(channels, samples)``.

    ``channels`` (1 or 2) converts with FFmpeg's downmix, normalised so a
    downmix cannot clip; mono is duplicated to stereo as is, not attenuated.
    ``sample_rate`` converts with soxr. ``max_seconds`` is checked against the
    samples decoded so far, so a file whose header understates its length is
    stopped early instead of filling memory.

    Returns ``(audio, sample_rate_of_audio)``.
    """
    if channels is not None and channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels!r}")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate!r}")
    path = os.fspath(path)
    try:
        with _open(path) as container:
            return _decode_stream(container, sample_rate, channels, max_seconds)
    except _AV_ERRORS as exc:
        raise _broken(f"The audio file could not be decoded ({exc.__class__.__name__}).") from exc


def _decode_stream(
    container: av.container.InputContainer,
    sample_rate: int | None,
    channels: int | None,
    max_seconds: float | None,
) -> tuple[np.ndarray, int]:
    stream = _audio_stream(container)
    chunks: list[np.ndarray] = []  # (work channels, n) float32, in order
    native_rate = 0
    out_channels = 0
    decoded = 0  # samples at native_rate, the unit max_seconds is checked in
    limit = float("inf")
    layout: av.AudioLayout | str = "mono"
    resampler: av.AudioResampler | None = None
    key: tuple[str, str, int] | None = None
    rate_converter: soxr.ResampleStream | None = None

    def keep(frames: list[av.AudioFrame]) -> None:
        for converted in frames:
            chunk = converted.to_ndarray()
            if rate_converter is not None:
                chunk = rate_converter.resample_chunk(np.ascontiguousarray(chunk.T)).T
            if chunk.shape[1]:
                chunks.append(chunk)

    for frame in _decoded_frames(container, stream):
        if not frame.samples:
            continue
        if resampler is None:
            # The first frame fixes the output: its rate, and the layout FFmpeg
            # converts every frame to. Mono becomes stereo by duplication at the
            # end, not by FFmpeg's upmix, which would attenuate it by 3 dB.
            native_rate = frame.sample_rate
            source_channels = frame.layout.nb_channels
            _check_shape(native_rate, source_channels)
            out_channels = channels or source_channels
            if channels is None:
                layout = frame.layout
            elif channels == 2 and source_channels > 1:
                layout = "stereo"
            work_channels = source_channels if channels is None else min(channels, source_channels)
            if max_seconds is not None:
                limit = max_seconds * native_rate
            if sample_rate is not None and sample_rate != native_rate:
                rate_converter = soxr.ResampleStream(
                    native_rate, sample_rate, work_channels, dtype="float32", quality="HQ"
                )
        if _frame_key(frame) != key:
            # First frame, or the stream changed format mid-file (concatenated
            # files do this): a converter for the new input, same output.
            if resampler is not None:
                keep(resampler.resample(None))
            key = _frame_key(frame)
            resampler = av.AudioResampler(
                format="fltp",
                layout=layout,
                rate=native_rate,
                # Scale FFmpeg's downmix matrix so a downmix cannot clip.
                options={"rematrix_maxval": "1.0"},
            )
        decoded += frame.samples
        if decoded > limit:
            raise _too_long(decoded / native_rate, max_seconds or 0.0, at_least=True)
        keep(resampler.resample(frame))
    if resampler is not None:
        keep(resampler.resample(None))
    if rate_converter is not None:
        tail = rate_converter.resample_chunk(np.zeros((0, work_channels), np.float32), last=True)
        if len(tail):
            chunks.append(tail.T)

    total = sum(chunk.shape[1] for chunk in chunks)
    if total == 0:
        raise _empty()
    # One allocation for the result; chunks are dropped as they are copied, so
    # peak memory stays near two copies of the audio.
    result = np.empty((out_channels, total), dtype=np.float32)
    offset = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        result[:, offset : offset + chunk.shape[1]] = chunk  # (1, n) broadcasts to stereo
        offset += chunk.shape[1]
    return result, sample_rate or native_rate


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


def _write_mp3(audio: np.ndarray, sample_rate: int, path: str, bitrate: int) -> None:
    channels = audio.shape[0]
    if channels > 2:
        raise ValueError(f"mp3 holds mono or stereo, not {channels} channels")
    # LAME only encodes MPEG sample rates and otherwise resamples on its own
    # (badly); it also drops the rate at low bitrates unless told not to.
    rate = _mp3_rate(sample_rate)
    converter = (
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

    def pcm(block: np.ndarray) -> bytes:
        return np.rint(np.clip(block, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()

    with open(path, "wb") as handle:
        for block in _blocks(audio, clip=True):
            if converter is not None:
                block = converter.resample_chunk(block)
            handle.write(encoder.encode(pcm(block)))
        if converter is not None:
            tail = converter.resample_chunk(np.zeros((0, channels), np.float32), last=True)
            handle.write(encoder.encode(pcm(tail)))
        handle.write(encoder.flush())


def _write_soundfile(
    audio: np.ndarray, sample_rate: int, path: str, container: str, subtype: str
) -> None:
    with sf.SoundFile(
        path,
        "w",
        samplerate=sample_rate,
        channels=audio.shape[0],
        format=container,
        subtype=subtype,
    ) as handle:
        for block in _blocks(audio, clip=subtype != "FLOAT"):
            handle.write(block)


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
    """
    bit_depth = str(bit_depth)
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, not {format!r}")
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {BIT_DEPTHS}, not {bit_depth!r}")
    if mp3_bitrate not in MP3_BITRATES:
        raise ValueError(f"mp3_bitrate must be one of {MP3_BITRATES}, not {mp3_bitrate!r}")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, not {sample_rate!r}")
    sample_rate = int(sample_rate)
    audio = _as_channels_first(audio)

    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        if format == "mp3":
            _write_mp3(audio, sample_rate, tmp_name, mp3_bitrate)
        elif format == "flac":
            subtype = "PCM_24" if bit_depth == "24" else "PCM_16"
            _write_soundfile(audio, sample_rate, tmp_name, "FLAC", subtype)
        else:
            subtype = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}[bit_depth]
            _write_soundfile(audio, sample_rate, tmp_name, "WAV", subtype)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
