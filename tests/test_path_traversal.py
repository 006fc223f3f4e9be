"""Path traversal: client file names never become paths, and file URLs never
leave the job's own result folder (no ``..``, no absolute paths, no symlinks)."""

from __future__ import annotations

import io
import os
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SECRET = b"TOP SECRET: outside the data directory"


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


@pytest.fixture
def song() -> bytes:
    return wav_bytes(sine_and_clicks(seconds=1.0))


def _upload(client: FlaskClient, headers: dict, data: bytes, name: str) -> dict:
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(data), name), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, (name, response.get_json())
    return response.get_json()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


NAMES = {
    "../../x.wav": "x.wav",
    "..\\..\\x.wav": None,  # the test client's multipart quoting changes backslashes
    "a%00.wav": "a%00.wav",  # literal text, not a NUL
    "a\x00.wav": "a.wav",
    "/etc/passwd.wav": "passwd.wav",
    "C:\\Windows\\system32\\x.wav": None,
    "x" * 4096: "x" * 255,
    "CON.wav": "CON.wav",
    "\u202egnp.wav": "gnp.wav",  # right-to-left override: shown as "vaw.png"
    "ﾁｬﾝ 曲 «live».wav": "ﾁｬﾝ 曲 «live».wav",
    "tab\tand\x1bescape.wav": "tabandescape.wav",
    "": "upload",
}


def test_client_file_names_never_become_paths(
    app: Flask, client: FlaskClient, headers: dict, song: bytes, tmp_path: Path
) -> None:
    data_dir = Path(app.config["DATA_DIR"])
    outside_before = _tree(tmp_path) - {p for p in _tree(tmp_path) if p.startswith("data")}
    jobs = {}
    for sent, shown in NAMES.items():
        job = _upload(client, headers, song, sent)
        jobs[job["id"]] = job
        display = job["input"]["filename"]
        if shown is not None:
            assert display == shown, (sent, display)
        # Whatever was sent, the display name is one harmless line of text.
        assert display and len(display) <= 255
        assert "/" not in display and "\\" not in display
        assert all(unicodedata.category(ch)[0] != "C" for ch in display), repr(display)

    # A raw line break ends the part's header: the file arrives as a text field.
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song), "line\r\nbreak.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 413 and response.get_json()["code"] == "form_too_large"

    # Nothing was written outside DATA_DIR ...
    outside_after = {p for p in _tree(tmp_path) if not p.startswith("data")}
    assert outside_after == outside_before
    # ... and inside it, only server-chosen names.
    allowed = re.compile(
        rf"^jobs(/{UUID}(/input\.wav|/results(/\d+(/(harmonic|percussive)\.wav)?)?|/work(/\d+)?)?)?$"
    )
    for path in _tree(data_dir / "jobs"):
        assert allowed.match("jobs/" + path), path
    for job_id in jobs:
        folder = data_dir / "jobs" / job_id
        assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["input.wav"]

    # Downloads carry the display name in a header that stays one safe line.
    for job_id in jobs:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
        assert job["status"] == "succeeded", job
        for url in (job["result"]["files"][0]["url"], job["result"]["archive_url"]):
            response = client.get(url, headers=headers)
            assert response.status_code == 200
            disposition = response.headers["Content-Disposition"]
            assert disposition.isascii() and disposition.isprintable()
            assert disposition.startswith("attachment; filename=")
            plain = disposition.split("filename=", 1)[1].split(";")[0]
            assert plain.count('"') == 2 and "/" not in plain and "\\" not in plain


@pytest.fixture
def finished(client: FlaskClient, headers: dict, song: bytes) -> dict:
    job = _upload(client, headers, song, "song.wav")
    job = client.get(f"/api/v1/jobs/{job['id']}", headers=headers).get_json()
    assert job["status"] == "succeeded"
    return job


TRAVERSALS = [
    "..",
    "../input.wav",
    "../../../jobs.sqlite",
    "..%2Finput.wav",
    "%2e%2e/input.wav",
    "%2e%2e%2finput.wav",
    "%2E%2E%2F%2E%2E%2F%2E%2E%2Fjobs.sqlite",
    "%252e%252e%252finput.wav",  # double-encoded
    "..%5Cinput.wav",  # backslash
    "....//input.wav",
    "./harmonic.wav",
    "harmonic.wav/",
    "harmonic.wav/..",
    "harmonic.wav%00.txt",
    "results/1/harmonic.wav",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "%2F%2Fetc%2Fpasswd",
    "C:%5CWindows%5Cwin.ini",
    "input.wav",
]


def test_file_urls_stay_inside_the_result_folder(
    client: FlaskClient, headers: dict, finished: dict
) -> None:
    base = f"/api/v1/jobs/{finished['id']}/files/"
    for name in TRAVERSALS:
        response = client.get(base + name, headers=headers, follow_redirects=True)
        assert response.status_code == 404, (name, response.status_code)
        assert response.mimetype == "application/json", name
        assert response.get_json()["code"] == "not_found"
        assert b"RIFF" not in response.data and b"SQLite" not in response.data


def _outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "harmonic.wav"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(SECRET)
    return secret


def test_symlinked_result_file_is_not_followed(
    app: Flask, client: FlaskClient, headers: dict, finished: dict, tmp_path: Path
) -> None:
    folder = Path(app.config["DATA_DIR"]) / "jobs" / finished["id"] / "results"
    stem = next(folder.glob("*/harmonic.wav"))
    url = next(f["url"] for f in finished["result"]["files"] if f["name"] == "harmonic.wav")
    for target in (_outside_file(tmp_path), stem.parent.parent.parent / "input.wav"):
        stem.unlink()
        stem.symlink_to(target)
        for route in (url, finished["result"]["archive_url"]):
            response = client.get(route, headers=headers)
            assert response.status_code == 404, (target, route)
            assert SECRET not in response.data and b"RIFF" not in response.data


def test_symlinked_result_folder_is_not_followed(
    app: Flask, client: FlaskClient, headers: dict, finished: dict, tmp_path: Path
) -> None:
    """A result folder replaced by a link to a folder outside DATA_DIR."""
    results = Path(app.config["DATA_DIR"]) / "jobs" / finished["id"] / "results"
    attempt = next(results.iterdir())
    elsewhere = tmp_path / "elsewhere"
    shutil.move(attempt, elsewhere)
    (elsewhere / "harmonic.wav").write_bytes(SECRET)
    os.symlink(elsewhere, attempt)
    url = next(f["url"] for f in finished["result"]["files"] if f["name"] == "harmonic.wav")
    for route in (url, finished["result"]["archive_url"]):
        response = client.get(route, headers=headers)
        assert response.status_code == 404, route
        assert SECRET not in response.data


def test_job_ids_never_become_paths(client: FlaskClient, headers: dict) -> None:
    for job_id in ("..", "..%2F..%2Fetc", "%2e%2e", "..;", "0" * 36, "%00"):
        for suffix in ("", "/archive", "/files/harmonic.wav", "/transcript"):
            response = client.get(f"/api/v1/jobs/{job_id}{suffix}", headers=headers)
            assert response.status_code == 404, (job_id, suffix)
            assert response.get_json()["code"] == "not_found"
