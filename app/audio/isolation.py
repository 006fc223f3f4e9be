"""``probe`` in a child process of the fork server (``app/isolated.py``).

Uploads come from anyone and FFmpeg's parsers are C: a crash or a memory
blow-up in the child costs the child, not the API process and its other
requests.
"""

from __future__ import annotations

import logging
import os

from app.audio import probing
from app.audio.errors import AudioError, broken
from app.audio.limits import MB, too_slow
from app.audio.probing import AudioInfo, probe

log = logging.getLogger(__name__)


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

    budget = probing.PROBE_SECONDS  # read at the call: the budget probe() itself uses
    try:
        return isolated.call(
            _probe_in_child,
            os.fspath(path),
            max_seconds,
            max_bytes,
            budget,
            timeout=budget + _CHILD_GRACE_SECONDS,
            memory_bytes=memory_mb * MB,
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
        raise too_slow(budget) from None
    except isolated.Unavailable as exc:
        # This host's fault, not the file's: the upload is probed here instead.
        log.error("upload probing cannot use a child process (%s): probing in-process", exc)
        return probe(path, max_seconds=max_seconds, max_bytes=max_bytes, budget_seconds=budget)
    except isolated.ChildFailed as exc:
        log.warning("probing an upload failed in its child process: %s", exc)
        raise broken(
            "The audio file could not be read: the decoder stopped on it (it is damaged "
            "or malformed); re-encode it and upload it again."
        ) from None
