"""Accounts and tokens as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.errors import ServiceError
from app.extensions import db
from app.records import RevokedToken, User, utcnow

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a failed login costs the same
# time whether or not the account exists.
_DUMMY_HASH = _hasher.hash("not a real password")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def register(email: str, password: str) -> User:
    user = User(email=normalise_email(email), password_hash=_hasher.hash(password))
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ServiceError(
            "An account with this e-mail already exists.", code="email_taken", status=409
        ) from None
    return user


def authenticate(email: str, password: str) -> User:
    user = db.session.execute(
        select(User).where(User.email == normalise_email(email))
    ).scalar_one_or_none()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise ServiceError("Invalid credentials.", code="invalid_credentials", status=401)
    return user


def issue_tokens(user: User) -> dict[str, Any]:
    """An access/refresh pair; the access token names its refresh token so a
    logout with either one can revoke both."""
    refresh = create_refresh_token(identity=user.id)
    refresh_jti = decode_token(refresh)["jti"]
    access = create_access_token(identity=user.id, additional_claims={"rjti": refresh_jti})
    return _token_body(access, refresh)


def refresh_access(user: User, refresh_payload: dict[str, Any]) -> dict[str, Any]:
    access = create_access_token(
        identity=user.id, additional_claims={"rjti": refresh_payload["jti"]}
    )
    return _token_body(access, None)


def _token_body(access: str, refresh: str | None) -> dict[str, Any]:
    from flask import current_app

    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return body


def revoke(payload: dict[str, Any]) -> None:
    """Revoke the presented token and, for an access token, its refresh token."""
    exp = datetime.fromtimestamp(payload["exp"], UTC).replace(tzinfo=None)
    refresh_exp = utcnow() + _refresh_lifetime()
    _revoke_jti(payload["jti"], exp)
    if payload.get("rjti"):
        _revoke_jti(payload["rjti"], refresh_exp)
    db.session.commit()


def _refresh_lifetime() -> Any:
    from flask import current_app

    return current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]


def _revoke_jti(jti: str, expires_at: datetime) -> None:
    if db.session.get(RevokedToken, jti) is None:
        db.session.add(RevokedToken(jti=jti, expires_at=expires_at))


def purge_revoked() -> int:
    """Drop revocations of tokens that have expired anyway."""
    rows = db.session.execute(select(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    count = 0
    for row in rows.scalars():
        db.session.delete(row)
        count += 1
    db.session.commit()
    return count
