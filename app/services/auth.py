"""Accounts and tokens as plain functions."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from redis import Redis
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached

from app.errors import ServiceError
from app.extensions import db
from app.records import Job, RevokedToken, User, utcnow

_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a failed login costs the same
# time whether or not the account exists.
_DUMMY_HASH = _hasher.hash("not a real password")


def normalise_email(email: str) -> str:
    return email.strip().lower()


PASSWORD_MIN_LENGTH = 10
# Frequent passwords of at least PASSWORD_MIN_LENGTH characters (from public
# breach top lists); shorter ones already fail the length rule.
_COMMON = """
    1234567890 0123456789 0987654321 1111111111 0000000000 1234512345 1122334455
    12345678910 123456789a 123456789q a123456789 qwertyuiop qwertyuiop123 qwerty1234
    qwerty12345 qwerty123456 1q2w3e4r5t 1q2w3e4r5t6y 1qaz2wsx3edc zaq12wsxcde qazwsxedc123
    asdfghjkl1 asdfghjkl123 zxcvbnm123 abcdefghij abcd123456 abc1234567 password12
    password123 password1234 password12345 passw0rd123 p@ssw0rd123 passwordpassword
    iloveyou12 iloveyou123 letmein123 welcome123 welcome1234 changeme123 administrator
    admin12345 admin123456 trustno1234 football123 baseball123 princess123 sunshine123
    superman123 starwars123 dragon1234 monkey1234 michael123 jennifer123 whatever123
    computer123 internet123 basketball soccer1234 liverpool1 chelsea123 charlie123
    qwertyuiopasdfghjkl 1234567890qwerty correcthorsebatterystaple
"""
COMMON_PASSWORDS = frozenset(_COMMON.split())


def password_problems(email: str, password: str) -> list[str]:
    """Why a password is refused (empty when it is fine): too short, the
    e-mail itself, one repeated character, or on the common-passwords list."""
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(f"Use at least {PASSWORD_MIN_LENGTH} characters.")
    folded = password.strip().lower()
    address = normalise_email(email)
    if folded in {address, address.split("@", 1)[0]}:
        problems.append("The password must not be your e-mail address.")
    if len(set(password)) == 1:
        problems.append("The password must not repeat a single character.")
    if folded in COMMON_PASSWORDS or folded.replace(" ", "") in COMMON_PASSWORDS:
        problems.append("This password is too common; choose another one.")
    return problems


def register(email: str, password: str) -> User:
    problems = password_problems(email, password)
    if problems:
        raise ServiceError(
            "The request has invalid fields.",
            code="validation_error",
            status=422,
            errors={"password": problems},
        )
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
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return body


REVOKED_KEY = "ams:revoked:"


def _redis() -> Redis | None:
    """The Redis client holding revoked token ids, when ``REDIS_URL`` is set."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    client = current_app.extensions.get("auth_redis")
    if client is None:
        client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        current_app.extensions["auth_redis"] = client
    return client


def revoke(payload: dict[str, Any]) -> None:
    """Revoke the presented token and, for an access token, its refresh token.

    Each revocation is kept as long as the token could still be used: in Redis
    as a key with that TTL when ``REDIS_URL`` is set, in the database otherwise
    (rows past their expiry are purged).
    """
    now = utcnow()
    entries = [(payload["jti"], datetime.fromtimestamp(payload["exp"], UTC).replace(tzinfo=None))]
    if payload.get("rjti"):
        # The refresh token's own expiry is not in the access token: its
        # longest possible remaining life is used.
        entries.append((payload["rjti"], now + _refresh_lifetime()))
    auth_facts().mark_revoked([jti for jti, _expires in entries])
    client = _redis()
    if client is not None:
        pipe = client.pipeline()
        for jti, expires_at in entries:
            ttl = max(1, math.ceil((expires_at - now).total_seconds()))
            pipe.set(REVOKED_KEY + jti, "1", ex=ttl)
        pipe.execute()
        return
    for jti, expires_at in entries:
        _revoke_jti(jti, expires_at)
    db.session.commit()


def is_revoked(jtis: list[str]) -> bool:
    """Whether any of these token ids was revoked. With Redis down this raises
    (the request gets a 503) rather than letting a revoked token through.

    A token found not revoked is believed so for ``AUTH_CACHE_SECONDS``
    (``AuthFacts``): a revocation made by another process is seen within that
    bound, one made by this process at once.
    """
    facts = auth_facts()
    known = facts.revoked(jtis)
    if known is not None:
        return known
    client = _redis()
    if client is not None:
        revoked = int(client.exists(*(REVOKED_KEY + jti for jti in jtis))) > 0
    else:
        found = db.session.execute(select(RevokedToken.jti).where(RevokedToken.jti.in_(jtis)))
        revoked = found.first() is not None
    if not revoked:
        facts.not_revoked(jtis)
    return revoked


