"""Batches through the API: many inputs, one set of options, a job each; the
batch's own document, zip, cancel, delete, webhook and event stream."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.records import Batch, Job
from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import CeleryProcess, job_env, wait_for
from tests.support.uploads import assert_nothing_kept, files_under, upload
from tests.support.webhooks import Receiver, verify_signature

HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n" * 20


def _song(seconds: float = 0.5) -> bytes:
    return wav_bytes(sine_and_clicks(seconds=seconds))


def _truncated_wav() -> bytes:
    return _song()[:20]  # cut inside the RIFF header


def post_batch(
    client: FlaskClient,
    headers: dict[str, str],
    files: list[tuple[bytes, str]],
    kind: str = "separation",
    **options: Any,
) -> Any:
    if kind == "separation":
        options.setdefault("model", "hpss")
    data: dict[str, Any] = {"kind": kind, **{k: str(v) for k, v in options.items()}}
    data["file"] = [(io.BytesIO(content), name) for content, name in files]
    return client.post(
        "/api/v1/batches", data=data, headers=headers, content_type="multipart/form-data"
    )


def _rows(app: Flask) -> tuple[int, int]:
    with app.app_context():
        return (
            db.session.execute(db.select(db.func.count()).select_from(Batch)).scalar_one(),
            db.session.execute(db.select(db.func.count()).select_from(Job)).scalar_one(),
        )


def test_a_batch_of_twenty_songs_succeeds_and_zips_by_input(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    song = _song()
    # Eighteen names, two of them sent twice: each input still gets its own folder.
    names = [f"track {n:02d}.wav" for n in range(18)] + ["track 00.wav", "track 01.wav"]
    response = post_batch(client, auth_headers, [(song, name) for name in names])
    assert response.status_code == 202, response.json
    batch = client.get(response.headers["Location"], headers=auth_headers).json
    assert batch["id"] == response.json["id"]
    assert batch["kind"] == "separation" and batch["params"]["model"] == "hpss"
    assert batch["status"] == "succeeded" and batch["progress"] == 1.0
    assert batch["inputs"] == 20 and batch["jobs_total"] == 20
    assert batch["counts"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 20,
        "failed": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch["finished_at"] is not None
    assert [job["filename"] for job in batch["jobs"]] == names
    assert {job["status"] for job in batch["jobs"]} == {"succeeded"}
    # Each job is an ordinary job, listed with its batch.
    one = client.get(batch["jobs"][3]["url"], headers=auth_headers).json
    assert one["status"] == "succeeded" and one["input"]["filename"] == names[3]
    assert one["batch_id"] == batch["id"]
    listed = client.get(batch["jobs_url"], headers=auth_headers).json
    assert listed["total"] == 20
    # A page of the jobs.
    page = client.get(f"{batch['url']}?page=2&per_page=8", headers=auth_headers).json
    assert [job["filename"] for job in page["jobs"]] == names[8:16]

    archive = client.get(batch["archive_url"], headers=auth_headers)
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    members = zipfile.ZipFile(io.BytesIO(archive.data)).namelist()
    folders = [f"track {n:02d}" for n in range(18)] + ["track 00 (2)", "track 01 (2)"]
    assert sorted(members) == sorted(
        f"{folder}/{stem}.wav" for folder in folders for stem in ("harmonic", "percussive")
    )
    # The files are the jobs' own results.
    with zipfile.ZipFile(io.BytesIO(archive.data)) as opened:
        first = client.get(one["result"]["files"][0]["url"], headers=auth_headers).data
        assert opened.read(f"track 03/{one['result']['files'][0]['name']}") == first

    batches = client.get("/api/v1/batches", headers=auth_headers).json
    assert batches["total"] == 1 and batches["items"][0]["status"] == "succeeded"
    assert batches["items"][0]["counts"]["succeeded"] == 20


def test_hostile_inputs_fail_alone_with_the_single_routes_codes(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    song = _song()
    files = [
        (song, "good 1.wav"),
        (HTML, "page.mp3"),
        (song, "good 2.wav"),
        (_truncated_wav(), "cut.wav"),
        (song, "good 3.wav"),
    ]
    response = post_batch(client, auth_headers, files)
    assert response.status_code == 202, response.json
    batch = response.json
    assert batch["status"] == "completed_with_errors"
    assert batch["counts"]["succeeded"] == 3 and batch["counts"]["failed"] == 2
    by_name = {job["filename"]: job for job in batch["jobs"]}
    for name, content in (("page.mp3", HTML), ("cut.wav", _truncated_wav())):
        single = upload(client, auth_headers, content, name=name)
        assert single.status_code in (415, 422)
        failed = by_name[name]
        assert failed["status"] == "failed"
        assert failed["error"] == {"code": single.json["code"], "message": single.json["message"]}
        job = client.get(failed["url"], headers=auth_headers).json
        assert job["error"]["code"] == single.json["code"] and job["result"] is None
    assert by_name["page.mp3"]["error"]["code"] == "unsupported_media_type"
    assert by_name["cut.wav"]["error"]["code"] == "audio_decode_failed"
    members = zipfile.ZipFile(
        io.BytesIO(client.get(batch["archive_url"], headers=auth_headers).data)
    ).namelist()
    assert {member.split("/")[0] for member in members} == {"good 1", "good 2", "good 3"}
    # Nothing of the refused inputs was kept.
    assert files_under(Path(app.config["DATA_DIR"]) / "tmp") == []


def test_options_are_checked_once_and_nothing_is_stored(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    song = _song()
    files = [(song, "a.wav"), (song, "b.wav")]
    bad_model = post_batch(client, auth_headers, files, model="no-such-model")
    single = upload(client, auth_headers, song, model="no-such-model")
    assert bad_model.status_code == single.status_code == 422
    assert bad_model.json["errors"] == single.json["errors"]
    assert "model" in bad_model.json["errors"]
    unknown_option = post_batch(client, auth_headers, files, colour="blue")
    assert unknown_option.status_code == 422 and "colour" in unknown_option.json["errors"]
    bad_value = post_batch(client, auth_headers, files, clip_mode="loud")
    assert bad_value.status_code == 422 and "clip_mode" in bad_value.json["errors"]
    for kind in ("generation", "nonsense"):
        refused = post_batch(client, auth_headers, files, kind=kind)
        assert refused.status_code == 422 and "kind" in refused.json["errors"]
    no_files = post_batch(client, auth_headers, [])
    assert no_files.status_code == 422 and no_files.json["code"] == "no_inputs"
    inward = post_batch(client, auth_headers, files, callback_url="http://127.0.0.1/hook")
    assert inward.status_code == 422 and "callback_url" in inward.json["errors"]
    assert_nothing_kept(app)
    assert _rows(app) == (0, 0)


def test_too_many_inputs_are_refused(eager_app: Callable[..., Flask]) -> None:
    app = eager_app(MAX_BATCH_INPUTS=3)
    client = app.test_client()
    headers = register_and_login(client)
    song = _song()
    refused = post_batch(client, headers, [(song, f"{n}.wav") for n in range(4)])
    assert refused.status_code == 422 and refused.json["code"] == "too_many_inputs"
    assert "3" in refused.json["message"]
    assert_nothing_kept(app)
    # A form with far more parts than inputs allowed is refused by the parser.
    crowded = post_batch(client, headers, [(song, f"{n}.wav") for n in range(40)])
    assert crowded.status_code == 413 and crowded.json["code"] == "form_too_large"
    assert "35 parts" in crowded.json["message"]
    assert_nothing_kept(app)
    assert post_batch(client, headers, [(song, f"{n}.wav") for n in range(3)]).status_code == 202


def test_a_batch_body_may_exceed_one_uploads_limit(eager_app: Callable[..., Flask]) -> None:
    """MAX_UPLOAD_MB holds each input; the batch's body gets MAX_BATCH_UPLOAD_MB."""
    app = eager_app(MAX_UPLOAD_MB=1, MAX_BATCH_UPLOAD_MB=4)
    client = app.test_client()
    headers = register_and_login(client)
    song = _song(4.0)  # about 700 KB: three are over one upload's limit
    big = _song(7.0)  # about 1.2 MB: over it alone
    assert len(song) * 3 > 1024 * 1024 > len(song) and len(big) > 1024 * 1024
    single = upload(client, headers, big)
    assert single.status_code == 413
    response = post_batch(client, headers, [(song, "a.wav"), (song, "b.wav"), (big, "big.wav")])
    assert response.status_code == 202, response.json
    by_name = {job["filename"]: job for job in response.json["jobs"]}
    assert by_name["a.wav"]["status"] == by_name["b.wav"]["status"] == "succeeded"
    assert by_name["big.wav"]["error"]["code"] == single.json["code"] == "file_too_large"
    # Past the batch's own limit the whole request is refused.
    over = post_batch(client, headers, [(song, f"{n}.wav") for n in range(7)])
    assert over.status_code == 413 and over.json["code"] == "batch_too_large"
    assert "4 MB" in over.json["message"]


