"""The Flask application factory, and what every app it builds installs.

Kept out of ``app/__init__.py`` so that importing a light module of the
package (``app.audio`` in the probe's fork server) does not import Flask,
SQLAlchemy and the API; ``from app import create_app`` still works.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, cast

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from app import config as config_module
from app.bodies import BoundedBody, CloseAfterUnreadBody, StartResponse, WsgiApp
from app.extensions import cors, db, jwt, migrate
from app.json_bodies import JSONProvider
from app.openapi import ErrorResponses, ServiceApi
from app.schema_version import MIGRATIONS_DIR
from app.security_headers import API_CSP, SECURITY_HEADERS, add_security_headers
from app.security_headers import HTML_CSP as HTML_CSP  # re-exported: app.HTML_CSP


class UploadRequest(Request):
    """Spools uploaded files into ``DATA_DIR/tmp`` instead of ``/tmp``.

    Werkzeug writes every file part over 500 KB to a temporary file; keeping
    those on the data volume means the upload is streamed to the same disk the
    job folder lives on, and a full data disk shows up as one clear error.
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        from flask import current_app

        tmp_dir = Path(current_app.config["DATA_DIR"]) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryFile(dir=tmp_dir, prefix="upload-")

    @property
    def max_content_length(self) -> int | None:
        """``MAX_CONTENT_LENGTH`` for multipart uploads, ``MAX_BODY_BYTES`` for
        any other body: JSON and urlencoded bodies are read into memory whole,
        so they must not get the upload limit of hundreds of megabytes."""
        from flask import current_app

        limit = Request.max_content_length.fget(self)  # type: ignore[attr-defined]  # the class attribute is the property
        if self._max_content_length is not None or self.mimetype == "multipart/form-data":
            return limit
        body_limit = current_app.config.get("MAX_BODY_BYTES") if current_app else None
        if body_limit is None:
            return limit
        return body_limit if limit is None else min(limit, body_limit)

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        Request.max_content_length.fset(self, value)  # type: ignore[attr-defined]  # the class attribute is the property

    @cached_property
    def stream(self) -> IO[bytes]:
        """A chunked body over the limit is refused, not cut off at it
        (app/bodies.py): Werkzeug limits a body without Content-Length to
        ``max_content_length`` and reads it whole only up to there."""
        stream = Request.stream.fget(self)  # type: ignore[attr-defined]  # the class attribute is the cached_property
        if self.content_length is None and isinstance(stream, LimitedStream):
            # A LimitedStream is a binary io.IOBase, only not declared as IO[bytes].
            return cast(
                IO[bytes], BoundedBody(self.environ["wsgi.input"], stream.limit, is_max=True)
            )
        return stream


class ServiceFlask(Flask):
    """Flask, with ``ensure_sync`` remembered per function.

    Flask asks ``inspect.iscoroutinefunction`` of every hook and view on every
    request (about ten a request here) to learn whether to run it through
    ``async_to_sync``; the answer never changes for a function. Bounded, for
    per-request callables (``after_this_request``).
    """

    SYNC_CACHE_SIZE = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Any, Any] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return cast(Callable[..., Any], self._sync[func])
        except (KeyError, TypeError):  # TypeError: an unhashable callable
            sync = super().ensure_sync(func)
        try:
            if len(self._sync) >= self.SYNC_CACHE_SIZE:
                self._sync.clear()
            self._sync[func] = sync
        except TypeError:
            pass
        return sync


class NoSessions(SecureCookieSessionInterface):
    """No cookie sessions: the API authenticates every request by its bearer
    credentials and keeps nothing in ``flask.session``. Flask's default reads
    and verifies a session cookie on every request all the same; here every
    request gets the null session, which refuses writes."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        return None


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """API and workers write the same SQLite file: WAL and a busy timeout keep
    them from failing with "database is locked" under concurrent jobs."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Text or JSON lines on stderr, with request and job ids (app/logs.py)."""
    from app import logs

    logs.configure(level, log_format)


LIVENESS_PATH = "/healthz"


