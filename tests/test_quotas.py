"""Per-user quotas: jobs queued or running at once, bytes kept on disk;
per-user overrides from the admin CLI; usage in GET /auth/me.

Threat: one account exhausting workers or disk (OWASP API4; R-L1).
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app import storage
from app.extensions import db
from app.records import Job, utcnow
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login

pytestmark = BOTH_DATABASES

MB = 1024 * 1024


def _upload(client: FlaskClient, headers: dict[str, str], song: bytes) -> Any:
    return client.post(
        "/api/v1/analyses",
        headers=headers,
        data={"file": (io.BytesIO(song), "song.wav")},
        content_type="multipart/form-data",
    )


def _usage(client: FlaskClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 200
    return response.json["usage"]


def _stored_files(app: Flask) -> tuple[int, int]:
    data = Path(app.config["DATA_DIR"])
    jobs = len(list((data / "jobs").iterdir())) if (data / "jobs").exists() else 0
    return jobs, len(list((data / "tmp").glob("upload-*")))


def test_active_job_limit(tmp_path: Path, song_wav: bytes) -> None:
    app = make_app(tmp_path / "data", MAX_ACTIVE_JOBS=2)  # no worker: jobs stay queued
    client = app.test_client()
    ada = register_and_login(client)
    first, second = (_upload(client, ada, song_wav).json["id"] for _ in range(2))
    refused = _upload(client, ada, song_wav)
    assert refused.status_code == 429
    assert refused.json["code"] == "too_many_active_jobs"
    assert "2 job(s) queued or running (limit 2)" in refused.json["message"]
    generation = client.post("/api/v1/generations", headers=ada, json={"prompt": "drums"})
    assert generation.status_code == 429 and generation.json["code"] == "too_many_active_jobs"
    assert _stored_files(app) == (2, 0)  # the refused uploads left nothing behind
    assert _usage(client, ada) | {"stored_bytes": 0} == {
        "active_jobs": 2,
        "max_active_jobs": 2,
        "stored_bytes": 0,
        "max_storage_bytes": 5000 * MB,
    }
    # Another user is not affected; a canceled job frees a slot.
    bob = register_and_login(client)
    assert _upload(client, bob, song_wav).status_code == 202
    assert client.post(f"/api/v1/jobs/{first}/cancel", headers=ada).status_code == 200
    assert _upload(client, ada, song_wav).status_code == 202
    assert client.get(f"/api/v1/jobs/{second}", headers=ada).json["status"] == "queued"


def test_storage_quota_counts_inputs_and_frees_on_delete(tmp_path: Path, song_wav: bytes) -> None:
    app = make_app(tmp_path / "data", MAX_STORAGE_MB=1, MAX_ACTIVE_JOBS=0)
    client = app.test_client()
    ada = register_and_login(client)
    size = len(song_wav)
    assert 2 * size < MB < 3 * size
    ids = [_upload(client, ada, song_wav).json["id"] for _ in range(2)]
    usage = _usage(client, ada)
    assert usage["stored_bytes"] == 2 * size
    assert usage["max_storage_bytes"] == MB
    assert usage["max_active_jobs"] is None

    refused = _upload(client, ada, song_wav)
    assert refused.status_code == 409
    assert refused.json["code"] == "storage_quota_exceeded"
    assert f"{2 * size / MB:.1f} MB of 1.0 MB used" in refused.json["message"]
    assert f"needs {size / MB:.1f} MB more" in refused.json["message"]
    assert _stored_files(app) == (2, 0)
    assert client.get("/api/v1/jobs", headers=ada).json["total"] == 2

    assert client.delete(f"/api/v1/jobs/{ids[0]}", headers=ada).status_code == 204
    assert _usage(client, ada)["stored_bytes"] == size
    assert _upload(client, ada, song_wav).status_code == 202


def test_results_count_once_the_job_succeeds_and_expiry_gives_them_back(
    app: Flask, client: FlaskClient, song_wav: bytes
) -> None:
    ada = register_and_login(client)
    response = client.post(
        "/api/v1/separations",
        headers=ada,
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202
    job_id = response.json["id"]
    job = client.get(f"/api/v1/jobs/{job_id}", headers=ada).json
    assert job["status"] == "succeeded"
    result_bytes = sum(f["size"] for f in job["result"]["files"])
    assert result_bytes > 0
    usage = _usage(client, ada)
    assert usage["stored_bytes"] == len(song_wav) + result_bytes
    assert usage["active_jobs"] == 0
    with app.app_context():
        # What is counted is what is on disk.
        assert storage.folder_size(storage.job_dir(job_id)) == usage["stored_bytes"]

        from app.services.jobs import purge_expired

        record = db.session.get(Job, job_id)
        assert record is not None
        record.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        assert purge_expired() == 1
    assert _usage(client, ada)["stored_bytes"] == 0


def test_admin_overrides_per_user(tmp_path: Path, song_wav: bytes) -> None:
    app = make_app(tmp_path / "data", MAX_ACTIVE_JOBS=5, MAX_STORAGE_MB=1)
    client, cli = app.test_client(), app.test_cli_runner()
    ada = register_and_login(client, "ada@example.com")
    register_and_login(client, "bob@example.com")

    result = cli.invoke(
        args=["users", "set-quota", "ADA@example.com", "--max-active-jobs", "1",
              "--max-storage-mb", "0"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "max active jobs 1, max storage MB none (no limit)" in result.output
    usage = _usage(client, ada)
    assert usage["max_active_jobs"] == 1 and usage["max_storage_bytes"] is None
    assert _upload(client, ada, song_wav).status_code == 202
    assert _upload(client, ada, song_wav).json["code"] == "too_many_active_jobs"

    listing = cli.invoke(args=["users", "list"])
    assert listing.exit_code == 0
    lines = {line.split()[0]: line.split() for line in listing.output.splitlines()[1:]}
    assert lines["ada@example.com"][1:] == ["1", f"{len(song_wav) / MB:.1f}", "1*", "none*"]
    assert lines["bob@example.com"][1:] == ["0", "0.0", "5", "1"]

    reset = cli.invoke(
        args=["users", "set-quota", "ada@example.com", "--max-active-jobs", "default"]
    )
    assert reset.exit_code == 0
    assert _usage(client, ada)["max_active_jobs"] == 5
    assert _upload(client, ada, song_wav).status_code == 202

    unknown = cli.invoke(
        args=["users", "set-quota", "nobody@example.com", "--max-active-jobs", "1"]
    )
    assert unknown.exit_code != 0 and "no account" in unknown.output
    bad = cli.invoke(args=["users", "set-quota", "ada@example.com", "--max-active-jobs", "-1"])
    assert bad.exit_code != 0
    nothing = cli.invoke(args=["users", "set-quota", "ada@example.com"])
    assert nothing.exit_code != 0


def test_deleting_an_account_removes_jobs_files_and_keys(
    queued_app: Flask, song_wav: bytes
) -> None:
    client = queued_app.test_client()
    ada = register_and_login(client, "ada@example.com")
    bob = register_and_login(client)
    ada_jobs = [_upload(client, ada, song_wav).json["id"] for _ in range(2)]
    bob_job = _upload(client, bob, song_wav).json["id"]

    wrong = client.delete("/api/v1/auth/me", headers=ada, json={"password": "not my password"})
    assert wrong.status_code == 403 and wrong.json["code"] == "invalid_password"
    missing = client.delete("/api/v1/auth/me", headers=ada, json={})
    assert missing.status_code == 422
    assert client.get("/api/v1/auth/me", headers=ada).status_code == 200

    gone = client.delete(
        "/api/v1/auth/me", headers=ada, json={"password": "a long enough password"}
    )
    assert gone.status_code == 204
    assert client.get("/api/v1/auth/me", headers=ada).status_code == 401
    with queued_app.app_context():
        assert db.session.query(Job).count() == 1
        for job_id in ada_jobs:
            assert not storage.job_dir(job_id).exists()
        assert storage.job_dir(bob_job).exists()
    assert client.get(f"/api/v1/jobs/{bob_job}", headers=bob).status_code == 200
    # The address is free again; a new account starts empty.
    again = register_and_login(client, "ada@example.com")
    assert client.get("/api/v1/jobs", headers=again).json["total"] == 0
    assert client.get("/api/v1/auth/me", headers=ada).status_code == 401
