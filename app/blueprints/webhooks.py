"""Webhooks: the signing secret an account's receivers verify deliveries with."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from app.access import auth_required, current_user
from app.blueprints import Blueprint
from app.services import webhooks

PREFIX = "/webhooks"
blp = Blueprint(
    "webhooks",
    __name__,
    description=(
        "Jobs created with `callback_url` are POSTed there when they end, signed with "
        "HMAC-SHA256 (see docs/api.md, section Webhooks)."
    ),
)


class WebhookSecretSchema(Schema):
    secret = fields.String(metadata={"description": "Your signing secret (hex)."})
    algorithm = fields.String(metadata={"example": "HMAC-SHA256"})
    signature_header = fields.String(metadata={"example": "X-AMS-Signature"})
    timestamp_header = fields.String(metadata={"example": "X-AMS-Timestamp"})
    signed_content = fields.String(metadata={"example": "<X-AMS-Timestamp>.<raw request body>"})


@blp.route("/secret", methods=["GET"])
# A login only: an API key leaked into a script must not reveal the secret
# that would let its finder forge deliveries.
@auth_required(api_keys=False)
@blp.response(200, WebhookSecretSchema)
def get_secret() -> dict[str, Any]:
    """Your webhook signing secret.

    Every delivery carries `X-AMS-Timestamp` (Unix seconds) and
    `X-AMS-Signature: sha256=<hex>`, the HMAC-SHA256 of
    `<timestamp>.<raw body>` under this secret. Compare in constant time and
    refuse timestamps older than a few minutes. The secret is the same on
    every call; the operator rotates all of them by changing `WEBHOOK_SECRET`.
    """
    return {
        "secret": webhooks.signing_key(current_user.id),
        "algorithm": "HMAC-SHA256",
        "signature_header": "X-AMS-Signature",
        "timestamp_header": "X-AMS-Timestamp",
        "signed_content": "<X-AMS-Timestamp>.<raw request body>",
    }
