"""Relative speed of the separation models, in-process, for the catalogue.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/model_speed.py              # hpss, htdemucs, htdemucs_ft: ~5 min on 2 cores
    .venv/bin/python bench/model_speed.py --seconds 30 --models hpss htdemucs
    .venv/bin/python bench/model_speed.py --models htdemucs htdemucs_6s
    .venv/bin/python bench/model_speed.py --models htdemucs hdemucs_mmi mdx mdx_extra htdemucs

Times one separation of a synthesised stereo 44.1 kHz signal (``bench/separation.py``'s
``synth``) as a worker runs it, without HTTP, upload or model load: hpss with its
default ``kernel_size``; Demucs through the engine's ``WindowSeparator`` with the
default ``shifts=1, overlap=0.25`` on randomly initialised full-size architectures
(``bench/separation.py``'s ``HTDEMUCS_KWARGS``; random weights cost the same compute
as trained ones). ``htdemucs_ft`` is a bag of four such models, as the pretrained one
is. The Demucs v3 models are built as their bags are (``V3_BAGS``): ``hdemucs_mmi``
one HDemucs; ``mdx`` two time-domain Demucs and two HDemucs with the bag's per-source
weights; ``mdx_extra`` four HDemucs; all with the bags' segment of 44 s. ``mdx_q`` and
``mdx_extra_q`` are the same networks quantised with diffq, which demucs unpacks into
float weights at load, so they run as ``mdx`` and ``mdx_extra`` and are timed as
those. Prints wall seconds and the real-time factor (processing time / audio duration;
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.separation import HTDEMUCS_KWARGS, SOURCES, SR, synth  # noqa: E402

# htdemucs_6s (5c90dfd2) is the same HTDemucs with two more sources.
SIX_SOURCES = [*SOURCES, "guitar", "piano"]

# The Demucs v3 (Hybrid Demucs) models. Their checkpoints' kwargs were not
# available offline; each network is the class with the section of demucs's
# training config (conf/config.yaml, ``demucs:`` / ``hdemucs:``) that trained it,
# as demucs/train.py's get_model builds it (sources, 2 channels, 44.1 kHz), and
# with the per-model facts demucs publishes:
# * hdemucs_mmi (75fc33f5): demucs/grids/mmi.py trains it as ``model: hdemucs``
#   with no hdemucs.* override (its overrides are htdemucs.*), so HDemucs with
#   the hdemucs section: channels 48, depth 6, nfft 4096, cac, hybrid, dconv_mode 1
#   (torchaudio's port of this family, hdemucs_high, is HDemucs nfft 4096, depth 6).
# * mdx (0d19c1c6, 7ecf8ec1, c511e2ab, 7d865c68): docs/training.md's "Track A":
#   the first two are "64ch time domain only improved Demucs" (Demucs with the
#   demucs section: channels 64, depth 6, lstm_layers 0, dconv_mode 1, ...), the
#   last two "48ch hybrid" models, one on amplitude spectrograms (cac False), one
#   with CaC and "different weights per frequency bands in outermost layers"
#   (HDemucs's multi_freqs, values not published; built without it, which costs
#   about the same: MultiWrap runs the same layer band by band); remote/mdx.yaml's
#   weights use them per source.
# * mdx_extra (e51eebcc, a1d90b5c, 5d2d6c55, cfa93e08): docs/training.md's
#   "Track B": "All the models are 48ch hybrid demucs ... Two of them are using
#   CaC, and two are using amplitude spectrograms with masking"; which two is not
#   stated, assumed the first two CaC (the cost differs only in the first and last
#   spectral layer's channels).
# HDemucs's hybrid_old=True ("some models trained for MDX had a padding bug")
# is left False: which models set it is not published, and it changes a few
# frames of padding. Every bag file gives segment 44.
DEMUCS_V3_KWARGS: dict[str, Any] = {
    "channels": 64,
    "depth": 6,
    "lstm_layers": 0,
    "normalize": False,
}
HDEMUCS_KWARGS: dict[str, Any] = {
    "channels": 48,
    "depth": 6,
    "nfft": 4096,
    "hybrid": True,
    "dconv_mode": 1,
    "multi_freqs": [],
    "multi_freqs_depth": 3,
    "dconv_init": 1e-3,
}
V3_SEGMENT = 44
_MDX_WEIGHTS = [
    [1.0, 1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [1.0, 0.0, 1.0, 1.0],
    [1.0, 0.0, 1.0, 1.0],
]
# name -> (class name, extra kwargs) per model of the bag, and the bag's weights
V3_BAGS: dict[str, tuple[list[tuple[str, dict[str, Any]]], list[list[float]] | None]] = {
    "hdemucs_mmi": ([("hdemucs", {"cac": True})], None),
    "mdx": (
        [("demucs", {}), ("demucs", {}), ("hdemucs", {"cac": False}), ("hdemucs", {"cac": True})],
        _MDX_WEIGHTS,
    ),
    "mdx_extra": ([("hdemucs", {"cac": c}) for c in (True, True, False, False)], None),
}
# diffq-quantised bags: at inference the same float networks as these.
QUANTISED = {"mdx_q": "mdx", "mdx_extra_q": "mdx_extra"}
MODELS = ("hpss", "htdemucs", "htdemucs_ft", "htdemucs_6s", *V3_BAGS, *QUANTISED)


def _demucs(bag: int, seed: int, sources: list[str] | None = None) -> object:
    import torch
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    models = []
    for k in range(bag):
        torch.manual_seed(seed + k)
        models.append(HTDemucs(sources=list(sources or SOURCES), **HTDEMUCS_KWARGS).eval())
    return BagOfModels(models)


def _demucs_v3(name: str, seed: int) -> object:
    import torch
    from demucs.apply import BagOfModels
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs

    specs, weights = V3_BAGS[QUANTISED.get(name, name)]
    models = []
    for k, (kind, extra) in enumerate(specs):
        torch.manual_seed(seed + k)
        klass, kwargs = (
            (Demucs, DEMUCS_V3_KWARGS) if kind == "demucs" else (HDemucs, HDEMUCS_KWARGS)
        )
        models.append(klass(sources=list(SOURCES), segment=V3_SEGMENT, **kwargs, **extra).eval())
    return BagOfModels(models, weights, V3_SEGMENT)


def measure(name: str, audio: np.ndarray, seed: int) -> float:
    """Wall seconds of one separation of ``audio`` (channels, frames)."""
    if name == "hpss":
        from app.models.hpss import hpss

        start = time.perf_counter()
        hpss(audio, SR)
        return time.perf_counter() - start
    from app.models.demucs_engine import WindowSeparator

    if name in V3_BAGS or name in QUANTISED:
        model = _demucs_v3(name, seed)
    else:
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
        "--models",
        nargs="+",
        choices=MODELS,
        default=["hpss", "htdemucs", "htdemucs_ft"],
        help="which to time, in this order (a name may repeat)",
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
