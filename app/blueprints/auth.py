"""Accounts and tokens: register, login, refresh, logout, me, API keys, account deletion."""

from __future__ import annotations

from typing import Any

from flask_jwt_extended import get_jwt
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from app import ratelimits
from app.access import auth_required, current_user
from app.blueprints import Blueprint
from app.blueprints.fields import UTCDateTime
from app.records import ApiKey
from app.services import api_keys as api_key_service
from app.services import auth as auth_service
from app.services import quotas

PREFIX = "/auth"
blp = Blueprint("auth", __name__, description="Accounts, JWT tokens and API keys.")


class CredentialsSchema(Schema):
    email = fields.Email(
        required=True, validate=validate.Length(max=254), metadata={"example": "ada@example.com"}
    )
    password = fields.String(
        required=True,
        load_only=True,
        validate=[
            validate.Length(
                min=auth_service.PASSWORD_MIN_LENGTH, error="Use at least {min} characters."
            ),
            validate.Length(max=256),
        ],
        metadata={
            "description": (
                f"At least {auth_service.PASSWORD_MIN_LENGTH} characters, not the e-mail "
                "address, not a common password."
            ),
            "example": "correct horse battery",
        },
    )

    @validates_schema
    def _policy(self, data: dict[str, Any], **_: Any) -> None:
        problems = auth_service.password_problems(data["email"], data["password"])
        if problems:
            raise ValidationError(problems, "password")


class LoginSchema(Schema):
    email = fields.String(
        required=True, validate=validate.Length(max=254), metadata={"example": "ada@example.com"}
    )
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(max=256),
        metadata={"example": "correct horse battery"},
    )


class UserSchema(Schema):
    id = fields.String(metadata={"example": "3f1c2b9e-8d4a-4c53-9a77-0d5a2e8b1c44"})
    email = fields.String(metadata={"example": "ada@example.com"})
    created_at = UTCDateTime()


class UsageSchema(Schema):
    active_jobs = fields.Integer(metadata={"description": "Jobs queued or running now."})
    max_active_jobs = fields.Integer(
        allow_none=True, metadata={"description": "Limit on active jobs (null: none)."}
    )
    stored_bytes = fields.Integer(metadata={"description": "Inputs and results kept on disk."})
    max_storage_bytes = fields.Integer(
        allow_none=True, metadata={"description": "Storage limit in bytes (null: none)."}
    )


class MeSchema(UserSchema):
    usage = fields.Nested(UsageSchema)


class PasswordSchema(Schema):
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=256))


class ApiKeyCreateSchema(Schema):
    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"example": "nightly batch"},
    )
    expires_in_days = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Days until the key stops working (default: never)."},
    )


class ApiKeySchema(Schema):
    id = fields.String(metadata={"example": "8d0c7a52-1b7e-4f0a-9d3e-5c2b1a0f9e84"})
    name = fields.String(metadata={"example": "nightly batch"})
    prefix = fields.String(
        metadata={
            "description": "The key's first characters, to tell keys apart.",
            "example": "ams_Q2xk9Zr4",
        }
    )
    created_at = UTCDateTime()
    last_used_at = UTCDateTime(
        allow_none=True, metadata={"description": "Updated at most once a minute."}
    )
    expires_at = UTCDateTime(allow_none=True)
    revoked = fields.Method("_revoked", metadata={"type": "boolean"})

    def _revoked(self, key: ApiKey | dict[str, Any]) -> bool:
        value = key.get("revoked_at") if isinstance(key, dict) else key.revoked_at
        return value is not None


class NewApiKeySchema(ApiKeySchema):
    key = fields.String(
        metadata={
            "description": "The key itself. Shown only now: store it, it cannot be read again.",
            "example": "ams_Q2xk9Zr4...",
        }
    )


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String(metadata={"description": "Only from /auth/login."})
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Access token lifetime in seconds."})


