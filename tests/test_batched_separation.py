"""Chunks evaluated several at a time (``app/models/batching.py``) give the
stems of one at a time, as demucs's ``apply_model`` runs them, and the job's
metrics say which path ran."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from tests.support.apps import register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.separation import post_song

MIN_SNR_DB = 40.0  # the default path's promise against the demucs CLI's stems


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference - estimate) ** 2.0, dtype=np.float64))
    signal = float(np.sum(reference**2.0, dtype=np.float64))
    return float("inf") if noise == 0.0 else 10.0 * np.log10(signal / noise)


def _apply(model, mix, pool=None, shifts: int = 1, segment: float | None = None):
    import torch
    from demucs.apply import apply_model

    random.seed(3)  # the random shift: the same for both paths
    with torch.inference_mode():
        return apply_model(
            model, mix, shifts=shifts, split=True, overlap=0.25, segment=segment,
            device="cpu", progress=False, pool=pool,
        )[0].numpy()  # fmt: skip


def test_batched_htdemucs_matches_apply_model() -> None:
    import torch

    from app.models.batching import ChunkBatcher
    from tests.support.demucs_repo import tiny_htdemucs

    model = tiny_htdemucs().eval()
    mix = torch.from_numpy(sine_and_clicks(seconds=5.0))[None]
    # 5 s shifted, in 2 s segments every 1.5 s: four chunks, batches of 3 and 1.
    plain = _apply(model, mix, segment=2.0)
    batcher = ChunkBatcher(3)
    batched = _apply(model, mix, pool=batcher, segment=2.0)
    assert (batcher.largest, batcher.batches) == (3, 2)
    assert plain.shape == batched.shape == (4, 2, mix.shape[-1])
    for index in range(4):
        assert snr_db(plain[index], batched[index]) >= MIN_SNR_DB


def test_batched_bag_with_a_shorter_last_chunk_matches_apply_model() -> None:
    """A Demucs v3 model pads each chunk to its own valid length: the short
    last one goes through alone; a bag applies each model in turn."""
    import torch
    from demucs.apply import BagOfModels

    from app.models.batching import ChunkBatcher
    from tests.support.demucs_repo import tiny_hdemucs, tiny_htdemucs

    bag = BagOfModels([tiny_hdemucs().eval(), tiny_htdemucs().eval()])
    mix = torch.from_numpy(sine_and_clicks(seconds=25.0))[None]
    plain = _apply(bag, mix, shifts=0)
    batcher = ChunkBatcher(8)
    batched = _apply(bag, mix, pool=batcher, shifts=0)
    assert batcher.largest > 1
    for index in range(4):
        assert snr_db(plain[index], batched[index]) >= MIN_SNR_DB


def test_batch_size_does_not_change_the_window_separator_output() -> None:
    from app.models.demucs_engine import WindowSeparator
    from tests.support.demucs_repo import tiny_htdemucs

    model = tiny_htdemucs().eval()
    window = sine_and_clicks(seconds=6.0)
    outs, progress = [], []
    for batch_size in (1, 4):
        separator = WindowSeparator(
            model, "cpu", shifts=1, overlap=0.25, segment=2.0,
            ref_mean=0.0, ref_std=0.2, batch_size=batch_size,
        )  # fmt: skip
        random.seed(5)
        outs.append(separator(window, progress.append))
        facts = separator.facts()
        assert facts["separation_path"] == ("batched" if batch_size > 1 else "plain")
        assert facts["batch_size"] == batch_size and facts["threads"] >= 1
    assert progress[-1] == 1.0 and progress == sorted(progress[: len(progress) // 2]) + sorted(
        progress[len(progress) // 2 :]
    )
    for index in range(4):
        assert snr_db(outs[0][index], outs[1][index]) >= MIN_SNR_DB


def test_msst_chunks_batched_match_one_at_a_time() -> None:
    import torch

    from app.models import msst

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(2, 4, 9, padding=4).eval()

    def net(piece: torch.Tensor) -> torch.Tensor:  # (batch, 2, n) -> (batch, 2, 2, n)
        return conv(piece).reshape(piece.shape[0], 2, 2, -1)

    model = msst.LoadedModel(
        net=net, sources=["vocals", "other"], instrumental=False, sample_rate=44100,
        channels=2, chunk_size=1000, num_overlap=4, resident_bytes=0,
    )  # fmt: skip
    window = np.random.default_rng(1).standard_normal((2, 5321)).astype(np.float32)
    plain = msst.WindowSeparator(model, "cpu", 0.75)(window, lambda f: None)
    separator = msst.WindowSeparator(model, "cpu", 0.75, batch_size=4)
    seen: list[float] = []
    batched = separator(window, seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 5  # 18 chunks, 4 a call
    assert separator.facts()["separation_path"] == "batched"
    for index in range(2):
        assert snr_db(plain[index], batched[index]) >= 100.0


def test_out_of_gpu_memory_with_a_batch_retries_one_chunk_at_a_time(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Demucs: the same segment one chunk at a time before a shorter one (which
    changes the stems); MSST: the batch split, the rest of the window single."""
    import torch

    from app.models import demucs_engine, msst

    class OutOfMemoryError(RuntimeError):  # what torch.cuda raises, by name
        pass

    class Model:
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = 44100
        audio_channels = 2
        segment = 7.8

        def to(self, device: str) -> Model:
            return self

    tried: list[tuple[int, float | None]] = []

    def apply(self, mix, device, segment, progress):
        tried.append((self.batch_size, segment))
        if self.batch_size > 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return torch.zeros((4, *mix.shape))

    monkeypatch.setattr(demucs_engine.WindowSeparator, "_apply", apply)
    monkeypatch.setattr("torch.cuda.empty_cache", lambda: None)
    separator = demucs_engine.WindowSeparator(
        Model(), "cuda", shifts=1, overlap=0.25, segment=None, ref_mean=0.0, ref_std=1.0,
        batch_size=4,
    )  # fmt: skip
    with app.app_context():
        separator(np.zeros((2, 44100), np.float32), lambda f: None)
    assert tried == [(4, None), (1, None)]
    assert separator.facts()["separation_path"] == "plain"

    sizes: list[int] = []

    def net(piece: torch.Tensor) -> torch.Tensor:
        sizes.append(piece.shape[0])
        if piece.shape[0] > 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return piece[:, None] * 0.5

    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)  # no CUDA here
    model = msst.LoadedModel(
        net=net, sources=["vocals"], instrumental=False, sample_rate=44100, channels=2,
        chunk_size=1000, num_overlap=2, resident_bytes=0, use_amp=False,
    )  # fmt: skip
    chunks = msst.WindowSeparator(model, "cuda", 0.5, batch_size=3)
    with app.app_context():
        out = chunks(np.ones((2, 3000), np.float32), lambda f: None)
    np.testing.assert_allclose(out[0], 0.5)
    assert sizes == [3, 1, 1, 1, 1, 1]  # 5 chunks: the first batch split, then one at a time
    assert chunks.batch_size == 1


@pytest.mark.parametrize(
    ("batch_size", "path", "precision"), [(2, "batched", "float32"), (1, "plain", "bfloat16")]
)
def test_job_metrics_show_the_path_that_ran(
    eager_app: Callable[..., Flask], models_dir: Path, batch_size: int, path: str, precision: str
) -> None:
    app = eager_app(
        MODELS_DIR=str(models_dir),
        ALLOW_MODEL_DOWNLOAD=False,
        SEPARATION_BATCH_SIZE=batch_size,
        SEPARATION_PRECISION=precision,
    )
    client = app.test_client()
    headers = register_and_login(client)
    response = post_song(client, headers, wav_bytes(sine_and_clicks(seconds=2.0)))
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers)
    assert job.status_code == 200
    body = job.json
    assert body["status"] == "succeeded", body
    metrics = body["metrics"]
    assert metrics["separation_path"] == path
    assert metrics["batch_size"] == batch_size
    assert metrics["precision"] == precision
    assert isinstance(metrics["threads"], int) and metrics["threads"] >= 1
    assert "metrics" not in body["result"]
