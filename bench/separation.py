"""Separation benchmark: the demucs CLI against this service, and peak memory.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/separation.py                  # speed + memory, full-size model
    .venv/bin/python bench/separation.py --skip-memory    # speed only (a few minutes)
    .venv/bin/python bench/separation.py --skip-speed --memory-model tiny

Speed: on one synthesised 60 s stereo 44.1 kHz WAV, times the demucs CLI
(``python -m demucs --repo ...``, model load included) and this service as a
user sees it (gunicorn + one Celery worker, as ``make run`` starts them; upload,
poll, download every stem), for a first request (the worker loads the model)
and a second one (the model is resident). The model is a full-size, randomly
initialised htdemucs (same architecture and cost as the trained one), seeded.

Memory: peak RSS of one job on a 5-minute and a 60-minute input, each in a
fresh process without HTTP (``bench/_memory_probe.py``).

Everything runs in a temporary folder, deleted at the end unless ``--keep``;
every process started is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]
FINAL = ("succeeded", "failed", "canceled")

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
TINY_KWARGS: dict[str, Any] = {"channels": 8, "t_layers": 1}  # as tests/demucs_repo.py
FULL_SIG, TINY_SIG = "bench0f1", "bench0t1"
TINY_NAME = "bench_tiny"


# --------------------------------------------------------------------------- utilities


def say(text: str = "") -> None:
    print(text, flush=True)


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over the next ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(x) for x in handle.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def check_load(label: str) -> str:
    """The load average and current CPU use, with a warning when other work competes."""
    load = loadavg()
    busy = cpu_busy()
    note = "  (other processes are using the CPU: timings are noisy)" if busy > 0.25 else ""
    say(f"  before {label}: load average {load}, CPUs {busy:.0%} busy{note}")
    return load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_stats() -> Iterator[list[str]]:
    """The fields of /proc/<pid>/stat after the command name, for every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                yield handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue


def _group_alive(pgid: int) -> bool:
    """Whether any process is still in process group (and session) ``pgid``."""
    # Fields after the command: state, ppid, pgrp, session, ...
    return any(int(f[2]) == pgid and int(f[3]) == pgid for f in _proc_stats())