@blp.route("/register", methods=["POST"])
@ratelimits.login_per_ip
@blp.arguments(CredentialsSchema)
@blp.response(201, UserSchema)
@blp.alt_response(409, description="The e-mail is already registered.")
@blp.doc(responses=ratelimits.RATE_LIMITED_DOC)
def register(data: dict[str, Any]) -> Any:
    """Create an account."""
    return auth_service.register(data["email"], data["password"])


@blp.route("/login", methods=["POST"])
@ratelimits.login_per_ip
@ratelimits.login_per_account
@blp.arguments(LoginSchema)
@blp.response(200, TokenSchema)
@blp.alt_response(401, description="Invalid credentials.")
@blp.doc(responses=ratelimits.RATE_LIMITED_DOC)
def login(data: dict[str, Any]) -> dict[str, Any]:
    """Exchange e-mail and password for an access token and a refresh token.

    Attempts are limited per client address and per account (LOGIN_RATE_LIMIT).
    """
    user = auth_service.authenticate(data["email"], data["password"])
    return auth_service.issue_tokens(user)


@blp.route("/refresh", methods=["POST"])
@auth_required(api_keys=False, refresh=True)
@ratelimits.refresh_per_ip
@ratelimits.refresh_per_user
@blp.response(200, TokenSchema)
@blp.doc(
    description="Send the refresh token as the Bearer token.",
    responses=ratelimits.RATE_LIMITED_DOC,
)
def refresh() -> dict[str, Any]:
    """Get a new access token with a refresh token."""
    return auth_service.refresh_access(current_user, get_jwt())


@blp.route("/logout", methods=["POST"])
@auth_required(api_keys=False, verify_type=False)
@blp.response(204)
def logout() -> None:
    """Revoke the presented token and the session it belongs to (access and refresh)."""
    auth_service.revoke(get_jwt())


@blp.route("/me", methods=["GET"])
@auth_required()
@blp.response(200, MeSchema)
def me() -> dict[str, Any]:
    """The account the token belongs to, with its quota usage."""
    user = current_user
    return {
        "id": user.id,
        "email": user.email,
        "created_at": user.created_at,
        "usage": quotas.usage(user),
    }


@blp.route("/me", methods=["DELETE"])
@auth_required(api_keys=False)
@ratelimits.password_per_user
@blp.arguments(PasswordSchema)
@blp.response(204)
@blp.alt_response(403, description="Wrong password, or an API key was sent.")
@blp.doc(responses=ratelimits.RATE_LIMITED_DOC)
def delete_me(data: dict[str, Any]) -> None:
    """Delete your account, every job and file, and every API key.

    Needs your password. Your tokens and keys stop working at once.
    """
    auth_service.delete_account(current_user, data["password"])


@blp.route("/api-keys", methods=["POST"])
@auth_required(api_keys=False)
@blp.arguments(ApiKeyCreateSchema)
@blp.response(201, NewApiKeySchema)
@blp.alt_response(409, description="Too many active keys.")
def create_api_key(data: dict[str, Any]) -> dict[str, Any]:
    """Create a personal API key for scripts (send it as `Authorization: Bearer <key>`).

    The key is in this answer only; the server keeps just its hash. Keys work
    on every route except account management (keys, refresh, logout, deleting
    the account), which needs a login.
    """
    record, key = api_key_service.create(current_user, data["name"], data.get("expires_in_days"))
    return {**{c.name: getattr(record, c.name) for c in ApiKey.__table__.columns}, "key": key}


@blp.route("/api-keys", methods=["GET"])
@auth_required(api_keys=False)
@blp.response(200, ApiKeySchema(many=True))
def list_api_keys() -> list[ApiKey]:
    """Your API keys (never the keys themselves), newest first."""
    return api_key_service.list_keys(current_user)


@blp.route("/api-keys/<key_id>", methods=["DELETE"])
@auth_required(api_keys=False)
@blp.response(204)
@blp.alt_response(404, description="No such key (or not yours).")
def revoke_api_key(key_id: str) -> None:
    """Revoke an API key: it stops working at once."""
    api_key_service.revoke(current_user, key_id)
