"""The OpenAPI document's error responses, made to match what the API sends.

Every error the API sends has the one JSON shape of ``app/errors_http.py``;
``ErrorSchema`` documents it in place of flask-smorest's default. No blanket
``default`` response is documented: a client (and the contract tests) can rely
on the listed status codes being the ones that occur.

A security requirement the server does not enforce with its configuration
(``unenforced_schemes`` in app/access.py: the metrics token when
``METRICS_TOKEN`` is unset) is dropped, with the route's ``401``: the document
says what this server does, not what it could be configured to do.

The errors every route of a kind can give are added here, by rule, rather than
route by route, so a new route gets them without anyone remembering to:

- a route with ``security`` answers ``401`` (missing or bad credentials);
- a route with a ``{job_id}`` in its path answers ``404`` (no such job, or not yours);
- a route with a request body answers ``413`` (over the body or upload limits),
  ``422`` (invalid fields) and, for JSON, ``400`` (not JSON at all);
- a route that takes a file upload answers ``415`` (not audio), ``503`` (the
  job queue is down) and ``507`` (no space to store the upload);
- a route that reads the job database (every route that takes a user's
  credentials, and the account routes under ``/api/v1/auth/``) answers ``503``
  while it cannot be reached (app/errors_http.py).

A route's own description of one of these codes is kept, and an error response
described by text alone gets the error shape as its content.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from apispec import BasePlugin
from flask_smorest import Api
from marshmallow import Schema, fields

from app.access import API_KEY_SCHEME, JWT_SCHEME


class ErrorSchema(Schema):
    code = fields.String(
        required=True,
        metadata={"description": "Stable machine-readable code.", "example": "not_found"},
    )
    status = fields.Integer(required=True, metadata={"description": "The HTTP status."})
    message = fields.String(required=True, metadata={"description": "For people."})
    errors = fields.Dict(
        metadata={
            "description": "Field errors (field name to messages), or the details of a limit."
        }
    )


class ServiceApi(Api):
    """flask-smorest's Api with our error shape and no blanket ``default`` response."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


UNAUTHORIZED = _error("Missing, malformed, expired or revoked credentials.")
NOT_FOUND = _error("No such job (or not yours: another user's job looks the same).")
TOO_LARGE = _error(
    "Over a size limit: `file_too_large` (MAX_UPLOAD_MB), `form_too_large` (form parts "
    "or a text field), `body_too_large` (a non-upload body over 1 MB)."
)
INVALID = _error("Invalid fields; `errors` maps each field to its messages.")
NOT_JSON = _error("The body is not valid JSON.")
NOT_AUDIO = _error("The upload is not an audio or video file (`unsupported_media_type`).")
QUEUE_DOWN = _error(
    "The job queue (`broker_unavailable`) or the job database (`service_unavailable`) "
    "is unavailable; retry shortly."
)
DATABASE_DOWN = _error(
    "The job database (or Redis, which holds revoked tokens) is unavailable "
    "(`service_unavailable`); retry after `Retry-After`."
)
NO_SPACE = _error("No space left to store the upload (`insufficient_storage`).")


def _names_a_user(operation: dict[str, Any]) -> bool:
    """Whether the operation takes a user's credentials (each names a user row)."""
    return any(
        {JWT_SCHEME, API_KEY_SCHEME} & set(requirement)
        for requirement in operation.get("security") or []
    )


def _takes_upload(operation: dict[str, Any]) -> bool:
    content = operation.get("requestBody", {}).get("content", {})
    return "multipart/form-data" in content


def _add(responses: dict[Any, Any], status: int, response: dict[str, Any]) -> None:
    if str(status) not in responses and status not in responses:
        responses[str(status)] = dict(response)


def drop_unenforced(operation: dict[str, Any], unenforced: Collection[str]) -> None:
    """Remove the security requirements that name a scheme in ``unenforced``;
    an operation left with none is open, so it documents no ``401`` either."""
    security = operation.get("security")
    if not security or not unenforced:
        return
    kept = [req for req in security if not set(req) & set(unenforced)]
    if kept == security:
        return
    if kept:
        operation["security"] = kept
    else:
        del operation["security"]
        operation.get("responses", {}).pop("401", None)
        operation.get("responses", {}).pop(401, None)


def document_errors(path: str, operation: dict[str, Any]) -> None:
    """Add the rule-based error responses to one operation of the document."""
    responses = operation.setdefault("responses", {})
    for status, response in responses.items():
        # An error described by text alone still has the error shape.
        if int(status) >= 400 and isinstance(response, dict) and "content" not in response:
            response["content"] = {"application/json": {"schema": "Error"}}
    if operation.get("security"):
        _add(responses, 401, UNAUTHORIZED)
    if "{job_id}" in path:
        _add(responses, 404, NOT_FOUND)
    body = operation.get("requestBody")
    if body:
        _add(responses, 413, TOO_LARGE)
        _add(responses, 422, INVALID)
        if "application/json" in body.get("content", {}):
            _add(responses, 400, NOT_JSON)
    if _takes_upload(operation):
        _add(responses, 415, NOT_AUDIO)
        _add(responses, 503, QUEUE_DOWN)
        _add(responses, 507, NO_SPACE)
    if _names_a_user(operation) or path.startswith("/api/v1/auth/"):
        _add(responses, 503, DATABASE_DOWN)


class ErrorResponses(BasePlugin):
    """apispec plugin applying ``drop_unenforced`` and ``document_errors`` to every operation."""

    def __init__(self, unenforced: Collection[str] = ()) -> None:
        self.unenforced = frozenset(unenforced)

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **kwargs: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            if method in {"get", "put", "post", "patch", "delete"}:
                drop_unenforced(operation, self.unenforced)
                document_errors(path or "", operation)
