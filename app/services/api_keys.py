"""Personal API keys for scripts, as plain functions.

A key is shown once, when it is created; only its SHA-256 is stored (plus a
short prefix so people can tell their keys apart). A fast hash is enough here:
the key is 32 random bytes, not a password, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from app.errors import ServiceError
from app.extensions import db
from app.records import ApiKey, User, utcnow

KEY_PREFIX = "ams_"
DISPLAY_CHARS = 12  # "ams_" + 8 characters of the random part
MAX_KEYS_PER_USER = 50
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class InvalidApiKey(ServiceError):
    code = "invalid_api_key"
    status = 401


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(owner: User, name: str, expires_in_days: int | None = None) -> tuple[ApiKey, str]:
    """Make a key for ``owner``; returns the record and the key (never stored)."""
    active = db.session.execute(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.owner_id == owner.id, ApiKey.revoked_at.is_(None))
    ).scalar_one()
    if active >= MAX_KEYS_PER_USER:
        raise ServiceError(
            f"You already have {MAX_KEYS_PER_USER} active API keys; revoke one first.",
            code="too_many_api_keys",
            status=409,
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    record = ApiKey(
        owner_id=owner.id,
        name=name,
        prefix=key[:DISPLAY_CHARS],
        key_hash=hash_key(key),
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(record)
    db.session.commit()
    return record, key


def list_keys(owner: User) -> list[ApiKey]:
    rows = db.session.execute(
        select(ApiKey).where(ApiKey.owner_id == owner.id).order_by(ApiKey.created_at.desc())
    )
    return list(rows.scalars())


def revoke(owner: User, key_id: str) -> None:
    """Revoke one of the owner's keys; another user's key id is a plain 404."""
    record = db.session.execute(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.owner_id == owner.id)
    ).scalar_one_or_none()
    if record is None:
        raise ServiceError("No API key with this id.", code="not_found", status=404)
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        db.session.commit()


def authenticate(key: str, *, record_use: bool = True) -> tuple[User, ApiKey]:
    """The user a presented key belongs to, or InvalidApiKey.

    Unknown, revoked and expired keys all get the same answer. Keys die with
    their user (the rows are deleted with the account). ``record_use`` updates
    ``last_used_at`` (at most once per LAST_USED_RESOLUTION).
    """
    record = db.session.execute(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key))
    ).scalar_one_or_none()
    now = utcnow()
    if (
        record is None
        or record.revoked_at is not None
        or (record.expires_at is not None and record.expires_at <= now)
    ):
        raise InvalidApiKey("The API key is invalid, expired or revoked.")
    user = db.session.get(User, record.owner_id)
    if user is None:
        raise InvalidApiKey("The API key is invalid, expired or revoked.")
    if record_use:
        _touch(record, now)
    return user, record


def _touch(record: ApiKey, now: datetime) -> None:
    """Record use at most once per LAST_USED_RESOLUTION, so a script polling a
    job does not turn every read into a database write."""
    threshold = now - LAST_USED_RESOLUTION
    if record.last_used_at is not None and record.last_used_at > threshold:
        return
    db.session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == record.id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= threshold),
        )
        .values(last_used_at=now)
    )
    db.session.commit()
