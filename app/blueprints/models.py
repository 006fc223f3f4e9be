"""The model catalogue: what a request may name, and what can run here."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields

from app.blueprints import Blueprint
from app.models import registry

PREFIX = "/models"
blp = Blueprint("models", __name__, description="Engines and models available to jobs.")


class ModelSchema(Schema):
    kind = fields.String(metadata={"example": "separation"})
    name = fields.String(metadata={"example": "hpss"})
    description = fields.String()
    stems = fields.List(fields.String(), metadata={"example": ["harmonic", "percussive"]})
    available = fields.Boolean(metadata={"description": "Weights present (or not needed) here."})
    needs_weights = fields.Boolean()
    sample_rate = fields.Integer(allow_none=True)
    default = fields.Boolean(metadata={"description": "The default of its kind."})


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
    defaults = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"example": {"separation": "hpss"}}
    )


@blp.route("", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models() -> dict[str, Any]:
    """Every engine with its kind, description, availability and the default per kind."""
    return {"models": registry.catalogue(current_app.config), "defaults": registry.DEFAULTS}
