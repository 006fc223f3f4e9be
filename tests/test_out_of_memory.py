"""A GPU that runs out of memory mid-job: the window is retried with a shorter
segment, then on the CPU when ``MODEL_DEVICE`` is ``auto``, else the job fails
with ``out_of_memory``. No GPU here: the decision function is tested as is and
the retry loop with an engine step that raises what torch raises."""

from __future__ import annotations

import pytest
from flask import Flask


def test_out_of_memory_decisions() -> None:
    from app.models.oom import Retry, after_out_of_memory

    def nxt(device: str, segment: float, allow_cpu: bool = True) -> Retry | None:
        return after_out_of_memory(device, segment, default_segment=None, allow_cpu=allow_cpu)

    assert nxt("cuda", 7.8) == Retry("cuda", 3.9)
    assert nxt("cuda:1", 3.9) == Retry("cuda:1", 1.95)
    assert nxt("cuda", 1.95) == Retry("cpu", None)  # half would be under a second
    assert nxt("cuda", 2.0) == Retry("cuda", 1.0)
    assert nxt("cuda", 1.5, allow_cpu=False) is None  # MODEL_DEVICE=cuda was pinned
    assert nxt("cpu", 7.8) is None  # the CPU allocator failing is not transient


def test_a_window_that_runs_out_of_gpu_memory_is_retried_smaller_then_on_cpu(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from app.models import demucs_engine

    class OutOfMemoryError(RuntimeError):  # what torch.cuda raises, by name
        pass

    class Model:
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = 44100
        audio_channels = 2
        segment = 7.8

        def __init__(self) -> None:
            self.moved: list[str] = []

        def to(self, device: str) -> Model:
            self.moved.append(device)
            return self

    model = Model()
    tried: list[tuple[str, float | None]] = []

    def apply(self, mix, device, segment, progress):
        import torch

        tried.append((device, segment))
        if device.startswith("cuda"):
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros((4, *mix.shape))

    monkeypatch.setattr(demucs_engine.WindowSeparator, "_apply", apply)
    monkeypatch.setattr("torch.cuda.empty_cache", lambda: None)
    separator = demucs_engine.WindowSeparator(
        model, "cuda", shifts=1, overlap=0.25, segment=None, ref_mean=0.0, ref_std=1.0
    )
    with app.app_context():  # MODEL_DEVICE=auto: the CPU is allowed
        out = separator(np.zeros((2, 44100), np.float32), lambda f: None)
    assert out.shape == (4, 2, 44100)
    assert tried == [("cuda", None), ("cuda", 3.9), ("cuda", 1.95), ("cpu", None)]
    assert model.moved == ["cuda"]  # the cached model goes back to its GPU

    tried.clear()
    app.config["MODEL_DEVICE"] = "cuda"
    with app.app_context(), pytest.raises(Exception) as caught:
        separator(np.zeros((2, 44100), np.float32), lambda f: None)
    assert getattr(caught.value, "code", None) == "out_of_memory"
    assert [device for device, _ in tried] == ["cuda", "cuda", "cuda"]


def test_roformer_and_mdx23c_chunks_retry_then_go_on_on_the_cpu(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint families' chunks: once more on the GPU, then the rest of
    the window on the CPU (MODEL_DEVICE=auto), the model back on its GPU after;
    half precision on the GPU when the config trains so (use_amp)."""
    import contextlib

    import numpy as np
    import torch

    from app.models import msst

    class OutOfMemoryError(RuntimeError):
        pass

    calls: list[str] = []
    autocast: list[str] = []

    class Net:
        num_stems = 1

        def __init__(self) -> None:
            self.on = "cuda"
            self.moved: list[str] = []

        def to(self, device: str) -> Net:
            self.on = device
            self.moved.append(device)
            return self

        def __call__(self, piece: torch.Tensor) -> torch.Tensor:
            calls.append(self.on)
            if self.on == "cuda":
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
            return piece[:, None] * 0.5

    @contextlib.contextmanager
    def fake_autocast(device_type: str, dtype: object = None):
        autocast.append(device_type)
        yield

    monkeypatch.setattr(torch, "autocast", fake_autocast)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)  # no CUDA here
    monkeypatch.setattr("torch.cuda.empty_cache", lambda: None)
    net = Net()
    model = msst.LoadedModel(
        net=net, sources=["vocals", "instrumental"], instrumental=True, sample_rate=44100,
        channels=2, chunk_size=1000, num_overlap=2, resident_bytes=0,
    )  # fmt: skip
    separator = msst.WindowSeparator(model, "cuda", 0.5)
    window = np.ones((2, 2500), np.float32)
    with app.app_context():  # MODEL_DEVICE=auto: the CPU is allowed
        out = separator(window, lambda f: None)
    assert out.shape == (2, 2, 2500)
    np.testing.assert_allclose(out[0], 0.5)  # vocals, and the mix minus them
    np.testing.assert_allclose(out[1], 0.5)
    # the first chunk twice on the GPU, then every chunk on the CPU
    assert calls[:3] == ["cuda", "cuda", "cpu"] and set(calls[3:]) == {"cpu"}
    assert autocast == ["cuda", "cuda"]  # half precision on the GPU only
    assert net.moved == ["cpu", "cuda"]  # back on its GPU for the next job

    calls.clear()
    net.on = "cuda"
    app.config["MODEL_DEVICE"] = "cuda"
    with app.app_context(), pytest.raises(Exception) as caught:
        separator(window, lambda f: None)
    assert getattr(caught.value, "code", None) == "out_of_memory"
    assert calls == ["cuda", "cuda"]