def liveness_first(app: Flask, wsgi_app: WsgiApp) -> WsgiApp:
    """``GET``/``HEAD /healthz`` answered before Flask dispatches: the answer
    the health blueprint's route gives (its body, the security headers, an
    ``X-Request-ID``), with its latency sample and (DEBUG) log line, but
    without a request context, URL matching and the before/after hooks.
    Probes and load balancers ask every few seconds per API process, and
    the dispatch cost several times what this answer does. Anything else
    (another method, a trailing slash) goes to Flask, which answers as the
    route and the OpenAPI document say.
    """
    from app import observability
    from app.logs import request_id_from

    with app.app_context():  # the JSON the route's response would carry
        body = cast(Response, app.json.response({"status": "ok"})).get_data()
    fixed = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *SECURITY_HEADERS.items(),
        ("Content-Security-Policy", API_CSP),
    ]

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO") != LIVENESS_PATH or method not in ("GET", "HEAD"):
            return wsgi_app(environ, start_response)
        started = time.perf_counter()
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        start_response("200 OK", [*fixed, (observability.REQUEST_ID_HEADER, request_id)])
        observability.record(
            method, LIVENESS_PATH, LIVENESS_PATH, 200, started,
            remote_addr=environ.get("REMOTE_ADDR"),
        )  # fmt: skip
        return [b""] if method == "HEAD" else [body]

    return serve


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application; ``config`` overrides settings read from the environment."""
    # The package's name, not this module's: the app's name, logger and root
    # path (app/static) stay what they were when the factory lived in app/__init__.py.
    app = ServiceFlask("app")
    app.request_class = UploadRequest
    app.session_interface = NoSessions()
    app.json = JSONProvider(app)

    settings = config_module.from_environment()
    settings.update(config or {})
    app.config.update(config_module.finalise(settings))
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    from app import observability

    observability.init_app(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    jwt.init_app(app)
    # One Api (and OpenAPI document) per app: a shared one would mix the specs
    # of apps created side by side, as tests do.
    from app.access import unenforced_schemes

    plugin = ErrorResponses(unenforced=unenforced_schemes(app.config))
    api = ServiceApi(app, spec_kwargs={"extra_plugins": [plugin]})
    app.extensions["api"] = api
    cors.init_app(
        app,
        resources={
            r"/api/*": {"origins": app.config["CORS_ORIGINS"]},
            r"/v1/*": {"origins": app.config["CORS_ORIGINS"]},
        },
        expose_headers=[
            "Location",
            "Content-Disposition",
            "Content-Range",
            "Accept-Ranges",
            "Retry-After",
        ],
        supports_credentials=False,
        always_send=False,
    )

    from app import auth_callbacks, errors_http

    auth_callbacks.register(jwt)
    errors_http.register(app)
    auth_callbacks.register_user_gone(app)

    from app import ratelimits

    ratelimits.init_app(app)

    from app.blueprints import register_blueprints

    register_blueprints(app, api)

    from app.celery_app import celery_init_app

    celery_init_app(app)

    from app.cli import register_cli

    register_cli(app)
    app.after_request(add_security_headers)
    from app.blueprints.jobs.polling import status_first

    app.wsgi_app = status_first(app, app.wsgi_app)  # type: ignore[method-assign, assignment]  # Flask documents wrapping wsgi_app for middleware
    hops = int(app.config.get("TRUSTED_PROXY_HOPS") or 0)
    if hops:
        # Behind a proxy every request comes from the proxy's address: rate
        # limits per address and the access log need the client's. Only the
        # last `hops` entries are believed, the ones our own proxies appended.
        # Outside the status poll's answer, which logs the client's address.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # Flask documents wrapping wsgi_app for middleware
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    app.wsgi_app = liveness_first(app, app.wsgi_app)  # type: ignore[method-assign, assignment]  # Flask documents wrapping wsgi_app for middleware
    app.wsgi_app = CloseAfterUnreadBody(app.wsgi_app)  # type: ignore[method-assign]  # Flask documents wrapping wsgi_app for middleware
    return app
