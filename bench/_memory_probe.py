"""One separation job, in this process, without HTTP: its peak memory and time.

Run by ``bench/separation.py`` in a fresh process per input, so that
``ru_maxrss`` (the peak resident set of this process) belongs to that input
alone. It does what the API does for an upload: creates the app, a user, then
calls ``app.services.separation.submit`` with the file, with Celery in eager
mode so the job runs right here, inside ``submit``.

Prints progress lines, then one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_kib(field: str = "VmRSS") -> int:
    """A memory field of /proc/self/status, in KiB (VmRSS now, VmHWM the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Samples VmRSS every ``interval`` seconds: when the peak happened, and the curve."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.started_at, rss_kib()))
            self.stop.wait(self.interval)

    def summary(self) -> dict[str, object]:
        if not self.samples:
            return {}
        peak_t, peak = max(self.samples, key=lambda s: s[1])
        total = self.samples[-1][0] or 1.0
        # RSS at every tenth of the run: shows whether memory grows with time.
        curve = []
        for tenth in range(1, 11):
            target = total * tenth / 10
            sample = min(self.samples, key=lambda s: abs(s[0] - target))
            curve.append(round(sample[1] / 1024))
        return {
            "sampled_peak_mib": round(peak / 1024, 1),
            "sampled_peak_at_fraction": round(peak_t / total, 3),
            "rss_mib_each_tenth": curve,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--models-dir", required=True, type=Path)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument(
        "--model", required=True, help="a separation model name (htdemucs, a RoFormer folder, ...)"
    )
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=4000.0,
        help="MAX_AUDIO_SECONDS for this app (the service default, 1200, refuses 60 minutes)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=4096,
        help="MAX_UPLOAD_MB for this app (the service default, 200, refuses a long FLAC)",
    )
    args = parser.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))

    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from app.records import Job
    from app.services import auth, separation

    app = create_app(
        {
            "DATA_DIR": str(args.data_dir),
            "MODELS_DIR": str(args.models_dir),
            "SECRET_KEY": secrets.token_urlsafe(36),
            "DATABASE_URL": None,
            "REDIS_URL": None,
            "ALLOW_MODEL_DOWNLOAD": False,
            "MAX_AUDIO_SECONDS": args.max_audio_seconds,
            "MAX_UPLOAD_MB": args.max_upload_mb,
            "LOG_LEVEL": "WARNING",
        }
    )
    with app.app_context():
        upgrade()
    app.extensions["celery"].conf.task_always_eager = True

    params = {
        "model": args.model,
        "output_format": "wav",
        "bit_depth": "16",
        "mp3_bitrate": 320,
        "clip_mode": "rescale",
    }  # each option of the model at its default (``submit`` fills them, as for a request)
    with app.app_context():
        user = auth.register(f"bench-{secrets.token_hex(4)}@example.com", "a long enough password")
        rss_before = rss_kib()
        print(f"probe: app ready, RSS {rss_before / 1024:.0f} MiB; running the job", flush=True)
        sampler = Sampler()
        sampler.start()
        started = time.monotonic()
        with open(args.input, "rb") as upload:
            job = separation.submit(user, params, upload, args.input.name)
        wall = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        job_id = job.id
        db.session.expire_all()
        job = db.session.get(Job, job_id)
        assert job is not None
        files = (job.result or {}).get("files", [])
        result = {
            "input": str(args.input),
            "model": args.model,
            "job_id": job_id,
            "status": job.status,
            "error": (
                {"code": job.error_code, "message": job.error_message} if job.error_code else None
            ),
            "input_seconds": (job.input or {}).get("duration"),
            "submit_wall_seconds": round(wall, 3),
            "metrics": job.metrics,
            "stems": [f["name"] for f in files],
            "stem_durations": [f.get("duration") for f in files],
            "rss_before_job_mib": round(rss_before / 1024, 1),
            "rss_after_job_mib": round(rss_kib() / 1024, 1),
            "vmhwm_mib": round(rss_kib("VmHWM") / 1024, 1),
            # Linux reports ru_maxrss in KiB.
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **sampler.summary(),
        }
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