def group_cpu_seconds(pgids: list[int]) -> float:
    """CPU time (user + system, with reaped children) of every live process in these groups.

    Wall time on a shared machine depends on what else runs; CPU time much less.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for f in _proc_stats():
        if int(f[2]) in pgids:
            total += sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Processes:
    """Every process the benchmark starts, each the leader of a new session, so
    stopping its whole group also stops what it forked (gunicorn and Celery
    workers, the demucs CLI's helpers)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, process, handle))
        return process

    def run(self, name: str, cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
        """Start, wait (stopped on timeout or Ctrl-C like everything else)."""
        process = self.start(name, cmd, env, log)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name} did not finish in {timeout:g} s; log: {log}") from None
        finally:
            self.stop(process)

    def stop(self, process: subprocess.Popen, grace: float = 30.0) -> None:
        pgid = process.pid
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # The leader may be gone while its children are not (a killed gunicorn
        # master leaves its workers behind): kill what is left of the group.
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for _name, process, handle in reversed(self.started):
            self.stop(process)
            handle.close()
        self.started.clear()


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


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


def run_cli(
    procs: Processes, work: Path, repo: Path, wav: Path, env: dict[str, str]
) -> tuple[float, float]:
    out = work / "cli-out"
    cmd = [
        PYTHON, "-m", "demucs", "--repo", str(repo), "-n", "htdemucs",
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
    return seconds, cpu


class Client:
    """A user of the HTTP API, with requests."""

    def __init__(self, base: str) -> None:
        import requests

        self.base = base
        self.http = requests.Session()
        self.email = f"bench-{secrets.token_hex(4)}@example.com"
        self.password = "a long enough benchmark password"

    def url(self, path: str) -> str:
        return urljoin(self.base, path)

    def register_and_login(self) -> None:
        response = self.http.post(
            self.url("/api/v1/auth/register"),
            json={"email": self.email, "password": self.password},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"register: {response.status_code} {response.text}")
        self.login()

    def login(self) -> None:
        response = self.http.post(
            self.url("/api/v1/auth/login"),
            json={"email": self.email, "password": self.password},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(f"login: {response.status_code} {response.text}")
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; logs in again once if the access token expired meanwhile."""
        response = self.http.request(method, self.url(path), timeout=600, **kwargs)
        if response.status_code == 401:
            self.login()
            for value in kwargs.values():  # rewind an upload before sending it again
                for item in value.values() if isinstance(value, dict) else ():
                    if isinstance(item, tuple) and hasattr(item[1], "seek"):
                        item[1].seek(0)
            response = self.http.request(method, self.url(path), timeout=600, **kwargs)
        return response


def wait_until(predicate: Any, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.25)
    detail = "\n".join(f"--- {log.name} ---\n{tail(log)}" for log in logs)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")


def one_request(client: Client, wav: Path, work: Path, label: str, poll: float) -> dict[str, Any]:
    """Upload, poll until finished, download every stem: the time a user waits."""
    out = work / f"service-{label}"
    out.mkdir()
    started = time.monotonic()
    with open(wav, "rb") as handle:
        response = client.request(
            "POST",
            "/api/v1/separations",
            files={"file": (wav.name, handle, "audio/wav")},
            data={"model": "htdemucs", "output_format": "wav"},
        )
    if response.status_code != 202:
        raise RuntimeError(f"upload: {response.status_code} {response.text}")
    accepted = time.monotonic()
    location = response.headers["Location"]
    last_note = 0.0
    while True:
        job = client.request("GET", location).json()
        if job.get("status") in FINAL:
            break
        now = time.monotonic()
        if now - last_note >= 15:
            last_note = now
            say(
                f"    {label}: {now - started:6.1f} s  {job.get('status')}"
                f" / {job.get('stage')}  progress {job.get('progress')}"
            )
        time.sleep(poll)
    finished = time.monotonic()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the {label} job ended {job['status']}: {job.get('error')}")
    sizes = []
    for entry in job["result"]["files"]:
        with client.request("GET", entry["url"], stream=True) as body:
            if body.status_code != 200:
                raise RuntimeError(f"download {entry['name']}: {body.status_code}")
            size = 0
            with open(out / entry["name"], "wb") as target:
                for block in body.iter_content(1 << 20):
                    target.write(block)
                    size += len(block)
        sizes.append(size)
    done = time.monotonic()
    return {
        "seconds": done - started,
        "upload_seconds": accepted - started,
        "wait_seconds": finished - accepted,
        "download_seconds": done - finished,
        "metrics": job.get("metrics") or {},
        "files": [(e["name"], e.get("duration")) for e in job["result"]["files"]],
        "bytes": sum(sizes),
    }


def service_env(data: Path, models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        {
            "DATA_DIR": str(data),
            "MODELS_DIR": str(models),
            "ALLOW_MODEL_DOWNLOAD": "0",
            "HF_HUB_OFFLINE": "1",
            "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def run_service(
    procs: Processes, work: Path, models: Path, wav: Path, poll: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    data = work / "service-data"
    env = service_env(data, models)
    code = procs.run(
        "db upgrade",
        [PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        env,
        work / "db-upgrade.log",
        timeout=120,
    )
    if code != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{tail(work / 'db-upgrade.log')}")
    port = free_port()
    worker_log, api_log = work / "worker.log", work / "api.log"
    worker = procs.start(
        "celery worker",
        [
            PYTHON, "-m", "celery", "-A", "celery_worker", "worker",
            "-Q", "separation,transcription,generation", "--concurrency", "1",
            "--loglevel", "INFO", "--hostname", f"bench-{os.getpid()}@localhost",
        ],
        env,
        worker_log,
    )  # fmt: skip
    api = procs.start(
        "gunicorn",
        [
            PYTHON, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "gthread", "--workers", "2", "--threads", "8",
            "--timeout", "300", "--graceful-timeout", "30", "--access-logfile", "-",
            "--control-socket", str(data.resolve() / "gunicorn.ctl"),
        ],
        env,
        api_log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    say(f"  API on {base} (log {api_log}), one worker (log {worker_log})")
    client = Client(base)
    logs = [api_log, worker_log]
    wait_until(lambda: client.http.get(base + "/healthz", timeout=2).ok, 90, "/healthz", logs)
    wait_until(lambda: client.http.get(base + "/readyz", timeout=5).ok, 120, "/readyz", logs)
    client.register_and_login()
    results = {}
    for label in ("first", "second"):
        check_load(f"the {label} request")
        cpu = group_cpu_seconds([worker.pid, api.pid])
        results[label] = one_request(client, wav, work, label, poll)
        results[label]["cpu_seconds"] = group_cpu_seconds([worker.pid, api.pid]) - cpu
        say(f"  ours, {label} request: {results[label]['seconds']:.1f} s")
    loads = re.findall(
        r"loaded separation model htdemucs on \S+ in ([\d.]+) s", tail(worker_log, 10**7)
    )
    loaded = {"model_loads": len(loads), "load_seconds": [float(s) for s in loads]}
    return results["first"], results["second"], loaded


def verdict(value: float, goal: float) -> str:
    return "PASS" if value < goal else "MISS"


def speed(
    args: argparse.Namespace, procs: Processes, work: Path, models: Path, cli_env: dict
) -> None:
    say("\n== Speed ==")
    wav = write_audio(work / "bench.wav", args.seconds, args.seed, "WAV")
    say(
        f"  input: {wav.name}, {args.seconds:g} s stereo 44.1 kHz 16-bit WAV ({wav.stat().st_size / 1e6:.1f} MB)"
    )
    check_load("the demucs CLI")
    cli, cli_cpu = run_cli(procs, work, models / "demucs", wav, cli_env)
    say(f"  demucs CLI: {cli:.1f} s (CPU {cli_cpu:.1f} s)")
    first, second, worker = run_service(procs, work, models, wav, args.poll)
    audio = args.seconds

    say("\n  Speed on the same file (wall seconds; RTF = wall seconds / audio seconds)")
    say(
        f"  {'':24}{'seconds':>9}{'RTF':>7}{'ours/CLI':>10}{'goal':>8}  result"
        f"{'CPU s':>9}{'CPU ours/CLI':>14}"
    )
    say(f"  {'demucs CLI':24}{cli:9.1f}{cli / audio:7.2f}{'':32}{cli_cpu:9.1f}")
    for label, result, goal in (("first", first, 1.1), ("second", second, 0.8)):
        ratio = result["seconds"] / cli
        say(
            f"  {'ours, ' + label + ' request':24}{result['seconds']:9.1f}"
            f"{result['seconds'] / audio:7.2f}{ratio:10.2f}{'< ' + format(goal, 'g'):>8}"
            f"  {verdict(ratio, goal)}{result['cpu_seconds']:13.1f}"
            f"{result['cpu_seconds'] / cli_cpu:14.2f}"
        )
    say(
        "  (CPU s: user+system time of the CLI process, or of the API and worker processes"
        " during the request; less sensitive than wall time to other load on the machine)"
    )
    say("\n  Our requests in detail (seconds)")
    say(
        f"  {'':10}{'upload':>8}{'queue+run':>11}{'download':>10}"
        f"{'queue_s':>9}{'run_s':>8}{'job RTF':>9}{'audio_s':>9}"
    )
    for label, result in (("first", first), ("second", second)):
        m = result["metrics"]
        say(
            f"  {label:10}{result['upload_seconds']:8.2f}{result['wait_seconds']:11.2f}"
            f"{result['download_seconds']:10.2f}{m.get('queue_seconds', float('nan')):9.2f}"
            f"{m.get('run_seconds', float('nan')):8.2f}{m.get('real_time_factor') or float('nan'):9.3f}"
            f"{m.get('audio_seconds', float('nan')):9.2f}"
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


# --------------------------------------------------------------------------- memory


def memory(args: argparse.Namespace, procs: Processes, work: Path, models: Path, name: str) -> None:
    say(f"\n== Memory (model {name!r}, one fresh process per input, no HTTP) ==")
    env = service_env(work, models)
    peaks: dict[float, float] = {}
    for minutes in args.memory_minutes:
        flac = work / f"mem-{minutes:g}min.flac"
        started = time.monotonic()
        write_audio(flac, minutes * 60, args.seed, "FLAC")
        say(
            f"  input: {flac.name} ({flac.stat().st_size / 1e6:.0f} MB FLAC, "
            f"written in 10 s chunks in {time.monotonic() - started:.0f} s)"
        )
        data = work / f"probe-{minutes:g}min"
        log = work / f"probe-{minutes:g}min.log"
        cmd = [
            PYTHON, str(Path(__file__).with_name("_memory_probe.py")),
            "--data-dir", str(data), "--models-dir", str(models),
            "--input", str(flac), "--model", name,
        ]  # fmt: skip
        check_load(f"the {minutes:g}-minute job")
        say(f"  running the {minutes:g}-minute job (log {log}) ...")
        started = time.monotonic()
        procs.run(f"memory probe {minutes:g} min", cmd, env, log, timeout=6 * 3600)
        wall = time.monotonic() - started
        match = re.search(r"^RESULT (.*)$", tail(log, 10**6), re.MULTILINE)
        if not match:
            raise RuntimeError(f"the memory probe printed no result:\n{tail(log)}")
        result = json.loads(match.group(1))
        metrics = result.get("metrics") or {}
        say(
            f"  {minutes:g} min: status {result['status']}"
            + (f" ({result['error']})" if result.get("error") else "")
            + f", ru_maxrss {result['ru_maxrss_mib']:.0f} MiB"
            f" (RSS before the job {result['rss_before_job_mib']:.0f} MiB),"
            f" run_seconds {metrics.get('run_seconds')}, RTF {metrics.get('real_time_factor')},"
            f" submit {result['submit_wall_seconds']:.0f} s, process {wall:.0f} s"
        )
        say(
            f"    RSS (MiB) at each tenth of the job: {result.get('rss_mib_each_tenth')};"
            f" sampled peak at {result.get('sampled_peak_at_fraction')} of the run;"
            f" {len(result['stems'])} stems of {(result['stem_durations'] or [None])[0]} s"
        )
        if result["status"] == "succeeded":
            peaks[minutes] = float(result["ru_maxrss_mib"])
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
            flac.unlink(missing_ok=True)

    say("\n  Peak RSS (ru_maxrss of the process that ran the job)")
    for minutes in args.memory_minutes:
        value = peaks.get(minutes)
        say(f"  {f'{minutes:g}-minute input':20}{f'{value:.0f} MiB' if value else 'failed':>12}")
    if len(args.memory_minutes) >= 2:
        short, long = min(args.memory_minutes), max(args.memory_minutes)
        if short in peaks and long in peaks:
            ratio = peaks[long] / peaks[short]
            say(
                f"  ratio {long:g} min / {short:g} min: {ratio:.2f} (goal < 2.0)  {verdict(ratio, 2.0)}"
            )
        else:
            say("  ratio: not computed, a job failed  MISS")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark separation: the demucs CLI against this service (speed), "
        "and the peak memory of one job on a 5- and a 60-minute input.",
        epilog="Goals: ours/CLI < 1.1 for the first request (model load included), < 0.8 for "
        "the second (model resident); peak RSS 60 min / 5 min < 2.0.",
    )
    parser.add_argument("--skip-speed", action="store_true", help="skip the CLI/service timing")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory part")
    parser.add_argument(
        "--memory-model",
        choices=("full", "tiny"),
        default="full",
        help="model for the memory part: full-size htdemucs (60 min takes about an hour on "
        "2 cores) or a tiny HTDemucs(channels=8, t_layers=1) saved as 'bench_tiny' (default full)",
    )
    parser.add_argument(
        "--memory-minutes",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[5.0, 60.0],
        help="input lengths of the memory part, comma-separated minutes (default 5,60)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="speed input length (60)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the model and the audio")
    parser.add_argument("--poll", type=float, default=0.2, help="job polling interval, s (0.2)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the cleanup always runs."""

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-separation-", dir=args.workdir))
    models = work / "models"
    procs = Processes()
    status = 1
    with stop_on_signals():
        try:
            say(f"Separation benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
            say(
                f"  python {sys.version.split()[0]}, torch {torch.__version__}, "
                f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
                f"load average {loadavg()}"
            )
            say(f"  work folder: {work}{' (kept)' if args.keep else ' (deleted at the end)'}")
            wanted = []
            if not args.skip_speed or (not args.skip_memory and args.memory_model == "full"):
                wanted.append("full")
            if not args.skip_memory and args.memory_model == "tiny":
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
            cli_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            if not args.skip_speed:
                speed(args, procs, work, models, cli_env)
            if not args.skip_memory:
                name = "htdemucs" if args.memory_model == "full" else TINY_NAME
                memory(args, procs, work, models, name)
            status = 0
        except KeyboardInterrupt as exc:
            say(f"\ninterrupted ({exc.args[0] if exc.args else 'Ctrl-C'}): stopping")
            status = 130
        except RuntimeError as exc:
            say(f"\nFAILED: {exc}")
        finally:
            procs.stop_all()
            if args.keep:
                say(f"\nkept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
