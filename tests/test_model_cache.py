"""The per-process model cache and the window joiner, without HTTP."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.models.cache import ModelCache, parse_size
from app.models.windowing import separate_in_windows


def test_a_model_is_loaded_once_and_reused() -> None:
    cache = ModelCache(max_entries=2)
    calls = []
    for _ in range(3):
        model = cache.get(("separation", "a", "cpu"), lambda: calls.append(1) or object())
    assert len(calls) == 1
    assert cache.get(("separation", "a", "cpu"), lambda: None) is model
    assert cache.loaded()[0]["uses"] == 4


def test_concurrent_first_requests_load_once() -> None:
    cache = ModelCache(max_entries=2)
    loads = []
    start = threading.Event()

    def slow_loader() -> object:
        loads.append(1)
        time.sleep(0.2)
        return object()

    results = []

    def worker() -> None:
        start.wait()
        results.append(cache.get(("transcription", "tiny", "cpu"), slow_loader))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len({id(r) for r in results}) == 1


def test_least_recently_used_model_is_evicted() -> None:
    cache = ModelCache(max_entries=2)
    for name in ("a", "b"):
        cache.get(("separation", name, "cpu"), object)
    cache.get(("separation", "a", "cpu"), object)  # a is now the most recent
    cache.get(("generation", "c", "cpu"), object)
    assert ("separation", "a", "cpu") in cache
    assert ("separation", "b", "cpu") not in cache
    assert ("generation", "c", "cpu") in cache


def test_byte_budget_evicts() -> None:
    torch = pytest.importorskip("torch")
    cache = ModelCache(max_entries=None, max_bytes=6_000)
    cache.get(("separation", "a", "cpu"), lambda: torch.nn.Linear(30, 30))  # 3,720 bytes
    cache.get(("separation", "b", "cpu"), lambda: torch.nn.Linear(30, 30))
    assert [e["name"] for e in cache.loaded()] == ["b"]


def test_idle_models_are_unloaded() -> None:
    cache = ModelCache(max_entries=3, idle_seconds=0.05)
    cache.get(("separation", "a", "cpu"), object)
    assert cache.evict_idle() == []
    time.sleep(0.08)
    cache.get(("separation", "b", "cpu"), object)
    assert cache.evict_idle() == [("separation", "a", "cpu")]
    assert [e["name"] for e in cache.loaded()] == ["b"]


def test_cache_size_setting() -> None:
    assert parse_size("3") == (3, None)
    assert parse_size("6GB") == (None, 6 * 1024**3)
    assert parse_size("512 mb") == (None, 512 * 1024**2)
    with pytest.raises(RuntimeError):
        parse_size("lots")


def _blocks(signal: np.ndarray, size: int):
    for start in range(0, signal.shape[-1], size):
        yield signal[:, start : start + size]


@pytest.mark.parametrize("length", [10, 999, 1000, 1001, 4321])
def test_windows_reassemble_a_linear_separator_exactly(length: int) -> None:
    rng = np.random.default_rng(length)
    signal = rng.standard_normal((2, length)).astype(np.float32)
    seen = []

    def separate(window, progress):
        seen.append(window.shape[-1])
        progress(1.0)
        return np.stack([0.25 * window, 0.75 * window])

    fractions: list[float] = []
    pieces = list(
        separate_in_windows(
            _blocks(signal, 300), separate, overlap_frames=100, total_frames=length,
            progress=fractions.append,
        )
    )  # fmt: skip
    out = np.concatenate(pieces, axis=-1)
    assert out.shape == (2, 2, length)
    assert np.allclose(out[0], 0.25 * signal, atol=1e-6)
    assert np.allclose(out[1], 0.75 * signal, atol=1e-6)
    assert max(seen) <= 400  # a window never holds more than block + overlap
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_window_joins_are_cross_faded() -> None:
    """A separator whose output jumps between windows still joins smoothly."""
    signal = np.zeros((1, 2000), dtype=np.float32)
    offsets = iter(range(100))

    def separate(window, progress):
        return np.full((1, *window.shape), float(next(offsets)), dtype=np.float32)

    out = np.concatenate(
        list(separate_in_windows(_blocks(signal, 400), separate, overlap_frames=200,
                                 total_frames=2000)),
        axis=-1,
    )[0, 0]  # fmt: skip
    assert out.shape == (2000,)
    assert np.max(np.abs(np.diff(out))) < 1.0 / 100


def test_whisper_models_count_against_a_byte_budget() -> None:
    from app.models import whisper_engine

    folder = whisper_engine.bundled_dir()
    assert folder is not None
    model = whisper_engine.load("tiny.en", {"MODELS_DIR": "/nonexistent"}, "cpu", "int8")
    weights = (folder / "model.bin").stat().st_size
    assert model.resident_bytes == weights // 2  # float16 file, int8 in memory

    cache = ModelCache(max_bytes=weights)  # room for one int8 tiny.en, not two
    cache.get(("transcription", "tiny.en@int8", "cpu"), lambda: model)
    cache.get(("transcription", "tiny.en@float32", "cpu"), lambda: _Sized(weights * 2))
    assert ("transcription", "tiny.en@int8", "cpu") not in cache
    assert [e["bytes"] for e in cache.loaded()] == [weights * 2]


class _Sized:
    def __init__(self, size: int) -> None:
        self.resident_bytes = size


def test_whisper_device_resolution_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from app.models import whisper_engine\n"
        "from app.models.cache import resolve_device\n"
        "print(resolve_device('auto', whisper_engine.gpu_count))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]
