"""The model catalogue: what a request may name, and what can run here."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields, validate

from app.blueprints import Blueprint
from app.models import registry
from app.models.cache import get_cache

PREFIX = "/models"
blp = Blueprint("models", __name__, description="Engines and models available to jobs.")


class ModelOptionSchema(Schema):
    """One option a model takes (a form field of its kind's job request)."""

    name = fields.String(metadata={"example": "shifts"})
    type = fields.String(
        validate=validate.OneOf(["integer", "number", "boolean", "string"]),
        metadata={"example": "integer"},
    )
    description = fields.String()
    default = fields.Raw(
        allow_none=True,
        metadata={"description": "The value used when the request leaves it out; null: "
                  "the engine decides (e.g. the model's own).", "example": 1},
    )  # fmt: skip
    minimum = fields.Float(allow_none=True, metadata={"example": 0})
    maximum = fields.Float(allow_none=True, metadata={"example": 10})
    choices = fields.List(fields.String(), allow_none=True)
    unit = fields.String(allow_none=True, metadata={"example": "s"})


class ModelSchema(Schema):
    kind = fields.String(metadata={"example": "separation"})
    name = fields.String(metadata={"example": "htdemucs"})
    engine = fields.String(metadata={"example": "demucs"})
    description = fields.String()
    stems = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"example": ["drums", "bass", "other", "vocals"]},
    )
    available = fields.Boolean(
        metadata={"description": "Weights present here (or none needed): jobs can run offline."}
    )
    downloadable = fields.Boolean(
        metadata={"description": "Missing weights will be downloaded on first use."}
    )
    needs_weights = fields.Boolean()
    sample_rate = fields.Integer(allow_none=True, metadata={"example": 44100})
    max_segment = fields.Float(
        allow_none=True, metadata={"description": "Largest `segment` this model accepts."}
    )
    requires = fields.String(
        allow_none=True, metadata={"description": "A Python package missing for this model."}
    )
    default = fields.Boolean(metadata={"description": "The default of its kind."})
    options = fields.List(
        fields.Nested(ModelOptionSchema),
        metadata={"description": "Options a job with this model may set; any other is refused."},
    )


class LoadedModelSchema(Schema):
    kind = fields.String()
    name = fields.String()
    device = fields.String(metadata={"example": "cpu"})
    bytes = fields.Integer()
    load_seconds = fields.Float()
    idle_seconds = fields.Float()
    uses = fields.Integer()


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
    loaded = fields.List(
        fields.Nested(LoadedModelSchema),
        metadata={"description": "Models resident in the process that answered (API or worker)."},
    )
    defaults = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"example": {"separation": "htdemucs"}},
    )


@blp.route("", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models() -> dict[str, Any]:
    """Every engine with its kind, description, availability and the default per kind."""
    return {
        "models": registry.catalogue(current_app.config),
        "defaults": registry.DEFAULTS,
        "loaded": get_cache(current_app.config).loaded(),
    }
