"""Byte-mutation fuzzing of the decoders: damaged uploads end in ``AudioError``.

Every committed speech clip (mp3, flac, Ogg Opus, m4a, wav) is mutated in
deterministic, seeded ways (byte flips, truncations, duplicated or removed
ranges, header fields overwritten with edge values, and combinations) and
each mutation goes through ``audio.probe`` and ``audio.decode``. Each call
must return or raise ``AudioError``: any other exception would reach the
client as a 500 (or fail a job as an internal error). FFmpeg is C, so a
mutation could also crash or hang the process: the mutations run in child
processes, which report each mutation before trying it, so a child that dies
(or stops answering) names the mutation that killed it, and a new child
carries on after it.

``FUZZ_MUTATIONS`` (per clip, default 200) and ``FUZZ_SEED`` (default 0)
run more by hand, e.g. ``FUZZ_MUTATIONS=1000 pytest tests/test_decoder_fuzz.py``.
A failing mutation is saved under the test's tmp_path for a closer look.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = ("clip1.mp3", "clip2.flac", "clip3.ogg", "clip4.m4a", "clip5.wav")
MUTATIONS = int(os.environ.get("FUZZ_MUTATIONS", "200"))
SEED = os.environ.get("FUZZ_SEED", "0")
# Per mutation (probe and decode of a 3-5 s clip take tens of ms): beyond
# this the child is taken to hang. Generous, as the machine may be busy.
HANG_SECONDS = 30.0
# The service's limits (app/config.py defaults), except a smaller decoded
# size so that a mutation cannot make a child use much memory.
MAX_SECONDS = 1200.0
MAX_BYTES = 256 * 1024 * 1024

# Values header fields are overwritten with: zero, one, the edges of signed
# and unsigned 8/16/32/64-bit integers, and typical sizes off by one.
EDGES = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 44100, 48000,
         0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # fmt: skip

# Mutations that once raised something other than AudioError (or crashed):
# run every time, whatever FUZZ_MUTATIONS is. (clip, seed, index)
REGRESSIONS: list[tuple[str, str, int]] = []


# --------------------------------------------------------------------------- mutations


def _position(rng: random.Random, size: int) -> int:
    """Where to mutate: mostly where the headers are (the start of every
    file; the end, where clip4.m4a keeps its moov), else anywhere."""
    where = rng.random()
    if where < 0.45:
        return rng.randrange(min(size, 512))
    if where < 0.65:
        return rng.randrange(max(size - 2048, 0), size)
    return rng.randrange(size)


def _flip(data: bytearray, rng: random.Random) -> str:
    spots = [_position(rng, len(data)) for _ in range(rng.choice((1, 1, 2, 4, 16)))]
    for spot in spots:
        data[spot] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
    return f"flip@{','.join(map(str, spots))}"


def _truncate(data: bytearray, rng: random.Random) -> str:
    keep = _position(rng, len(data))
    del data[keep:]
    return f"truncate@{keep}"


def _duplicate(data: bytearray, rng: random.Random) -> str:
    start = _position(rng, len(data))
    length = rng.choice((1, 4, 16, 188, 1024, 4096))
    at = _position(rng, len(data))
    data[at:at] = data[start : start + length]
    return f"duplicate {start}+{length}@{at}"


def _remove(data: bytearray, rng: random.Random) -> str:
    start = _position(rng, len(data))
    length = rng.choice((1, 4, 16, 188, 1024, 4096))
    del data[start : start + length]
    return f"remove {start}+{length}"


def _overwrite(data: bytearray, rng: random.Random) -> str:
    width = rng.choice((1, 2, 4, 8))
    order = rng.choice(("big", "little"))
    value = rng.choice(EDGES) % (1 << (8 * width))
    at = _position(rng, len(data))
    data[at : at + width] = value.to_bytes(width, order)
    return f"overwrite@{at} {value:#x}/{width}{order[0]}"


OPERATORS = (_flip, _truncate, _duplicate, _remove, _overwrite)


def mutate(clip: str, seed: str, index: int) -> tuple[bytes, str]:
    """Mutation ``index`` of ``clip``: the same bytes for the same arguments."""
    rng = random.Random(f"{seed}:{clip}:{index}")
    data = bytearray((SPEECH / clip).read_bytes())
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if len(data) < 2:
            break
        steps.append(rng.choice(OPERATORS)(data, rng))
    return bytes(data), "; ".join(steps)


# --------------------------------------------------------------------------- child


def _outcome(call: Any) -> str:
    from app import audio

    try:
        call()
    except audio.AudioError as exc:
        return f"AudioError:{exc.code}"
    except Exception as exc:  # the finding: anything else is a bug
        return f"BUG:{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"
    return "ok"


def _worker(clip: str, seed: str, indexes: list[int], folder: str) -> None:
    """Run in a child: probe and decode each mutation, one JSON line before
    (``start``) and after (``done``) each, flushed at once."""
    from app import audio

    for index in indexes:
        print(json.dumps({"start": index}), flush=True)
        data, description = mutate(clip, seed, index)
        path = Path(folder) / f"{index}{Path(clip).suffix}"
        path.write_bytes(data)
        # Jobs decode to the model's rate and channels: both conversions.
        rate, channels = (16000, 1) if index % 2 else (44100, 2)
        limits = {"max_seconds": MAX_SECONDS, "max_bytes": MAX_BYTES}
        probed = _outcome(partial(audio.probe, path, **limits))
        decoded = _outcome(
            partial(audio.decode, path, sample_rate=rate, channels=channels, **limits)
        )
        path.unlink()
        line = {"done": index, "what": description, "probe": probed, "decode": decoded}
        print(json.dumps(line), flush=True)


def _run_child(clip: str, seed: str, indexes: list[int]) -> list[dict[str, Any]]:
    """Run ``indexes`` in children; a child that dies or hangs is reported
    as the mutation it was on, and a new one goes on after it."""
    results: list[dict[str, Any]] = []
    todo = list(indexes)
    while todo:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
            code = (
                "import json, sys; from tests.test_decoder_fuzz import _worker; "
                "_worker(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])"
            )
            child = subprocess.Popen(
                [sys.executable, "-c", code, clip, seed, json.dumps(todo), folder],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            lines: queue.Queue[str | None] = queue.Queue()

            def pump(child: subprocess.Popen[str] = child, lines: queue.Queue = lines) -> None:
                assert child.stdout is not None
                for line in child.stdout:
                    lines.put(line)
                lines.put(None)

            threading.Thread(target=pump, daemon=True).start()
            current: int | None = None
            while True:
                try:
                    line = lines.get(timeout=HANG_SECONDS)
                except queue.Empty:
                    child.kill()
                    child.wait()
                    results.append({"done": current, "crash": f"hang over {HANG_SECONDS:g} s"})
                    break
                if line is None:
                    returncode = child.wait()
                    stderr = child.stderr.read() if child.stderr else ""
                    if current is not None or returncode != 0:
                        results.append(
                            {
                                "done": current,
                                "crash": f"child ended with {returncode}: {stderr[-2000:]}",
                            }
                        )
                    break
                message = json.loads(line)
                if "start" in message:
                    current = message["start"]
                else:
                    results.append(message)
                    current = None
            if child.stderr:
                child.stderr.close()
            if child.stdout:
                child.stdout.close()
        finished = {result["done"] for result in results}
        if not results or results[-1].get("crash") is None:
            break  # the child ran to the end
        crashed = results[-1]["done"]
        if crashed is None:  # died outside any mutation: nothing more to learn
            break
        todo = [index for index in todo if index not in finished and index != crashed]
    return results


# --------------------------------------------------------------------------- tests


def _failures(clip: str, seed: str, results: list[dict[str, Any]], keep: Path) -> list[str]:
    """One line per mutation that crashed, hung or raised something other
    than AudioError; the mutated file is saved in ``keep``."""
    failures = []
    for result in results:
        if "crash" in result:
            bad = result["crash"]
        else:
            bugs = [result[key] for key in ("probe", "decode") if result[key].startswith("BUG")]
            if not bugs:
                continue
            bad = bugs[0]
        index = result["done"]
        where = ""
        if index is not None:
            data, description = mutate(clip, seed, index)
            saved = keep / f"{clip}.{seed}.{index}{Path(clip).suffix}"
            saved.write_bytes(data)
            where = f" ({description}; saved as {saved})"
        failures.append(f"{clip} seed {seed} mutation {index}{where}: {bad}")
    return failures


def test_mutations_are_deterministic() -> None:
    """A reported mutation can be made again from its clip, seed and index."""
    assert mutate("clip4.m4a", "0", 17) == mutate("clip4.m4a", "0", 17)
    assert mutate("clip4.m4a", "0", 17) != mutate("clip4.m4a", "0", 18)
    assert mutate("clip4.m4a", "1", 17) != mutate("clip4.m4a", "0", 17)


def test_only_audio_error_counts_as_handled(tmp_path: Path) -> None:
    """The verdict on one call: AudioError is handled, anything else a bug."""
    from app import audio

    def raises(exc: Exception) -> Any:
        def call() -> None:
            raise exc

        return call

    assert _outcome(lambda: None) == "ok"
    assert _outcome(raises(audio.AudioError("x", code="empty_audio"))) == "AudioError:empty_audio"
    bug = _outcome(raises(IndexError("list index out of range")))
    assert bug.startswith("BUG:IndexError: list index out of range\nTraceback")
    results = [{"done": 3, "what": "", "probe": "ok", "decode": bug}]
    assert "mutation 3" in _failures("clip5.wav", "0", results, tmp_path)[0]


def test_the_child_reports_a_crash_and_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness itself: a child killed mid-mutation (here by a signal, as
    a segfault would) is reported as that mutation, and the rest still run."""
    import signal

    crasher = tmp_path / "crasher.py"
    crasher.write_text(
        "import json, os, signal, sys\n"
        "for i in json.loads(sys.argv[3]):\n"
        "    print(json.dumps({'start': i}), flush=True)\n"
        "    if i == 2:\n"
        f"        os.kill(os.getpid(), {int(signal.SIGSEGV)})\n"
        "    print(json.dumps({'done': i, 'what': '', 'probe': 'ok', 'decode': 'ok'}), flush=True)\n"
    )
    real_popen = subprocess.Popen

    def popen(args: list[str], **kwargs: Any) -> Any:
        return real_popen([args[0], str(crasher), *args[3:]], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    results = _run_child("clip5.wav", "0", [0, 1, 2, 3, 4])
    assert [r["done"] for r in results] == [0, 1, 2, 3, 4]
    assert results[2]["crash"].startswith(f"child ended with {-int(signal.SIGSEGV)}")
    failures = _failures("clip5.wav", "0", results, tmp_path)
    assert len(failures) == 1 and "mutation 2 (" in failures[0]
    assert (tmp_path / "clip5.wav.0.2.wav").exists()


def test_mutated_uploads_end_in_audio_error(tmp_path: Path) -> None:
    """``MUTATIONS`` per clip, plus the regressions; two children at a time."""
    jobs = [(clip, SEED, list(range(MUTATIONS))) for clip in CLIPS]
    jobs += [(clip, seed, [index]) for clip, seed, index in REGRESSIONS]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda job: (job, _run_child(*job)), jobs))
    failures: list[str] = []
    tally: dict[str, int] = {}
    for (clip, seed, indexes), results in outcomes:
        failures += _failures(clip, seed, results, tmp_path)
        if len(results) != len(indexes):
            failures.append(f"{clip}: {len(results)} results for {len(indexes)} mutations")
        for result in results:
            for key in ("probe", "decode"):
                outcome = result.get(key, "crash").split("\n")[0]
                outcome = outcome if outcome.startswith("AudioError") else outcome.split(":")[0]
                tally[f"{key} {outcome}"] = tally.get(f"{key} {outcome}", 0) + 1
    count = sum(len(job[2]) for job in jobs)
    print(f"\n{count} mutations in {time.monotonic() - started:.1f} s: {sorted(tally.items())}")
    assert not failures, "\n".join(failures)
