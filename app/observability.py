"""Per-request observability: a request id, one log line and one latency sample.

Every request gets an id (the caller's ``X-Request-ID`` when it is sane, else a
new one), echoed in the ``X-Request-ID`` response header and carried by every
log line written while the request runs, so one id ties a client's error report
to the server's logs. Each request is logged once with its method, path, route,
status and duration, and its latency is observed in the
``aimusic_http_request_duration_seconds`` histogram by route template (never by
raw path, which would make one series per job id).
"""

from __future__ import annotations

import contextlib
import logging
import time

from flask import Flask, Response, g, request

from app import metrics
from app.logs import request_id_from, request_id_var

log = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes arrive every few seconds: logged at DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Every metric label must come from a bounded set: each new value is a new
# series, kept in memory and in the metrics files for the life of the process.
# A method is whatever token a client sends, so only the standard ones are kept.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def method_label(method: str) -> str:
    return method if method in STANDARD_METHODS else "other"


def init_app(app: Flask) -> None:
    """Register first, so the timing spans the other hooks too."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_reset)


def _start() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.request_id_token = request_id_var.set(g.request_id)


def _finish(response: Response) -> Response:
    started = g.get("request_started")
    if started is None:
        return response
    response.headers[REQUEST_ID_HEADER] = g.request_id
    req = request._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy: read it once
    record(
        req.method,
        req.path,
        req.url_rule.rule if req.url_rule is not None else "<unmatched>",
        response.status_code,
        started,
        remote_addr=req.remote_addr,
        bytes_in=req.content_length,
    )
    return response


def record(
    method: str,
    path: str,
    route: str,
    status: int,
    started: float,
    *,
    remote_addr: str | None,
    bytes_in: int | None = None,
) -> None:
    """The latency sample and the log line of one answered request (also for
    the answers given before Flask sees a request, ``liveness_first``)."""
    seconds = time.perf_counter() - started
    metrics.observe_request(method_label(method), route, status, seconds)
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "%s %s %s %.1f ms",
            method,
            path,
            status,
            seconds * 1000,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "remote_addr": remote_addr,
                "bytes_in": bytes_in,
            },
        )


def _reset(_exc: BaseException | None = None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        # ValueError: set in another context (an async view), nothing to undo.
        with contextlib.suppress(ValueError):
            request_id_var.reset(token)