def test_a_batch_is_one_request_against_the_job_rate_limit(
    eager_app: Callable[..., Flask],
) -> None:
    app = eager_app(RATELIMIT_ENABLED=True, JOB_RATE_LIMIT="1/minute")
    client = app.test_client()
    headers = register_and_login(client)
    song = _song()
    files = [(song, f"{n}.wav") for n in range(3)]
    assert post_batch(client, headers, files).status_code == 202
    again = post_batch(client, headers, files)
    assert again.status_code == 429 and again.json["code"] == "rate_limited"


def test_cancel_all_then_delete_all(queued_app: Flask) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    song = _song()
    batch = post_batch(client, headers, [(song, f"{n}.wav") for n in range(4)]).json
    assert batch["status"] == "queued" and batch["counts"]["queued"] == 4
    assert batch["progress"] == 0.0 and batch["finished_at"] is None
    # Its jobs take their turns like any of the user's (MAX_RUNNING_JOBS = 2).
    with queued_app.app_context():
        dispatched = db.session.execute(
            db.select(db.func.count())
            .select_from(Job)
            .where(Job.batch_id == batch["id"], Job.dispatched_at.is_not(None))
        ).scalar_one()
    assert dispatched == 2

    canceled = client.post(f"{batch['url']}/cancel", headers=headers)
    assert canceled.status_code == 200
    assert canceled.json["status"] == "canceled" and canceled.json["counts"]["canceled"] == 4
    assert canceled.json["progress"] == 1.0 and canceled.json["finished_at"] is not None
    for job in canceled.json["jobs"]:
        assert client.get(job["url"], headers=headers).json["status"] == "canceled"
    again = client.post(f"{batch['url']}/cancel", headers=headers)
    assert again.status_code == 409 and again.json["code"] == "batch_finished"
    # Nothing to zip.
    assert client.get(batch["archive_url"], headers=headers).json["code"] == "not_ready"

    assert client.delete(batch["url"], headers=headers).status_code == 204
    assert client.get(batch["url"], headers=headers).status_code == 404
    for job in canceled.json["jobs"]:
        assert client.get(job["url"], headers=headers).status_code == 404
    assert files_under(Path(queued_app.config["DATA_DIR"]) / "jobs") == []
    assert _rows(queued_app) == (0, 0)


