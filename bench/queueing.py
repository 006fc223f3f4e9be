"""Queue benchmark: 100 queued jobs across 3 users, time to first start per user,
with turns (``MAX_RUNNING_JOBS``, app/services/fair_queue.py) against first in,
first out (every job published at once, as before turns) in the same run.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/queueing.py                 # ~2-3 min on 2 cores
    .venv/bin/python bench/queueing.py --jobs 60,30,10 --seconds 1
    .venv/bin/python bench/queueing.py --help

Each side gets a fresh service as ``make run`` starts it (SQLite job table and
broker, gunicorn, one Celery worker of one process) on a temporary
``DATA_DIR``. Three users submit their jobs in turn, the largest library
first, then the others; a job is an hpss separation of a ``--seconds`` long
WAV (small, so the queue, not the model, is measured). For each user it
prints the time from their first submission to their first job's start, and
to their last job's end, from the jobs' own ``created_at``/``started_at``/
``finished_at``.

Goals (PASS/MISS): with turns, every user's first job starts within
``(users - 1) x MAX_RUNNING_JOBS + 1`` job slots of their first submission (a
slot: FIFO's makespan over its jobs, measured here, pick-up included); and
turns cost no throughput: the whole queue's makespan is within 10% of first
in, first out.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._service import (  # noqa: E402  # after the sys.path line above
    Client,
    Processes,
    check_load,
    run_benchmark,
    say,
    service_env,
    start_service,
    verdict,
    wait_until,
)

USERS = ("alice", "bob", "carol")


def song(seconds: float) -> bytes:
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    audio = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    audio[:: sr // 4] += 0.6
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([audio, audio], axis=1), sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def run_side(
    procs: Processes, work: Path, label: str, running_jobs: int, counts: list[int], wav: bytes
) -> dict[str, Any]:
    data = work / label / "data"
    data.mkdir(parents=True)
    env = service_env(data, work / "models")
    env.update({"MAX_RUNNING_JOBS": str(running_jobs), "JOB_RATE_LIMIT": "100000/minute"})
    check_load(label)
    service = start_service(procs, work / label, env, f"queue-{label}", f"{label}: ")
    clients = [service.client] + [Client(service.base) for _ in counts[1:]]
    for client in clients[1:]:
        client.register_and_login()
    jobs: dict[str, list[str]] = {}
    for user, client, count in zip(USERS, clients, counts, strict=False):
        jobs[user] = []
        for _ in range(count):
            response = client.request(
                "POST",
                "/api/v1/separations",
                files={"file": ("song.wav", io.BytesIO(wav), "audio/wav")},
                data={"model": "hpss", "output_format": "flac"},
            )
            if response.status_code != 202:
                raise RuntimeError(f"submit: {response.status_code} {response.text}")
            jobs[user].append(response.json()["id"])
    total = sum(counts)

    rows: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        for user, client in zip(USERS, clients, strict=False):
            listed = client.request("GET", "/api/v1/jobs", params={"per_page": 100}).json()
            for item in listed["items"]:
                rows[item["id"]] = {**item, "user": user}
        return sum(1 for row in rows.values() if row["status"] in ("succeeded", "failed")) == total

    wait_until(all_ended, 1800, f"{total} jobs to end", [service.api_log, service.worker_log])
    failed = [row for row in rows.values() if row["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs failed: {failed[0].get('error')}")
    runs = [
        (when(row["finished_at"]) - when(row["started_at"])).total_seconds()
        for row in rows.values()
    ]
    first_created = min(when(row["created_at"]) for row in rows.values())
    last_finished = max(when(row["finished_at"]) for row in rows.values())
    per_user = {}
    for user in USERS[: len(counts)]:
        mine = [rows[job_id] for job_id in jobs[user]]
        created = min(when(row["created_at"]) for row in mine)
        per_user[user] = {
            "jobs": len(mine),
            "first_start": (min(when(r["started_at"]) for r in mine) - created).total_seconds(),
            "last_end": (max(when(r["finished_at"]) for r in mine) - created).total_seconds(),
        }
    procs.stop(service.api)
    procs.stop(service.worker)
    return {
        "per_user": per_user,
        "median_run": statistics.median(runs),
        "makespan": (last_finished - first_created).total_seconds(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", default="60,30,10", help="jobs per user, in the order they submit"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each song")
    parser.add_argument("--running-jobs", type=int, default=2, help="MAX_RUNNING_JOBS with turns")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.jobs.split(",")][: len(USERS)]
    wav = song(args.seconds)

    def body(procs: Processes, work: Path) -> None:
        (work / "models").mkdir()
        say(
            f"{sum(counts)} jobs: "
            + ", ".join(f"{u} {n}" for u, n in zip(USERS, counts, strict=False))
        )
        fair = run_side(procs, work, "turns", args.running_jobs, counts, wav)
        fifo = run_side(procs, work, "fifo", 100000, counts, wav)
        say("")
        say(
            "| user | jobs | first start, turns | first start, FIFO | last end, turns | last end, FIFO |"
        )
        say("|---|---|---|---|---|---|")
        for user, mine in fair["per_user"].items():
            other = fifo["per_user"][user]
            say(
                f"| {user} | {mine['jobs']} | {mine['first_start']:.1f} s | "
                f"{other['first_start']:.1f} s | {mine['last_end']:.1f} s | {other['last_end']:.1f} s |"
            )
        say("")
        say(
            f"median job run time: {fair['median_run']:.2f} s (turns), "
            f"{fifo['median_run']:.2f} s (FIFO)"
        )
        slots = (len(counts) - 1) * args.running_jobs + 1
        # A job's slot on the worker, pick-up and bookkeeping included: FIFO
        # keeps the worker busy from the first job to the last.
        slot = fifo["makespan"] / sum(counts)
        bound = slots * slot
        worst = max(mine["first_start"] for mine in fair["per_user"].values())
        say(
            f"goal: every user's first job starts within {slots} job slots "
            f"({slots} x {slot:.2f} s = {bound:.1f} s): worst {worst:.1f} s  {verdict(worst, bound)}"
        )
        cost = fair["makespan"] / fifo["makespan"]
        say(
            f"goal: makespan with turns within 1.10x FIFO's: {fair['makespan']:.1f} s / "
            f"{fifo['makespan']:.1f} s = {cost:.2f}x  {verdict(cost, 1.10)}"
        )

    return run_benchmark("bench-queue-", args.workdir, args.keep, body)


if __name__ == "__main__":
    sys.exit(main())
