"""Separation benchmark: the demucs CLI against this service, the models
against each other, and peak memory.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/separation.py                  # everything, full-size models
    .venv/bin/python bench/separation.py --skip-memory --skip-compare   # CLI vs service
    .venv/bin/python bench/separation.py --skip-speed --skip-memory     # the models compared
    .venv/bin/python bench/separation.py --skip-speed --skip-compare --memory-model tiny,roformer

Speed: on one synthesised 60 s stereo 44.1 kHz WAV, times the demucs CLI
(``python -m demucs --repo ...``, model load included) and this service as a
user sees it (gunicorn + one Celery worker, as ``make run`` starts them; upload,
poll, download every stem), for a first request (the worker loads the model)
and a second one (the model is resident); then ``separate_file`` in a fresh
process (``bench/_model_probe.py``) with the random shift seeded as the CLI's
(both runs seed Python's ``random``), whose stems are compared with the CLI's
(per-stem SNR). The model is a full-size, randomly initialised htdemucs (same
architecture and cost as the trained one), seeded.

Models compared: on one synthesised stereo 44.1 kHz WAV (``--seconds``), each
model in a fresh process (``bench/_model_probe.py``) runs
``app.services.separation.separate_file`` as a worker does, model resident:
htdemucs (the baseline), viperx's BS-RoFormer and Kim's Mel-Band RoFormer
(random weights from their published configs, ``bench/configs/``), and their
two-model ensemble when this build has one. Wall and CPU seconds, real-time
factor, ratio to htdemucs, peak RSS.

Memory: peak RSS of one job on a 5-minute and a 60-minute input, each in a
fresh process without HTTP (``bench/_memory_probe.py``), for htdemucs (full
size or tiny) and a RoFormer with the published chunk and STFT settings but a
small width and depth.

Everything runs in a temporary folder, deleted at the end unless ``--keep``;
every process started is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._service import (  # noqa: E402 - needs ROOT on sys.path
    METRICS_HEADER,
    PYTHON,
    Client,
    Processes,
    check_load,
    children_cpu_seconds,
    group_cpu_seconds,
    loadavg,
    metrics_cells,
    run_benchmark,
    say,
    service_env,
    start_service,
    tail,
    verdict,
)

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]

# Constructor arguments of the pretrained htdemucs (signature 955717e8) that
# differ from HTDemucs's defaults. The package's kwargs were not available
# offline; these are the values its checkpoint stores as published by several
# independent ports, and are consistent with demucs/grids/mmi.py (the grid it
# was trained with: dconv_mode 3, depth 4, t_dropout 0.02, t_layers 5) and with
# the 7.8 s (39/5) maximum segment demucs reports for it. Every other argument
# (channels 48, growth 2, nfft 4096, depth 4, t_layers 5, t_heads 8, ...) is
# HTDemucs's default, which is also the htdemucs section of demucs's training
# config. t_dropout does nothing at inference.
HTDEMUCS_KWARGS: dict[str, Any] = {
    "dconv_mode": 3,  # DConv branch in encoder and decoder (default 1: encoder only)
    "bottom_channels": 512,  # 1x1 convs around the transformer (default 0)
    "t_dropout": 0.02,
    "segment": Fraction(39, 5),  # 7.8 s, the real model's training segment (default 10)
}
TINY_KWARGS: dict[str, Any] = {"channels": 8, "t_layers": 1}  # as tests/support/demucs_repo.py
FULL_SIG, TINY_SIG = "bench0f1", "bench0t1"
TINY_NAME = "bench_tiny"

# The published RoFormer configs (bench/configs/<name>.yaml, each citing its
# source), by the service's model names.
ROFORMER_CONFIGS = Path(__file__).with_name("configs")
ROFORMERS = ("bs_roformer_viperx_1297", "mel_band_roformer_kim")
# The published MDX23C configs there too (by request: --compare-models
# htdemucs,mdx23c_vocals_zfturbo; they take many times htdemucs's time, UVR's
# mdx23c_instvoc_hq with num_overlap 8 about twice ZFTurbo's).
MDX23CS = ("mdx23c_vocals_zfturbo", "mdx23c_instvoc_hq")
ENSEMBLE = "+".join(ROFORMERS)
ENSEMBLE_PARAMS = {"ensemble_algorithm": "avg_wave"}
COMPARE_MODELS = ("htdemucs", *ROFORMERS, ENSEMBLE)
BASELINE = "htdemucs"
# The memory part's RoFormer: viperx's config (chunk_size 352800, num_overlap 2,
# STFT 2048/441, 62 bands) with a small network, so that 60 minutes take
# minutes rather than a day; what memory depends on is the windowing.
SMALL_ROFORMER = "bench_roformer_small"
SMALL_ROFORMER_SOURCE = "bs_roformer_viperx_1297"
SMALL_ROFORMER_MODEL = {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16}
MEMORY_MODELS = {"full": "htdemucs", "tiny": TINY_NAME, "roformer": SMALL_ROFORMER}
ROFORMER_SEEDS = {name: offset for offset, name in enumerate((*ROFORMERS, SMALL_ROFORMER))}


# --------------------------------------------------------------------------- models


def state_digest(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_model(folder: Path, which: str, seed: int) -> dict[str, Any]:
    """A randomly initialised HTDemucs saved in demucs's ``--repo`` layout
    (``<sig>.th`` + ``<name>.yaml``, a bag of one), the way the service's own
    ``save_package`` writes downloaded weights."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs

    from app.models.demucs_engine import save_package

    folder.mkdir(parents=True, exist_ok=True)
    kwargs, sig, name = (
        (HTDEMUCS_KWARGS, FULL_SIG, "htdemucs")
        if which == "full"
        else (TINY_KWARGS, TINY_SIG, TINY_NAME)
    )
    torch.manual_seed(seed)
    model = HTDemucs(sources=list(SOURCES), **kwargs)
    info = {
        "name": name,
        "sig": sig,
        "parameters": sum(p.numel() for p in model.parameters()),
        "digest": state_digest(model),
        "segment": float(model.segment),
        "kwargs": {k: (str(v) if isinstance(v, Fraction) else v) for k, v in kwargs.items()},
    }
    save_package(model, folder / f"{sig}.th")
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"models": [sig]}))
    info["file_mb"] = (folder / f"{sig}.th").stat().st_size / 1e6
    del model
    gc.collect()
    return info


