"""Who is calling: one decorator for every protected route.

``@auth_required()`` accepts ``Authorization: Bearer <token>`` where the token
is either a JWT access token (checked by flask-jwt-extended: signature,
algorithm, expiry, type, revocation, user) or a personal API key (``ams_...``,
checked against its hash). Routes then read ``current_user`` from here.

Account management (API keys, deleting the account, refresh, logout) uses
``auth_required(api_keys=False)``: a leaked key cannot mint more keys or lock
its owner out. The decorator also writes the route's OpenAPI ``security``, so
the documentation always says which credentials a route takes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request
from flask_jwt_extended import decode_token, get_current_user, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_jwt_extended.internal_utils import (
    custom_verification_for_token,
    verify_token_not_blocklisted,
    verify_token_type,
)
from flask_smorest import Blueprint
from jwt import PyJWTError
from werkzeug.local import LocalProxy

from app.errors import ServiceError
from app.extensions import unverified_header
from app.records import User
from app.services import api_keys
from app.services import auth as auth_service

F = TypeVar("F", bound=Callable[..., Any])

JWT_SCHEME = "bearerAuth"
API_KEY_SCHEME = "apiKeyAuth"
METRICS_SCHEME = "metricsToken"
SECURITY_SCHEMES = {
    JWT_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/v1/auth/login.",
    },
    API_KEY_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key",
        "description": "A personal API key (ams_...) from POST /api/v1/auth/api-keys.",
    },
    # Not a user credential: the operator's METRICS_TOKEN for GET /metrics.
    METRICS_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's METRICS_TOKEN.",
    },
}
JWT_OR_API_KEY: list[dict[str, list[str]]] = [{JWT_SCHEME: []}, {API_KEY_SCHEME: []}]
JWT_ONLY: list[dict[str, list[str]]] = [{JWT_SCHEME: []}]


def unenforced_schemes(config: Any) -> set[str]:
    """Security schemes this server does not check with ``config``.

    ``/metrics`` asks for a token only when ``METRICS_TOKEN`` is set; without
    one, the OpenAPI document must not tell clients a credential is needed
    (``app/openapi.py`` drops such requirements and the scheme itself).
    """
    return set() if config.get("METRICS_TOKEN") else {METRICS_SCHEME}


def bearer_token(header: str) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (the
    scheme read case-insensitively, RFC 9110), None for any other header."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _bearer_token() -> str | None:
    return bearer_token(request.headers.get("Authorization", ""))


def caller_for_token(token: str) -> str | None:
    """The id of the account ``token`` authenticates on a route that takes
    API keys, when every check ``authenticate_request`` makes passes, else
    None. Needs an app context only, not a request: the status poll answered
    before Flask's dispatch (``app/blueprints/jobs/polling.py``) authenticates
    with it, and gives every None to the route, whose answer says what is wrong.

    The JWT checks are flask-jwt-extended's, in the order its
    ``verify_jwt_in_request`` makes them for an access token in the header:
    signature, algorithm, expiry and claims, the token's type, revocation,
    our claims check; then the user, as our user loader
    (``app/auth_callbacks.py``) finds it, but without loading it.
    """
    if api_keys.looks_like_key(token):
        try:
            user, _key = api_keys.authenticate(token)
        except ServiceError:
            return None
        return str(user.id)
    try:
        payload = decode_token(token)
        header = unverified_header(token)
        verify_token_type(payload, refresh=False)
        verify_token_not_blocklisted(header, payload)
        custom_verification_for_token(header, payload)
    except (JWTExtendedException, PyJWTError):
        return None
    user_id = payload["sub"]
    return user_id if auth_service.user_exists(user_id) else None


def authenticate_request(
    *,
    api_keys_allowed: bool = True,
    refresh: bool = False,
    verify_type: bool = True,
    locations: list[str] | None = None,
) -> User:
    """Check the request's credentials and remember the caller for ``current_user``.

    Every failure raises an error that becomes a 401 JSON (403 for an API key
    on a route that needs a login).
    """
    token = _bearer_token()
    if token is not None and api_keys.looks_like_key(token):
        # A bad key is a 401 everywhere; a good one on an account route is a 403.
        user, _key = api_keys.authenticate(token, record_use=api_keys_allowed)
        if not api_keys_allowed:
            raise ServiceError(
                "This route needs a login (access token), not an API key.",
                code="api_key_not_allowed",
                status=403,
            )
    else:
        if token is not None:
            # RFC 6750 (via RFC 9110's auth-scheme) makes "bearer" case-insensitive;
            # flask-jwt-extended compares it exactly, so it reads the canonical form.
            request.environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        verify_jwt_in_request(refresh=refresh, verify_type=verify_type, locations=locations)
        user = get_current_user()
    g.auth_user = user
    return user


def auth_required(
    *,
    api_keys: bool = True,
    refresh: bool = False,
    verify_type: bool = True,
    locations: list[str] | None = None,
) -> Callable[[F], F]:
    """Protect a view: a JWT access token, or (unless ``api_keys=False``) an API key.

    ``refresh``, ``verify_type`` and ``locations`` go to flask-jwt-extended's
    ``verify_jwt_in_request`` (refresh and logout routes; the event stream also
    takes a JWT from the query string). API keys are read from the
    ``Authorization`` header only, never from URLs, where they would be logged.
    """
    security = JWT_OR_API_KEY if api_keys else JWT_ONLY
    responses: dict[str, Any] = {
        "401": {"description": "Missing, invalid, expired or revoked credentials."}
    }
    if not api_keys:
        responses["403"] = {"description": "An API key was sent; this route needs a login."}

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            authenticate_request(
                api_keys_allowed=api_keys,
                refresh=refresh,
                verify_type=verify_type,
                locations=locations,
            )
            return view(*args, **kwargs)

        return cast(F, Blueprint.doc(security=security, responses=responses)(wrapper))

    return decorator


def _current_user() -> User:
    user = g.get("auth_user")
    if user is None:
        raise RuntimeError("current_user used on a route without @auth_required()")
    return cast(User, user)


# The authenticated user of this request (a proxy, like flask_login's).
current_user: User = cast(User, LocalProxy(_current_user))
