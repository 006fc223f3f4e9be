"""Accounts and tokens: register, login, refresh, logout, me."""

from __future__ import annotations

from typing import Any

from flask_jwt_extended import current_user, get_jwt, jwt_required
from marshmallow import Schema, fields, validate

from app.blueprints import Blueprint
from app.blueprints.fields import UTCDateTime
from app.records import User
from app.services import auth as auth_service

PREFIX = "/auth"
blp = Blueprint("auth", __name__, description="Accounts and JWT tokens.")

BEARER = [{"bearerAuth": []}]


class CredentialsSchema(Schema):
    email = fields.Email(
        required=True, validate=validate.Length(max=254), metadata={"example": "ada@example.com"}
    )
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=8, max=256),
        metadata={"example": "correct horse battery"},
    )


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


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String(metadata={"description": "Only from /auth/login."})
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"description": "Access token lifetime in seconds."})


@blp.route("/register", methods=["POST"])
@blp.arguments(CredentialsSchema)
@blp.response(201, UserSchema)
@blp.alt_response(409, description="The e-mail is already registered.")
def register(data: dict[str, Any]) -> User:
    """Create an account."""
    return auth_service.register(data["email"], data["password"])


@blp.route("/login", methods=["POST"])
@blp.arguments(LoginSchema)
@blp.response(200, TokenSchema)
@blp.alt_response(401, description="Invalid credentials.")
def login(data: dict[str, Any]) -> dict[str, Any]:
    """Exchange e-mail and password for an access token and a refresh token."""
    user = auth_service.authenticate(data["email"], data["password"])
    return auth_service.issue_tokens(user)


@blp.route("/refresh", methods=["POST"])
@jwt_required(refresh=True)
@blp.response(200, TokenSchema)
@blp.doc(security=BEARER, description="Send the refresh token as the Bearer token.")
def refresh() -> dict[str, Any]:
    """Get a new access token with a refresh token."""
    return auth_service.refresh_access(current_user, get_jwt())


@blp.route("/logout", methods=["POST"])
@jwt_required(verify_type=False)
@blp.response(204)
@blp.doc(security=BEARER)
def logout() -> None:
    """Revoke the presented token and the session it belongs to (access and refresh)."""
    auth_service.revoke(get_jwt())


@blp.route("/me", methods=["GET"])
@jwt_required()
@blp.response(200, UserSchema)
@blp.doc(security=BEARER)
def me() -> User:
    """The account the token belongs to."""
    return current_user
