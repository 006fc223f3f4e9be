"""How reading audio fails: ``AudioError``, with a code the client can act on.

PyAV raises many exception types (``AV_ERRORS``); every module of the package
turns them into an ``AudioError`` with a stable code, so the HTTP layer and
the jobs have one type to handle.
"""

from __future__ import annotations

from typing import Any

import av
import av.error

from app.errors import ServiceError

# What PyAV raises for broken input. FFmpegError covers av.error.*, which also
# subclass OSError/ValueError; the bare ones come from PyAV's Python layer.
AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError)

_STATUS = {"unsupported_media_type": 415}


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


def unsupported(message: str = "The file is not an audio or video file.") -> AudioError:
    """Not audio at all (415): sending the same file again cannot help."""
    return AudioError(message, code="unsupported_media_type")


def broken(message: str) -> AudioError:
    """Audio, but damaged or in a codec we cannot decode (422): re-encoding helps."""
    return AudioError(message, code="audio_decode_failed")


def empty() -> AudioError:
    """A valid container with no samples in it (422)."""
    return AudioError("The file contains no audio.", code="empty_audio")
