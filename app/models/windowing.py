"""Separate arbitrarily long audio in windows of bounded size.

The input arrives in blocks (``audio.iter_decode``); each window is the new
block plus the last ``overlap`` frames of the previous one. A window's output
overlapping the previous window's is cross-faded linearly with it, so joins
are inaudible, and everything before the overlap is emitted at once. Memory
therefore depends on the window size, never on the song's length.

A linear cross-fade of two estimates of the same signal keeps anything that is
linear in the input exact: a stem computed as ``mix - source`` inside each
window stays equal to ``mix - source`` after the joins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

# (channels, frames) window, progress(0..1 within the window) -> (stems, channels, frames)
WindowFn = Callable[[np.ndarray, Callable[[float], None]], np.ndarray]


def _with_last(items: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def separate_in_windows(
    blocks: Iterable[np.ndarray],
    separate: WindowFn,
    *,
    overlap_frames: int,
    total_frames: int,
    progress: Callable[[float], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield (stems, channels, n) output pieces that concatenate to the full result.

    ``blocks`` must each hold at least ``overlap_frames`` frames except the last.
    """
    carry_in: np.ndarray | None = None
    tail_out: np.ndarray | None = None
    done = 0
    total = max(total_frames, 1)

    for block, is_last in _with_last(blocks):
        window = block if carry_in is None else np.concatenate([carry_in, block], axis=-1)
        new_frames = block.shape[-1]

        def window_progress(fraction: float, base: int = done, span: int = new_frames) -> None:
            if progress is not None:
                progress(min((base + fraction * span) / total, 1.0))

        out = separate(window, window_progress)
        start = 0
        if tail_out is not None:
            k = tail_out.shape[-1]
            fade = np.linspace(0.0, 1.0, k + 2, dtype=np.float32)[1:-1]
            yield tail_out * (1.0 - fade) + out[..., :k] * fade
            start = k
        if is_last:
            if out.shape[-1] > start:
                yield out[..., start:]
            tail_out = None
        else:
            keep = min(overlap_frames, new_frames)
            end = out.shape[-1] - keep
            if end > start:
                yield out[..., start:end]
            tail_out = out[..., end:].copy()
            carry_in = window[..., window.shape[-1] - keep :].copy()
        done += new_frames
        if progress is not None:
            progress(min(done / total, 1.0))
        del out, window
