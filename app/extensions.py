"""Extension objects, created unbound and initialised in ``create_app``."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any

from flask import Flask
from flask_cors import CORS
from flask_jwt_extended import JWTManager, view_decorators
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class VerifiedTokens:
    """Tokens whose signature and claims were verified, with their claims: a
    client polling with the same token is not verified again on every request.

    Only what cannot change for a given token and key is remembered: a hit is
    still refused once the token has expired (it is then decoded afresh, which
    raises the usual error), and revocation and the user are checked on every
    request as before. The key is part of the cache key, so a token signed for
    another app or an older secret never matches. Bounded: the least recently
    used entry goes first.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], leeway: float) -> dict[str, Any] | None:
        with self._lock:
            claims = self._entries.get(key)
            if claims is None:
                return None
            self._entries.move_to_end(key)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time() - leeway:
            return None
        return dict(claims)

    def put(self, key: tuple[Any, ...], claims: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = dict(claims)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@functools.lru_cache(maxsize=4096)
def _unverified_header(encoded_token: str) -> dict[str, Any]:
    return dict(_library_unverified_header(encoded_token))


_library_unverified_header = view_decorators.get_unverified_jwt_headers


def unverified_header(encoded_token: str) -> dict[str, Any]:
    """flask-jwt-extended's ``get_unverified_jwt_headers``, remembered per token
    string (it is a function of the string alone; one that does not parse
    raises every time, as before). Its request check parses the header again
    after the token was verified, which cost a poll as much as the rest of
    the token handling once verification was cached."""
    return dict(_unverified_header(encoded_token))


class ServiceJWTManager(JWTManager):
    """flask-jwt-extended's manager, verifying each token once (``VerifiedTokens``)
    instead of on every request: decoding and checking an HS256 token was the
    largest single cost of a status poll."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = VerifiedTokens()

    def init_app(self, app: Flask, add_context_processor: bool = False) -> None:
        super().init_app(app, add_context_processor)
        # The request check calls this module global: point it at the cache.
        view_decorators.get_unverified_jwt_headers = unverified_header

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: Any = None, allow_expired: bool = False
    ) -> dict[str, Any]:
        if self._decode_key_callback is not default_decode_key_callback:
            # A key chosen per token is not in the cache key below.
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        # Everything the verification depends on besides the token.
        key = (
            encoded_token,
            csrf_value,
            allow_expired,
            jwt_config.decode_key,
            tuple(jwt_config.decode_algorithms),
            repr(jwt_config.decode_audience),
            jwt_config.decode_issuer,
            jwt_config.identity_claim_key,
            jwt_config.verify_sub,
        )
        leeway = float(jwt_config.leeway or 0)
        claims = self.verified.get(key, leeway)
        if claims is not None:
            return claims
        claims = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        self.verified.put(key, claims)
        return claims


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = ServiceJWTManager()
cors = CORS()
