"""Observability: /metrics (Prometheus), request ids, JSON logs with request and job ids."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app import logs
from tests.support.apps import make_app, register_and_login

ROOT = Path(__file__).resolve().parent.parent


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> dict:
    """Every sample of /metrics as {(name, frozenset(labels)): value}."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def submit(client: FlaskClient, headers: dict, data: bytes, **extra: str) -> dict:
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(data), "song.wav"), "model": "hpss"},
        headers={**headers, **extra},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return response.json


def test_metrics_count_jobs_by_kind_and_status_and_the_queue(
    queued_app: Flask, song_wav: bytes
) -> None:
    client = queued_app.test_client()
    headers = register_and_login(client)
    before = scrape(client)
    assert value(before, "aimusic_jobs", kind="separation", status="queued") == 0
    assert value(before, "aimusic_queue_depth", kind="separation", queue="separation") == 0
    assert ("aimusic_jobs", frozenset({"kind": "generation", "status": "failed"}.items())) in before

    first = submit(client, headers, song_wav)
    submit(client, headers, song_wav)
    time.sleep(0.05)
    samples = scrape(client)
    assert value(samples, "aimusic_jobs", kind="separation", status="queued") == 2
    assert value(samples, "aimusic_queue_depth", kind="separation", queue="separation") == 2
    assert (
        value(samples, "aimusic_queue_oldest_age_seconds", kind="separation", queue="separation")
        > 0
    )
    assert value(samples, "aimusic_queue_depth", kind="karaoke", queue="separation") == 0
    assert value(samples, "aimusic_queue_depth", kind="analysis", queue="transcription") == 0
    assert value(samples, "aimusic_database_up") == 1
    # No worker runs in this app: none is counted on any queue.
    assert value(samples, "aimusic_workers", queue="separation") == 0

    assert client.post(f"/api/v1/jobs/{first['id']}/cancel", headers=headers).status_code == 200
    samples = scrape(client)
    assert value(samples, "aimusic_jobs", kind="separation", status="queued") == 1
    assert value(samples, "aimusic_jobs", kind="separation", status="canceled") == 1
    assert value(samples, "aimusic_queue_depth", kind="separation", queue="separation") == 1


def test_http_latency_histogram_moves_per_route_template(
    client: FlaskClient, auth_headers: dict[str, str]
) -> None:
    route = "/api/v1/jobs/<job_id>"
    labels = {"method": "GET", "route": route, "status": "404"}
    before = scrape(client)
    for _ in range(3):
        missing = client.get(f"/api/v1/jobs/{secrets.token_hex(16)}", headers=auth_headers)
        assert missing.status_code == 404
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    count = "aimusic_http_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 3
    # One series per route template, never one per job id.
    assert not any(
        name == count and dict(key).get("route", "").count("-") >= 4 for name, key in after
    )
    inf = {**labels, "le": "+Inf"}
    bucket = "aimusic_http_request_duration_seconds_bucket"
    assert value(after, bucket, **inf) == value(after, count, **labels)
    assert value(after, "aimusic_http_request_duration_seconds_sum", **labels) > 0
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, count, **unmatched) - value(before, count, **unmatched) == 1


def test_liveness_is_answered_before_flask_as_its_route_answers(
    app: Flask, client: FlaskClient
) -> None:
    """``/healthz`` skips Flask's dispatch (app/factory.py ``liveness_first``):
    the same answer as the health blueprint's route, still counted and timed."""
    from werkzeug.test import Client

    routed = Client(lambda environ, start: Flask.wsgi_app(app, environ, start))
    sent = {"X-Request-ID": "probe-1"}
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    count = "aimusic_http_request_duration_seconds_count"
    before = scrape(client)
    early = client.get("/healthz", headers=sent)
    assert value(scrape(client), count, **labels) - value(before, count, **labels) == 1
    flask = routed.get("/healthz", headers=sent)
    assert early.status_code == flask.status_code == 200
    assert early.get_data() == flask.get_data() == b'{"status":"ok"}\n'
    assert sorted(early.headers.items()) == sorted(flask.headers.items())
    head = client.head("/healthz")
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == early.headers["Content-Length"]
    assert len(head.headers["X-Request-ID"]) == 32
    # Other methods and paths are Flask's: the JSON 405 and 404 of every route.
    refused = client.post("/healthz")
    assert refused.status_code == 405 and refused.json["code"] == "method_not_allowed"
    assert client.get("/healthz/").status_code == 404


