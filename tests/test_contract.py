"""Contract fuzzing: schemathesis against the app's own ``/openapi.json``.

Every operation in the document gets a bounded number of generated requests,
valid and invalid, sent straight to the WSGI app with a real access token. Each
response must not be a 5xx, must have a status code and content type the
document lists for that operation, and must match the documented schema;
invalid requests must be refused. Jobs created along the way stay queued: the
app publishes to its SQLite broker and no worker runs, so no model is loaded.
Hypothesis runs derandomized, so every run sends the same requests.

(Schemathesis' own pytest integration does not work with pytest 9, so the
operations are driven with Hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from argon2 import PasswordHasher
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.generation.jsonschema import strategy
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.serialization import Binary

from app.extensions import db
from app.records import WorkerHeartbeat, utcnow
from tests.support.apps import make_app, register_and_login

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES_PER_OPERATION = 25
METRICS_TOKEN = "metrics-token-for-the-contract-tests"


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """Jobs stay queued (no worker). Limits that would turn most generated
    requests into 429 or 409 are lifted so they reach the handlers; a fresh
    worker heartbeat makes /readyz answer as in a running deployment; waits
    (``?wait=``, ``Prefer: wait``) on jobs that never end are cut short; argon2
    is made cheap, since generated logins and registrations hash passwords."""
    data_dir: Path = tmp_path_factory.mktemp("contract") / "data"
    app = make_app(
        data_dir,
        RATELIMIT_ENABLED=False,
        MAX_ACTIVE_JOBS=100_000,
        MAX_STORAGE_MB=100_000,
        OPENAI_WAIT_SECONDS=0.0,
        MAX_WAIT_SECONDS=0.01,
        METRICS_TOKEN=METRICS_TOKEN,
        WORKER_HEARTBEAT_SECONDS=3600.0,
    )
    with app.app_context():
        db.session.add(WorkerHeartbeat(hostname="contract@test", queues="separation"))
        db.session.commit()
        assert db.session.get(WorkerHeartbeat, "contract@test").seen_at <= utcnow()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.services.auth._hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        yield app


def _plain(value: Any) -> Any:
    """``value`` with schemathesis's ``Binary`` (a ``str`` subclass standing
    for a file's bytes) as the plain string it stands for in JSON Schema."""
    if isinstance(value, Binary):
        return ""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@pytest.fixture(autouse=True)
def _binary_tolerant_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemathesis 4.32.5 filters generated values with jsonschema-rs, which
    raises "Unsupported type: 'Binary'" on a multipart form holding a file
    (whether it does depends on the draw): the value is checked as JSON
    Schema sees it instead, a file field as a string."""
    real = strategy._validator

    def validator(schema: Any) -> Any:
        is_valid = real(schema)
        return lambda value: is_valid(_plain(value))

    monkeypatch.setattr(strategy, "_validator", validator)


@pytest.fixture(scope="module")
def fuzz_headers(fuzz_app: Flask) -> dict[str, str]:
    return register_and_login(fuzz_app.test_client())


def _headers_for(path: str, app: Flask, headers: dict[str, str]) -> dict[str, str]:
    if path == "/api/v1/auth/logout":
        # Logging out revokes the session: give it one of its own.
        return register_and_login(app.test_client())
    if path == "/metrics":
        return {"Authorization": f"Bearer {METRICS_TOKEN}"}
    return headers


def _fuzz_operation(
    operation: Any, mode: GenerationMode, app: Flask, headers: dict[str, str]
) -> str | None:
    """Run one operation's generated requests; the (shrunk) failure, if any."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # the same requests on every run
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            headers=_headers_for(case.operation.path, app, headers), checks=CHECKS
        )

    try:
        run()
    except Unsatisfiable:
        return None  # nothing in the operation can be made invalid (no parameters)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group of failures
        return f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"
    return None


def test_api_honours_its_openapi_document(fuzz_app: Flask, fuzz_headers: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    # Schemathesis also draws literals from the app's Python source: any edit
    # of the code would change the requests. They come from the document alone.
    schema.config.analysis.constants.enabled = False
    # An invalid request refused as too large (413: a form of too many parts,
    # an oversized field) is refused all the same.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, "the document lists the API's operations"
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := _fuzz_operation(operation, mode, fuzz_app, fuzz_headers)) is not None
    ]
    assert not failures, "\n\n".join(failures)
