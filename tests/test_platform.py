"""The service around the jobs: config, errors, OpenAPI, docs, health, models, migrations."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support.apps import BOTH_DATABASES, make_app


def test_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = create_app({"DATA_DIR": str(data), "SECRET_KEY": None})
    second = create_app({"DATA_DIR": str(data), "SECRET_KEY": None})
    secret_file = data / "secret_key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["JWT_SECRET_KEY"]) >= 32


def test_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="at least 32 bytes"):
        create_app({"DATA_DIR": str(tmp_path), "SECRET_KEY": "changeme"})


def test_environment_configures_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    app = create_app()
    assert app.config["MAX_CONTENT_LENGTH"] < 6 * 1024 * 1024
    assert app.config["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert app.config["CELERY"]["broker_url"] == "redis://127.0.0.1:6399/0"
    assert app.config["MODELS_DIR"] == str(tmp_path / "env-data" / "models")
    assert (tmp_path / "env-data" / "secret_key").exists()


def test_embedded_default_needs_no_redis(app: Flask) -> None:
    celery = app.extensions["celery"].conf
    assert celery.broker_url.startswith("sqla+sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")


def test_errors_are_json(client: FlaskClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json == {
        "code": "not_found",
        "status": 404,
        "message": missing.json["message"],
    }
    wrong_method = client.put("/api/v1/models")
    assert wrong_method.status_code == 405
    assert wrong_method.json["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]
    broken = client.post("/api/v1/auth/login", data="{bad", content_type="application/json")
    assert broken.status_code == 400
    assert broken.json["code"] == "bad_request"
    assert broken.json["message"] == "The request body could not be parsed."
    not_json = client.post("/api/v1/auth/login", data="x", content_type="text/plain")
    assert not_json.status_code in (415, 422)
    assert not_json.is_json


def test_internal_errors_hide_the_trace(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["code"] == "internal_error"
    assert "secret detail" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert "secret detail" in caplog.text


def test_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in (
        "/api/v1/separations",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/files/{name}",
        "/api/v1/jobs/{job_id}/archive",
        "/api/v1/models",
        "/api/v1/auth/login",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    upload = paths["/api/v1/separations"]["post"]["requestBody"]["content"]
    ref = upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][ref]
    assert "file" in schema["properties"] and "output_format" in schema["properties"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    job_schema = spec["components"]["schemas"]["Job"]["properties"]
    assert {"status", "progress", "stage", "result", "error", "metrics"} <= set(job_schema)


def test_swagger_ui_is_served_locally(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    asset = client.get("/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.data) > 100_000


def test_landing_page(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'href="/docs"' in page.get_data(as_text=True)


def test_models_catalogue(client: FlaskClient) -> None:
    body = client.get("/api/v1/models").json
    assert body["defaults"]["separation"] == "htdemucs"
    hpss = next(m for m in body["models"] if m["name"] == "hpss")
    assert hpss == {
        **hpss,
        "kind": "separation",
        "available": True,
        "default": False,
        "stems": ["harmonic", "percussive"],
    }
    names = {m["name"] for m in body["models"]}
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra"} <= names
    assert {"mdx_q", "mdx_extra_q"} <= names
    htdemucs = next(m for m in body["models"] if m["name"] == "htdemucs")
    assert htdemucs["default"] is True and htdemucs["engine"] == "demucs"
    assert htdemucs["stems"] == ["drums", "bass", "other", "vocals"]
    assert htdemucs["available"] is False  # no weights on a fresh machine
    assert body["loaded"] == []


@BOTH_DATABASES
def test_healthz_and_readyz(app: Flask, client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    checks = not_ready.json["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert checks["workers"]["ok"] is False

    from app.extensions import db
    from app.records import WorkerHeartbeat

    with app.app_context():
        db.session.add(WorkerHeartbeat(hostname="w1@test", queues="separation"))
        db.session.commit()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"]["workers"]["alive"][0]["hostname"] == "w1@test"


def test_cors_allow_list(tmp_path: Path) -> None:
    app = make_app(tmp_path / "d", CORS_ORIGINS=["https://app.example"])
    client = app.test_client()
    allowed = client.get("/api/v1/models", headers={"Origin": "https://app.example"})
    assert allowed.headers.get("Access-Control-Allow-Origin") == "https://app.example"
    denied = client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_no_cross_origin_access_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORS_ORIGINS", raising=False)
    client = make_app(tmp_path / "d").test_client()
    for origin in ("http://localhost:5000", "https://evil.example"):
        answer = client.get("/api/v1/models", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in answer.headers


@BOTH_DATABASES
def test_migrations_match_the_records(app: Flask) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True})
        assert compare_metadata(context, db.metadata) == []


@BOTH_DATABASES
def test_purge_command(runner) -> None:
    result = runner.invoke(args=["jobs", "purge-expired"])
    assert result.exit_code == 0
    assert "purged 0 expired job(s)" in result.output


def test_security_headers_on_every_response(client: FlaskClient) -> None:
    for path in ("/", "/docs", "/api/v1/models", "/api/v1/nothing", "/openapi.json"):
        response = client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
    assert "script-src 'self'" in client.get("/docs").headers["Content-Security-Policy"]


def test_the_api_process_never_imports_torch(tmp_path: Path) -> None:
    """Listing models and accepting jobs must not load torch (seconds, hundreds of MB)."""
    import subprocess
    import sys

    script = f"""
import io, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from pathlib import Path
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
app = make_app(Path({str(tmp_path)!r}) / "d")
client = app.test_client()
headers = register_and_login(client)
assert client.get("/api/v1/models").status_code == 200
for path in ("/api/v1/separations", "/api/v1/karaoke", "/api/v1/transcriptions"):
    form = {{"file": (io.BytesIO(wav_bytes(sine_and_clicks())), "s.wav")}}
    response = client.post(path, data=form, headers=headers, content_type="multipart/form-data")
    assert response.status_code == 202, response.json
print("torch" in sys.modules, "transformers" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout + out.stderr
