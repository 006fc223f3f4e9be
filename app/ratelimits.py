"""Rate limits (flask-limiter): login and refresh per IP and per account, job
creation per user.

Limits come from the environment (``LOGIN_RATE_LIMIT``, ``REFRESH_RATE_LIMIT``,
``JOB_RATE_LIMIT``) and are read per request, so each app uses its own config.
Counters live in Redis when ``REDIS_URL`` is set (shared by every API process)
and in memory otherwise (per process). ``RATELIMIT_ENABLED=false`` turns them
off. A refused request gets ``429`` JSON with ``code: rate_limited`` and a
``Retry-After`` header.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, request
from flask.globals import request_ctx
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RateLimitExceeded

from app.errors_http import error_response

F = TypeVar("F", bound=Callable[..., Any])


def client_ip() -> str:
    """The client's address: the peer's, or behind a reverse proxy the one it
    forwarded (``TRUSTED_PROXY_HOPS``, ProxyFix in ``create_app``), else every
    client would share the proxy's limits."""
    return request.remote_addr or "unknown"


def login_account() -> str:
    """The account a login attempt names (hashed: no e-mails in Redis keys);
    empty when the body names none."""
    from app.services.auth import normalise_email

    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip():
        return ""
    return "account:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()[:32]


def authenticated_user() -> str:
    """The caller set by ``auth_required`` (the decorator runs first)."""
    user = g.get("auth_user")
    return f"user:{user.id}" if user is not None else f"ip:{client_ip()}"


def _setting(name: str) -> str:
    return str(current_app.config[name])


limiter = Limiter(key_func=client_ip)

login_per_ip = limiter.limit(lambda: _setting("LOGIN_RATE_LIMIT"), key_func=client_ip)
login_per_account = limiter.limit(
    lambda: _setting("LOGIN_RATE_LIMIT"),
    key_func=login_account,
    scope="account",
    # A body naming no account fails validation; the per-address limit counts it.
    exempt_when=lambda: not login_account(),
)
# Password checks on an authenticated route (deleting the account) count per user.
password_per_user = limiter.limit(
    lambda: _setting("LOGIN_RATE_LIMIT"), key_func=authenticated_user, scope="user"
)
refresh_per_ip = limiter.limit(lambda: _setting("REFRESH_RATE_LIMIT"), key_func=client_ip)
refresh_per_user = limiter.limit(
    lambda: _setting("REFRESH_RATE_LIMIT"), key_func=authenticated_user, scope="user"
)


def _job_created(_response: Any) -> bool:
    return bool(g.get("job_created"))


# One budget per user across every route that creates a job. Only created jobs
# spend it: a client fixing its 422s must not lock itself out. (Checked before
# the view, counted after it, so requests arriving together may pass together;
# MAX_ACTIVE_JOBS is the hard bound on what runs.)
job_creation = limiter.shared_limit(
    lambda: _setting("JOB_RATE_LIMIT"),
    scope="job-creation",
    key_func=authenticated_user,
    deduct_when=_job_created,
)

RATE_LIMITED_DOC = {"429": {"description": "Too many requests; see Retry-After."}}
JOB_CREATION_DOC = {
    "409": {"description": "storage_quota_exceeded: the user's storage quota is used up."},
    "429": {
        "description": (
            "rate_limited (JOB_RATE_LIMIT; see Retry-After) or too_many_active_jobs "
            "(MAX_ACTIVE_JOBS queued or running)."
        )
    },
}


def limit_job_creation(view: F) -> F:
    """For every route that creates a job, under ``@auth_required()``: the
    per-user JOB_RATE_LIMIT, checked before the upload is read and counted
    when the view returns (every refusal, from validation to quotas, raises);
    documented with the quota answers ``jobs.submit`` gives."""
    from flask_smorest import Blueprint

    @functools.wraps(view)
    def counted(*args: Any, **kwargs: Any) -> Any:
        answer = view(*args, **kwargs)
        g.job_created = True
        return answer

    return cast(F, Blueprint.doc(responses=JOB_CREATION_DOC)(job_creation(counted)))


def _rate_limited(exc: RateLimitExceeded) -> ResponseReturnValue:
    current = limiter.current_limit
    retry_after = 60
    if current is not None:
        reset_at = current.window[0]  # when the breached window ends (epoch seconds)
        retry_after = max(1, math.ceil(reset_at - time.time()))
    response, status = error_response(
        429,
        f"Too many requests (at most {exc.limit.limit}); retry in {retry_after} s.",
        code="rate_limited",
    )
    response.headers["Retry-After"] = str(retry_after)
    return response, status


def init_app(app: Flask) -> None:
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    if not app_wide_limits(app):
        # Flask-Limiter also checks every request before its view, for limits
        # that apply to all routes. We set none: our limits are decorators,
        # which check themselves. Without any, that check only cost every
        # request (status polls, probes) time for nothing.
        hooks = app.before_request_funcs.get(None, [])
        app.before_request_funcs[None] = [h for h in hooks if h != limiter._check_request_limit]
    # Its after-request hook (conditional deductions, rate-limit headers) and
    # its teardown only have work where a limit was checked, which is where
    # it left its state on the request context; elsewhere they created that
    # state to find it empty, on every request.
    after = app.after_request_funcs.setdefault(None, [])
    after[:] = [_when_limited(h, _limiter_hook(h)) for h in after]
    teardown = app.teardown_request_funcs.setdefault(None, [])
    teardown[:] = [_when_limited(h, _limiter_hook(h)) for h in teardown]


def _limiter_hook(hook: Any) -> bool:
    """Whether ``hook`` is one Flask-Limiter registered (its method, or a partial of one)."""
    func = hook.func if isinstance(hook, partial) else hook
    return getattr(func, "__qualname__", "").startswith(f"{Limiter.__name__}.")


def _when_limited(hook: Any, applies: bool) -> Any:
    if not applies:
        return hook

    @functools.wraps(hook)
    def run(value: Any) -> Any:
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        if not hasattr(ctx, "_limiter_request_context"):
            return value
        return hook(value)

    return run


def app_wide_limits(app: Flask) -> bool:
    """Whether any limit needs Flask-Limiter's check before every request:
    default, application-wide or meta limits (from the limiter or the config).
    Answers given before Flask's dispatch are given only without them."""
    manager = limiter.limit_manager
    configured = any(
        app.config.get(name)
        for name in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")
    )
    return bool(configured or manager.default_limits or manager.application_limits)
