"""One model on one file, as a worker runs it: wall and CPU seconds, peak memory.

Run by ``bench/separation.py`` (the model comparison) in a fresh process per
model, so that ``ru_maxrss`` belongs to that model alone. Creates the app
(temporary ``DATA_DIR``, the bench's ``MODELS_DIR``), finds the model with
``app.models.registry.find`` (a name no engine offers is reported as skipped,
not run), loads it into this process's model cache (``preload``, timed apart:
a worker's second job finds its model resident), then calls
``app.services.separation.separate_file`` on the input inside an app context
(decode in blocks, windows with cross-fades, stems written and rescaled),
with the parameters a job gets (``separation.prepare`` fills each option's
default).

Prints progress lines, then one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._memory_probe import Sampler, rss_kib  # noqa: E402 - needs ROOT on sys.path


def cpu_seconds() -> float:
    """User + system seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the job's own peak shows."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class Stages:
    """The ``Progress`` protocol: remembers when each stage began (seconds from start)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stages: dict[str, float] = {}
        self.progress = 0.0

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        self.progress = max(self.progress, float(progress))
        if stage is not None and stage not in self.stages:
            self.stages[stage] = round(time.monotonic() - self.started, 3)
            print(f"probe: {stage} at {self.stages[stage]:.1f} s", flush=True)

    def stage(self, stage: str, progress: float | None = None) -> None:
        self(self.progress if progress is None else progress, stage)


def parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--models-dir", required=True, type=Path)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--model", required=True, help="a separation model name")
    parser.add_argument(
        "--param",
        action="append",
        type=parse_param,
        default=[],
        help="NAME=VALUE, a job parameter (repeatable), e.g. ensemble_algorithm=avg_wave",
    )
    parser.add_argument(
        "--shift-seed",
        type=int,
        help="seed Python's random module just before separate_file: demucs draws its random "
        "shift from it, so a CLI run seeded the same way gives comparable stems",
    )
    parser.add_argument(
        "--stems-dir", type=Path, help="keep the stems in this folder (default: deleted)"
    )
    args = parser.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)

    import torch

    from app import create_app
    from app.batch import probe
    from app.models import registry
    from app.services.separation import prepare, separate_file

    app = create_app(
        {
            "DATA_DIR": str(args.data_dir),
            "MODELS_DIR": str(args.models_dir),
            "SECRET_KEY": secrets.token_urlsafe(36),
            "DATABASE_URL": None,
            "REDIS_URL": None,
            "ALLOW_MODEL_DOWNLOAD": False,
            "LOG_LEVEL": "WARNING",
        }
    )
    result: dict[str, Any] = {
        "model": args.model,
        "input": str(args.input),
        "torch_threads": torch.get_num_threads(),
    }
    with app.app_context():
        config = app.config
        engine = registry.find("separation", args.model, config)
        if engine is None:
            result["skipped"] = "not in this build"
            print("RESULT " + json.dumps(result), flush=True)
            return 0
        result["engine"] = engine.name
        info = probe(args.input)
        name, params = prepare(
            {
                "model": args.model,
                "output_format": "wav",
                "bit_depth": "16",
                "clip_mode": "rescale",
                **dict(args.param),
            }
        )
        result["params"] = params
        result["input_seconds"] = info.get("duration")

        print(f"probe: loading {name} ({engine.name})", flush=True)
        cpu, started = cpu_seconds(), time.perf_counter()
        engine.preload(name, config)
        result["load_seconds"] = round(time.perf_counter() - started, 3)
        result["load_cpu_seconds"] = round(cpu_seconds() - cpu, 3)
        result["rss_after_load_mib"] = round(rss_kib() / 1024, 1)
        result["peak_reset"] = reset_peak()

        out = args.stems_dir or Path(tempfile.mkdtemp(prefix="stems-", dir=args.data_dir))
        out.mkdir(parents=True, exist_ok=True)
        facts: dict[str, Any] = {}
        if args.shift_seed is not None:
            random.seed(args.shift_seed)
        stages = Stages()
        sampler = Sampler()
        sampler.start()
        print(f"probe: separating, RSS {result['rss_after_load_mib']:.0f} MiB", flush=True)
        cpu, started = cpu_seconds(), time.perf_counter()
        try:
            stems, paths, rate, device = separate_file(
                args.input, info, name, params, out, stages, facts
            )
        finally:
            sampler.stop.set()
            sampler.join()
        wall = time.perf_counter() - started
        result.update(
            {
                "separate_seconds": round(wall, 3),
                "separate_cpu_seconds": round(cpu_seconds() - cpu, 3),
                "stems": stems,
                "stem_bytes": sum(p.stat().st_size for p in paths),
                "sample_rate": rate,
                "device": device,
                "facts": facts,
                "stem_paths": [str(p) for p in paths],
                "stages": stages.stages,
                # Linux reports ru_maxrss in KiB: the process's peak, model load included.
                "ru_maxrss_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
                # VmHWM was reset after the load: the peak during separate_file.
                "vmhwm_mib": round(rss_kib("VmHWM") / 1024, 1),
                **sampler.summary(),
            }
        )
        if args.stems_dir is None:
            shutil.rmtree(out, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
