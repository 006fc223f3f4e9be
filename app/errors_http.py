"""Every error a client sees is JSON in one shape, never an HTML page or a trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from app.errors import ServiceError

log = logging.getLogger(__name__)

# HTTP status -> stable machine code, for errors raised as plain HTTP exceptions.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "file_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(
    status: int, message: str, code: str | None = None, errors: Any = None
) -> ResponseReturnValue:
    body: dict[str, Any] = {
        "code": code
        or STATUS_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_")),
        "status": status,
        "message": message,
    }
    if errors:
        body["errors"] = errors
    return jsonify(body), status


def _handle_http_exception(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    errors = None
    data = getattr(exc, "data", None) or {}
    # webargs/flask-smorest put field errors in data["messages"], keyed by location.
    messages = data.get("messages")
    if isinstance(messages, dict):
        # Flatten {"json": {...}} / {"form": {...}} into one field map.
        errors = {}
        for part in messages.values():
            if isinstance(part, dict):
                errors.update(part)
            else:
                errors.setdefault("_schema", part)
    message = data.get("message") or exc.description or HTTPStatus(status).phrase
    if status == 422 and errors:
        message = "The request has invalid fields."
    elif status == 400 and errors:
        message = "The request body could not be parsed."
    if status == 413:
        from flask import current_app

        message = (
            f"The upload is larger than the limit of {current_app.config['MAX_UPLOAD_MB']} MB."
        )
    response = error_response(status, message, errors=errors)
    # Headers the exception carries matter to clients: Allow (405),
    # Content-Range (416), Retry-After (429, 503).
    resp, code = response  # type: ignore[misc]
    for name in ("Allow", "Content-Range", "Retry-After"):
        value = exc.get_response().headers.get(name)
        if value:
            resp.headers[name] = value
    return resp, code


def _handle_service_error(exc: ServiceError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message, code=exc.code, errors=exc.errors)


def _handle_unexpected(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    log.exception("Unhandled error while serving a request")
    return error_response(500, "An internal error occurred; it has been logged.")


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(ServiceError, _handle_service_error)
    app.register_error_handler(Exception, _handle_unexpected)
