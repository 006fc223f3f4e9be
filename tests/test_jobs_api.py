"""Job listing, ownership, cancel and delete through the HTTP API."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import BOTH_DATABASES, register_and_login

pytestmark = BOTH_DATABASES


def _submit(client: FlaskClient, headers: dict, data: bytes) -> dict:
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(data), "song.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return response.json


def test_users_only_see_their_own_jobs(client: FlaskClient, song_wav: bytes) -> None:
    alice = register_and_login(client, "alice@example.com")
    bob = register_and_login(client, "bob@example.com")
    job = _submit(client, alice, song_wav)
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json
    file_url = job["result"]["files"][0]["url"]
    missing = str(uuid.uuid4())

    routes = [
        ("get", "/api/v1/jobs/{id}"),
        ("post", "/api/v1/jobs/{id}/cancel"),
        ("get", "/api/v1/jobs/{id}/archive"),
        ("get", "/api/v1/jobs/{id}/files/harmonic.wav"),
        ("delete", "/api/v1/jobs/{id}"),
    ]
    for method, template in routes:
        theirs = getattr(client, method)(template.format(id=job["id"]), headers=bob)
        nobody = getattr(client, method)(template.format(id=missing), headers=bob)
        malformed = getattr(client, method)(template.format(id="../../etc"), headers=bob)
        assert theirs.status_code == nobody.status_code == 404, template
        assert theirs.json == nobody.json, template
        assert malformed.status_code == 404, template
    assert client.get("/api/v1/jobs", headers=bob).json["total"] == 0
    # Alice still has everything.
    assert client.get(file_url, headers=alice).status_code == 200
    assert client.get("/api/v1/jobs", headers=alice).json["total"] == 1


def test_list_is_newest_first_paginated_and_filtered(
    client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    ids = [_submit(client, auth_headers, song_wav)["id"] for _ in range(3)]
    page = client.get("/api/v1/jobs?per_page=2", headers=auth_headers).json
    assert page["total"] == 3 and page["page"] == 1 and page["per_page"] == 2
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    second = client.get("/api/v1/jobs?per_page=2&page=2", headers=auth_headers).json
    assert [j["id"] for j in second["items"]] == [ids[0]]
    assert client.get("/api/v1/jobs?status=succeeded", headers=auth_headers).json["total"] == 3
    assert client.get("/api/v1/jobs?status=queued", headers=auth_headers).json["total"] == 0
    assert client.get("/api/v1/jobs?kind=separation", headers=auth_headers).json["total"] == 3
    bad = client.get("/api/v1/jobs?status=done&per_page=1000", headers=auth_headers)
    assert bad.status_code == 422
    assert set(bad.json["errors"]) == {"status", "per_page"}


def test_cancel_a_queued_job(queued_app: Flask, song_wav: bytes) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    job = _submit(client, headers, song_wav)
    assert job["status"] == "queued"
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
    assert response.status_code == 200
    assert response.json["status"] == "canceled"
    assert response.json["finished_at"] is not None
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
    assert again.status_code == 409
    assert again.json["code"] == "job_finished"
    # The message is still in the broker; running it now must do nothing.
    with queued_app.app_context():
        from app.services import separation

        assert separation.run_job(job["id"]) is None
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=headers).json
    assert job["status"] == "canceled" and job["result"] is None
    files = client.get(f"/api/v1/jobs/{job['id']}/archive", headers=headers)
    assert files.status_code == 409 and files.json["code"] == "not_ready"


def test_delete_removes_the_job_and_its_files(
    app: Flask, client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    job = _submit(client, auth_headers, song_wav)
    folder = Path(app.config["DATA_DIR"]) / "jobs" / job["id"]
    assert (folder / "input.wav").is_file()
    assert any(folder.glob("results/*/harmonic.wav"))
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=auth_headers).status_code == 204
    assert not folder.exists()
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).status_code == 404


def test_unknown_file_names_and_traversal(
    client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    job = _submit(client, auth_headers, song_wav)
    for name in (
        "nope.wav",
        "../input.wav",
        "..%2Finput.wav",
        "%2Fetc%2Fpasswd",
        "results/1/harmonic.wav",
    ):
        response = client.get(
            f"/api/v1/jobs/{job['id']}/files/{name}", headers=auth_headers, follow_redirects=True
        )
        assert response.status_code == 404, name
        assert response.json["code"] == "not_found"


def test_expired_jobs_keep_their_row_and_lose_their_files(
    app: Flask, client: FlaskClient, auth_headers: dict, song_wav: bytes
) -> None:
    from datetime import timedelta

    from app.records import utcnow
    from app.services.jobs import purge_expired

    job = _submit(client, auth_headers, song_wav)
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    file_url, archive_url = job["result"]["files"][0]["url"], job["result"]["archive_url"]
    folder = Path(app.config["DATA_DIR"]) / "jobs" / job["id"]
    with app.app_context():
        assert purge_expired() == 0
        assert purge_expired(utcnow() + timedelta(hours=25)) == 1
        assert purge_expired(utcnow() + timedelta(hours=25)) == 0  # once only
    assert not folder.exists()
    shown = client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json
    assert shown["status"] == "expired" and shown["result"] is None
    assert shown["expires_at"] == job["expires_at"]
    for url in (file_url, archive_url):
        response = client.get(url, headers=auth_headers)
        assert response.status_code == 410
        assert response.json["code"] == "job_expired" and response.json["status"] == 410
    listed = client.get("/api/v1/jobs?status=expired", headers=auth_headers).json
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    # An expired job can still be deleted, and cannot be canceled.
    cancel = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth_headers)
    assert cancel.status_code == 409
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=auth_headers).status_code == 204


def test_display_name_strips_directories_and_control_characters() -> None:
    from app.services.jobs import display_name

    assert display_name("..\\..\\Music\\song.wav") == "song.wav"
    assert display_name("/etc/passwd") == "passwd"
    assert display_name("a\tb\x00c.mp3") == "abc.mp3"
    assert display_name(None) == "upload"
    assert display_name("Ünïcødé song.flac") == "Ünïcødé song.flac"


def test_queued_jobs_show_their_place_in_their_queue(queued_app: Flask, song_wav: bytes) -> None:
    """Places count every user's jobs in the same Celery queue (karaoke shares
    separation's, analysis transcription's), oldest first, and close up as
    jobs ahead leave the queue."""
    client = queued_app.test_client()
    alice, bob = register_and_login(client), register_and_login(client)

    def upload(headers: dict, route: str, **form: str) -> dict:
        response = client.post(
            f"/api/v1/{route}",
            data={"file": (io.BytesIO(song_wav), "song.wav"), **form},
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.json
        return response.json

    first = upload(alice, "separations", model="hpss")
    second = upload(bob, "separations", model="hpss")
    transcription = upload(alice, "transcriptions")
    analysis = upload(bob, "analyses")
    assert [first["queue_position"], second["queue_position"]] == [1, 2]
    assert [transcription["queue_position"], analysis["queue_position"]] == [1, 2]

    def place(headers: dict, job: dict) -> int | None:
        return client.get(job["url"], headers=headers).json["queue_position"]

    canceled = client.post(f"/api/v1/jobs/{first['id']}/cancel", headers=alice).json
    assert canceled["status"] == "canceled" and canceled["queue_position"] is None
    assert place(bob, second) == 1
    assert place(bob, analysis) == 2
    listed = client.get("/api/v1/jobs?status=queued", headers=bob).json["items"]
    assert {job["id"]: job["queue_position"] for job in listed} == {
        second["id"]: 1,
        analysis["id"]: 2,
    }