def build_roformer(
    models: Path, name: str, seed: int, source: str | None = None, shrink: dict | None = None
) -> dict[str, Any]:
    """A randomly initialised RoFormer in the service's layout,
    ``MODELS_DIR/roformer/<name>/config.yaml`` + ``model.ckpt``: the config is
    ``bench/configs/<source or name>.yaml`` as published, with ``shrink``'s
    ``model:`` values (if any) put in place of the published ones on their lines."""
    import torch

    from app.models.msst import read_config
    from app.models.roformer_engine import RoformerEngine
    from app.models.roformer_net import ARCHITECTURES

    text = (ROFORMER_CONFIGS / f"{source or name}.yaml").read_text()
    for key, value in (shrink or {}).items():
        text, count = re.subn(
            rf"^(  {key}:) (\S+)$", rf"\g<1> {value}  # bench: published \2", text, flags=re.M
        )
        if count != 1:
            raise RuntimeError(f"{key!r} is {count} times in {source or name}.yaml")
    folder = models / "roformer" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(text)
    settings = read_config(folder / "config.yaml")
    kind = RoformerEngine().architecture(source or name, settings)
    torch.manual_seed(seed)
    net = ARCHITECTURES[kind](**settings["model"])
    torch.save(net.state_dict(), folder / "model.ckpt")
    model = settings["model"]
    info = {
        "name": name,
        "architecture": kind,
        "parameters": sum(p.numel() for p in net.parameters()),
        "digest": state_digest(net),
        "file_mb": (folder / "model.ckpt").stat().st_size / 1e6,
        "summary": ", ".join(
            f"{k} {model[k]}"
            for k in ("dim", "depth", "heads", "dim_head", "num_bands", "mask_estimator_depth")
            if k in model
        )
        + (f", {len(model['freqs_per_bands'])} bands" if "freqs_per_bands" in model else "")
        + f", STFT {model['stft_n_fft']}/{model['stft_hop_length']}"
        + f", chunk_size {settings['audio']['chunk_size']}"
        + f", num_overlap {settings['inference']['num_overlap']}",
    }
    del net
    gc.collect()
    return info


def build_mdx23c(models: Path, name: str, seed: int) -> dict[str, Any]:
    """A randomly initialised MDX23C in the service's layout,
    ``MODELS_DIR/mdx23c/<name>/config.yaml`` + ``model.ckpt``, from
    ``bench/configs/<name>.yaml`` as published."""
    import torch

    from app.models.mdx23c_engine import Mdx23cEngine
    from app.models.msst import read_config

    folder = models / "mdx23c" / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROFORMER_CONFIGS / f"{name}.yaml", folder / "config.yaml")
    settings = read_config(folder / "config.yaml")
    torch.manual_seed(seed)
    net = Mdx23cEngine().build("mdx23c", settings)
    torch.save(net.state_dict(), folder / "model.ckpt")
    model, audio = settings["model"], settings["audio"]
    info = {
        "name": name,
        "parameters": sum(p.numel() for p in net.parameters()),
        "digest": state_digest(net),
        "file_mb": (folder / "model.ckpt").stat().st_size / 1e6,
        "summary": f"num_channels {model['num_channels']}, num_scales {model['num_scales']}, "
        f"growth {model['growth']}, num_subbands {model['num_subbands']}, "
        f"STFT {audio['n_fft']}/{audio['hop_length']}, chunk_size {audio['chunk_size']}, "
        f"num_overlap {settings['inference']['num_overlap']}",
    }
    del net
    gc.collect()
    return info


