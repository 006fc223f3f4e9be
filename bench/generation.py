"""Generation benchmark: MusicGen used directly with transformers against this service.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/generation.py            # musicgen-small architecture (~5 min on 2 idle cores)
    .venv/bin/python bench/generation.py --small    # 4 x 256 decoder: a quick run (~1 min)
    .venv/bin/python bench/generation.py --help

Model: a randomly initialised MusicGen with the facebook/musicgen-small
architecture (decoder 24 layers x 1024, 16 heads, FFN 4096, 4 codebooks of
2048, pad/bos 2048; the 32 kHz EnCodec of facebook/encodec_32khz, 2.2 kbps =
4 codebooks of 2048; a T5-base-sized text encoder), seeded, saved with
``save_pretrained`` together with an offline word-level tokenizer and the
EnCodec feature extractor in ``MODELS_DIR/musicgen/musicgen-small``, where the
service finds it as ``facebook/musicgen-small``. Only the text encoder's
vocabulary is small (the tokenizer's words instead of T5's 32,128 pieces): the
embedding lookup it saves costs nothing per step. Random weights cost the same
compute per decoding step as trained ones. ``--small`` keeps the codec and the
text encoder and shrinks the decoder to 4 layers x 256 (4 heads, FFN 1024).

Same prompt, duration, seed and sampling (classifier-free guidance 3.0, top-k
250, temperature 1.0, as audiocraft and the service's defaults) on both sides:

direct   a fresh Python process: ``MusicgenForConditionalGeneration.from_pretrained``
         + ``AutoProcessor.from_pretrained`` (local_files_only), then
         ``model.generate(**inputs, do_sample=True, guidance_scale=3.0, top_k=250,
         temperature=1.0, max_new_tokens=N)`` with N the number of decoding steps
         the service computes for the duration (frames + the codebook delay:
         253 for 5 s). Load and generate timed apart.
ours     gunicorn (wsgi:app) and one Celery worker, started as ``make run``
         starts them, on a temporary DATA_DIR (SQLite jobs and broker),
         ALLOW_MODEL_DOWNLOAD=0, HF_HUB_OFFLINE=1. As a user: register, log
         in, then two requests POST /api/v1/generations {prompt, duration,
         seed}, each timed from the POST to the last byte of the downloaded
         file. The first includes the worker's model load; the second finds
         the model resident (checked in the worker log).

Tokens/s = decoding steps / generation seconds (direct: the generate() call;
ours: the job's ``run_seconds``, which for the first request includes the
model load). Goal: the second request under 1.1x direct.

Everything runs in a temporary folder, deleted at the end unless ``--keep``;
every process started is the leader of its own session and its whole group is
stopped on exit, Ctrl-C or error. The process helpers, the service start-up and
the HTTP client come from bench/_service.py; the offline word-level tokenizer is
tests/support/musicgen_models.py's.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._service import (  # noqa: E402 - needs ROOT on sys.path
    METRICS_HEADER,
    Client,
    Processes,
    check_load,
    group_cpu_seconds,
    loadavg,
    metrics_cells,
    ratio,
    run_benchmark,
    run_direct_script,
    say,
    service_env,
    start_service,
    tail,
    verdict,
)
from tests.support.musicgen_models import WORDS, word_tokenizer  # noqa: E402 - the tests' tokenizer

GOAL = 1.1  # ours, second request / direct
MODEL_NAME = "facebook/musicgen-small"
FOLDER = "musicgen-small"  # MODELS_DIR/musicgen/<FOLDER> is what the service loads for MODEL_NAME
GUIDANCE, TOP_K, TEMPERATURE = 3.0, 250, 1.0  # the service's defaults (audiocraft's)
DEFAULT_PROMPT = "upbeat electronic dance music with synth bass and drums"

# facebook/musicgen-small's decoder (config.json of the released model).
DECODER_FULL: dict[str, Any] = {
    "num_hidden_layers": 24,
    "hidden_size": 1024,
    "num_attention_heads": 16,
    "ffn_dim": 4096,
}
DECODER_SMALL: dict[str, Any] = {
    "num_hidden_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "ffn_dim": 1024,
}
CODEBOOKS, CODEBOOK_SIZE = 4, 2048
T5_VOCAB = 32128  # t5-base's vocabulary (the released models' text encoder)


# --------------------------------------------------------------------------- model


def build_model(folder: Path, seed: int, small: bool) -> dict[str, Any]:
    """The random-weight musicgen-small (or ``--small``) model and its processor in ``folder``."""
    import torch
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    # t5-base's encoder (MusicGen's text conditioner); only the vocabulary is the tokenizer's.
    text = T5Config(
        vocab_size=len(WORDS),
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # facebook/encodec_32khz: 2.2 kbps at 50 frames/s with 11-bit codes = 4 codebooks of 2048.
    codec = EncodecConfig(
        target_bandwidths=[2.2],
        sampling_rate=32000,
        audio_channels=1,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        hidden_size=128,
        num_filters=64,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 4],
        norm_type="weight_norm",
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
        dilation_growth_rate=2,
        use_causal_conv=False,
        pad_mode="reflect",
        compress=2,
        num_lstm_layers=2,
        trim_right_ratio=1.0,
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=128,
        use_conv_shortcut=False,
    )
    shape = DECODER_SMALL if small else DECODER_FULL
    decoder = MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE,
        max_position_embeddings=2048,
        layerdrop=0.0,
        use_cache=True,
        activation_function="gelu",
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        initializer_factor=0.02,
        scale_embedding=False,
        num_codebooks=CODEBOOKS,
        audio_channels=1,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
        tie_word_embeddings=False,
        **shape,
    )
    config = MusicgenConfig(
        text_encoder=text,
        audio_encoder=codec,
        decoder=decoder,
        decoder_start_token_id=CODEBOOK_SIZE,
        pad_token_id=CODEBOOK_SIZE,
    )
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    # A fresh EnCodec's codebooks are zeros (every code would decode alike): fill them,
    # so the audio depends on the tokens like a real codec's. Same cost either way.
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=generator))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
    gen = model.generation_config  # as facebook/musicgen-small's generation_config.json
    gen.do_sample = True
    gen.guidance_scale = GUIDANCE
    gen.top_k = TOP_K
    gen.max_length = 1500
    gen.pad_token_id = CODEBOOK_SIZE
    gen.decoder_start_token_id = CODEBOOK_SIZE
    gen.bos_token_id = CODEBOOK_SIZE
    parts = {
        "text_encoder": model.text_encoder,
        "audio_encoder": model.audio_encoder,
        "decoder": model.decoder,
    }
    info: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "parts": {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()},
        "decoder": shape,
        "codebooks": int(model.config.decoder.num_codebooks),
        "channels": int(model.config.decoder.audio_channels),
        "sample_rate": int(codec.sampling_rate),
        "hop": int(math.prod(codec.upsampling_ratios)),
        "codec_codebooks": len(model.audio_encoder.quantizer.layers),
    }
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
        tokenizer=word_tokenizer(),
    ).save_pretrained(folder)
    info["folder_mb"] = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
    del model, parts
    gc.collect()
    return info


def decoding_steps(duration: float, info: dict[str, Any]) -> tuple[int, int]:
    """(frames, steps) for one window, as app.models.musicgen_engine.generate plans it:
    ceil(round(duration * rate) / hop) frames, plus one step per codebook of delay."""
    total_samples = round(duration * info["sample_rate"])
    frames = -(-total_samples // info["hop"])
    delay = info["codebooks"] // info["channels"] - 1
    return frames, frames + delay


# --------------------------------------------------------------------------- direct


DIRECT_SCRIPT = r"""
import json, resource, sys, time
began = time.monotonic()
import torch
from transformers import AutoProcessor, MusicgenForConditionalGeneration
imported = time.monotonic()
spec = json.loads(open(sys.argv[1]).read())
started, cpu0 = time.monotonic(), time.process_time()
model = MusicgenForConditionalGeneration.from_pretrained(spec["folder"], local_files_only=True)
processor = AutoProcessor.from_pretrained(spec["folder"], local_files_only=True)
model.eval()
loaded, cpu1 = time.monotonic(), time.process_time()
inputs = processor(text=[spec["prompt"]], padding=True, return_tensors="pt")
torch.manual_seed(spec["seed"])
t0, cpu2 = time.monotonic(), time.process_time()
audio = model.generate(
    **inputs,
    do_sample=True,
    guidance_scale=spec["guidance_scale"],
    top_k=spec["top_k"],
    temperature=spec["temperature"],
    max_new_tokens=spec["max_new_tokens"],
)
generated, cpu3 = time.monotonic(), time.process_time()
wave = audio[0].float()
result = {
    "import_seconds": imported - began,
    "load_seconds": loaded - started,
    "generate_seconds": generated - t0,
    "load_cpu_seconds": cpu1 - cpu0,
    "generate_cpu_seconds": cpu3 - cpu2,
    "samples": int(wave.shape[-1]),
    "channels": int(wave.shape[0]),
    "sample_rate": int(model.config.audio_encoder.sampling_rate),
    "peak": float(wave.abs().max()),
    "finite": bool(torch.isfinite(wave).all()),
    "torch_threads": torch.get_num_threads(),
    "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
open(sys.argv[2], "w").write(json.dumps(result))
"""


def run_direct(
    args: argparse.Namespace, procs: Processes, work: Path, folder: Path, steps: int
) -> dict[str, Any]:
    spec = {
        "folder": str(folder),
        "prompt": args.prompt,
        "seed": args.seed,
        "guidance_scale": GUIDANCE,
        "top_k": TOP_K,
        "temperature": TEMPERATURE,
        "max_new_tokens": steps,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = run_direct_script(procs, work, DIRECT_SCRIPT, spec, env, 7200, "transformers")
    wall = result["process_seconds"]
    result["total_seconds"] = result["load_seconds"] + result["generate_seconds"]
    say(
        f"  direct: process {wall:.1f} s = interpreter + imports {result['import_seconds']:.1f} s"
        f" + load {result['load_seconds']:.1f} s + generate {result['generate_seconds']:.1f} s"
        f" ({result['samples']} samples, {result['samples'] / result['sample_rate']:.3f} s of"
        f" audio, peak {result['peak']:.3g}, finite {result['finite']},"
        f" {result['torch_threads']} torch threads, ru_maxrss {result['ru_maxrss_mib']:.0f} MiB)"
    )
    return result


# --------------------------------------------------------------------------- ours


def one_request(
    client: Client, args: argparse.Namespace, work: Path, label: str, logs: tuple[Path, ...]
) -> dict[str, Any]:
    """POST, poll until the job ends, download the file: what a user waits."""
    out = work / f"service-{label}"
    out.mkdir()
    body = {"prompt": args.prompt, "duration": args.duration, "seed": args.seed}
    run = client.run_job(
        label,
        lambda: client.request("POST", "/api/v1/generations", json=body),
        args.poll,
        fetch=lambda job: client.download_files(job, out),
        notes=True,
        timeout=args.timeout,
        logs=logs,
    )
    job = run["job"]
    files = job["result"]["files"]
    return {
        "seconds": run["seconds"],
        "post_seconds": run["submit_seconds"],
        "wait_seconds": run["wait_seconds"],
        "download_seconds": run["fetch_seconds"],
        "polls": run["polls"],
        "metrics": job.get("metrics") or {},
        "parameters": job["result"].get("parameters") or {},
        "duration": job["result"].get("duration"),
        "files": [(e["name"], e.get("duration"), e.get("sample_rate")) for e in files],
        "bytes": run["fetched"],
        "path": out / files[0]["name"],
    }


def run_ours(
    args: argparse.Namespace, procs: Processes, work: Path, models: Path
) -> dict[str, Any]:
    env = service_env(work / "service-data", models)
    service = start_service(procs, work, env, "bench-generation", "ours: ")
    client, worker, api = service.client, service.worker, service.api
    models_listed = client.request("GET", "/api/v1/models").json()
    entries = models_listed if isinstance(models_listed, list) else models_listed.get("models", [])
    entry = next((e for e in entries if e.get("name") == MODEL_NAME), None)
    say(
        f"  GET /api/v1/models: {MODEL_NAME} "
        + (f"available={entry.get('available')}" if entry else "not listed")
    )
    results: dict[str, Any] = {}
    for label in ("first", "second"):
        check_load(f"our {label} request")
        cpu = group_cpu_seconds([worker.pid, api.pid])
        results[label] = one_request(client, args, work, label, (service.worker_log,))
        results[label]["cpu_seconds"] = group_cpu_seconds([worker.pid, api.pid]) - cpu
        say(f"  ours, {label} request: {results[label]['seconds']:.1f} s")
    loads = re.findall(
        r"loaded generation model (\S+) on (\S+) in ([\d.]+) s", tail(service.worker_log, 10**7)
    )
    results["model_loads"] = [(name, device, float(s)) for name, device, s in loads]
    results["same_audio"] = (
        results["first"]["path"].read_bytes() == results["second"]["path"].read_bytes()
    )
    return results


# --------------------------------------------------------------------------- report


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    frames: int,
    steps: int,
    direct: dict[str, Any],
    ours: dict[str, Any],
) -> None:
    audio = frames * info["hop"] / info["sample_rate"]
    audio = min(audio, args.duration)  # the service cuts to round(duration * rate) samples
    first, second = ours["first"], ours["second"]
    load_s = [s for _n, _d, s in ours["model_loads"]]
    direct_cpu = direct["load_cpu_seconds"] + direct["generate_cpu_seconds"]
    say(f"\n== Results: {steps} decoding steps for {args.duration:g} s of audio ==")
    say(
        f"  {'':36}{'seconds':>9}{'steps/s':>9}{'RTF':>7}{'CPU s':>8}"
        "   (RTF = seconds / audio seconds)"
    )
    rows = [
        ("direct, load", direct["load_seconds"], None, direct["load_cpu_seconds"]),
        ("direct, generate", direct["generate_seconds"], steps, direct["generate_cpu_seconds"]),
        ("direct, total (load + generate)", direct["total_seconds"], None, direct_cpu),
        ("ours, first request (end to end)", first["seconds"], None, first["cpu_seconds"]),
        ("ours, first request, job run_s", first["metrics"].get("run_seconds"), steps, None),
        ("ours, second request (end to end)", second["seconds"], None, second["cpu_seconds"]),
        ("ours, second request, job run_s", second["metrics"].get("run_seconds"), steps, None),
    ]
    for label, seconds, n, cpu in rows:
        if seconds is None:
            say(f"  {label:36}{'n/a':>9}")
            continue
        rate = f"{n / seconds:9.2f}" if n else f"{'':9}"
        cpu_text = f"{cpu:8.1f}" if cpu is not None else ""
        say(f"  {label:36}{seconds:9.1f}{rate}{seconds / audio:7.2f}{cpu_text}")
    say(
        "  (CPU s, user + system over all threads, is less sensitive than wall time to other load"
        f" on the machine; direct: its process during load / generate (whole process with "
        f"interpreter and imports: {direct['cpu_seconds']:.1f} s); ours: the API and worker "
        "process groups during the request)"
    )
    if load_s:
        run1 = first["metrics"].get("run_seconds")
        if run1:
            say(
                f"  first job's run_s includes the worker's model load ({load_s[0]:.1f} s): "
                f"{steps / max(run1 - load_s[0], 1e-9):.2f} steps/s without it"
            )
    say("\n  Ratios (goal: ours, second request < 1.1 x direct)")
    for label, value, base in (
        ("ours second / direct total", second["seconds"], direct["total_seconds"]),
        ("ours second / direct generate", second["seconds"], direct["generate_seconds"]),
        ("ours first / direct total", first["seconds"], direct["total_seconds"]),
    ):
        r = ratio(value, base)
        tag = f"  {verdict(r, GOAL)}" if label.startswith("ours second") else "  (info)"
        say(f"  {label:32}{r:7.2f}{tag}")
    for label, value, base in (
        ("CPU s: ours second / direct total", second["cpu_seconds"], direct_cpu),
        ("CPU s: ours second / direct gen.", second["cpu_seconds"], direct["generate_cpu_seconds"]),
    ):
        say(f"  {label:32}{ratio(value, base):7.2f}  (info)")

    say("\n  Our requests in detail (seconds)")
    say(
        f"  {'':8}{'POST':>7}{'queue+run':>11}{'download':>10}{METRICS_HEADER}"
        f"{'steps':>7}{'polls':>7}"
    )
    for label, result in (("first", first), ("second", second)):
        say(
            f"  {label:8}{result['post_seconds']:7.2f}{result['wait_seconds']:11.2f}"
            f"{result['download_seconds']:10.2f}{metrics_cells(result['metrics'])}"
            f"{result['parameters'].get('decoding_steps', '?')!s:>7}{result['polls']:7d}"
        )
    name, seconds, rate = second["files"][0]
    say(
        f"  file: {name}, {seconds} s at {rate} Hz, {second['bytes'] / 1e3:.0f} kB; "
        f"job parameters: windows {second['parameters'].get('windows')}, "
        f"decoding_steps {second['parameters'].get('decoding_steps')} (bench expects {steps}), "
        f"seed {second['parameters'].get('seed')}, top_k {second['parameters'].get('top_k')}, "
        f"guidance {second['parameters'].get('guidance_scale')}"
    )
    say(f"  both requests gave byte-identical files (same seed): {ours['same_audio']}")
    say(
        f"  direct generate() gave {direct['samples']} samples "
        f"({direct['samples'] / direct['sample_rate']:.3f} s) for max_new_tokens={steps}"
    )
    resident = len(ours["model_loads"]) == 1
    say(
        f"  worker model loads: {len(ours['model_loads'])} "
        f"({', '.join(f'{n} on {d} in {s:.1f} s' for n, d, s in ours['model_loads']) or '-'}); "
        f"second request found the model resident: {'yes' if resident else 'NO'}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark generation: MusicGen through transformers directly (fresh "
        "process: from_pretrained + generate) against this service (API + one Celery worker, "
        "two requests), same prompt, duration, seed and sampling. The model is a randomly "
        "initialised musicgen-small (587 M-parameter architecture) saved as "
        "MODELS_DIR/musicgen/musicgen-small.",
        epilog="Goal: ours, second request (model resident) < 1.1 x direct. The full-size run "
        "takes about 5 minutes on 2 idle cores (~3.6 decoding steps/s with guidance, 253 steps "
        "for 5 s, three generations) and ~3 GB of RAM per process holding the model.",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="decoder of 4 layers x 256 (4 heads, FFN 1024) instead of 24 x 1024: a quick run",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds of audio to generate, 1-30 (one window) (default 5)",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt")
    parser.add_argument("--seed", type=int, default=1234, help="model init and sampling seed")
    parser.add_argument("--poll", type=float, default=0.2, help="job polling interval, s (0.2)")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="per request, s (default 3600)"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not 1.0 <= args.duration <= 30.0:
        parser.error("--duration must be between 1 and 30 s (one window on both sides)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    def run(procs: Processes, work: Path) -> None:
        models = work / "models"
        folder = models / "musicgen" / FOLDER
        say(f"Generation benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        say(
            f"  python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}, load average {loadavg()}"
        )
        say(f"  work folder: {work}{' (kept)' if args.keep else ' (deleted at the end)'}")
        started = time.monotonic()
        info = build_model(folder, args.seed, args.small)
        d = info["decoder"]
        say(
            f"  model: {'--small decoder' if args.small else 'musicgen-small architecture'},"
            f" random init seed {args.seed}: {info['parameters']:,} parameters"
            f" ({info['parameters'] / 1e6:.1f} M: text encoder"
            f" {info['parts']['text_encoder'] / 1e6:.1f} M, EnCodec"
            f" {info['parts']['audio_encoder'] / 1e6:.1f} M, decoder"
            f" {info['parts']['decoder'] / 1e6:.1f} M)"
        )
        say(
            f"    decoder {d['num_hidden_layers']} layers x {d['hidden_size']}, "
            f"{d['num_attention_heads']} heads, FFN {d['ffn_dim']}, {info['codebooks']} "
            f"codebooks of {CODEBOOK_SIZE} (pad/bos {CODEBOOK_SIZE}); EnCodec 32 kHz, "
            f"{info['codec_codebooks']} codebooks of {CODEBOOK_SIZE}; T5-base-sized text "
            f"encoder (12 x 768, vocabulary {len(WORDS)} words; T5's 32,128 would add "
            f"{(T5_VOCAB - len(WORDS)) * 768 / 1e6:.1f} M embedding parameters, "
            f"{(info['parameters'] + (T5_VOCAB - len(WORDS)) * 768) / 1e6:.1f} M in all)"
        )
        say(
            f"    saved in {folder} ({info['folder_mb']:.0f} MB) in "
            f"{time.monotonic() - started:.0f} s"
        )
        frames, steps = decoding_steps(args.duration, info)
        say(
            f"  request: prompt {args.prompt!r}, duration {args.duration:g} s, seed "
            f"{args.seed}, guidance {GUIDANCE:g}, top_k {TOP_K}, temperature {TEMPERATURE:g}"
            f" -> {frames} frames + {steps - frames} delay = {steps} decoding steps"
        )
        say("\n== direct (transformers, fresh process) ==")
        direct = run_direct(args, procs, work, folder, steps)
        say("\n== ours (API + one worker) ==")
        ours = run_ours(args, procs, work, models)
        report(args, info, frames, steps, direct, ours)
        say(f"\n  load average at the end: {loadavg()}")

    return run_benchmark("bench-generation-", args.workdir, args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
