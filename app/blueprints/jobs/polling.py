"""The job-status poll answered before Flask's dispatch.

Polling ``GET /api/v1/jobs/{id}`` is most of what a frontend asks. Flask's
request machinery (the request object and its context, URL matching, the
before/after/teardown hooks, flask-smorest's argument and response layers) cost
a poll more than authenticating, reading the job and writing its JSON did.
``status_first`` answers the plain poll with the route's own parts: the same
credential checks (``access.caller_for_token``), the same owner-scoped read
(``jobs.peek``, without the ORM session), the same document (``JobSchema``), JSON, security headers,
request id, latency sample and access line.

Only the plain poll is answered here. Everything else goes to Flask, whose
answer says what the route says: another method or path, any query string,
``Prefer``, ``Origin`` (CORS), a request body, a script root, credentials that
do not pass, a job that is not the caller's, an error of any kind (the
database down is Flask's 503), rate limits that apply to every route, tokens
configured to come from elsewhere than the ``Authorization`` header, or hooks
registered after ``create_app`` (this answer stands in for the ones it knows).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any, cast

from flask import Flask, Response

from app import observability
from app.access import bearer_token, caller_for_token
from app.bodies import StartResponse, WsgiApp
from app.logs import request_id_from, request_id_var
from app.ratelimits import app_wide_limits
from app.security_headers import add_security_headers
from app.services import jobs as job_service
from app.services.job_document import JOB_ID, PLACEHOLDER_ID, JobSchema, path_for

log = logging.getLogger(__name__)

ENDPOINT = "jobs.get_job"


def _hooks(app: Flask) -> tuple[Any, ...]:
    """What Flask would run around the route besides the view: compared on
    every poll with what it was when ``status_first`` was set up."""
    blueprint = ENDPOINT.partition(".")[0]
    return tuple(
        tuple(registry.get(scope, ()))
        for registry in (
            app.before_request_funcs,
            app.after_request_funcs,
            app.teardown_request_funcs,
            app.url_value_preprocessors,
            app.url_default_functions,
        )
        for scope in (None, blueprint)
    )


def _header_tokens(config: Any) -> bool:
    """Whether flask-jwt-extended reads tokens where this answer does, the
    ``Authorization: Bearer`` header (its defaults, which the API keeps)."""
    locations = config.get("JWT_TOKEN_LOCATION", ("headers",))
    return (
        "headers" in ([locations] if isinstance(locations, str) else locations)
        and config.get("JWT_HEADER_NAME", "Authorization") == "Authorization"
        and config.get("JWT_HEADER_TYPE", "Bearer") == "Bearer"
    )


def status_first(app: Flask, wsgi_app: WsgiApp) -> WsgiApp:
    """``wsgi_app`` behind the plain status poll's answer. Call it once
    ``create_app`` has registered the blueprints and every hook."""
    with app.app_context():
        route = next(r for r in app.url_map.iter_rules(ENDPOINT) if "GET" in (r.methods or ()))
        prefix, _, suffix = path_for(ENDPOINT, job_id=PLACEHOLDER_ID).partition(PLACEHOLDER_ID)
    # The ids jobs get (``uuid4()`` as text); any other spelling goes to Flask.
    path_pattern = re.compile(re.escape(prefix) + f"({JOB_ID.pattern})" + re.escape(suffix))
    hooks = _hooks(app)
    # What Flask's after-request hook adds to the route's JSON: the same on every poll.
    with app.app_context():
        sample = add_security_headers(cast(Response, app.json.response({})))
    fixed = list(sample.headers.items())
    length_at = [name.lower() for name, _value in fixed].index("content-length")
    # The route's schema instance keeps its compiled dump (job_document.py).
    schema = JobSchema()

    def plain_poll(environ: dict[str, Any]) -> tuple[str, str] | None:
        """The job id and credentials of a poll this answer may take."""
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return None
        matched = path_pattern.fullmatch(environ.get("PATH_INFO", ""))
        if matched is None:
            return None
        if (
            environ.get("SCRIPT_NAME")
            or "HTTP_PREFER" in environ
            or "HTTP_ORIGIN" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
            or environ.get("CONTENT_LENGTH") not in (None, "", "0")
        ):
            return None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        if (
            token is None
            or _hooks(app) != hooks
            or app_wide_limits(app)
            or not _header_tokens(app.config)
        ):
            return None
        return matched.group(1), token

    def answer(job_id: str, token: str) -> bytes | None:
        """The route's JSON, or None for Flask to answer (inside an app context)."""
        try:
            owner_id = caller_for_token(token)
            job = job_service.peek(owner_id, job_id) if owner_id is not None else None
            if job is None:
                return None
            return cast(Response, app.json.response(schema.dump(job))).get_data()
        except Exception:
            # Flask runs the route again and answers (and logs) whatever this was.
            log.debug("status poll handed to Flask", exc_info=True)
            return None

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        poll = plain_poll(environ)
        if poll is None:
            return wsgi_app(environ, start_response)
        started = time.perf_counter()
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        reset = request_id_var.set(request_id)
        try:
            with app.app_context():
                body = answer(*poll)
            if body is not None:
                observability.record(
                    "GET", environ["PATH_INFO"], route.rule, 200, started,
                    remote_addr=environ.get("REMOTE_ADDR"),
                )  # fmt: skip
        finally:
            request_id_var.reset(reset)
        if body is None:
            return wsgi_app(environ, start_response)
        headers = [*fixed, (observability.REQUEST_ID_HEADER, request_id)]
        headers[length_at] = ("Content-Length", str(len(body)))
        start_response("200 OK", headers)
        return [body]

    return serve