def test_delete_all_removes_finished_jobs_and_their_files(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    song = _song()
    other = post_batch(client, auth_headers, [(song, "keep.wav")]).json
    batch = post_batch(client, auth_headers, [(song, "a.wav"), (HTML, "b.mp3")]).json
    assert batch["status"] == "completed_with_errors"
    assert client.delete(batch["url"], headers=auth_headers).status_code == 204
    for job in batch["jobs"]:
        assert client.get(job["url"], headers=auth_headers).status_code == 404
    kept = {p.split("/")[0] for p in files_under(Path(app.config["DATA_DIR"]) / "jobs")}
    assert kept == {other["jobs"][0]["id"]}
    assert client.get(other["url"], headers=auth_headers).json["status"] == "succeeded"


def test_another_users_batch_is_not_found(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    batch = post_batch(client, auth_headers, [(_song(), "a.wav")]).json
    mallory = register_and_login(client)
    for method, path in (
        ("get", batch["url"]),
        ("get", batch["archive_url"]),
        ("get", batch["events_url"]),
        ("post", f"{batch['url']}/cancel"),
        ("delete", batch["url"]),
    ):
        answer = getattr(client, method)(path, headers=mallory)
        assert answer.status_code == 404, (method, path)
        assert answer.json["code"] == "not_found"
    assert client.get("/api/v1/batches", headers=mallory).json["total"] == 0
    assert client.get(f"/api/v1/jobs?batch_id={batch['id']}", headers=mallory).json["total"] == 0
    assert client.get("/api/v1/batches/not-a-uuid", headers=mallory).status_code == 404
    # Still there for its owner.
    assert client.get(batch["url"], headers=auth_headers).json["status"] == "succeeded"


def test_the_webhook_is_delivered_once_when_the_batch_ends(
    eager_app: Callable[..., Flask],
) -> None:
    app = eager_app(WEBHOOK_ALLOW_PRIVATE=True)
    client = app.test_client()
    headers = register_and_login(client)
    song = _song()
    with Receiver([200]) as receiver:
        response = post_batch(
            client,
            headers,
            [(song, "a.wav"), (HTML, "b.mp3"), (song, "c.wav")],
            callback_url=receiver.url(),
        )
        assert response.status_code == 202, response.json
    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    assert sent["headers"]["X-AMS-Event"] == "batch.completed_with_errors"
    secret = client.get("/api/v1/webhooks/secret", headers=headers).json["secret"]
    assert verify_signature(secret, sent)
    body = json.loads(sent["body"])
    assert body["id"] == response.json["id"] and body["status"] == "completed_with_errors"
    assert body["counts"]["succeeded"] == 2 and body["counts"]["failed"] == 1
    assert body["webhook"]["event_id"] == sent["headers"]["X-AMS-Event-Id"]
    batch = client.get(response.headers["Location"], headers=headers).json
    assert batch["callback_url"] == receiver.url()
    assert batch["webhook"]["state"] == "delivered" and batch["webhook"]["attempts"] == 1
    # The batch's callback is not each job's.
    job = client.get(batch["jobs"][0]["url"], headers=headers).json
    assert job["callback_url"] is None and job["webhook"] is None


def test_a_canceled_batch_sends_its_webhook_once(queued_app: Flask) -> None:
    queued_app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    queued_app.extensions["celery"].conf.task_always_eager = False
    client = queued_app.test_client()
    headers = register_and_login(client)
    sent: list[list[Any]] = []
    deliver = queued_app.extensions["celery"].tasks["app.tasks.webhooks.deliver_batch"]
    deliver.apply_async = lambda args, **_: sent.append(args)  # type: ignore[method-assign]
    with Receiver([200]) as receiver:
        batch = post_batch(
            client, headers, [(_song(), f"{n}.wav") for n in range(3)], callback_url=receiver.url()
        ).json
    assert sent == []  # not yet: nothing has ended
    assert client.post(f"{batch['url']}/cancel", headers=headers).status_code == 200
    assert len(sent) == 1 and sent[0][3] == "batch.canceled"
    assert json.loads(sent[0][5])["counts"]["canceled"] == 3


def _events(response: Any) -> list[dict[str, Any]]:
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append({**fields, "data": json.loads(fields["data"])})
    return events


def test_the_event_stream_ends_with_the_final_batch(tmp_path: Path) -> None:
    app = make_app(tmp_path / "queued", SSE_POLL_SECONDS=0.05)
    client = app.test_client()
    headers = register_and_login(client)
    batch = post_batch(client, headers, [(_song(), f"{n}.wav") for n in range(3)]).json
    stream = client.get(batch["events_url"], headers=headers, buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    chunks = iter(stream.response)
    first = ""
    while "data:" not in first:
        first += next(chunks).decode()
    opened = _events(type("R", (), {"get_data": lambda self, as_text: first})())
    assert opened[0]["event"] == "status" and opened[0]["data"]["status"] == "queued"
    # The batch ends while the stream is open: its last event is the final batch.
    assert client.post(f"{batch['url']}/cancel", headers=headers).status_code == 200
    rest = "".join(chunk.decode() for chunk in chunks)
    events = _events(type("R", (), {"get_data": lambda self, as_text: rest})())
    assert events[-1]["event"] == "status"
    final = events[-1]["data"]
    assert final["status"] == "canceled" and final["counts"]["canceled"] == 3
    assert final == client.get(batch["url"], headers=headers).json
    # Reconnecting with the final state's id: nothing more to send.
    again = client.get(batch["events_url"], headers={**headers, "Last-Event-ID": events[-1]["id"]})
    assert again.status_code == 204
    # A batch that has already ended streams its final document at once.
    done = client.get(batch["events_url"], headers=headers)
    assert [e["data"]["status"] for e in _events(done)] == ["canceled"]
    # EventSource cannot send headers: the token may come as ?access_token=.
    token = headers["Authorization"].split()[1]
    by_query = client.get(f"{batch['events_url']}?access_token={token}")
    assert [e["data"]["status"] for e in _events(by_query)] == ["canceled"]


def test_a_batch_with_a_real_worker(tmp_path: Path) -> None:
    """Jobs published in turns, run by a worker process, the batch's webhook
    delivered by the webhooks queue once the last one ends."""
    app = make_app(tmp_path / "data", WEBHOOK_ALLOW_PRIVATE=True)
    client = app.test_client()
    headers = register_and_login(client)
    song = _song()
    log_path = tmp_path / "worker.log"
    with Receiver([200]) as receiver:
        batch = post_batch(
            client,
            headers,
            [(song, f"{n}.wav") for n in range(5)] + [(HTML, "page.mp3")],
            callback_url=receiver.url(),
        ).json
        assert batch["status"] == "queued" and batch["counts"]["failed"] == 1
        worker = CeleryProcess(
            log_path, job_env(app, WEBHOOK_ALLOW_PRIVATE="1"), queues="separation,webhooks"
        )
        try:
            wait_for(lambda: receiver.requests, 120, "the batch's webhook", [log_path])
        finally:
            worker.stop()
    assert len(receiver.requests) == 1
    body = json.loads(receiver.requests[0]["body"])
    assert body["status"] == "completed_with_errors" and body["counts"]["succeeded"] == 5
    final = client.get(batch["url"], headers=headers).json
    assert final["progress"] == 1.0 and final["webhook"]["state"] == "delivered"
    members = zipfile.ZipFile(
        io.BytesIO(client.get(batch["archive_url"], headers=headers).data)
    ).namelist()
    assert len(members) == 10


def test_a_text_value_is_not_a_file(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/batches",
        data={"kind": "separation", "model": "hpss", "file": "not a file"},
        headers=auth_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 422 and "file" in response.json["errors"]
    assert _rows(app) == (0, 0)


def test_deleting_the_account_deletes_its_batches(queued_app: Flask) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    post_batch(client, headers, [(_song(), f"{n}.wav") for n in range(3)])
    assert _rows(queued_app) == (1, 3)
    gone = client.delete(
        "/api/v1/auth/me", json={"password": "a long enough password"}, headers=headers
    )
    assert gone.status_code == 204
    assert _rows(queued_app) == (0, 0)
    assert files_under(Path(queued_app.config["DATA_DIR"]) / "jobs") == []


def test_the_storage_quota_holds_each_input(eager_app: Callable[..., Flask]) -> None:
    app = eager_app(MAX_STORAGE_MB=1)
    client = app.test_client()
    headers = register_and_login(client)
    song = _song(4.0)  # about 700 KB: the first input and its stems fill the quota
    response = post_batch(client, headers, [(song, "first.wav"), (song, "second.wav")])
    assert response.status_code == 202, response.json
    first, second = response.json["jobs"]
    assert first["status"] == "succeeded"
    single = upload(client, headers, song)
    assert single.status_code == 409
    assert second["status"] == "failed"
    assert second["error"]["code"] == single.json["code"] == "storage_quota_exceeded"


def test_a_batch_takes_urls_beside_files(eager_app: Callable[..., Flask]) -> None:
    """URLs are inputs like files: fetched by the worker, a refused address or
    a page that is not audio failing its own job with the single route's code."""
    from tests.support.media_server import MediaServer

    with MediaServer() as media:
        media.file("/library/First%20Song.wav", _song())
        media.file("/library/notes.html", HTML, content_type="text/html")
        app = eager_app(URL_FETCH_ALLOW_HOSTS=media.authority)
        client = app.test_client()
        headers = register_and_login(client)
        response = client.post(
            "/api/v1/batches",
            data={
                "kind": "separation",
                "model": "hpss",
                "file": [(io.BytesIO(_song()), "uploaded.wav")],
                "url": [
                    media.url("/library/First%20Song.wav"),
                    media.url("/library/notes.html"),
                    "http://169.254.169.254/latest/meta-data",
                ],
            },
            headers=headers,
            content_type="multipart/form-data",
        )
    assert response.status_code == 202, response.json
    batch = response.json
    assert batch["inputs"] == 4
    assert batch["status"] == "completed_with_errors"
    by_name = {job["filename"]: job for job in batch["jobs"]}
    assert by_name["uploaded.wav"]["status"] == "succeeded"
    assert by_name["First Song.wav"]["status"] == "succeeded"
    assert by_name["notes.html"]["error"]["code"] == "unsupported_media_type"
    refused = by_name["meta-data"]
    assert refused["status"] == "failed" and refused["error"]["code"] == "url_not_allowed"
    assert "169.254.169.254" in refused["error"]["message"]
    members = zipfile.ZipFile(
        io.BytesIO(client.get(batch["archive_url"], headers=headers).data)
    ).namelist()
    assert {member.split("/")[0] for member in members} == {"uploaded", "First Song"}


def test_a_batch_whose_request_died_is_sealed_by_maintenance(
    app: Flask, client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    """An API process killed while accepting a batch leaves it unsealed: it
    would never end. The maintenance pass seals it once its request must
    have ended, and it ends with the jobs it got."""
    from datetime import timedelta

    from app.records import utcnow
    from app.services import maintenance

    batch = post_batch(client, auth_headers, [(_song(), "kept.wav")]).json
    assert batch["status"] == "succeeded"
    with app.app_context():
        # As the dead request left it: 3 inputs announced, 1 job made, no seal.
        db.session.execute(
            db.update(Batch)
            .where(Batch.id == batch["id"])
            .values(inputs=3, submitted_at=None, finished_at=None)
        )
        db.session.commit()
        assert maintenance.run_once()["batches"] == 0  # its request may still be running
    unsealed = client.get(batch["url"], headers=auth_headers).json
    assert unsealed["status"] != "succeeded" and unsealed["progress"] < 1.0
    with app.app_context():
        db.session.execute(
            db.update(Batch)
            .where(Batch.id == batch["id"])
            .values(created_at=utcnow() - timedelta(minutes=16))
        )
        db.session.commit()
        assert maintenance.run_once()["batches"] == 1
        assert maintenance.run_once()["batches"] == 0  # once
    ended = client.get(batch["url"], headers=auth_headers).json
    assert ended["status"] == "succeeded" and ended["progress"] == 1.0
    assert ended["finished_at"] is not None and ended["jobs_total"] == 1
