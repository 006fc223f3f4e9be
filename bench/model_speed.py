"""Relative speed of the separation models, in-process, for the catalogue.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/model_speed.py              # hpss, htdemucs, htdemucs_ft: ~5 min on 2 cores
    .venv/bin/python bench/model_speed.py --seconds 30 --models hpss htdemucs
    .venv/bin/python bench/model_speed.py --models htdemucs htdemucs_6s

Times one separation of a synthesised stereo 44.1 kHz signal (``bench/separation.py``'s
``synth``) as a worker runs it, without HTTP, upload or model load: hpss with its
default ``kernel_size``; Demucs through the engine's ``WindowSeparator`` with the
default ``shifts=1, overlap=0.25`` on randomly initialised full-size architectures
(``bench/separation.py``'s ``HTDEMUCS_KWARGS``; random weights cost the same compute
as trained ones). ``htdemucs_ft`` is a bag of four such models, as the pretrained one
is. Prints wall seconds and the real-time factor (processing time / audio duration;
below 1 is faster than real time) per model, as JSON lines, which is what
``app/models/catalogue_data.py`` records.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.separation import HTDEMUCS_KWARGS, SOURCES, SR, synth  # noqa: E402

# htdemucs_6s (5c90dfd2) is the same HTDemucs with two more sources.
SIX_SOURCES = [*SOURCES, "guitar", "piano"]


def _demucs(bag: int, seed: int, sources: list[str] | None = None) -> object:
    import torch
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    models = []
    for k in range(bag):
        torch.manual_seed(seed + k)
        models.append(HTDemucs(sources=list(sources or SOURCES), **HTDEMUCS_KWARGS).eval())
    return BagOfModels(models)


def measure(name: str, audio: np.ndarray, seed: int) -> float:
    """Wall seconds of one separation of ``audio`` (channels, frames)."""
    if name == "hpss":
        from app.models.hpss import hpss

        start = time.perf_counter()
        hpss(audio, SR)
        return time.perf_counter() - start
    from app.models.demucs_engine import WindowSeparator

    sources = SIX_SOURCES if name == "htdemucs_6s" else None
    model = _demucs(4 if name == "htdemucs_ft" else 1, seed, sources)
    separator = WindowSeparator(
        model, "cpu", shifts=1, overlap=0.25, segment=None, ref_mean=0.0, ref_std=1.0
    )
    start = time.perf_counter()
    separator(audio, lambda _fraction: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length (default 30)")
    parser.add_argument(
        "--models", nargs="+", default=["hpss", "htdemucs", "htdemucs_ft"], help="which to time"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    audio = np.ascontiguousarray(synth(0, int(args.seconds * SR), args.seed).T)
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "seconds": args.seconds,
                "loadavg": os.getloadavg(),
            }
        ),
        flush=True,
    )
    for name in args.models:
        wall = measure(name, audio, args.seed)
        print(
            json.dumps(
                {
                    "model": name,
                    "wall_seconds": round(wall, 2),
                    "real_time_factor": round(wall / args.seconds, 3),
                    "loadavg": os.getloadavg(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