# --------------------------------------------------------------------------- audio


def synth(start: int, frames: int, seed: int) -> np.ndarray:
    """Frames ``[start, start + frames)`` of a deterministic test signal, (frames, 2).

    Bass and chord sines, a vibrato lead, hi-hat-like noise bursts every
    0.25 s and a louder burst every second; the same frames whatever the
    block size, so a long file written in chunks equals one written at once.
    """
    t = (start + np.arange(frames)) / SR
    bass = 0.20 * np.sin(2 * np.pi * 55.0 * t) + 0.10 * np.sin(2 * np.pi * 110.0 * t)
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * 0.125 * t)
    chord = 0.06 * swell * sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    lead = 0.10 * np.sin(2 * np.pi * 440.0 * t + 2.0 * np.sin(2 * np.pi * 5.0 * t))
    left = bass + chord + 0.8 * lead
    right = bass + 0.8 * chord + 0.4 * lead
    step = SR // 4
    length = int(0.12 * SR)
    first = max(0, (start - length) // step)
    last = (start + frames) // step
    for k in range(first, last + 1):
        onset = k * step
        lo, hi = max(onset, start), min(onset + length, start + frames)
        if hi <= lo:
            continue
        rng = np.random.default_rng([seed, k])
        noise = rng.standard_normal((length, 2))
        envelope = np.exp(-np.arange(length) / (0.03 * SR))[:, None]
        gain = 0.25 if k % 4 == 0 else 0.10
        pan = np.array([0.6, 1.0]) if k % 2 else np.array([1.0, 0.6])
        burst = gain * pan * noise * envelope
        left[lo - start : hi - start] += burst[lo - onset : hi - onset, 0]
        right[lo - start : hi - start] += burst[lo - onset : hi - onset, 1]
    return np.clip(np.stack([left, right], axis=1), -0.99, 0.99).astype(np.float32)


def write_audio(path: Path, seconds: float, seed: int, fmt: str, chunk_seconds: float = 10) -> Path:
    """Write in chunks: a 60-minute file never sits in memory."""
    total = int(seconds * SR)
    chunk = int(chunk_seconds * SR)
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, format=fmt, subtype="PCM_16") as out:
        for start in range(0, total, chunk):
            out.write(synth(start, min(chunk, total - start), seed))
    return path


# --------------------------------------------------------------------------- speed


# ``python -m demucs`` with Python's random module seeded first: demucs draws
# its random shift (``--shifts 1``) from it, and ``_model_probe.py
# --shift-seed`` seeds ours the same way, so the two sets of stems can be
# compared sample by sample. Seeding costs nothing.
SEEDED_CLI = (
    "import random, sys; random.seed(int(sys.argv.pop(1))); "
    "from demucs.separate import main; main()"
)
MIN_SNR_DB = 40.0  # per stem, ours against the CLI's, in float32
# ... and where the network ran in bfloat16 (SEPARATION_PRECISION, the faster
# mode the issue allows to trade precision down to this).
FASTER_MODE_MIN_SNR_DB = 30.0


def run_cli(
    procs: Processes, work: Path, repo: Path, wav: Path, env: dict[str, str], seed: int
) -> tuple[float, float, Path]:
    out = work / "cli-out"
    cmd = [
        PYTHON, "-c", SEEDED_CLI, str(seed), "--repo", str(repo), "-n", "htdemucs",
        "--shifts", "1", "--overlap", "0.25", "-o", str(out), str(wav),
    ]  # fmt: skip
    log = work / "cli.log"
    say("  $ " + " ".join(cmd))
    cpu = children_cpu_seconds()
    started = time.monotonic()
    code = procs.run("demucs CLI", cmd, env, log, timeout=3600)
    seconds = time.monotonic() - started
    cpu = children_cpu_seconds() - cpu
    if code != 0:
        raise RuntimeError(f"the demucs CLI failed ({code}):\n{tail(log)}")
    stems = sorted((out / "htdemucs" / wav.stem).glob("*.wav"))
    if len(stems) != len(SOURCES):
        raise RuntimeError(f"the demucs CLI wrote {len(stems)} stems, not 4:\n{tail(log)}")
    return seconds, cpu, out / "htdemucs" / wav.stem


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference - estimate) ** 2, dtype=np.float64))
    signal = float(np.sum(reference**2, dtype=np.float64))
    return float("inf") if noise == 0 else 10 * float(np.log10(signal / noise))


