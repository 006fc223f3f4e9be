"""Object-level authorisation (OWASP API1): users A and B, every route that takes
a job id, and four kinds of id.

Another user's job id must answer exactly like an id that does not exist (same
status, same JSON body), must change nothing, and list endpoints never show
another user's jobs. The routes come from ``app.url_map``: a new route with a
``<job_id>`` fails this test until it is added to ``CALLS`` below.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from app.extensions import db
from app.records import Job
from tests.support.apps import BOTH_DATABASES, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes

pytestmark = BOTH_DATABASES

# endpoint -> (method, the URL path after /api/v1/jobs/<job_id>, extra request kwargs)
CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "jobs.get_job": ("GET", "", {}),
    "jobs.delete_job": ("DELETE", "", {}),
    "jobs.cancel_job": ("POST", "/cancel", {}),
    "jobs.get_file": ("GET", "/files/harmonic.wav", {}),
    "jobs.get_archive": ("GET", "/archive", {}),
    "jobs.get_transcript": ("GET", "/transcript", {"query_string": {"format": "srt"}}),
    "jobs.job_events": ("GET", "/events", {}),
}
MALFORMED = ["not-a-uuid", "1%20OR%201=1", "' OR '1'='1", "%00", "{}", "0" * 37]


@pytest.fixture
def users(app: Flask) -> dict[str, dict[str, str]]:
    client = app.test_client()
    return {"a": register_and_login(client), "b": register_and_login(client)}


def _submit(client: FlaskClient, headers: dict) -> dict:
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(wav_bytes(sine_and_clicks(1.0))), "a.wav"), "model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()


@pytest.fixture
def a_jobs(app: Flask, users: dict) -> dict[str, str]:
    """A's jobs: one finished (results to download) and one still queued (to cancel)."""
    client = app.test_client()
    done = _submit(client, users["a"])["id"]
    pending = _submit(client, users["a"])["id"]
    with app.app_context():  # as if no worker had taken it yet
        db.session.execute(
            update(Job)
            .where(Job.id == pending)
            .values(status="queued", stage="queued", progress=0.0, result=None, finished_at=None)
        )
        db.session.commit()
    assert client.get(f"/api/v1/jobs/{done}", headers=users["a"]).get_json()["status"] == (
        "succeeded"
    )
    return {"done": done, "pending": pending}


def _job_routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if "job_id" in rule.arguments:
            routes[rule.endpoint] = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
    return routes


def test_every_job_route_is_in_the_matrix(app: Flask) -> None:
    routes = _job_routes(app)
    missing = sorted(set(routes) - set(CALLS))
    assert not missing, f"add these routes that take a job id to CALLS: {missing}"
    for endpoint, methods in routes.items():
        assert methods == {CALLS[endpoint][0]}, (endpoint, methods)


def _call(
    client: FlaskClient, endpoint: str, job_id: str, headers: dict
) -> tuple[int, dict | None]:
    method, suffix, kwargs = CALLS[endpoint]
    response = client.open(
        f"/api/v1/jobs/{job_id}{suffix}", method=method, headers=headers, buffered=False, **kwargs
    )
    try:
        if response.mimetype == "application/json" and response.status_code != 204:
            return response.status_code, response.get_json()
        return response.status_code, None  # a file or an event stream: not read
    finally:
        response.close()


