"""Decoding to float32 samples, whole (``decode``) or block by block (``iter_decode``).

Both are built on one code path, so the samples are the same; ``iter_decode``
lets a long song be processed window by window in memory that does not grow
with its length. Sample-rate conversion uses soxr because FFmpeg's default
resampler is audibly worse at the quality the separation models need; channel
conversion uses FFmpeg's downmix because it knows the speaker layouts.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Iterator

import av
import av.error
import numpy as np
import soxr

from app.audio.errors import AV_ERRORS, broken, empty
from app.audio.guards import open_container
from app.audio.limits import SAMPLE_BYTES, check_shape, too_large, too_long
from app.audio.probing import PROBE_PACKETS, first_audio_stream

# Float input can hold NaN, infinities or absurd values (a damaged or hostile
# file); decoding replaces NaN with silence and clamps everything else to this
# magnitude (+40 dBFS, far above the overs of any real recording), so no model,
# meter or encoder ever sees a non-finite sample.
MAX_SAMPLE_MAGNITUDE = 100.0

# Consecutive undecodable packets decode() tolerates once audio has started, as
# ffmpeg itself does for a damaged stretch; beyond this the file is broken.
_MAX_BAD_PACKETS = 32


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
            raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.FFmpegError as exc:
            bad += 1
            limit = _MAX_BAD_PACKETS if decoded else PROBE_PACKETS
            if bad > limit:
                raise broken(
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
        with open_container(path) as container:
            chunks = _DecodedChunks(container, sample_rate, channels, max_seconds, max_bytes)
            return _concatenate(chunks), chunks.sample_rate
    except AV_ERRORS as exc:
        raise broken(f"The audio file could not be decoded ({exc.__class__.__name__}).") from exc


def iter_decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_frames: int,
    max_seconds: float | None = None,
    max_bytes: float | None = None,
) -> Generator[np.ndarray, None, None]:
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
) -> Generator[np.ndarray, None, None]:
    try:
        with open_container(path) as container:
            chunks = _DecodedChunks(container, sample_rate, channels, max_seconds, max_bytes)
            yield from _reblock(chunks, block_frames)
    except AV_ERRORS as exc:
        raise broken(f"The audio file could not be decoded ({exc.__class__.__name__}).") from exc


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
        stream = first_audio_stream(self._container)
        for frame in _decoded_frames(self._container, stream):
            if frame.samples:
                yield from self._feed(frame)
        yield from self._finish()
        if self._produced == 0:
            raise empty()

    def _start(self, frame: av.AudioFrame) -> None:
        # The first frame fixes the output: its rate, and the layout FFmpeg
        # converts every frame to. Mono becomes stereo by duplication
        # (broadcasting), not by FFmpeg's upmix, which would attenuate it by 3 dB.
        channels = self._channels
        native_rate = frame.sample_rate
        source_channels = frame.layout.nb_channels
        check_shape(native_rate, source_channels)
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
            check_shape(frame.sample_rate, frame.layout.nb_channels)
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
        yield from self._convert(self._resampler.resample(frame))  # type: ignore[union-attr]  # set above on the first frame

    def _count(self, frame: av.AudioFrame) -> None:
        """Enforce the limits on what the file really holds, whatever its headers said."""
        self._decoded_seconds += frame.samples / frame.sample_rate
        self._decoded_bytes += frame.samples * frame.layout.nb_channels * SAMPLE_BYTES
        if self._max_seconds is not None and self._decoded_seconds > self._max_seconds:
            raise too_long(self._decoded_seconds, self._max_seconds, at_least=True)
        if self._max_bytes is not None and self._decoded_bytes > self._max_bytes:
            raise too_large(self._decoded_bytes, self._max_bytes, at_least=True)

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