def stems_snr(cli: Path, ours: Path) -> dict[str, float]:
    """Per stem, ours against the CLI's (both 16-bit WAV as each writes them)."""
    result = {}
    for stem in SOURCES:
        reference, _ = sf.read(cli / f"{stem}.wav", dtype="float64", always_2d=True)
        estimate, _ = sf.read(ours / f"{stem}.wav", dtype="float64", always_2d=True)
        frames = min(len(reference), len(estimate))
        if abs(len(reference) - len(estimate)) > 1:
            raise RuntimeError(
                f"{stem}: {len(reference)} frames from the CLI, {len(estimate)} ours"
            )
        result[stem] = snr_db(reference[:frames], estimate[:frames])
    return result


def run_probe_stems(
    procs: Processes, work: Path, models: Path, wav: Path, seed: int
) -> dict[str, Any]:
    """``separate_file`` as a worker runs it, in a fresh process, the random
    shift seeded as the CLI's was: the stems to compare, and its times."""
    data = work / "probe-data"
    data.mkdir()
    stems = work / "probe-stems"
    cmd = [
        PYTHON, str(Path(__file__).with_name("_model_probe.py")),
        "--data-dir", str(data), "--models-dir", str(models),
        "--input", str(wav), "--model", "htdemucs",
        "--shift-seed", str(seed), "--stems-dir", str(stems),
    ]  # fmt: skip
    env = service_env(data, models)
    result = run_probe(procs, env, cmd, work / "probe.log", "model probe htdemucs")
    if result["exit"] != 0 or "separate_seconds" not in result:
        raise RuntimeError(f"the probe failed (exit {result['exit']}):\n{tail(work / 'probe.log')}")
    result["stems_dir"] = stems
    return result


def one_request(client: Client, wav: Path, work: Path, label: str, poll: float) -> dict[str, Any]:
    """Upload, poll until finished, download every stem: the time a user waits."""
    out = work / f"service-{label}"
    out.mkdir()

    def upload() -> Any:
        with open(wav, "rb") as handle:
            return client.request(
                "POST",
                "/api/v1/separations",
                files={"file": (wav.name, handle, "audio/wav")},
                data={"model": "htdemucs", "output_format": "wav"},
            )

    run = client.run_job(
        label, upload, poll, fetch=lambda job: client.download_files(job, out), notes=True
    )
    job = run["job"]
    return {
        "seconds": run["seconds"],
        "upload_seconds": run["submit_seconds"],
        "wait_seconds": run["wait_seconds"],
        "download_seconds": run["fetch_seconds"],
        "metrics": job.get("metrics") or {},
        "files": [(e["name"], e.get("duration")) for e in job["result"]["files"]],
        "bytes": run["fetched"],
    }


