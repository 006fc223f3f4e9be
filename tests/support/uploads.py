"""Uploads through the API, and what a refused one must leave behind: nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlalchemy import select as sql_select

from app.extensions import db
from app.records import Job


def upload(
    client: FlaskClient,
    headers: dict[str, str],
    data: bytes,
    name: str = "song.wav",
    content_type: str = "audio/wav",
    endpoint: str = "/api/v1/separations",
    **form: Any,
) -> Any:
    if endpoint == "/api/v1/separations":
        form.setdefault("model", "hpss")
    payload = {
        "file": (io.BytesIO(data), name, content_type),
        **{k: str(v) for k, v in form.items()},
    }
    return client.post(endpoint, data=payload, headers=headers, content_type="multipart/form-data")


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_nothing_kept(app: Flask) -> None:
    """No job row, nothing in DATA_DIR/tmp or DATA_DIR/jobs."""
    data_dir = Path(app.config["DATA_DIR"])
    assert files_under(data_dir / "tmp") == []
    assert files_under(data_dir / "jobs") == []
    with app.app_context():
        assert db.session.execute(sql_select(func.count()).select_from(Job)).scalar_one() == 0


def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["message"]
