"""What to do when a GPU runs out of memory in the middle of a job.

CUDA memory is shared with other processes and fragments, so an
out-of-memory error is often transient for a smaller request: the window is
tried again on the same GPU with half the segment (demucs's chunk length,
which sets the activation memory), down to ``MIN_SEGMENT``; then on the CPU
when ``MODEL_DEVICE`` is ``auto`` (an operator who pinned ``cuda`` said not
to); then the job fails with ``out_of_memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SEGMENT = 1.0  # seconds: shorter chunks cost more in overlap than they save


@dataclass(frozen=True)
class Retry:
    device: str
    segment: float | None  # None: the model's own segment


def after_out_of_memory(
    device: str,
    segment: float,
    *,
    default_segment: float | None,
    allow_cpu: bool,
    min_segment: float = MIN_SEGMENT,
) -> Retry | None:
    """Where to run a window again after ``device`` ran out of memory with
    ``segment`` seconds per chunk, or None to give up."""
    if not device.startswith("cuda"):
        return None  # the CPU's allocator failing is not transient
    if segment / 2 >= min_segment:
        return Retry(device, segment / 2)
    if allow_cpu:
        return Retry("cpu", default_segment)
    return None


def is_cuda_out_of_memory(exc: BaseException) -> bool:
    """torch's ``OutOfMemoryError`` (or the older RuntimeError with its message)."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
    )


def cpu_fallback_allowed() -> bool:
    """Only ``MODEL_DEVICE=auto`` lets a job move to the CPU on its own (an
    operator who pinned ``cuda`` said not to)."""
    from flask import current_app, has_app_context

    return has_app_context() and current_app.config.get("MODEL_DEVICE", "auto") == "auto"