def run_service(
    procs: Processes, work: Path, models: Path, wav: Path, poll: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    env = service_env(work / "service-data", models)
    service = start_service(procs, work, env, "bench")
    client, worker, api = service.client, service.worker, service.api
    results = {}
    for label in ("first", "second"):
        check_load(f"the {label} request")
        cpu = group_cpu_seconds([worker.pid, api.pid])
        results[label] = one_request(client, wav, work, label, poll)
        results[label]["cpu_seconds"] = group_cpu_seconds([worker.pid, api.pid]) - cpu
        say(f"  ours, {label} request: {results[label]['seconds']:.1f} s")
    loads = re.findall(
        r"loaded separation model htdemucs on \S+ in ([\d.]+) s", tail(service.worker_log, 10**7)
    )
    loaded = {"model_loads": len(loads), "load_seconds": [float(s) for s in loads]}
    return results["first"], results["second"], loaded


def speed(
    args: argparse.Namespace, procs: Processes, work: Path, models: Path, cli_env: dict
) -> None:
    say("\n== Speed ==")
    wav = write_audio(work / "bench.wav", args.seconds, args.seed, "WAV")
    say(
        f"  input: {wav.name}, {args.seconds:g} s stereo 44.1 kHz 16-bit WAV ({wav.stat().st_size / 1e6:.1f} MB)"
    )
    check_load("the demucs CLI")
    cli, cli_cpu, cli_stems = run_cli(procs, work, models / "demucs", wav, cli_env, args.seed)
    say(f"  demucs CLI: {cli:.1f} s (CPU {cli_cpu:.1f} s), load average {loadavg()}")
    first, second, worker = run_service(procs, work, models, wav, args.poll)
    say(f"  load average {loadavg()}")
    check_load("separate_file in a fresh process")
    probe = run_probe_stems(procs, work, models, wav, args.seed)
    say(
        f"  ours, separate_file (fresh process, model resident): {probe['separate_seconds']:.1f} s"
        f" (CPU {probe['separate_cpu_seconds']:.1f} s), {json.dumps(probe['facts'])},"
        f" load average {loadavg()}"
    )
    audio = args.seconds

    say("\n  Speed on the same file (wall seconds; RTF = wall seconds / audio seconds)")
    say(
        f"  {'':24}{'seconds':>9}{'RTF':>7}{'ours/CLI':>10}{'goal':>8}  result"
        f"{'CPU s':>9}{'CPU ours/CLI':>14}"
    )
    say(f"  {'demucs CLI':24}{cli:9.1f}{cli / audio:7.2f}{'':32}{cli_cpu:9.1f}")
    for label, result, goal in (("first", first, 1.1), ("second", second, 0.75)):
        ratio = result["seconds"] / cli
        say(
            f"  {'ours, ' + label + ' request':24}{result['seconds']:9.1f}"
            f"{result['seconds'] / audio:7.2f}{ratio:10.2f}{'< ' + format(goal, 'g'):>8}"
            f"  {verdict(ratio, goal)}{result['cpu_seconds']:13.1f}"
            f"{result['cpu_seconds'] / cli_cpu:14.2f}"
        )
    wall, cpu = probe["separate_seconds"], probe["separate_cpu_seconds"]
    say(
        f"  {'ours, separate_file':24}{wall:9.1f}{wall / audio:7.2f}{wall / cli:10.2f}"
        f"{'< 0.75':>8}  {verdict(wall / cli, 0.75)}{cpu:13.1f}{cpu / cli_cpu:14.2f}"
    )
    say(
        "  (CPU s: user+system time of the CLI process, or of the API and worker processes"
        " during the request, or of separate_file in its process; less sensitive than wall"
        " time to other load on the machine)"
    )
    metrics = second["metrics"]
    say(
        "  path that ran (the second job's metrics): "
        + ", ".join(
            f"{k} {metrics.get(k)}"
            for k in ("separation_path", "batch_size", "threads", "precision")
        )
    )
    snr = stems_snr(cli_stems, probe["stems_dir"])
    precision = probe["facts"].get("precision", "float32")
    goal = MIN_SNR_DB if precision == "float32" else FASTER_MODE_MIN_SNR_DB
    say(
        f"\n  Per-stem SNR of ours (separate_file in {precision}, random shift seeded {args.seed}"
        f" as the CLI's) against the CLI's stems, both 16-bit WAV; goal >= {goal:g} dB"
    )
    for stem, value in snr.items():
        say(f"  {stem:10}{value:8.1f} dB  {'PASS' if value >= goal else 'MISS'}")
    say("\n  Our requests in detail (seconds)")
    say(f"  {'':10}{'upload':>8}{'queue+run':>11}{'download':>10}{METRICS_HEADER}")
    for label, result in (("first", first), ("second", second)):
        say(
            f"  {label:10}{result['upload_seconds']:8.2f}{result['wait_seconds']:11.2f}"
            f"{result['download_seconds']:10.2f}{metrics_cells(result['metrics'])}"
        )
    say(
        f"  stems downloaded per request: {len(second['files'])} "
        f"({', '.join(f'{n} {d}s' for n, d in second['files'])}; {second['bytes'] / 1e6:.1f} MB)"
    )
    cached = worker["model_loads"] == 1
    say(
        f"  worker model loads: {worker['model_loads']} "
        f"(seconds: {', '.join(f'{s:.2f}' for s in worker['load_seconds']) or '-'}); "
        f"second request found the model resident: {'yes' if cached else 'NO'}"
    )


# --------------------------------------------------------------------------- models compared


def run_probe(
    procs: Processes, env: dict[str, str], cmd: list[str], log: Path, label: str
) -> dict[str, Any]:
    """Run a probe script in a fresh process; its ``RESULT {json}`` line, plus the
    process's wall seconds (``process_seconds``)."""
    started = time.monotonic()
    code = procs.run(label, cmd, env, log, timeout=12 * 3600)
    wall = time.monotonic() - started
    match = re.search(r"^RESULT (.*)$", tail(log, 10**6), re.MULTILINE)
    if not match:
        raise RuntimeError(f"{label} printed no result (exit {code}):\n{tail(log)}")
    return {**json.loads(match.group(1)), "process_seconds": wall, "exit": code}


def compare(args: argparse.Namespace, procs: Processes, work: Path, models: Path) -> None:
    say("\n== Models compared (separate_file as a worker runs it, one fresh process per model) ==")
    wav = write_audio(work / "compare.wav", args.seconds, args.seed, "WAV")
    say(
        f"  input: {wav.name}, {args.seconds:g} s stereo 44.1 kHz 16-bit WAV"
        f" ({wav.stat().st_size / 1e6:.1f} MB), the same file for every model"
    )
    say(
        "  each process: create the app, registry.find the model, preload it (timed apart: a"
        " worker's second job finds it resident), then separate_file with the job's parameters"
        " (each option at its default; a RoFormer's overlap null means its config's num_overlap),"
        " stems as 16-bit WAV, clip_mode rescale"
    )
    env = service_env(work / "compare-data", models)
    rows: dict[str, dict[str, Any]] = {}
    for name in args.compare_models:
        # a name given twice (htdemucs before and after a slow model) runs twice
        label = name if name not in rows else f"{name} (again)"
        params = ENSEMBLE_PARAMS if "+" in name else {}
        data = work / f"compare-{len(rows)}"
        data.mkdir()
        log = work / f"compare-{len(rows)}.log"
        cmd = [
            PYTHON, str(Path(__file__).with_name("_model_probe.py")),
            "--data-dir", str(data), "--models-dir", str(models),
            "--input", str(wav), "--model", name,
            *(f"--param={k}={v}" for k, v in params.items()),
        ]  # fmt: skip
        check_load(name)
        say(f"  running {name} (log {log}) ...")
        result = run_probe(procs, env, cmd, log, f"model probe {name}")
        if result.get("skipped"):
            what = "ensemble" if "+" in name else name
            say(f"  SKIP {what}: {result['skipped']} ({name!r} is not a model registry.find knows)")
            continue
        if result["exit"] != 0 or "separate_seconds" not in result:
            raise RuntimeError(f"{name} failed (exit {result['exit']}):\n{tail(log)}")
        rows[label] = result
        say(
            f"  {label}: separate_file {result['separate_seconds']:.1f} s wall,"
            f" {result['separate_cpu_seconds']:.1f} s CPU,"
            f" RTF {result['separate_seconds'] / args.seconds:.3f};"
            f" load {result['load_seconds']:.1f} s; peak RSS {result['ru_maxrss_mib']:.0f} MiB"
            f" (during separate_file {result['vmhwm_mib']:.0f} MiB);"
            f" stems {', '.join(result['stems'])}; options"
            f" {json.dumps({k: v for k, v in result['params'].items() if k not in ('model', 'output_format', 'bit_depth', 'clip_mode')})};"
            f" load average {loadavg()}"
        )
        shutil.rmtree(data, ignore_errors=True)

    if not rows:
        return
    base = rows.get(BASELINE)
    say(
        f"\n  {args.seconds:g} s input; RTF = separate_file wall seconds / audio seconds"
        f" (model resident); x {BASELINE} = RTF / {BASELINE}'s RTF in this run"
    )
    say(
        f"  {'model':48}{'wall s':>9}{'CPU s':>9}{'RTF':>8}{'x ' + BASELINE:>12}"
        f"{'CPU RTF':>9}{'CPU x':>7}{'load s':>8}{'peak RSS MiB':>14}{'in job':>8}"
    )
    for name, row in rows.items():
        wall, cpu = row["separate_seconds"], row["separate_cpu_seconds"]
        times = f"{wall / base['separate_seconds']:.2f}" if base else "-"
        cpu_times = f"{cpu / base['separate_cpu_seconds']:.2f}" if base else "-"
        say(
            f"  {name:48}{wall:9.1f}{cpu:9.1f}{wall / args.seconds:8.3f}{times:>12}"
            f"{cpu / args.seconds:9.2f}{cpu_times:>7}{row['load_seconds']:8.1f}"
            f"{row['ru_maxrss_mib']:14.0f}{row['vmhwm_mib']:8.0f}"
        )
    say(
        "  (CPU s: user+system seconds of the process during separate_file, all threads; less"
        " sensitive than wall time to other load. peak RSS: ru_maxrss of the process, model load"
        " included; in job: VmHWM reset after the load, i.e. the peak during separate_file)"
    )


# --------------------------------------------------------------------------- memory


def memory(
    args: argparse.Namespace, procs: Processes, work: Path, models: Path, names: list[str]
) -> None:
    env = service_env(work, models)
    inputs: dict[float, Path] = {}
    for minutes in args.memory_minutes:
        flac = work / f"mem-{minutes:g}min.flac"
        started = time.monotonic()
        write_audio(flac, minutes * 60, args.seed, "FLAC")
        say(
            f"\n  input: {flac.name} ({flac.stat().st_size / 1e6:.0f} MB FLAC, "
            f"written in 10 s chunks in {time.monotonic() - started:.0f} s)"
        )
        inputs[minutes] = flac
    for name in names:
        memory_of(args, procs, work, models, env, name, inputs)
    if not args.keep:
        for flac in inputs.values():
            flac.unlink(missing_ok=True)


def memory_of(
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    models: Path,
    env: dict[str, str],
    name: str,
    inputs: dict[float, Path],
) -> None:
    say(f"\n== Memory (model {name!r}, one fresh process per input, no HTTP) ==")
    if name == SMALL_ROFORMER:
        say(
            f"  {name}: {SMALL_ROFORMER_SOURCE}'s published config (chunk_size 352800,"
            f" num_overlap 2, STFT 2048/441, 62 bands) with a small network"
            f" ({', '.join(f'{k} {v}' for k, v in SMALL_ROFORMER_MODEL.items())}). The memory"
            " flatness comes from the windowing (the service's windows, the model's chunks),"
            " which does not depend on the network's size; a full-size model would take a day"
            " of CPU on 60 minutes here (see the model comparison's RTF)."
        )
    peaks: dict[float, float] = {}
    for minutes, flac in inputs.items():
        data = work / f"probe-{name}-{minutes:g}min"
        log = work / f"probe-{name}-{minutes:g}min.log"
        cmd = [
            PYTHON, str(Path(__file__).with_name("_memory_probe.py")),
            "--data-dir", str(data), "--models-dir", str(models),
            "--input", str(flac), "--model", name,
        ]  # fmt: skip
        check_load(f"the {minutes:g}-minute job")
        say(f"  running the {minutes:g}-minute job (log {log}) ...")
        result = run_probe(procs, env, cmd, log, f"memory probe {name} {minutes:g} min")
        metrics = result.get("metrics") or {}
        say(
            f"  {minutes:g} min: status {result['status']}"
            + (f" ({result['error']})" if result.get("error") else "")
            + f", ru_maxrss {result['ru_maxrss_mib']:.0f} MiB"
            f" (RSS before the job {result['rss_before_job_mib']:.0f} MiB),"
            f" run_seconds {metrics.get('run_seconds')}, RTF {metrics.get('real_time_factor')},"
            f" submit {result['submit_wall_seconds']:.0f} s, process {result['process_seconds']:.0f} s"
        )
        say(
            f"    RSS (MiB) at each tenth of the job: {result.get('rss_mib_each_tenth')};"
            f" sampled peak at {result.get('sampled_peak_at_fraction')} of the run;"
            f" {len(result['stems'])} stems ({', '.join(result['stems'])})"
            f" of {(result['stem_durations'] or [None])[0]} s"
        )
        if result["status"] == "succeeded":
            peaks[minutes] = float(result["ru_maxrss_mib"])
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)

    say(f"\n  Peak RSS of {name} (ru_maxrss of the process that ran the job)")
    for minutes in inputs:
        value = peaks.get(minutes)
        say(f"  {f'{minutes:g}-minute input':20}{f'{value:.0f} MiB' if value else 'failed':>12}")
    if len(inputs) >= 2:
        short, long = min(inputs), max(inputs)
        if short in peaks and long in peaks:
            ratio = peaks[long] / peaks[short]
            say(
                f"  {name}: ratio {long:g} min / {short:g} min: {ratio:.2f} (goal < 2.0)"
                f"  {verdict(ratio, 2.0)}"
            )
        else:
            say(f"  {name}: ratio not computed, a job failed  MISS")