class AuthFacts:
    """What an API process recently learnt about tokens and users, so that a
    client polling every second does not cost a revocation lookup and a user
    read on every request.

    "Not revoked" and "the user exists" are believed for ``ttl`` seconds after
    they were read; a revocation or an account deletion made in this process
    is known at once, one made in another process within ``ttl``. A revoked
    token stays refused. ``ttl`` 0 turns the cache off. Bounded in size.
    """

    def __init__(self, ttl: float, size: int = 10000) -> None:
        self.ttl = ttl
        self.size = size
        self._jtis: dict[str, tuple[bool, float]] = {}
        self._users: dict[str, float] = {}
        self._lock = threading.Lock()

    def revoked(self, jtis: list[str]) -> bool | None:
        """True if one of ``jtis`` is known revoked, False if all are recently
        known not revoked, None when the store must be asked."""
        if self.ttl <= 0:
            return None
        now = time.monotonic()
        fresh = True
        with self._lock:
            for jti in jtis:
                fact = self._jtis.get(jti)
                if fact is not None and fact[0]:
                    return True
                if fact is None or now - fact[1] > self.ttl:
                    fresh = False
        return False if fresh else None

    def not_revoked(self, jtis: list[str]) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._bound(self._jtis)
            for jti in jtis:
                if not self._jtis.get(jti, (False, 0.0))[0]:
                    self._jtis[jti] = (False, now)

    def mark_revoked(self, jtis: list[str]) -> None:
        with self._lock:
            self._bound(self._jtis)
            for jti in jtis:
                self._jtis[jti] = (True, time.monotonic())

    def user_seen(self, user_id: str) -> bool:
        if self.ttl <= 0:
            return False
        with self._lock:
            seen = self._users.get(user_id)
        return seen is not None and time.monotonic() - seen <= self.ttl

    def saw_user(self, user_id: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._bound(self._users)
            self._users[user_id] = time.monotonic()

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)

    def _bound(self, entries: dict[str, Any]) -> None:
        """Room for one more entry: past the size, the oldest insertions go."""
        while len(entries) >= self.size:
            del entries[next(iter(entries))]


def auth_facts() -> AuthFacts:
    """This app's ``AuthFacts`` (one per app: tests build several, each with its
    own database)."""
    facts = current_app.extensions.get("auth_facts")
    if facts is None:
        # setdefault: two requests arriving first together share one.
        facts = current_app.extensions.setdefault(
            "auth_facts", AuthFacts(float(current_app.config.get("AUTH_CACHE_SECONDS") or 0))
        )
    return facts


def load_user(user_id: str) -> User | None:
    """The user a token names, None when there is no such account.

    Within ``AUTH_CACHE_SECONDS`` of having read it, the row is not read again:
    the user is attached to the session with only its id, and the rest of the
    row is loaded when a route reads it (a status poll reads only the id).
    """
    facts = auth_facts()
    if facts.user_seen(user_id):
        user = db.session.identity_map.get((User, (user_id,), None))
        if user is None:
            user = User(id=user_id)
            make_transient_to_detached(user)
            db.session.add(user)
        return user
    user = db.session.get(User, user_id)
    if user is not None:
        facts.saw_user(user_id)
    return user


def user_exists(user_id: str) -> bool:
    """What ``load_user`` answers about the account a token names, for a
    caller that needs only the id: within ``AUTH_CACHE_SECONDS`` of having
    read it, without touching the session at all."""
    return auth_facts().user_seen(user_id) or load_user(user_id) is not None


def _refresh_lifetime() -> Any:
    return current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]


def _revoke_jti(jti: str, expires_at: datetime) -> None:
    if db.session.get(RevokedToken, jti) is None:
        db.session.add(RevokedToken(jti=jti, expires_at=expires_at))


def delete_account(user: User, password: str) -> None:
    """Delete an account after checking its password: every job (canceled
    first if active) with its files, every API key, then the user. Tokens and
    keys of the account stop working at once (their user no longer exists)."""
    from app.services import jobs

    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise ServiceError("The password is wrong.", code="invalid_password", status=403) from None
    job_ids = db.session.execute(select(Job.id).where(Job.owner_id == user.id)).scalars().all()
    for job_id in job_ids:
        with contextlib.suppress(jobs.NotFound):  # deleted meanwhile
            jobs.delete(user, job_id)
    record = db.session.get(User, user.id)
    if record is not None:
        db.session.delete(record)
        db.session.commit()
    auth_facts().forget_user(user.id)


def purge_revoked() -> int:
    """Drop revocations of tokens that have expired anyway."""
    rows = db.session.execute(select(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    count = 0
    for row in rows.scalars():
        db.session.delete(row)
        count += 1
    db.session.commit()
    return count