def test_another_users_job_looks_exactly_like_a_missing_one(
    app: Flask, users: dict, a_jobs: dict
) -> None:
    client = app.test_client()
    routes = [e for e in CALLS if e in _job_routes(app)]
    assert routes
    for endpoint in routes:
        # Deleting is last, so every other route still has A's jobs to try.
        if endpoint == "jobs.delete_job":
            continue
        own_id = a_jobs["pending"] if endpoint == "jobs.cancel_job" else a_jobs["done"]
        missing_id = str(uuid.uuid4())
        own = _call(client, endpoint, own_id, users["a"])
        other = _call(client, endpoint, own_id, users["b"])
        missing = _call(client, endpoint, missing_id, users["b"])
        assert own[0] != 404, (endpoint, own)
        assert other == missing, (endpoint, other, missing)
        assert missing[0] == 404 and missing[1] == {
            "code": "not_found",
            "status": 404,
            "message": "No job with this id.",
        }, (endpoint, missing)
        # The other user's id with a malformed id's answer too.
        for bad in MALFORMED:
            status, body = _call(client, endpoint, bad, users["b"])
            assert status == 404 and body is not None and body["code"] == "not_found", (
                endpoint,
                bad,
                status,
                body,
            )
    # B's attempts changed nothing of A's: the canceled job is A's own cancel.
    _assert_a_jobs_intact(app, client, users, a_jobs, canceled_by_a=True)

    # B cannot delete A's jobs either; A can.
    for job_id in a_jobs.values():
        other = _call(client, "jobs.delete_job", job_id, users["b"])
        missing = _call(client, "jobs.delete_job", str(uuid.uuid4()), users["b"])
        assert other == missing and missing[0] == 404
    _assert_a_jobs_intact(app, client, users, a_jobs, canceled_by_a=True)
    for job_id in a_jobs.values():
        assert _call(client, "jobs.delete_job", job_id, users["a"])[0] == 204


def _assert_a_jobs_intact(
    app: Flask, client: FlaskClient, users: dict, a_jobs: dict, *, canceled_by_a: bool
) -> None:
    done = client.get(f"/api/v1/jobs/{a_jobs['done']}", headers=users["a"]).get_json()
    assert done["status"] == "succeeded"
    stem = client.get(done["result"]["files"][0]["url"], headers=users["a"])
    assert stem.status_code == 200 and stem.data[:4] == b"RIFF"
    pending = client.get(f"/api/v1/jobs/{a_jobs['pending']}", headers=users["a"]).get_json()
    assert pending["status"] == ("canceled" if canceled_by_a else "queued")
    folder = Path(app.config["DATA_DIR"]) / "jobs" / a_jobs["done"]
    assert folder.is_dir()


def test_b_cannot_cancel_a_queued_job_of_a(app: Flask, users: dict, a_jobs: dict) -> None:
    client = app.test_client()
    status, body = _call(client, "jobs.cancel_job", a_jobs["pending"], users["b"])
    assert (status, body["code"]) == (404, "not_found")
    _assert_a_jobs_intact(app, client, users, a_jobs, canceled_by_a=False)


def _all_listed(client: FlaskClient, headers: dict, **query: Any) -> list[str]:
    ids: list[str] = []
    page = 1
    while True:
        response = client.get(
            "/api/v1/jobs", headers=headers, query_string={"page": page, "per_page": 1, **query}
        )
        assert response.status_code == 200
        body = response.get_json()
        ids += [job["id"] for job in body["items"]]
        if page * body["per_page"] >= body["total"]:
            return ids
        page += 1


def test_lists_never_show_another_users_jobs(app: Flask, users: dict, a_jobs: dict) -> None:
    client = app.test_client()
    b_job = _submit(client, users["b"])["id"]
    filters: list[dict[str, Any]] = [
        {},
        {"status": "succeeded"},
        {"status": "queued"},
        {"kind": "separation"},
        # Parameters the API does not know are not a way in.
        {"owner_id": 1},
        {"user": "a"},
    ]
    for query in filters:
        listed = _all_listed(client, users["b"], **query)
        assert not set(listed) & set(a_jobs.values()), query
        total = client.get("/api/v1/jobs", headers=users["b"], query_string=query).get_json()
        assert total["total"] == len(listed), query
    assert _all_listed(client, users["b"]) == [b_job]
    assert set(_all_listed(client, users["a"])) == set(a_jobs.values())


def test_list_pages_past_the_end_are_empty(app: Flask, users: dict, a_jobs: dict) -> None:
    client = app.test_client()
    body = client.get(
        "/api/v1/jobs", headers=users["b"], query_string={"page": 1000, "per_page": 100}
    ).get_json()
    assert body["items"] == [] and body["total"] == 0