# --------------------------------------------------------------------------- main


def names_list(choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if choices is not None and n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices or ('names',))}"
            )
        return names

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark separation: the demucs CLI against this service (speed), "
        "the separation models against htdemucs (compare), and the peak memory of one job "
        "on a 5- and a 60-minute input.",
        epilog="Goals: ours/CLI < 1.1 for the first request (model load included), < 0.75 for "
        "the second (model resident) and for separate_file; per-stem SNR against the CLI's "
        ">= 40 dB in float32, >= 30 dB where the network ran in bfloat16 "
        "(SEPARATION_PRECISION, auto by default: bfloat16 on a CPU with AMX or AVX-512 BF16); "
        "peak RSS 60 min / 5 min < 2.0.",
    )
    parser.add_argument("--skip-speed", action="store_true", help="skip the CLI/service timing")
    parser.add_argument(
        "--skip-compare", action="store_true", help="skip the comparison of the models"
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory part")
    parser.add_argument(
        "--compare-models",
        type=names_list(),
        default=list(COMPARE_MODELS),
        metavar="NAMES",
        help=f"models compared, comma-separated (default {','.join(COMPARE_MODELS)}); "
        f"{BASELINE} is the baseline of the ratios; a name with '+' is an ensemble of those "
        f"models, run with {json.dumps(ENSEMBLE_PARAMS)}",
    )
    parser.add_argument(
        "--memory-model",
        type=names_list(tuple(MEMORY_MODELS)),
        default=["full", "roformer"],
        metavar="MODELS",
        help="models of the memory part, comma-separated: full (full-size htdemucs; 60 min "
        "takes about an hour on 2 cores), tiny (HTDemucs(channels=8, t_layers=1) saved as "
        f"'{TINY_NAME}'), roformer (the published RoFormer chunk and STFT settings with a "
        f"small network, saved as '{SMALL_ROFORMER}'); default full,roformer",
    )
    parser.add_argument(
        "--memory-minutes",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[5.0, 60.0],
        help="input lengths of the memory part, comma-separated minutes (default 5,60)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="input length of the speed and compare parts, seconds (60)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the models and the audio")
    parser.add_argument("--poll", type=float, default=0.2, help="job polling interval, s (0.2)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    def run(procs: Processes, work: Path) -> None:
        models = work / "models"
        say(f"Separation benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        say(
            f"  python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"load average {loadavg()}"
        )
        say(f"  work folder: {work}{' (kept)' if args.keep else ' (deleted at the end)'}")
        memory_models = [] if args.skip_memory else args.memory_model
        compared = [] if args.skip_compare else args.compare_models
        wanted = []
        if not args.skip_speed or BASELINE in compared or "full" in memory_models:
            wanted.append("full")
        if "tiny" in memory_models:
            wanted.append("tiny")
        for which in wanted:
            info = build_model(models / "demucs", which, args.seed)
            say(
                f"  model {info['name']!r} ({info['sig']}.th, {info['file_mb']:.0f} MB): "
                f"HTDemucs(sources={SOURCES}, {', '.join(f'{k}={v}' for k, v in info['kwargs'].items())}),"
                f" {info['parameters'] / 1e6:.2f} M parameters, segment {info['segment']:g} s,"
                f" random init seed {args.seed}, state sha256 {info['digest']}"
            )
        if "full" in wanted:
            say(
                "  matched to the pretrained htdemucs (955717e8): dconv_mode=3, "
                "bottom_channels=512, t_dropout=0.02, segment=39/5; all else the HTDemucs "
                "defaults (channels 48, depth 4, nfft 4096, t_layers 5, t_heads 8)"
            )
        roformers = [r for r in ROFORMERS if any(r in name.split("+") for name in compared)]
        builds = [(name, name, None) for name in roformers]
        if "roformer" in memory_models:
            builds.append((SMALL_ROFORMER, SMALL_ROFORMER_SOURCE, SMALL_ROFORMER_MODEL))
        for name, source, shrink in builds:
            seed = args.seed + ROFORMER_SEEDS[name]
            info = build_roformer(models, name, seed, source, shrink)
            say(
                f"  model {name!r} (roformer/{name}/model.ckpt, {info['file_mb']:.0f} MB):"
                f" {info['architecture']} from bench/configs/{source}.yaml"
                f"{' with ' + str(shrink) if shrink else ' (the published config)'}:"
                f" {info['summary']}; {info['parameters'] / 1e6:.2f} M parameters,"
                f" random init seed {seed}, state sha256 {info['digest']}"
            )
        for offset, name in enumerate(
            m for m in MDX23CS if any(m in c.split("+") for c in compared)
        ):
            seed = args.seed + 10 + offset
            info = build_mdx23c(models, name, seed)
            say(
                f"  model {name!r} (mdx23c/{name}/model.ckpt, {info['file_mb']:.0f} MB): "
                f"MDX23C from bench/configs/{name}.yaml (the published config): "
                f"{info['summary']}; {info['parameters'] / 1e6:.2f} M parameters, random init "
                f"seed {seed}, state sha256 {info['digest']}"
            )
        cli_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if not args.skip_speed:
            speed(args, procs, work, models, cli_env)
        if compared:
            compare(args, procs, work, models)
        if memory_models:
            memory(args, procs, work, models, [MEMORY_MODELS[m] for m in memory_models])

    return run_benchmark("bench-separation-", args.workdir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
