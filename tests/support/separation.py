"""Separation through the API as a client does it: upload a song with form
fields, read the job, download its stems. Shared by the tests of every
separation family and of ensembles."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf
from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def post_song(
    client: FlaskClient, headers: dict[str, str], data: bytes, *pairs: tuple[str, str], **form: Any
) -> TestResponse:
    """``POST /api/v1/separations`` with ``data`` as ``song.wav``; ``pairs``
    may repeat a field (an ensemble's ``model``), ``form`` may not."""
    payload: dict[str, Any] = {"file": (io.BytesIO(data), "song.wav")}
    for key, value in [*pairs, *form.items()]:
        payload.setdefault(key, []).append(str(value))
    return client.post(
        "/api/v1/separations", data=payload, headers=headers, content_type="multipart/form-data"
    )


def separate_song(
    client: FlaskClient, headers: dict[str, str], data: bytes, *pairs: tuple[str, str], **form: Any
) -> dict[str, Any]:
    """The job a separation request created, as ``GET`` shows it (eager apps:
    already ended)."""
    response = post_song(client, headers, data, *pairs, **form)
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job is not None
    return job


def downloaded_stems(
    client: FlaskClient, headers: dict[str, str], job: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Each result file by stem, ``(channels, frames)``, at the rate it says."""
    found = {}
    for entry in job["result"]["files"]:
        body = client.get(entry["url"], headers=headers).data
        data, rate = sf.read(io.BytesIO(body), always_2d=True, dtype="float32")
        assert rate == entry["sample_rate"]
        found[entry["stem"]] = data.T
    return found
