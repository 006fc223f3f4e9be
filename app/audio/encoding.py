"""Writing deliverable files: WAV, FLAC and MP3, whole (``encode``) or
block by block (``AudioWriter``), the same bytes either way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import lameenc
import numpy as np
import soundfile as sf
import soxr

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
OUTPUT_FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = ("16", "24", "32f")
MP3_BITRATES = (96, 128, 160, 192, 224, 256, 320)

_ENCODE_BLOCK = 1 << 16  # frames per write: bounds temporary copies when encoding
_MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


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
