"""What an upload may be, and the errors for going past it.

``probe`` checks the limits against what the headers declare, ``decode``
against the samples it actually produces (headers can lie): both raise the
same errors, so a client gets the same answer whichever step stops its file.
``Deadline`` is the probe's time budget, shared by the structure checks in
``guards`` and the probe itself.
"""

from __future__ import annotations

import time

from app.audio.errors import AudioError

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
# Inputs up to 7.1; every job downmixes to what its model takes.
MAX_CHANNELS = 8
# Decoded samples are float32.
SAMPLE_BYTES = 4
MB = 1024 * 1024  # size limits are given and reported in MB


def too_large(decoded_bytes: float, limit_bytes: float, *, at_least: bool = False) -> AudioError:
    """Past the decoded-size limit; ``at_least`` when decoding stopped early, so
    the size is a lower bound rather than what the headers declared."""
    qualifier = "at least " if at_least else ""
    return AudioError(
        f"The audio decodes to {qualifier}{decoded_bytes / MB:.0f} MB of samples; "
        f"the limit is {limit_bytes / MB:g} MB.",
        code="audio_too_large",
        errors={
            "decoded_mb": round(decoded_bytes / MB, 1),
            "max_decoded_mb": round(limit_bytes / MB, 1),
        },
    )


def too_slow(seconds: float) -> AudioError:
    """Past the probe's time budget: the file's structure, not its audio, is the problem."""
    return AudioError(
        f"The file's structure took more than {seconds:g} s to read before its audio "
        "(it is damaged or built to be slow to read); re-encode it and upload it again.",
        code="audio_decode_failed",
        errors={"max_probe_seconds": seconds},
    )


class Deadline:
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
            raise too_slow(self.seconds)


def too_long(seconds: float, limit: float, *, at_least: bool = False) -> AudioError:
    """Past the duration limit; ``at_least`` as for ``too_large``."""
    qualifier = "at least " if at_least else ""
    return AudioError(
        f"The audio is {qualifier}{seconds:.1f} s long; the limit is {limit:g} s.",
        code="audio_too_long",
        errors={"duration": round(seconds, 3), "max_seconds": limit},
    )


def bad_rate(sample_rate: int) -> AudioError:
    """A sample rate outside what the models and encoders are built for."""
    return AudioError(
        f"Unsupported sample rate {sample_rate} Hz "
        f"(must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz).",
        code="unsupported_sample_rate",
        errors={"sample_rate": sample_rate, "min": MIN_SAMPLE_RATE, "max": MAX_SAMPLE_RATE},
    )


def bad_channels(channels: int) -> AudioError:
    """No channels, or more than any speaker layout the downmix knows."""
    detail = "has no channels" if channels < 1 else f"has {channels} channels"
    return AudioError(
        f"The audio track {detail} (must be 1-{MAX_CHANNELS}).",
        code="unsupported_channels",
        errors={"channels": channels, "max_channels": MAX_CHANNELS},
    )


def check_shape(sample_rate: int, channels: int) -> None:
    """Limits on what is actually decoded (every frame format, not just the first)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise bad_rate(sample_rate)
    if not 1 <= channels <= MAX_CHANNELS:
        raise bad_channels(channels)
