"""Input by URL: every job-creating route takes ``url`` instead of ``file``; the
worker fetches it through the SSRF guard, with size and time caps and the
checks an upload gets. A local media server plays the remote side, allowed
through ``URL_FETCH_ALLOW_HOSTS``."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.media_server import MediaServer, closed_port
from tests.support.uploads import assert_refused, files_under

MB = 1024 * 1024


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with MediaServer() as server:
        yield server


@pytest.fixture
def url_app(eager_app: Callable[..., Flask], media: MediaServer) -> Flask:
    """Jobs run inline; the media server (and only it) is exempt from the address rule."""
    return eager_app(URL_FETCH_ALLOW_HOSTS=media.authority, MAX_UPLOAD_MB=1)


def _submit(
    client: FlaskClient,
    headers: dict[str, str],
    url: str | None,
    endpoint: str = "/api/v1/separations",
    **form: Any,
) -> Any:
    if endpoint == "/api/v1/separations":
        form.setdefault("model", "hpss")
    data = {**form} if url is None else {"url": url, **form}
    return client.post(endpoint, data=data, headers=headers, content_type="multipart/form-data")


def _job(client: FlaskClient, headers: dict[str, str], response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.get_data(as_text=True)
    return client.get(response.headers["Location"], headers=headers).json


def _failed_with(job: dict[str, Any], code: str) -> str:
    assert (job["status"], job["stage"]) == ("failed", "failed"), job
    assert job["error"]["code"] == code, job["error"]
    assert job["result"] is None
    return str(job["error"]["message"])


def _nothing_on_disk(app: Flask, job_id: str) -> None:
    data = Path(app.config["DATA_DIR"])
    assert files_under(data / "tmp") == []
    assert [p for p in files_under(data / "jobs" / job_id) if "input" in p] == []


def test_a_wav_at_a_url_is_separated(
    url_app: Flask, media: MediaServer, progress_log: list[tuple[float, str | None]]
) -> None:
    media.file("/music/My%20Song.wav", wav_bytes(sine_and_clicks(2.0)))
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/music/My%20Song.wav")))
    assert job["status"] == "succeeded", job
    assert job["input"]["filename"] == "My Song.wav"
    assert job["input"]["url"] == media.url("/music/My%20Song.wav")
    assert (job["input"]["duration"], job["input"]["sample_rate"]) == (2.0, SR)
    assert progress_log[0] == (0.0, "downloading")
    assert progress_log[-1] == (1.0, "finishing")
    progresses = [progress for progress, _ in progress_log]
    assert progresses == sorted(progresses)  # one bar, only forward
    for entry in job["result"]["files"]:
        stem = client.get(entry["url"], headers=headers)
        assert stem.status_code == 200
        info = sf.info(io.BytesIO(stem.data))
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, 2 * SR)
    # The download name comes from the URL's file name.
    stem = client.get(job["result"]["files"][0]["url"], headers=headers)
    assert "My Song - " in stem.headers["Content-Disposition"]
    # The fetched bytes count against the storage quota.
    usage = client.get("/api/v1/auth/me", headers=headers).json["usage"]
    assert usage["stored_bytes"] >= job["input"]["size"] > 0


def test_the_download_is_timed_apart_from_the_work(url_app: Flask, media: MediaServer) -> None:
    """``metrics.run_seconds`` is the separation alone, so its real-time factor
    compares with an upload's; ``fetch_seconds`` is the download."""
    song = wav_bytes(sine_and_clicks(1.0))
    media.trickle("/slow.wav", song, every=0.25, step=len(song) // 8 + 1)  # 8 steps: >= 1.75 s
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/slow.wav")))
    assert job["status"] == "succeeded", job
    metrics = job["metrics"]
    assert metrics["fetch_seconds"] >= 1.75, metrics
    assert metrics["run_seconds"] < metrics["fetch_seconds"], metrics  # 1 s of hpss
    assert metrics["real_time_factor"] == pytest.approx(
        metrics["run_seconds"] / metrics["audio_seconds"], abs=1e-3
    )
    uploaded = _job(
        client,
        headers,
        _submit(client, headers, None, file=(io.BytesIO(song), "song.wav")),
    )
    assert "fetch_seconds" not in uploaded["metrics"], uploaded["metrics"]


def test_redirects_are_followed_and_content_disposition_names_the_file(
    url_app: Flask, media: MediaServer
) -> None:
    media.file(
        "/blob/42",
        wav_bytes(sine_and_clicks(1.0)),
        content_type="application/octet-stream",
        Content_Disposition='attachment; filename="../../Night Drive.wav"',
    )
    media.redirect("/share/abc", "/download?id=42")
    media.redirect("/download?id=42", media.url("/blob/42"), status=307)
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/share/abc")))
    assert job["status"] == "succeeded", job
    assert job["input"]["filename"] == "Night Drive.wav"
    assert media.requests == ["/share/abc", "/download?id=42", "/blob/42"]


def test_every_kind_that_takes_a_file_takes_a_url(url_app: Flask, media: MediaServer) -> None:
    media.file("/song.wav", wav_bytes(sine_and_clicks(2.0)))
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(
        client, headers, _submit(client, headers, media.url("/song.wav"), "/api/v1/analyses")
    )
    assert (job["kind"], job["status"]) == ("analysis", "succeeded"), job
    assert job["input"]["filename"] == "song.wav"
    assert job["result"]["duration"] == pytest.approx(2.0, abs=0.01)
    assert {f["name"] for f in job["result"]["files"]} == {"chords.txt", "chords.lab"}


def test_the_openai_compatible_route_takes_a_url(url_app: Flask, media: MediaServer) -> None:
    """Not OpenAI's field, but the route creates a job like the others: the
    transcript comes back as OpenAI answers it; a refused address is a 422."""
    from tests.support.speech import REFERENCES, SPEECH, words_of

    media.file("/talk/clip5.wav", (SPEECH / "clip5.wav").read_bytes())
    client = url_app.test_client()
    headers = register_and_login(client)
    answer = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "url": media.url("/talk/clip5.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert set(words_of(REFERENCES["clip5.wav"])) <= set(words_of(answer.json["text"]))
    refused = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "url": "http://10.0.0.1/clip.wav"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422 and "url" in refused.json["errors"], refused.json
    neither = client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert neither.status_code == 422 and {"file", "url"} <= set(neither.json["errors"])


@pytest.mark.parametrize("where", ["loopback", "metadata"])
def test_a_redirect_inward_is_refused(
    url_app: Flask, media: MediaServer, where: str, tmp_path: Path
) -> None:
    with MediaServer() as inner:  # a second local server, not on the allow-list
        inner.file("/secret.wav", wav_bytes(sine_and_clicks(1.0)))
        target = inner.url("/secret.wav") if where == "loopback" else "http://169.254.169.254/"
        media.redirect("/song.wav", target)
        client = url_app.test_client()
        headers = register_and_login(client)
        job = _job(client, headers, _submit(client, headers, media.url("/song.wav")))
    message = _failed_with(job, "url_not_allowed")
    address = "127.0.0.1" if where == "loopback" else "169.254.169.254"
    assert f"resolves to {address}, which is not a public address" in message
    assert inner.requests == []
    _nothing_on_disk(url_app, job["id"])


def test_too_many_redirects_end_the_job(url_app: Flask, media: MediaServer) -> None:
    for hop in range(7):
        media.redirect(f"/hop{hop}", f"/hop{hop + 1}")
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/hop0")))
    assert "more than 5 redirects" in _failed_with(job, "url_unreachable")
    assert len(media.requests) == 6


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_file_over_the_size_cap_fails_and_nothing_is_kept(
    url_app: Flask, media: MediaServer, how: str
) -> None:
    if how == "content-length":
        media.declared_length("/big.wav", 5 * MB)
    else:
        media.chunked("/big.wav", 3 * MB)
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/big.wav")))
    message = _failed_with(job, "url_too_large")
    assert "127.0.0.1" in message and "1 MB (MAX_UPLOAD_MB)" in message
    if how == "content-length":
        assert "5.0 MB" in message
    _nothing_on_disk(url_app, job["id"])
    assert client.get("/api/v1/auth/me", headers=headers).json["usage"]["stored_bytes"] == 0


def test_a_page_that_is_not_audio_fails_like_an_upload(url_app: Flask, media: MediaServer) -> None:
    media.file("/song.mp3", b"<!doctype html><html><body>Sign in</body></html>", "text/html")
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/song.mp3")))
    message = _failed_with(job, "unsupported_media_type")
    assert message == "The file is not an audio or video file (fetched from 127.0.0.1)."
    _nothing_on_disk(url_app, job["id"])


def test_an_unreachable_host_and_a_404_are_clear_errors(url_app: Flask, media: MediaServer) -> None:
    client = url_app.test_client()
    headers = register_and_login(client)
    port = closed_port()
    app = url_app
    app.config["URL_FETCH_ALLOW_HOSTS"] = [media.authority, f"127.0.0.1:{port}"]
    job = _job(client, headers, _submit(client, headers, f"http://127.0.0.1:{port}/song.wav"))
    message = _failed_with(job, "url_unreachable")
    assert message == "Could not fetch the file from 127.0.0.1: the connection was refused."
    job = _job(client, headers, _submit(client, headers, media.url("/gone.wav")))
    assert _failed_with(job, "url_http_error") == "127.0.0.1 answered HTTP 404 Not Found."
    # A body that stops short of its Content-Length is no file either.
    media.declared_length("/short.wav", 1000)
    job = _job(client, headers, _submit(client, headers, media.url("/short.wav")))
    assert _failed_with(job, "url_unreachable") == (
        "Could not fetch the file from 127.0.0.1: "
        "the connection closed before the whole file arrived."
    )
    _nothing_on_disk(url_app, job["id"])


def test_a_fetch_past_the_time_cap_fails(
    eager_app: Callable[..., Flask], media: MediaServer
) -> None:
    app = eager_app(URL_FETCH_ALLOW_HOSTS=media.authority, URL_FETCH_TIMEOUT_SECONDS=1.0)
    media.trickle("/slow.wav", wav_bytes(sine_and_clicks(1.0)), every=0.2)
    client = app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/slow.wav")))
    message = _failed_with(job, "url_timeout")
    assert message == (
        "Fetching the file from 127.0.0.1 took longer than 1 s (URL_FETCH_TIMEOUT_SECONDS)."
    )
    _nothing_on_disk(app, job["id"])


def test_a_server_that_stops_sending_fails_the_fetch(
    url_app: Flask, media: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import url_input

    monkeypatch.setattr(url_input, "READ_TIMEOUT", 0.5)
    media.trickle("/stall.wav", wav_bytes(sine_and_clicks(1.0)), every=3.0, step=64 * 1024)
    client = url_app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/stall.wav")))
    assert _failed_with(job, "url_timeout") == "127.0.0.1 stopped sending for 0.5 s."
    _nothing_on_disk(url_app, job["id"])


def test_a_fetch_past_the_storage_quota_fails(
    eager_app: Callable[..., Flask], media: MediaServer
) -> None:
    app = eager_app(URL_FETCH_ALLOW_HOSTS=media.authority, MAX_STORAGE_MB=1)
    media.file("/long.wav", wav_bytes(sine_and_clicks(8.0)))  # 1.4 MB
    client = app.test_client()
    headers = register_and_login(client)
    job = _job(client, headers, _submit(client, headers, media.url("/long.wav")))
    assert "Storage quota exceeded" in _failed_with(job, "storage_quota_exceeded")
    _nothing_on_disk(app, job["id"])
    assert client.get("/api/v1/auth/me", headers=headers).json["usage"]["stored_bytes"] == 0


def test_canceling_a_job_stops_its_fetch(
    queued_app: Flask, media: MediaServer, progress_log: list[tuple[float, str | None]]
) -> None:
    """The job is canceled while its body trickles in: the fetch stops at its
    next progress report, and nothing is kept."""
    from app.services import separation

    queued_app.config["URL_FETCH_ALLOW_HOSTS"] = [media.authority]
    client = queued_app.test_client()
    headers = register_and_login(client)
    body = wav_bytes(sine_and_clicks(2.0))
    canceled = threading.Event()

    def cancel(_handler: Any) -> None:
        answer = queued_app.test_client().post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
        assert answer.status_code == 200
        canceled.set()

    media.trickle("/song.wav", body, every=0.05, step=16 * 1024, on_first=cancel)
    response = _submit(client, headers, media.url("/song.wav"))
    assert response.status_code == 202
    job_id = response.json["id"]
    with queued_app.app_context():
        assert separation.run_job(job_id) == "canceled"
    assert canceled.is_set()
    job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
    assert (job["status"], job["input"].get("size")) == ("canceled", None)
    assert progress_log[0] == (0.0, "downloading")
    _nothing_on_disk(queued_app, job_id)


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("ftp://example.com/song.mp3", "invalid_url", "url must use http or https."),
        ("file:///etc/passwd", "invalid_url", "url must use http or https."),
        (
            "http://user:pass@example.com/song.mp3",
            "invalid_url",
            "url must not carry credentials; put a token in the path or query.",
        ),
        ("http://exa mple.com/a.mp3", "invalid_url", "spaces or control characters"),
        ("not a url", "invalid_url", "spaces or control characters"),
        ("https://", "invalid_url", "url has no host."),
        ("http://127.0.0.1:9/song.wav", "url_not_allowed", "resolves to 127.0.0.1"),
        ("http://169.254.169.254/latest/", "url_not_allowed", "URL_FETCH_ALLOW_HOSTS"),
        ("http://[::1]/song.wav", "url_not_allowed", "resolves to ::1"),
    ],
)
def test_a_url_refused_at_submit_is_a_422_naming_url(
    queued_app: Flask, url: str, code: str, says: str
) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    response = _submit(client, headers, url)
    assert_refused(response, 422, code)
    assert says in response.json["errors"]["url"][0]
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_file_and_url_are_exactly_one(queued_app: Flask, song_wav: bytes) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    both = _submit(
        client,
        headers,
        "https://example.com/song.wav",
        file=(io.BytesIO(song_wav), "song.wav"),
    )
    assert_refused(both, 422, "validation_error")
    assert both.json["errors"] == {
        "file": ["Send the audio as file or its address as url, not both."],
        "url": ["Send the audio as file or its address as url, not both."],
    }
    neither = _submit(client, headers, None)
    assert_refused(neither, 422, "validation_error")
    assert neither.json["errors"] == {
        "file": ["Send the audio as file, or its address as url."],
        "url": ["Send the audio as file, or its address as url."],
    }
    for endpoint in ("/api/v1/transcriptions", "/api/v1/karaoke", "/api/v1/analyses"):
        response = _submit(client, headers, None, endpoint)
        assert_refused(response, 422, "validation_error")
        assert set(response.json["errors"]) >= {"file", "url"}, endpoint
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0


def test_the_openapi_document_offers_url_beside_file(queued_app: Flask) -> None:
    document = queued_app.test_client().get("/openapi.json").json
    for path in ("/api/v1/separations", "/api/v1/transcriptions", "/api/v1/karaoke"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        schema = body["schema"]
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert {"file", "url"} <= set(schema["properties"]), path
        assert "file" not in schema.get("required", []), path


def test_a_kind_service_takes_the_url_in_its_params(queued_app: Flask, song_wav: bytes) -> None:
    """What a caller without HTTP (a batch) does per URL: the kind's ``submit``
    with ``url`` among the params and no upload."""
    from app.errors import ServiceError
    from app.extensions import db
    from app.records import User
    from app.services import separation

    client = queued_app.test_client()
    register_and_login(client, "batch@example.com")
    with queued_app.app_context():
        owner = db.session.query(User).filter_by(email="batch@example.com").one()
        job = separation.submit(
            owner, {"model": "hpss", "url": "https://93.184.216.34/a/Song%201.flac"}, None, None
        )
        assert (job.status, job.input) == (
            "queued",
            {"url": "https://93.184.216.34/a/Song%201.flac", "filename": "Song 1.flac"},
        )
        assert "url" not in job.params and job.stored_bytes == 0
        with pytest.raises(ServiceError) as caught:
            separation.submit(owner, {"url": "https://10.0.0.7/a.wav"}, None, None)
        assert (caught.value.code, list(caught.value.errors or {})) == ("url_not_allowed", ["url"])
        with pytest.raises(ServiceError) as caught:
            separation.submit(
                owner, {"url": "https://93.184.216.34/a.wav"}, io.BytesIO(song_wav), "a.wav"
            )
        assert caught.value.code == "validation_error"
