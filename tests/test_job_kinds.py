"""The job-kind table (app/job_kinds.py) is the one place a kind is declared:
everything derived from it agrees with it, and a new kind is one entry (its
service, task and route aside)."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import pytest
from flask import Flask

from app import config as config_module
from app import job_kinds, worker_settings
from app.job_kinds import JOB_KINDS
from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes


def _routed_queue(app: Flask, task_name: str) -> str:
    celery = app.extensions["celery"]
    queue = celery.amqp.router.route({}, task_name)["queue"]
    return str(getattr(queue, "name", queue))


def test_everything_derived_agrees_with_the_table(app: Flask) -> None:
    celery = app.extensions["celery"]
    annotations = app.config["CELERY"]["task_annotations"]
    assert job_kinds.names() == tuple(kind.name for kind in JOB_KINDS)
    assert len(set(job_kinds.names())) == len(JOB_KINDS)
    for kind in JOB_KINDS:
        # The task exists under its name, goes to the kind's queue, and has the
        # kind's time limit.
        assert kind.task in celery.tasks, kind
        assert _routed_queue(app, kind.task) == kind.queue
        hard = sum(float(app.config[key]) for key in kind.time_limits)
        assert annotations[kind.task]["time_limit"] == hard
        assert annotations[kind.task]["soft_time_limit"] == worker_settings.soft_limit(hard)
        # The route module is registered where jobs of the kind are created.
        route = importlib.import_module(kind.route)
        assert f"/api/v1{route.PREFIX}" in {rule.rule for rule in app.url_map.iter_rules()}
        # The runner and the result schema exist.
        module, _, name = kind.runner.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))
        if kind.result_schema:
            module, _, name = kind.result_schema.rpartition(".")
            schema = getattr(importlib.import_module(module), name)
            spec = app.extensions["api"].spec.to_dict()["components"]["schemas"]["Result"]
            assert set(schema._declared_fields) <= set(spec["properties"])
    # Every job queue is one a worker consumes.
    assert set(job_kinds.job_queues()) <= set(config_module.queues())
    # The job list's ?kind= filter documents exactly the table's names.
    spec = app.extensions["api"].spec.to_dict()
    parameters = spec["paths"]["/api/v1/jobs"]["get"]["parameters"]
    kind_filter = next(p for p in parameters if p["name"] == "kind")
    assert kind_filter["schema"]["enum"] == list(job_kinds.names())


@pytest.mark.parametrize("kind", JOB_KINDS, ids=lambda kind: kind.name)
def test_each_task_runs_the_tables_runner(kind: job_kinds.JobKind, app: Flask, monkeypatch) -> None:
    """Under its former names too (messages an older version queued), with the
    same queue and time limit."""
    seen: list[str] = []
    module, _, name = kind.runner.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module), name, seen.append)
    annotations = app.config["CELERY"]["task_annotations"]
    for task in (kind.task, *kind.former_tasks):
        app.extensions["celery"].tasks[task].run(task)
        assert _routed_queue(app, task) == kind.queue
        assert annotations[task] == annotations[kind.task]
    assert seen == [kind.task, *kind.former_tasks]


@pytest.fixture
def echo_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """An app whose table has one more entry: the echo kind of the tests."""
    from tests.support.echo_kind import ECHO

    monkeypatch.setattr(job_kinds, "JOB_KINDS", (*JOB_KINDS, ECHO))
    app = make_app(tmp_path / "data", ECHO_TIME_LIMIT=30.0)
    return app


def test_a_new_kind_is_one_table_entry(echo_app: Flask) -> None:
    from tests.support.echo_kind import ECHO

    # Routed to its queue, with its time limit.
    assert _routed_queue(echo_app, ECHO.task) == "echoes"
    limits = echo_app.config["CELERY"]["task_annotations"][ECHO.task]
    assert limits["time_limit"] == 30.0 and limits["soft_time_limit"] == 27.0
    assert "echoes" in config_module.queues()

    # Queued: it waits in its own queue.
    client = echo_app.test_client()
    headers = register_and_login(client)
    song = wav_bytes(sine_and_clicks(seconds=1.5))
    queued = client.post(
        "/api/v1/echoes",
        data={"file": (io.BytesIO(song), "song.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert queued.status_code == 202, queued.json
    assert queued.json["kind"] == "echo" and queued.json["queue_position"] == 1

    # It runs (eagerly here), and the list filters by it.
    echo_app.extensions["celery"].conf.task_always_eager = True
    ran = client.post(
        "/api/v1/echoes",
        data={"file": (io.BytesIO(song), "song.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert ran.status_code == 202
    job = client.get(ran.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["result"]["heard_seconds"] == pytest.approx(1.5, abs=0.01)
    listed = client.get("/api/v1/jobs?kind=echo", headers=headers).json
    assert listed["total"] == 2 and {j["kind"] for j in listed["items"]} == {"echo"}
    assert client.get("/api/v1/jobs?kind=separation", headers=headers).json["total"] == 0
    assert client.get("/api/v1/jobs?kind=nope", headers=headers).status_code == 422
    # The metrics count it in its queue.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'aimusic_queue_depth{kind="echo",queue="echoes"} 1.0' in metrics


def test_a_new_kind_gets_batches_with_no_code_of_its_own(echo_app: Flask) -> None:
    """The echo kind's route and service are all it has: ``POST /batches``
    checks its options with its form schema and submits with its service."""
    echo_app.extensions["celery"].conf.task_always_eager = True
    client = echo_app.test_client()
    headers = register_and_login(client)
    song = wav_bytes(sine_and_clicks(seconds=1.5))
    short = wav_bytes(sine_and_clicks(seconds=0.5))
    response = client.post(
        "/api/v1/batches",
        data={
            "kind": "echo",
            "file": [
                (io.BytesIO(song), "long.wav"),
                (io.BytesIO(b"<html></html>" * 40), "page.wav"),
                (io.BytesIO(short), "short.wav"),
            ],
        },
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    batch = response.json
    assert batch["kind"] == "echo" and batch["status"] == "completed_with_errors"
    assert batch["counts"]["succeeded"] == 2 and batch["counts"]["failed"] == 1
    heard = {}
    for job in batch["jobs"]:
        full = client.get(job["url"], headers=headers).json
        assert full["kind"] == "echo"
        if full["status"] == "succeeded":
            heard[job["filename"]] = full["result"]["heard_seconds"]
        else:
            assert full["error"]["code"] == "unsupported_media_type"
    assert heard == {
        "long.wav": pytest.approx(1.5, abs=0.01),
        "short.wav": pytest.approx(0.5, abs=0.01),
    }
    # Its form schema checks the batch's options: the echo form has none.
    refused = client.post(
        "/api/v1/batches",
        data={"kind": "echo", "model": "hpss", "file": [(io.BytesIO(song), "a.wav")]},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422 and "model" in refused.json["errors"]


def test_batches_take_every_kind_with_an_upload_route(app: Flask) -> None:
    from app.blueprints import batches

    uploads = {kind.name for kind in JOB_KINDS if kind.name != "generation"}
    assert set(batches.batch_kinds()) == uploads