def test_metrics_token_guards_the_endpoint(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    client = make_app(tmp_path / "data", METRICS_TOKEN=token).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    samples = scrape(client, {"Authorization": f"Bearer {token}"})
    assert value(samples, "aimusic_database_up") == 1


@pytest.mark.parametrize("token", [None, "a-metrics-token"], ids=["open", "token"])
def test_openapi_says_whether_metrics_need_the_token(tmp_path: Path, token: str | None) -> None:
    """The document describes this server: no token configured, no credential
    asked for (and no 401); a token configured, the bearer token is required."""
    client = make_app(tmp_path / "data", METRICS_TOKEN=token).test_client()
    spec = client.get("/openapi.json").json
    operation = spec["paths"]["/metrics"]["get"]
    schemes = spec["components"]["securitySchemes"]
    unauthenticated = client.get("/metrics").status_code
    if token is None:
        assert not operation.get("security")  # absent: like /healthz, open to all
        assert "401" not in operation["responses"]
        assert "metricsToken" not in schemes
        assert unauthenticated == 200
    else:
        assert operation["security"] == [{"metricsToken": []}]
        assert "401" in operation["responses"]
        assert schemes["metricsToken"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator's METRICS_TOKEN.",
        }
        assert unauthenticated == 401
    # The user routes keep their credentials either way.
    assert {"bearerAuth", "apiKeyAuth"} <= set(schemes)
    assert spec["paths"]["/api/v1/jobs"]["get"]["security"]


def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    sent = "req-7f3a9c.1:proxy"
    assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent
    generated = [client.get("/healthz").headers["X-Request-ID"] for _ in range(2)]
    assert generated[0] != generated[1]
    assert all(len(g) == 32 and int(g, 16) >= 0 for g in generated)
    # Ids that could forge or break a log line are replaced, not echoed.
    for bad in ("two words", "x" * 200, 'quote"d', "new\\nline"):
        echoed = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert echoed != bad and len(echoed) == 32
    # Errors carry it too, so a user can quote it in a bug report.
    response = client.get("/api/v1/jobs", headers={"X-Request-ID": sent})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == sent


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged at INFO during the test, as the JSON lines LOG_FORMAT=json writes."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_json_logs_carry_request_and_job_ids_in_an_eager_task(
    client: FlaskClient, auth_headers: dict[str, str], song_wav: bytes, json_log: io.StringIO
) -> None:
    before = scrape(client)
    job = submit(client, auth_headers, song_wav, **{"X-Request-ID": "upload-42"})
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=auth_headers).json["status"] == (
        "succeeded"
    )

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    ended = [e for e in lines if e.get("job_id") == job["id"] and e.get("status") == "succeeded"]
    assert len(ended) == 1, lines
    assert ended[0]["kind"] == "separation"
    assert ended[0]["run_seconds"] >= 0
    # The task ran inside the upload request (eager mode): both ids are on its lines.
    assert ended[0]["request_id"] == "upload-42"
    access = [
        e for e in lines if e["logger"] == "app.access" and e.get("path") == "/api/v1/separations"
    ]
    assert access and access[0]["status"] == 202 and access[0]["request_id"] == "upload-42"
    assert "job_id" not in access[0]  # the request's own line is outside the task
    assert access[0]["duration_ms"] > 0

    after = scrape(client)
    count = "aimusic_job_duration_seconds_count"
    labels = {"kind": "separation", "status": "succeeded"}
    assert value(after, count, **labels) - value(before, count, **labels) == 1
    waits = "aimusic_job_queue_wait_seconds_count"
    assert value(after, waits, kind="separation") - value(before, waits, kind="separation") == 1


def test_model_loads_are_timed(client: FlaskClient) -> None:
    from app.models.cache import get_cache

    before = scrape(client)
    cache = get_cache({"MODEL_CACHE_SIZE": "2"})
    cache.get(("separation", "metrics-test", "cpu"), lambda: object())
    cache.get(("separation", "metrics-test", "cpu"), lambda: object())  # cached: no new load
    after = scrape(client)
    labels = {"kind": "separation", "model": "metrics-test", "device": "cpu"}
    name = "aimusic_model_load_seconds_count"
    assert value(after, name, **labels) - value(before, name, **labels) == 1


def test_log_format_json_from_the_environment(tmp_path: Path) -> None:
    code = (
        "import logging, secrets; from app import create_app; "
        "create_app({'SECRET_KEY': secrets.token_urlsafe(48)}); "
        "logging.getLogger('probe').warning('hello %s', 'world', extra={'answer': 42})"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DATA_DIR": str(tmp_path / "data")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    probe = [e for e in entries if e["logger"] == "probe"]
    assert probe == [{**probe[0], "level": "WARNING", "message": "hello world", "answer": 42}], (
        entries
    )
    assert probe[0]["time"].endswith("+00:00")


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="LOG_FORMAT"):
        make_app(tmp_path / "data", LOG_FORMAT="xml")


def test_text_logs_append_the_ids() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "hi"})
    with logs.job_context("job-1"):
        line = logs.TextFormatter().format(record)
    assert line.endswith("x: hi [job_id=job-1]")


# --------------------------------------------------------------------------- gunicorn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_workers_share_one_set_of_metrics(tmp_path: Path) -> None:
    """Production settings (gunicorn.conf.py, 2 processes): every scrape, whichever
    process answers it, counts the requests all processes served."""
    data = tmp_path / "data"
    secret = secrets.token_urlsafe(48)
    make_app(data, SECRET_KEY=secret)  # creates the schema
    port = _free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "SECRET_KEY": secret,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "LOG_FORMAT": "json",
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"gunicorn did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        session = requests.Session()
        for _ in range(40):
            assert session.get(base + "/healthz", timeout=5).ok
        # New connections, so both processes get to answer scrapes: at least 12,
        # and until both have (the second may still be booting when the first
        # answers /healthz, more so on a busy machine).
        counts = set()
        pids: set[str] = set()
        files: list[str] = []
        scrapes, deadline = 0, time.monotonic() + 30
        while scrapes < 12 or (len(pids) < 2 and time.monotonic() < deadline):
            scrapes += 1
            response = requests.get(base + "/metrics", timeout=5, headers={"Connection": "close"})
            assert response.status_code == 200
            samples = parse(response.text)
            counts.add(
                value(
                    samples,
                    "aimusic_http_request_duration_seconds_count",
                    method="GET",
                    route="/healthz",
                    status="200",
                )
            )
            files = sorted(p.name for p in (data / "metrics").glob("*.db"))
            pids = {name.rsplit("-", 1)[-1] for name in files}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=40)
    # At least 41 (the readiness probe may have been answered more than once).
    assert len(counts) == 1 and min(counts) >= 41, counts
    assert len(pids) >= 2, files  # both processes wrote their files
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, gunicorn's too
    assert any("Booting worker" in e["message"] for e in entries)
