"""The per-process model cache shared by every engine kind.

Loading a model costs seconds (and, on a GPU, memory that is slow to get back),
so each worker process loads a model once and keeps it resident for every job
that follows. Entries are keyed by (kind, name, device). A lock per key makes
concurrent first requests load once; an upper bound in entries or bytes evicts
the least recently used model; models idle for ``MODEL_IDLE_SECONDS`` are
unloaded by the worker's housekeeping thread.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, name, device)


@dataclass
class Entry:
    model: Any
    bytes: int
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0


def model_bytes(model: Any) -> int:
    """Bytes of parameters and buffers of a torch module (or of a list of them).

    Models that are not torch modules (CTranslate2's) say their size in a
    ``resident_bytes`` attribute, so a byte budget can evict them too.
    """
    resident = getattr(model, "resident_bytes", None)
    if isinstance(resident, int):
        return resident
    total = 0
    modules = model if isinstance(model, list | tuple) else [model]
    for module in modules:
        for attr in ("parameters", "buffers"):
            getter = getattr(module, attr, None)
            if getter is None:
                continue
            try:
                total += sum(t.numel() * t.element_size() for t in getter())
            except TypeError:
                continue
    return total


def parse_size(value: str | int | None) -> tuple[int | None, int | None]:
    """``MODEL_CACHE_SIZE``: a number of entries (``3``) or a byte budget (``6GB``)."""
    if value is None or str(value).strip() == "":
        return 4, None
    text = str(value).strip().upper()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)?", text)
    if not match:
        raise RuntimeError(f"MODEL_CACHE_SIZE must be a count or a size like 6GB, got {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        return max(1, int(number)), None
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}[unit]
    return None, int(number * scale)


def _observe_load(key: Key, seconds: float) -> None:
    """``aimusic_model_load_seconds`` (app/metrics.py): summed over every worker
    process for the API's ``/metrics``."""
    try:
        from app.metrics import observe_model_load

        observe_model_load(key[0], key[1], key[2], seconds)
    except Exception:
        log.debug("could not record a model load time", exc_info=True)


class ModelCache:
    def __init__(
        self,
        max_entries: int | None = 4,
        max_bytes: int | None = None,
        idle_seconds: float | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        self.loads: dict[Key, int] = {}

    def get(self, key: Key, loader: Callable[[], Any]) -> Any:
        """The cached model for ``key``, loading it with ``loader`` at most once."""
        with self._lock:
            entry = self._touch(key)
            if entry is not None:
                return entry.model
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._touch(key)
                if entry is not None:
                    return entry.model
            started = time.monotonic()
            model = loader()
            seconds = time.monotonic() - started
            size = model_bytes(model)
            log.info(
                "loaded %s model %s on %s in %.2f s (%.1f MB)",
                key[0],
                key[1],
                key[2],
                seconds,
                size / 1e6,
            )
            _observe_load(key, seconds)
            with self._lock:
                self.loads[key] = self.loads.get(key, 0) + 1
                self._entries[key] = Entry(model=model, bytes=size, load_seconds=seconds, uses=1)
                self._entries.move_to_end(key)
                self._evict_over_budget(keep=key)
            return model

    def _touch(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = time.monotonic()
            entry.uses += 1
            self._entries.move_to_end(key)
        return entry

    def _evict_over_budget(self, keep: Key) -> None:
        def over() -> bool:
            if self.max_entries is not None and len(self._entries) > self.max_entries:
                return True
            total = sum(e.bytes for e in self._entries.values())
            return self.max_bytes is not None and total > self.max_bytes

        while over() and len(self._entries) > 1:
            victim = next(k for k in self._entries if k != keep)
            self._drop(victim, "over the cache size")

    def _drop(self, key: Key, reason: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        log.info("unloaded %s model %s on %s (%s)", key[0], key[1], key[2], reason)
        del entry
        gc.collect()
        if key[2].startswith("cuda"):
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:
                pass

    def evict_idle(self) -> list[Key]:
        """Unload models unused for ``idle_seconds``; returns what was unloaded."""
        if not self.idle_seconds:
            return []
        now = time.monotonic()
        with self._lock:
            idle = [k for k, e in self._entries.items() if now - e.last_used >= self.idle_seconds]
            for key in idle:
                self._drop(key, f"idle for {self.idle_seconds:g} s")
        return idle

    def discard(self, key: Key) -> bool:
        """Unload one model now (an engine's ``unload``); whether it was loaded."""
        with self._lock:
            present = key in self._entries
            self._drop(key, "unloaded")
        return present

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key, "cleared")

    def loaded(self) -> list[dict[str, Any]]:
        """What this process holds, for ``GET /models`` and logs."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "kind": kind,
                    "name": name,
                    "device": device,
                    "bytes": entry.bytes,
                    "load_seconds": round(entry.load_seconds, 3),
                    "idle_seconds": round(now - entry.last_used, 1),
                    "uses": entry.uses,
                }
                for (kind, name, device), entry in self._entries.items()
            ]

    def __contains__(self, key: Key) -> bool:
        return key in self._entries


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def get_cache(config: dict[str, Any] | None = None) -> ModelCache:
    """This process's cache, sized from the app config on first use."""
    global _cache
    with _cache_lock:
        if _cache is None:
            config = config or {}
            entries, size = parse_size(config.get("MODEL_CACHE_SIZE"))
            idle = config.get("MODEL_IDLE_SECONDS")
            _cache = ModelCache(entries, size, float(idle) if idle else None)
        return _cache


def reset_cache() -> None:
    """Forget the process cache (tests; a config change)."""
    global _cache
    with _cache_lock:
        if _cache is not None:
            _cache.clear()
        _cache = None


def torch_gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(setting: str, gpu_count: Callable[[], int] = torch_gpu_count) -> str:
    """``MODEL_DEVICE``: ``auto`` picks CUDA when the engine's runtime sees a GPU.

    ``gpu_count`` is the engine's own probe: Whisper runs on CTranslate2 and asks
    it, so a transcription worker never imports torch (about 2 s) just to learn
    there is no GPU.
    """
    setting = (setting or "auto").lower()
    if setting == "auto":
        return "cuda" if gpu_count() > 0 else "cpu"
    if setting.startswith("cuda") and gpu_count() == 0:
        from app.errors import ServiceError

        raise ServiceError(
            "MODEL_DEVICE asks for CUDA but this worker has no usable GPU.",
            code="device_unavailable",
            status=503,
        )
    return setting
