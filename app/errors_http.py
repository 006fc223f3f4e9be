"""Every error a client sees is JSON in one shape, never an HTML page or a trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from app import database
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
    412: "precondition_failed",
    413: "file_too_large",
    # 414, 417, 431 and 501 come from gunicorn, before the app (app/serving.py).
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    417: "expectation_failed",
    422: "validation_error",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


def error_body(
    status: int, message: str, code: str | None = None, errors: Any = None
) -> dict[str, Any]:
    """The one error shape, for the app's answers and gunicorn's alike."""
    body: dict[str, Any] = {
        "code": code
        or STATUS_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_")),
        "status": status,
        "message": message,
    }
    if errors:
        body["errors"] = errors
    return body


def error_response(
    status: int, message: str, code: str | None = None, errors: Any = None
) -> tuple[Response, int]:
    return jsonify(error_body(status, message, code, errors)), status


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
    code = None
    if status == 413:
        code, message = _too_large()
    response = error_response(status, message, code=code, errors=errors)
    # Headers the exception carries matter to clients: Allow (405),
    # Content-Range (416), Retry-After (429, 503).
    resp, resp_status = response
    for name in ("Allow", "Content-Range", "Retry-After"):
        value = exc.get_response().headers.get(name)
        if value:
            resp.headers[name] = value
    return resp, resp_status


def _too_large() -> tuple[str, str]:
    """Which limit a ``413`` from Werkzeug hit, as ``(code, message)``.

    Werkzeug raises the same exception for a body over ``max_content_length``,
    too many multipart parts and an oversized text field; the request tells
    which: a known length over the limit, or a length-less (chunked) body that
    used up its limited stream, is the size; anything else is the form.
    """
    from flask import current_app, request
    from werkzeug.wsgi import LimitedStream

    config = current_app.config
    limit = request.max_content_length
    length = request.content_length
    stream = request.__dict__.get("stream")  # set once the body was read
    if length is not None:
        over = limit is not None and length > limit
    else:  # chunked: the stream was limited to max_content_length and used up
        over = isinstance(stream, LimitedStream) and stream.is_exhausted
    if request.mimetype != "multipart/form-data":
        return "body_too_large", f"The request body is larger than {(limit or 0) // 1024} KB."
    batch = request.endpoint == "batches.create_batch"  # its limits are its own
    if over and batch:
        return (
            "batch_too_large",
            f"The batch is larger than the limit of {config['MAX_BATCH_UPLOAD_MB']} MB "
            "(MAX_BATCH_UPLOAD_MB); split it.",
        )
    if over:
        return (
            "file_too_large",
            f"The upload is larger than the limit of {config['MAX_UPLOAD_MB']} MB.",
        )
    return "form_too_large", (
        f"The form has more than {request.max_form_parts} parts or a text field "
        f"over {config['MAX_FORM_MEMORY_SIZE'] // 1024} KB."
    )


def _handle_service_error(exc: ServiceError) -> ResponseReturnValue:
    response, status = error_response(exc.status, exc.message, code=exc.code, errors=exc.errors)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response, status


def _handle_redis_down(exc: Exception) -> ResponseReturnValue:
    # Redis holds rate-limit counters and revoked tokens when REDIS_URL is set:
    # without it those checks cannot be made, so the request is refused (never
    # waved through) with a 503 the client can retry.
    log.warning("Redis unavailable: %s", exc)
    resp, code = error_response(
        503, "A backing service is unavailable; try again shortly.", code="service_unavailable"
    )
    resp.headers["Retry-After"] = "5"
    return resp, code


def _handle_database_error(exc: Exception) -> ResponseReturnValue:
    # The job database unreachable (PostgreSQL restarting, SQLite locked past
    # its busy timeout): a 503 the client can retry, like Redis above. The
    # session is rolled back so this request's thread starts clean; the pool
    # drops the dead connection and pool_pre_ping replaces it once the server
    # is back, so the API recovers by itself. Any other database error is a bug.
    database.reset_session()
    if not database.is_unavailable(exc):
        return _handle_schema_not_current(exc)
    log.warning("Database unavailable: %s", database.describe(exc))
    resp, code = error_response(
        503, "The job database is unavailable; try again shortly.", code="service_unavailable"
    )
    resp.headers["Retry-After"] = "5"
    return resp, code


def _handle_os_error(exc: OSError) -> ResponseReturnValue:
    # A full data volume while Werkzeug spools an upload to DATA_DIR/tmp (the
    # spool file is anonymous, so nothing is left behind): a clear 507.
    from app.storage import NO_SPACE_ERRNOS

    if exc.errno in NO_SPACE_ERRNOS:
        log.warning("No space left for a request: %s", exc)
        return error_response(
            507,
            "The server has no space left to store the upload; try again later.",
            code="insufficient_storage",
        )
    return handle_unexpected(exc)


def _handle_schema_not_current(exc: Exception) -> ResponseReturnValue:
    # A database error that is not an outage. A missing table or column most
    # often means the API runs before `flask db upgrade`: say so (503, the
    # operator's to fix) instead of a 500; anything else is a bug.
    from app.extensions import db
    from app.schema_version import schema_state

    try:
        db.session.rollback()
        state = schema_state(db.session.connection())
    except Exception:  # the database is not even reachable: not a schema problem
        db.session.rollback()
        return handle_unexpected(exc)
    if state.current:
        return handle_unexpected(exc)
    log.error("Request refused: %s", state.describe())
    resp, code = error_response(503, state.describe(), code="schema_not_current")
    resp.headers["Retry-After"] = "30"
    return resp, code


def handle_unexpected(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    log.exception("Unhandled error while serving a request")
    return error_response(500, "An internal error occurred; it has been logged.")


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(ServiceError, _handle_service_error)
    app.register_error_handler(RedisError, _handle_redis_down)
    app.register_error_handler(sa_exc.DBAPIError, _handle_database_error)
    app.register_error_handler(sa_exc.TimeoutError, _handle_database_error)
    app.register_error_handler(OSError, _handle_os_error)
    app.register_error_handler(Exception, handle_unexpected)
