"""JWT callbacks: revocation lookups and 401 JSON for every token problem.

flask-jwt-extended answers 422 for malformed or forged tokens by default;
RFC 6750 and most clients expect 401, so every loader is overridden here.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g
from flask.typing import ResponseReturnValue
from flask_jwt_extended import JWTManager
from sqlalchemy import inspect, select
from sqlalchemy.orm.exc import ObjectDeletedError

from app.errors_http import error_response, handle_unexpected
from app.extensions import db
from app.records import User
from app.services import auth as auth_service

REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "type")


def register(jwt: JWTManager) -> None:
    @jwt.token_in_blocklist_loader
    def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        # An access token also dies with the refresh token it was issued from
        # ("rjti"), so logging out with either token ends the whole session.
        jtis = [payload["jti"]] + ([payload["rjti"]] if payload.get("rjti") else [])
        return auth_service.is_revoked([jti for jti in jtis if isinstance(jti, str)])

    @jwt.token_verification_loader
    def _has_claims(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        # PyJWT accepts a token without "exp" (it would never expire) or "jti"
        # (it could never be revoked); tokens we issue always carry them.
        return all(payload.get(claim) for claim in REQUIRED_CLAIMS)

    @jwt.user_lookup_loader
    def _load_user(_header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        return auth_service.load_user(payload["sub"])

    @jwt.unauthorized_loader
    def _missing(reason: str) -> ResponseReturnValue:
        return error_response(
            401,
            "Authentication required: send 'Authorization: Bearer <token>'.",
            code="unauthorized",
        )

    @jwt.invalid_token_loader
    def _invalid(reason: str) -> ResponseReturnValue:
        return error_response(401, "The token is invalid.", code="invalid_token")

    @jwt.expired_token_loader
    def _expired(_header: dict[str, Any], _payload: dict[str, Any]) -> ResponseReturnValue:
        return error_response(401, "The token has expired.", code="token_expired")

    @jwt.revoked_token_loader
    def _revoked(_header: dict[str, Any], _payload: dict[str, Any]) -> ResponseReturnValue:
        return error_response(401, "The token has been revoked.", code="token_revoked")

    @jwt.user_lookup_error_loader
    def _no_user(_header: dict[str, Any], _payload: dict[str, Any]) -> ResponseReturnValue:
        return error_response(401, "The token's user no longer exists.", code="invalid_token")

    @jwt.needs_fresh_token_loader
    def _not_fresh(_header: dict[str, Any], _payload: dict[str, Any]) -> ResponseReturnValue:
        return error_response(401, "A fresh token is required.", code="fresh_token_required")

    @jwt.token_verification_failed_loader
    def _failed(_header: dict[str, Any], _payload: dict[str, Any]) -> ResponseReturnValue:
        return error_response(401, "The token is invalid.", code="invalid_token")


def register_user_gone(app: Flask) -> None:
    app.register_error_handler(ObjectDeletedError, _user_gone)


def _user_gone(exc: ObjectDeletedError) -> ResponseReturnValue:
    """The caller's account was deleted by another API process within
    ``AUTH_CACHE_SECONDS``: this process still believed it existed
    (``auth_service.load_user``) until the route read more of the row than its
    id. The same 401 as for a token whose user is known to be gone."""
    db.session.rollback()
    user = g.get("auth_user")
    identity = inspect(user).identity if isinstance(user, User) else None
    if identity:
        found = db.session.execute(select(User.id).where(User.id == identity[0])).first()
        if found is None:
            auth_service.auth_facts().forget_user(identity[0])
            return error_response(401, "The token's user no longer exists.", code="invalid_token")
    return handle_unexpected(exc)
