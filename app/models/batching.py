"""Evaluate a model's overlapping chunks several at a time.

Demucs's ``apply_model`` hands each segment of a track to an executor
(``pool.submit``) and then collects the results in order. ``ChunkBatcher`` is
such an executor: it keeps what was submitted, and when the first result not
yet computed is asked for, it runs that chunk and the next ones (up to the
batch size) through the network in one call. Demucs's own splitting, random
shift, padding and overlap-add are untouched, so the stems are the CLI's up
to float rounding, while the network sees fewer, larger operations, which keep
a CPU's cores (and a GPU) busier than one segment at a time does.

Chunks are computed in submission order, a batch at a time, and each result is
dropped by demucs once added in, so memory grows with the batch size and not
with the window's length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Pending:
    """A submitted chunk: the future ``apply_model`` waits on."""

    def __init__(self, owner: ChunkBatcher, model: Any, chunk: Any, kwargs: dict[str, Any]):
        self.owner = owner
        self.model = model
        self.chunk = chunk
        self.kwargs = kwargs
        self.value: Any = None
        self.done = False

    def result(self) -> Any:
        if not self.done:
            self.owner.run_from(self)
        return self.value


class ChunkBatcher:
    """The ``pool`` argument of ``demucs.apply.apply_model``.

    ``forward`` runs the network on a stacked batch (the default calls the
    model under ``no_grad``, as ``apply_model`` does); ``batches`` counts the
    calls made and ``largest`` the most chunks one of them held, for the job's
    metrics.
    """

    def __init__(self, batch_size: int, forward: Callable[[Any, Any], Any] | None = None) -> None:
        self.batch_size = max(1, int(batch_size))
        self.forward = forward or _forward
        self.pending: list[_Pending] = []
        self.batches = 0
        self.largest = 0

    def submit(self, fn: Any, model: Any, chunk: Any, **kwargs: Any) -> _Pending:
        future = _Pending(self, model, chunk, kwargs)
        self.pending.append(future)
        return future

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        self.pending.clear()

    def run_from(self, first: _Pending) -> None:
        import torch
        from demucs.apply import tensor_chunk
        from demucs.utils import center_trim

        start = self.pending.index(first)
        inputs, group = [], []
        target = padded_length(first.model, first.chunk, first.kwargs.get("segment"))
        for item in self.pending[start : start + self.batch_size]:
            if item.model is not first.model or item.kwargs.get("device") != first.kwargs.get(
                "device"
            ):
                break
            # Chunks of another padded length (a Demucs v3 model's last one)
            # cannot share the batch; they start the next one.
            if padded_length(item.model, item.chunk, item.kwargs.get("segment")) != target:
                break
            group.append(item)
            inputs.append(tensor_chunk(item.chunk).padded(target))
        del self.pending[start : start + len(group)]
        for item in group:
            _notify(item, "start")
        batch = torch.cat(inputs).to(first.kwargs.get("device") or inputs[0].device)
        out = self.forward(first.model, batch)
        self.batches += 1
        self.largest = max(self.largest, len(group))
        for index, item in enumerate(group):
            item.value = center_trim(out[index : index + 1], item.chunk.shape[-1])
            item.done = True
            _notify(item, "end")


def padded_length(model: Any, chunk: Any, segment: float | None) -> int:
    """The length ``apply_model`` pads one chunk to before the network (its
    ``split=False`` branch)."""
    from demucs.htdemucs import HTDemucs

    length = int(chunk.shape[-1])
    if isinstance(model, HTDemucs) and segment is not None:
        return int(segment * model.samplerate)
    if hasattr(model, "valid_length"):
        return int(model.valid_length(length))
    return length


def _forward(model: Any, batch: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(batch)


def _notify(item: _Pending, state: str) -> None:
    callback = item.kwargs.get("callback")
    if callback is not None:
        callback({**(item.kwargs.get("callback_arg") or {}), "state": state})
